"""Flink's further aggregate functions (STDDEV/VAR, FIRST/LAST_VALUE, LISTAGG, ARRAY_AGG, JSON_ARRAYAGG,
JSON_OBJECTAGG, COLLECT, BOOL_AND/OR) against DuckDB, NULLs included, for random epoch splits: in an unbounded
GROUP BY, a TUMBLE window, and over an updating input."""

from __future__ import annotations

import datetime as dt
import random
import shutil
import tempfile
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from engine import Pipeline, state_at
from sql import SqlError
from tests.helpers import duck, examples, read_sink, run, sort_all, write_jsonl

SOURCE = """
CREATE TABLE src (id BIGINT, k STRING, x INT, s STRING, b BOOLEAN, ts TIMESTAMP(3),
                  WATERMARK FOR ts AS ts - INTERVAL '1' SECOND)
WITH ('connector' = 'filesystem', 'path' = 'in', 'format' = 'json');
"""
SCHEMA = {"id": pl.Int64, "k": pl.String, "x": pl.Int32, "s": pl.String, "b": pl.Boolean, "ts": pl.Datetime("ms")}
START = dt.datetime(2024, 1, 1)

_ENTRIES = "list({'k': CAST(id AS VARCHAR), 'v': s} ORDER BY CAST(id AS VARCHAR))"
# One list of (sink column, timelapse call, DuckDB call) for both the GROUP BY and the window test.
CALLS = [
    ("sp", "DOUBLE", "STDDEV_POP(x)", "stddev_pop(x)"),
    ("ss", "DOUBLE", "STDDEV_SAMP(x)", "stddev_samp(x)"),
    ("vp", "DOUBLE", "VAR_POP(x)", "var_pop(x)"),
    ("vs", "DOUBLE", "VARIANCE(x)", "var_samp(x)"),
    ("fx", "INT", "FIRST_VALUE(x)", "first(x ORDER BY id) FILTER (WHERE x IS NOT NULL)"),
    ("ls", "STRING", "LAST_VALUE(s)", "last(s ORDER BY id) FILTER (WHERE s IS NOT NULL)"),
    ("la", "STRING", "LISTAGG(s)", "string_agg(s, ',' ORDER BY id)"),
    ("lb", "STRING", "LISTAGG(s, ' | ') FILTER (WHERE x > 2)", "string_agg(s, ' | ' ORDER BY id) FILTER (WHERE x > 2)"),
    ("aa", "ARRAY<INT>", "ARRAY_AGG(x)", "list(x ORDER BY id)"),
    ("ai", "ARRAY<INT>", "ARRAY_AGG(x IGNORE NULLS)", "list(x ORDER BY id) FILTER (WHERE x IS NOT NULL)"),
    ("ja", "STRING", "JSON_ARRAYAGG(s)", "coalesce(to_json(list(s ORDER BY id) FILTER (WHERE s IS NOT NULL)), '[]')"),
    ("jn", "STRING", "JSON_ARRAYAGG(x NULL ON NULL)", "to_json(list(x ORDER BY id))"),
    ("jo", "STRING", "JSON_OBJECTAGG(KEY CAST(id AS STRING) VALUE s)", f"to_json(map_from_entries({_ENTRIES}))"),
    (
        "jb",
        "STRING",
        "JSON_OBJECTAGG(KEY CAST(id AS STRING) VALUE x ABSENT ON NULL)",
        f"coalesce(to_json(map_from_entries({_ENTRIES.replace('s}', 'x}')} FILTER (WHERE x IS NOT NULL))), '{{}}')",
    ),
    ("ba", "BOOLEAN", "BOOL_AND(b)", "bool_and(b)"),
    ("bo", "BOOLEAN", "BOOL_OR(b)", "bool_or(b)"),
]


def make_rows(seed: int, count: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    return [
        {
            "id": i,
            "k": rng.choice(["a", "b", "c"]),
            # large values with a small spread: a sum of squares would lose the variance's digits
            "x": rng.choice([None, 1_000_000, 1_000_001, 1_000_003, 2, 3, -5]),
            "s": rng.choice([None, "p", 'q"r', "é", "s t"]),
            "b": rng.choice([None, True, False, True]),
            "ts": (START + dt.timedelta(seconds=i)).isoformat() + "Z",
        }
        for i in range(count)
    ]


def frame(rows: list[dict[str, Any]]) -> pl.DataFrame:
    return pl.DataFrame([{**r, "ts": START + dt.timedelta(seconds=r["id"])} for r in rows], schema=SCHEMA)


def compare(actual: pl.DataFrame, expected: pl.DataFrame, rel_tol: float = 1e-9) -> None:
    assert_frame_equal(
        sort_all(actual.select(expected.columns)), sort_all(expected), check_dtypes=False, rel_tol=rel_tol, abs_tol=1e-9
    )


def pipeline(sink_keys: str, primary_key: str, select: str) -> str:
    columns = ", ".join(f"{name} {sql_type}" for name, sql_type, _, _ in CALLS)
    calls = ", ".join(f"{call} AS {name}" for name, _, call, _ in CALLS)
    return (
        SOURCE
        + f"CREATE TABLE out ({sink_keys}, {columns}{primary_key}) WITH ('connector' = 'delta', 'path' = 'out');\n"
        + f"INSERT INTO out {select.format(calls=calls)};\n"
    )


GROUP_BY = pipeline("k STRING", ", PRIMARY KEY (k) NOT ENFORCED", "SELECT k, {calls} FROM src GROUP BY k")
WINDOWED = pipeline(
    "k STRING, window_start TIMESTAMP(3)",
    "",
    "SELECT k, window_start, {calls} FROM TABLE(TUMBLE(TABLE src, DESCRIPTOR(ts), INTERVAL '10' SECOND))"
    " GROUP BY k, window_start, window_end",
)
ORACLE_CALLS = ", ".join(f"{oracle} AS {name}" for name, _, _, oracle in CALLS)


@settings(
    max_examples=examples(8),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
    phases=[Phase.explicit, Phase.generate],  # no shrinking: a failure prints its seed, count and split
)
@given(seed=st.integers(0, 10_000), count=st.integers(1, 50), max_rows=st.one_of(st.none(), st.integers(1, 12)))
def test_group_by_equals_duckdb(seed: int, count: int, max_rows: int | None) -> None:
    root = Path(tempfile.mkdtemp())
    try:
        rows = make_rows(seed, count)
        write_jsonl(root / "in" / "a.json", rows)
        run(root, GROUP_BY, max_epoch_rows=max_rows)
        expected = duck(f"SELECT k, {ORACLE_CALLS} FROM src GROUP BY k", src=frame(rows))
        compare(read_sink(root / "out"), expected)
    finally:
        shutil.rmtree(root)


@settings(
    max_examples=examples(6),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
    phases=[Phase.explicit, Phase.generate],  # no shrinking: a failure prints its seed, count and split
)
@given(seed=st.integers(0, 10_000), count=st.integers(1, 50), max_rows=st.one_of(st.none(), st.integers(1, 12)))
def test_tumble_window_equals_duckdb(seed: int, count: int, max_rows: int | None) -> None:
    root = Path(tempfile.mkdtemp())
    try:
        rows = make_rows(seed, count)
        write_jsonl(root / "in" / "a.json", rows)
        run(root, WINDOWED, max_epoch_rows=max_rows)
        expected = duck(
            f"SELECT k, time_bucket(INTERVAL 10 SECOND, ts) AS window_start, {ORACLE_CALLS} FROM src"
            " GROUP BY k, time_bucket(INTERVAL 10 SECOND, ts)"
            # the windows the final watermark (the last time minus 1 s) has closed
            " HAVING time_bucket(INTERVAL 10 SECOND, ts) + INTERVAL 10 SECOND - INTERVAL 1 MILLISECOND"
            " <= (SELECT max(ts) - INTERVAL 1 SECOND FROM src)",
            src=frame(rows),
        )
        actual = read_sink(root / "out").with_columns(pl.col("window_start").dt.replace_time_zone(None))
        compare(actual, expected.with_columns(pl.col("window_start").dt.cast_time_unit("ms")))
    finally:
        shutil.rmtree(root)


UPDATING = (
    SOURCE
    + """
CREATE TABLE spread (bucket BIGINT, sp DOUBLE, vs DOUBLE, jo STRING, ba BOOLEAN, bo BOOLEAN,
                     PRIMARY KEY (bucket) NOT ENFORCED)
WITH ('connector' = 'delta', 'path' = 'spread');
INSERT INTO spread
SELECT /*+ STATE_ID('spread') */ n % 3, STDDEV_POP(total), VAR_SAMP(total), JSON_OBJECTAGG(KEY k VALUE total),
       BOOL_AND(total > 2), BOOL_OR(total > 1000000)
FROM (SELECT k, COUNT(*) AS n, SUM(x) AS total FROM src GROUP BY k)
GROUP BY n % 3
HAVING COLLECT(total) IS NOT NULL;
"""
)


@settings(
    max_examples=examples(4),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
    phases=[Phase.explicit, Phase.generate],
)
@given(seed=st.integers(0, 10_000), max_rows=st.one_of(st.none(), st.integers(1, 8)))
def test_over_an_updating_input(seed: int, max_rows: int | None) -> None:
    """Retractions from an inner GROUP BY (of values of 10^6 and of 2: a retracted 10^6 must not leave its
    rounding in a variance of small values): the variances, the JSON object's members, BOOL_AND/OR's counts
    and COLLECT's multiset follow them. A MULTISET has no sink type yet: COLLECT's value is read from the
    state table (it is in HAVING, so the operator keeps it)."""
    tmp_path = Path(tempfile.mkdtemp())
    try:
        _check_updating(tmp_path, seed, max_rows)
    finally:
        shutil.rmtree(tmp_path)


def _check_updating(tmp_path: Path, seed: int, max_rows: int | None) -> None:
    rows = make_rows(seed, 30)
    for row in rows:
        row["k"] = random.Random(seed + row["id"]).choice("abcdefgh")
    write_jsonl(tmp_path / "in" / "a.json", rows)
    run(tmp_path, UPDATING, max_epoch_rows=max_rows)
    inner = "(SELECT k, count(*) AS n, sum(x) AS total FROM src GROUP BY k)"
    expected = duck(
        f"""SELECT n % 3 AS bucket, stddev_pop(total) AS sp, var_samp(total) AS vs,
                   to_json(map_from_entries(list({{'k': k, 'v': total}} ORDER BY k))) AS jo, bool_and(total > 2) AS ba,
                   bool_or(total > 1000000) AS bo
            FROM {inner} GROUP BY n % 3""",
        src=frame(rows),
    )
    compare(read_sink(tmp_path / "spread"), expected)
    bags = duck(
        f"""SELECT bucket, list({{'key': total, 'value': c}} ORDER BY total) FILTER (WHERE total IS NOT NULL) AS bag
            FROM (SELECT n % 3 AS bucket, total, count(*) AS c FROM {inner} GROUP BY ALL) GROUP BY bucket""",
        src=frame(rows),
    )
    state = state_at(tmp_path / "state", "spread").collect()
    multiset = state.select(pl.col("EXPR$k0").alias("bucket"), pl.col("collect_total__multiset").alias("bag"))
    assert (
        sort_all(multiset.with_columns(pl.col("bag").fill_null([]))).to_dicts()
        == sort_all(bags.with_columns(pl.col("bag").fill_null([]))).to_dicts()
    )


def test_refusals(tmp_path: Path) -> None:
    updating = "(SELECT k, COUNT(*) AS n, SUM(x) AS total FROM src GROUP BY k)"
    cases = {
        f"SELECT n, LISTAGG(k) FROM {updating} GROUP BY n": "LISTAGG over an updating input is not supported",
        f"SELECT n, FIRST_VALUE(k) FROM {updating} GROUP BY n": "FIRST_VALUE over an updating input",
        "SELECT k, LISTAGG(x) FROM src GROUP BY k": "LISTAGG needs a STRING, got INT",
        "SELECT k, STDDEV_POP(s) FROM src GROUP BY k": "STDDEV_POP needs a number",
        "SELECT k, LISTAGG(s, k) FROM src GROUP BY k": "separator must be a string literal",
        "SELECT k, ARRAY_AGG(DISTINCT x) FROM src GROUP BY k": "DISTINCT is supported in COUNT",
        "SELECT k, FIRST_VALUE(x) FROM TABLE(SESSION(TABLE src PARTITION BY k, DESCRIPTOR(ts), INTERVAL '5' SECOND))"
        " GROUP BY k, window_start, window_end": "not supported in SESSION windows",
    }
    for query, message in cases.items():
        sql = SOURCE + f"CREATE TABLE out (a STRING, b STRING) WITH ('connector' = 'print');\nINSERT INTO out {query};"
        with pytest.raises(SqlError, match=message):
            Pipeline.from_sql(sql, state=tmp_path / "state")


def test_variance_keeps_its_digits_for_large_values(tmp_path: Path) -> None:
    """Values 10^9 + 0..3: a sum of squares (4 * 10^19 for 40 rows, whose doubles are 8192 apart) would lose the
    whole variance (1.25); the count/mean/M2 state keeps it to the precision of the mean (a double near 10^9 is
    good to 1e-7), across epochs of 3 rows."""
    import statistics

    values = [1e9 + (i * 7) % 4 for i in range(40)]
    rows = [{**row, "k": "a", "x": None} for row in make_rows(1, 40)]
    write_jsonl(tmp_path / "in" / "a.json", [{**r, "y": v} for r, v in zip(rows, values, strict=True)])
    sql = SOURCE.replace("x INT,", "x INT, y DOUBLE,") + (
        "CREATE TABLE out (k STRING, vp DOUBLE, ss DOUBLE, PRIMARY KEY (k) NOT ENFORCED)"
        " WITH ('connector' = 'delta', 'path' = 'out');\n"
        "INSERT INTO out SELECT k, VAR_POP(y), STDDEV_SAMP(y) FROM src GROUP BY k;"
    )
    run(tmp_path, sql, max_epoch_rows=3)
    (result,) = read_sink(tmp_path / "out").to_dicts()
    assert result["vp"] == pytest.approx(statistics.pvariance(values), rel=1e-6)
    assert result["ss"] == pytest.approx(statistics.stdev(values), rel=1e-6)


WINDOW_CALLS = "STDDEV_POP(x) AS sp, VAR_SAMP(x) AS vs, BOOL_AND(b) AS ba, BOOL_OR(b) AS bo"
ORACLE_WINDOW_CALLS = "stddev_pop(x) AS sp, var_samp(x) AS vs, bool_and(b) AS ba, bool_or(b) AS bo"
HOP_OR_SESSION = {
    # HOP keeps slices (the variance state merges any number of them), SESSION merges sessions' partial states.
    "hop": (
        "HOP(TABLE src, DESCRIPTOR(ts), INTERVAL '5' SECOND, INTERVAL '15' SECOND)",
        """SELECT k, ws, {calls} FROM (
             SELECT *, time_bucket(INTERVAL 5 SECOND, ts) - INTERVAL 5 SECOND * h AS ws FROM src, range(3) r(h))
           GROUP BY k, ws HAVING ws + INTERVAL 15 SECOND - INTERVAL 1 MILLISECOND <= (SELECT max(ts) - INTERVAL 1 SECOND
           FROM src)""",
    ),
    "session": (
        "SESSION(TABLE src PARTITION BY k, DESCRIPTOR(ts), INTERVAL '5' SECOND)",
        """SELECT k, min(ts) AS ws, {calls} FROM (
             SELECT *, sum(fresh) OVER (PARTITION BY k ORDER BY ts) AS sid FROM (
               SELECT *, CASE WHEN ts <= lag(ts) OVER (PARTITION BY k ORDER BY ts) + INTERVAL 5 SECOND
                         THEN 0 ELSE 1 END AS fresh FROM src))
           GROUP BY k, sid HAVING max(ts) + INTERVAL 5 SECOND - INTERVAL 1 MILLISECOND <= (SELECT max(ts)
           - INTERVAL 1 SECOND FROM src)""",
    ),
}


@pytest.mark.parametrize("kind", ["hop", "session"])
@pytest.mark.parametrize("max_rows", [3, None])
def test_hop_and_session_windows(tmp_path: Path, kind: str, max_rows: int | None) -> None:
    rng = random.Random(11)
    rows, clock = make_rows(21, 40), 0
    for row in rows:  # gaps of 0 to 8 s: sessions (gap 5 s) break now and then
        clock += rng.choice([0, 1, 2, 3, 8])
        row["ts"] = (START + dt.timedelta(seconds=clock)).isoformat() + "Z"
        row["x"] = None if row["x"] is None else row["x"] % 1000
    write_jsonl(tmp_path / "in" / "a.json", rows)
    window, oracle = HOP_OR_SESSION[kind]
    sql = SOURCE + (
        "CREATE TABLE out (k STRING, ws TIMESTAMP(3), sp DOUBLE, vs DOUBLE, ba BOOLEAN, bo BOOLEAN)"
        " WITH ('connector' = 'delta', 'path' = 'out');\n"
        f"INSERT INTO out SELECT k, window_start, {WINDOW_CALLS} FROM TABLE({window})"
        " GROUP BY k, window_start, window_end;"
    )
    run(tmp_path, sql, max_epoch_rows=max_rows)
    times = pl.Series([dt.datetime.fromisoformat(r["ts"][:-1]) for r in rows]).dt.cast_time_unit("ms")
    expected = duck(oracle.format(calls=ORACLE_WINDOW_CALLS), src=frame(rows).with_columns(ts=times))
    actual = read_sink(tmp_path / "out").with_columns(pl.col("ws").dt.replace_time_zone(None))
    assert actual.height == expected.height > 3
    compare(actual, expected.with_columns(pl.col("ws").dt.cast_time_unit("ms")))


def test_state_restores_across_runs(tmp_path: Path) -> None:
    """A second run restores the lists, variance states and counted values from Delta and goes on from them."""
    rows = make_rows(33, 40)
    write_jsonl(tmp_path / "in" / "a.json", rows[:25])
    run(tmp_path, GROUP_BY, max_epoch_rows=7)
    write_jsonl(tmp_path / "in" / "b.json", rows[25:])
    run(tmp_path, GROUP_BY, max_epoch_rows=7, parallelism=2)  # and split among two workers by key group
    compare(read_sink(tmp_path / "out"), duck(f"SELECT k, {ORACLE_CALLS} FROM src GROUP BY k", src=frame(rows)))


OVER_FRAMES = [
    ("ROWS BETWEEN 2 PRECEDING AND CURRENT ROW", "ROWS BETWEEN 2 PRECEDING AND CURRENT ROW"),
    (
        "RANGE BETWEEN INTERVAL '3' SECOND PRECEDING AND CURRENT ROW",
        "RANGE BETWEEN INTERVAL 3 SECOND PRECEDING AND CURRENT ROW",
    ),
    ("ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW", "ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW"),
    ("RANGE BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW", "RANGE BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW"),
]


@pytest.mark.parametrize(("frame_sql", "duck_frame"), OVER_FRAMES)
@pytest.mark.parametrize("max_rows", [3, None])
def test_first_and_last_value_over(tmp_path: Path, frame_sql: str, duck_frame: str, max_rows: int | None) -> None:
    """FIRST_VALUE / LAST_VALUE OVER: the frame's first / last non-NULL value in time order (NULLs are common
    here, so frames without a value and values outside the frame both occur); some rows share a time."""
    rows = make_rows(8, 50)
    for row in rows:
        # pairs share a time and a value: a frame's first / last value is the same whatever the order of peers
        row["x"] = random.Random(row["id"] // 2).choice([None, None, 1, 2, 3])
        row["ts"] = (START + dt.timedelta(seconds=row["id"] // 2 * 2)).isoformat() + "Z"  # pairs share a time
    write_jsonl(tmp_path / "in" / "a.json", rows)
    window = f"OVER (PARTITION BY k ORDER BY ts {frame_sql})"
    sql = SOURCE + (
        "CREATE TABLE out (id BIGINT, fx INT, lx INT) WITH ('connector' = 'delta', 'path' = 'out');\n"
        f"INSERT INTO out SELECT id, FIRST_VALUE(x) {window}, LAST_VALUE(x) {window} FROM src;"
    )
    run(tmp_path, sql, max_epoch_rows=max_rows)
    times = pl.Series([dt.datetime.fromisoformat(r["ts"][:-1]) for r in rows]).dt.cast_time_unit("ms")
    expected = duck(
        f"""SELECT id, first_value(x IGNORE NULLS) OVER w AS fx, last_value(x IGNORE NULLS) OVER w AS lx FROM src
            WINDOW w AS (PARTITION BY k ORDER BY ts {duck_frame})
            QUALIFY ts <= (SELECT max(ts) - INTERVAL 1 SECOND FROM src)""",
        src=frame(rows).with_columns(ts=times),
    )
    compare(read_sink(tmp_path / "out"), expected)
