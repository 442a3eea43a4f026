"""Window aggregation against DuckDB, with out-of-order rows (within the watermark delay) and late rows.

The oracle computes, in DuckDB, each row's watermark (the running maximum of ts - 5 s over the rows before
it), drops the (row, window) pairs whose window had closed by then, and aggregates the windows that the
final watermark closed. Hypothesis varies the data and the epoch size: the result must not change.
"""

from __future__ import annotations

import math
import random
import shutil
import tempfile
from pathlib import Path

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine import Pipeline, udaf
from sql import Aggregate, plan_script
from sql.udf import AGGREGATES
from tests.helpers import duck, examples, naive, read_sink, run, write_jsonl

BASE_MS = 1_767_225_600_000  # 2026-01-01 00:00:00 UTC
DELAY_S = 5

SOURCE = f"""
CREATE TABLE events (
  seq BIGINT, k STRING, v INT, ts TIMESTAMP(3),
  WATERMARK FOR ts AS ts - INTERVAL '{DELAY_S}' SECOND
) WITH ('connector' = 'filesystem', 'path' = 'in', 'format' = 'json');
"""
SINK = """
CREATE TABLE out (k STRING, ws TIMESTAMP(3), we TIMESTAMP(3), c BIGINT, cv BIGINT, cd BIGINT, s BIGINT,
                  a DOUBLE, mn INT, mx INT, cf BIGINT, e BIGINT)
WITH ('connector' = 'delta', 'path' = 'out');
"""
AGGS = (
    "COUNT(*), COUNT(v), COUNT(DISTINCT v), SUM(v), AVG(v), MIN(v), MAX(v), "
    "COUNT(*) FILTER (WHERE v > 3), SUM(v) * 2 + COUNT(*)"
)
DUCK_AGGS = (
    "count(*), count(v), count(DISTINCT v), sum(v), avg(v), min(v), max(v), "
    "count(*) FILTER (WHERE v > 3), sum(v) * 2 + count(*)"
)

WINDOWS = {
    "tumble": (
        "TUMBLE(TABLE events, DESCRIPTOR(ts), INTERVAL '10' SECOND)",
        "unnest([e - (e % 10000)]) AS t(s), unnest([10000]) AS z(len)",
    ),
    "tumble_offset": (
        "TUMBLE(TABLE events, DESCRIPTOR(ts), INTERVAL '10' SECOND, INTERVAL '3' SECOND)",
        "unnest([e - ((e - 3000) % 10000)]) AS t(s), unnest([10000]) AS z(len)",
    ),
    "hop": (
        "HOP(TABLE events, DESCRIPTOR(ts), INTERVAL '5' SECOND, INTERVAL '15' SECOND)",
        "unnest(range(0, 3)) AS h(i), unnest([e - (e % 5000) - i * 5000]) AS t(s), unnest([15000]) AS z(len)",
    ),
    "cumulate": (
        "CUMULATE(TABLE events, DESCRIPTOR(ts), INTERVAL '5' SECOND, INTERVAL '20' SECOND)",
        "unnest(range(1, 5)) AS h(i), unnest([e - (e % 20000)]) AS t(s), unnest([i * 5000]) AS z(len)",
    ),
}


def make_rows(seed: int, count: int, late_share: float = 0.1) -> list[dict[str, object]]:
    rng = random.Random(seed)
    rows = []
    for i in range(count):
        if rng.random() < late_share:
            ts = BASE_MS + i * 1000 - rng.randint(15, 40) * 1000  # far behind: late for most windows
        else:
            ts = BASE_MS + i * 1000 - rng.randint(0, DELAY_S - 1) * 1000  # out of order within the delay
        rows.append(
            {
                "seq": i,
                "k": rng.choice(["a", "b", "c", None]) if rng.random() < 0.95 else "b",
                "v": rng.choice([None, 1, 2, 3, 4, 5, 6, 7]),
                "ts": max(ts, BASE_MS),
            }
        )
    return rows


def write_input(root: Path, rows: list[dict[str, object]], files: int = 3) -> None:
    size = max(1, math.ceil(len(rows) / files))
    for f in range(files):
        write_jsonl(root / "in" / f"part-{f}.json", rows[f * size : (f + 1) * size])


def frame(rows: list[dict[str, object]]) -> pl.DataFrame:
    df = pl.DataFrame(rows, schema={"seq": pl.Int64, "k": pl.String, "v": pl.Int32, "ts": pl.Int64})
    return df.with_columns(pl.col("ts").cast(pl.Datetime("ms")).dt.replace_time_zone("UTC"))


MARKS = f"""
WITH marks AS (
  SELECT *, epoch_ms(ts) AS e,
         max(ts) OVER (ORDER BY seq ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING)
           - INTERVAL {DELAY_S} SECOND AS wm
  FROM src),
final AS (SELECT max(ts) - INTERVAL {DELAY_S} SECOND AS fwm FROM src)
"""


def oracle_window(rows: list[dict[str, object]], expansion: str) -> pl.DataFrame:
    query = (
        MARKS
        + f"""
    , assigned AS (
      SELECT marks.*, make_timestamp(s * 1000) AS ws, make_timestamp((s + len) * 1000) AS we
      FROM marks, {expansion} WHERE s + len > e)
    SELECT k, ws, we, {DUCK_AGGS} FROM assigned
    WHERE (wm IS NULL OR we - INTERVAL 1 MILLISECOND > wm)
      AND we - INTERVAL 1 MILLISECOND <= (SELECT fwm FROM final)
    GROUP BY k, ws, we HAVING count(*) > 1
    """
    )
    return duck(query, src=frame(rows))


def oracle_session(rows: list[dict[str, object]], gap_s: int) -> pl.DataFrame:
    query = (
        MARKS
        + f"""
    , ontime AS (SELECT * FROM marks WHERE wm IS NULL OR ts + INTERVAL {gap_s} SECOND - INTERVAL 1 MILLISECOND > wm),
    flagged AS (
      SELECT *, CASE WHEN ts <= max(ts) OVER (PARTITION BY k ORDER BY ts, seq
                                            ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING)
                              + INTERVAL {gap_s} SECOND THEN 0 ELSE 1 END AS fresh
      FROM ontime),
    sessions AS (SELECT *, sum(fresh) OVER (PARTITION BY k ORDER BY ts, seq) AS sid FROM flagged)
    SELECT k, min(ts) AS ws, max(ts) + INTERVAL {gap_s} SECOND AS we, {DUCK_SESSION_AGGS} FROM sessions
    GROUP BY k, sid
    HAVING count(*) > 1 AND max(ts) + INTERVAL {gap_s} SECOND - INTERVAL 1 MILLISECOND <= (SELECT fwm FROM final)
    """
    )
    return duck(query, src=frame(rows)).select(pl.exclude("sid"))


def streamed(root: Path, query: str, max_rows: int | None) -> pl.DataFrame:
    run(root, SOURCE + SINK + query, max_epoch_rows=max_rows)
    return naive(read_sink(root / "out"))


def assert_same(actual: pl.DataFrame, expected: pl.DataFrame) -> None:
    keys = ["k", "ws", "we"]
    expected = naive(expected.rename(dict(zip(expected.columns, actual.columns, strict=True))))
    actual = actual.sort(keys, nulls_last=True)
    expected = expected.sort(keys, nulls_last=True).cast(actual.schema)  # type: ignore[arg-type]
    assert actual.height == expected.height, f"{actual.height} rows, expected {expected.height}"
    for column in actual.columns:
        a, e = actual.get_column(column).to_list(), expected.get_column(column).to_list()
        for x, y in zip(a, e, strict=True):
            if isinstance(x, float) and y is not None:
                assert math.isclose(x, y, rel_tol=1e-9), (column, a, e)
            else:
                assert x == y, (column, a, e)


def tvf_query(window: str) -> str:
    return (
        f"INSERT INTO out SELECT k, window_start, window_end, {AGGS} FROM TABLE({window}) "
        "GROUP BY k, window_start, window_end HAVING COUNT(*) > 1;"
    )


@pytest.mark.parametrize("name", list(WINDOWS))
def test_window_tvfs_match_duckdb(tmp_path: Path, name: str) -> None:
    rows = make_rows(11, 120)
    write_input(tmp_path, rows)
    window, expansion = WINDOWS[name]
    assert_same(streamed(tmp_path, tvf_query(window), max_rows=17), oracle_window(rows, expansion))


SESSION_AGGS = AGGS.replace("COUNT(DISTINCT v)", "COUNT(v)")
DUCK_SESSION_AGGS = DUCK_AGGS.replace("count(DISTINCT v)", "count(v)")


def test_session_windows_match_duckdb(tmp_path: Path) -> None:
    rng = random.Random(5)
    rows, t = [], BASE_MS
    for i in range(150):  # bursts separated by quiet gaps, some late rows
        t += rng.choice([1000, 1000, 2000, 9000, 15000])
        ts = t - rng.randint(0, 3) * 1000 if rng.random() > 0.08 else t - 60_000
        rows.append({"seq": i, "k": rng.choice(["a", "b", None]), "v": rng.randint(1, 7), "ts": ts})
    write_input(tmp_path, rows)
    query = (
        f"INSERT INTO out SELECT k, window_start, window_end, {SESSION_AGGS} FROM TABLE(SESSION(TABLE events "
        "PARTITION BY k, DESCRIPTOR(ts), INTERVAL '7' SECOND)) GROUP BY k, window_start, window_end "
        "HAVING COUNT(*) > 1;"
    )
    assert_same(streamed(tmp_path, query, max_rows=13), oracle_session(rows, 7))


def test_legacy_group_window_syntax(tmp_path: Path) -> None:
    rows = make_rows(3, 90)
    write_input(tmp_path, rows)
    query = (
        f"INSERT INTO out SELECT k, TUMBLE_START(ts, INTERVAL '10' SECOND), TUMBLE_END(ts, INTERVAL '10' SECOND), "
        f"{AGGS} FROM events GROUP BY TUMBLE(ts, INTERVAL '10' SECOND), k HAVING COUNT(*) > 1;"
    )
    assert_same(streamed(tmp_path, query, max_rows=9), oracle_window(rows, WINDOWS["tumble"][1]))


@settings(max_examples=examples(10), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    seed=st.integers(0, 10_000),
    count=st.integers(0, 80),
    max_rows=st.one_of(st.none(), st.integers(1, 30)),
    window=st.sampled_from(["tumble", "hop", "cumulate"]),
)
def test_results_do_not_depend_on_epoch_size(seed: int, count: int, max_rows: int | None, window: str) -> None:
    root = Path(tempfile.mkdtemp())
    try:
        rows = make_rows(seed, count)
        write_input(root, rows, files=2)
        sql, expansion = WINDOWS[window]
        assert_same(streamed(root, tvf_query(sql), max_rows), oracle_window(rows, expansion))
    finally:
        shutil.rmtree(root)


def test_late_rows_table_holds_exactly_the_late_rows(tmp_path: Path) -> None:
    rows = make_rows(21, 150, late_share=0.2)
    write_input(tmp_path, rows)
    summary = run(tmp_path, SOURCE + SINK + tvf_query(WINDOWS["tumble"][0]), max_epoch_rows=11)
    late_dirs = list((tmp_path / "state" / "operators").glob("*/late"))
    assert len(late_dirs) == 1
    late = pl.read_delta(str(late_dirs[0]))
    expected = duck(
        MARKS
        + """
        SELECT seq FROM marks
        WHERE wm IS NOT NULL AND make_timestamp((e - e % 10000 + 10000) * 1000) - INTERVAL 1 MILLISECOND <= wm
        ORDER BY seq""",
        src=frame(rows),
    )
    assert sorted(late.get_column("seq").to_list()) == expected.get_column("seq").to_list()
    assert expected.height > 0
    assert late.get_column("_reason").str.contains("already closed").all()
    assert sum(summary["late_rows"].values()) == expected.height
    manifest = pl.read_delta(str(tmp_path / "state" / "manifest")).sort("epoch")
    roles = {t["role"] for t in manifest.row(-1, named=True)["tables"]}
    assert {"state", "late", "sink"} <= roles


def test_window_state_is_typed_delta_and_purged_after_firing(tmp_path: Path) -> None:
    rows = make_rows(8, 60, late_share=0)
    write_input(tmp_path, rows)
    run(tmp_path, SOURCE + SINK + tvf_query(WINDOWS["tumble"][0]), max_epoch_rows=20)
    state_dir = next((tmp_path / "state" / "operators").glob("window-agg-*"))
    log = pl.read_delta(str(state_dir / "state"))
    expected_columns = {"k", "window_start", "window_end", "count__count", "sum_v__sum", "_kg", "_epoch", "_deleted"}
    assert expected_columns <= set(log.columns)
    assert log.schema["window_start"] == pl.Datetime("us", "UTC")
    live = log.filter(pl.col("_epoch") == pl.col("_epoch").max().over("k", "window_start")).filter(~pl.col("_deleted"))
    final_wm = max(r["ts"] for r in rows) - DELAY_S * 1000  # type: ignore[type-var]
    open_ends = live.get_column("window_end").dt.epoch("ms").to_list()
    assert all(end - 1 > final_wm for end in open_ends)  # fired windows left the state
    distinct = pl.read_delta(str(state_dir / "distinct_2"))
    assert {"k", "window_start", "window_end", "__value", "__count"} <= set(distinct.columns)


def test_python_udaf_in_a_window(tmp_path: Path) -> None:
    udaf(
        "SUM_SQ",
        {"s": pl.Int64()},
        partial=lambda x: {"s": (x.cast(pl.Int64) ** 2).sum()},
        merge=lambda a, b: {"s": a["s"] + b["s"]},
        finish=lambda st: st["s"],
        result_type=pl.Int64(),
    )
    rows = make_rows(4, 70)
    write_input(tmp_path, rows)
    sink = "CREATE TABLE out (k STRING, ws TIMESTAMP(3), q BIGINT) WITH ('connector' = 'delta', 'path' = 'out');"
    query = (
        "INSERT INTO out SELECT k, window_start, SUM_SQ(v) FROM TABLE(TUMBLE(TABLE events, DESCRIPTOR(ts), "
        "INTERVAL '10' SECOND)) GROUP BY k, window_start, window_end;"
    )
    run(tmp_path, SOURCE + sink + query, max_epoch_rows=7)
    oracle = duck(
        MARKS
        + """
        , assigned AS (SELECT marks.*, make_timestamp((e - e % 10000) * 1000) AS ws FROM marks)
        SELECT k, ws, coalesce(sum(v * v), 0)::BIGINT AS q FROM assigned
        WHERE (wm IS NULL OR ws + INTERVAL 10 SECOND - INTERVAL 1 MILLISECOND > wm)
          AND ws + INTERVAL 10 SECOND - INTERVAL 1 MILLISECOND <= (SELECT fwm FROM final)
        GROUP BY k, ws ORDER BY k, ws""",
        src=frame(rows),
    )
    actual = naive(read_sink(tmp_path / "out")).sort("k", "ws", nulls_last=True)
    assert actual.get_column("q").to_list() == oracle.sort("k", "ws", nulls_last=True).get_column("q").to_list()


def test_a_plan_carries_its_udaf(tmp_path: Path) -> None:
    """A planned aggregate call holds its UDAF: the plan runs after the name leaves the registry (a plan shipped
    to another process has no registry), and a same-named UDAF registered later does not change it."""
    planned = udaf(
        "SUM_CUBES",
        {"s": pl.Int64()},
        partial=lambda x: {"s": (x.cast(pl.Int64) ** 3).sum()},
        merge=lambda a, b: {"s": a["s"] + b["s"]},
        finish=lambda st: st["s"],
        result_type=pl.Int64(),
    )
    rows = make_rows(5, 40)
    write_input(tmp_path, rows)
    sink = "CREATE TABLE out (k STRING, ws TIMESTAMP(3), q BIGINT) WITH ('connector' = 'delta', 'path' = 'out');"
    query = (
        "INSERT INTO out SELECT k, window_start, SUM_CUBES(v) FROM TABLE(TUMBLE(TABLE events, DESCRIPTOR(ts), "
        "INTERVAL '10' SECOND)) GROUP BY k, window_start, window_end;"
    )
    plan = plan_script(SOURCE + sink + query)
    assert [a.udaf for n in plan.nodes if isinstance(n, Aggregate) for a in n.aggs] == [planned]
    del AGGREGATES["SUM_CUBES"]
    udaf("SUM_CUBES", {"s": pl.Int64()}, lambda x: {"s": x.sum()}, lambda a, b: a, lambda st: st["s"], pl.Int64())
    try:
        Pipeline(plan, tmp_path / "state", tmp_path).run(once=True, max_epoch_rows=7)
    finally:
        del AGGREGATES["SUM_CUBES"]
    oracle = duck(
        MARKS
        + """
        , assigned AS (SELECT marks.*, make_timestamp((e - e % 10000) * 1000) AS ws FROM marks)
        SELECT k, ws, coalesce(sum(v * v * v), 0)::BIGINT AS q FROM assigned
        WHERE (wm IS NULL OR ws + INTERVAL 10 SECOND - INTERVAL 1 MILLISECOND > wm)
          AND ws + INTERVAL 10 SECOND - INTERVAL 1 MILLISECOND <= (SELECT fwm FROM final)
        GROUP BY k, ws ORDER BY k, ws""",
        src=frame(rows),
    )
    actual = naive(read_sink(tmp_path / "out")).sort("k", "ws", nulls_last=True)
    assert actual.get_column("q").to_list() == oracle.sort("k", "ws", nulls_last=True).get_column("q").to_list()


def test_an_idle_source_does_not_hold_the_watermark_back(tmp_path: Path) -> None:
    rows = make_rows(6, 60, late_share=0)
    write_input(tmp_path, rows)
    (tmp_path / "quiet").mkdir()
    template = (
        SOURCE
        + """
    CREATE TABLE quiet (seq BIGINT, k STRING, v INT, ts TIMESTAMP(3),
      WATERMARK FOR ts AS ts - INTERVAL '5' SECOND
    ) WITH ('connector' = 'filesystem', 'path' = 'quiet', 'format' = 'json'{options});
    CREATE TEMPORARY VIEW everything AS SELECT * FROM events UNION ALL SELECT * FROM quiet;
    CREATE TABLE counts (ws TIMESTAMP(3), n BIGINT) WITH ('connector' = 'delta', 'path' = '{sink}');
    INSERT INTO counts SELECT window_start, COUNT(*)
    FROM TABLE(TUMBLE(TABLE everything, DESCRIPTOR(ts), INTERVAL '10' SECOND)) GROUP BY window_start, window_end;
    """
    )
    run(tmp_path, template.format(options="", sink="held"), state="held-state")
    assert read_sink(tmp_path / "held").height == 0  # the silent source has no watermark yet: nothing fires
    idle = ", 'scan.watermark.idle-timeout' = '0 ms'"
    run(tmp_path, template.format(options=idle, sink="fired"), state="idle-state")
    fired = read_sink(tmp_path / "fired")
    assert fired.height > 0 and fired.get_column("n").sum() > 0


def test_windows_cascade_through_window_time(tmp_path: Path) -> None:
    rows = make_rows(14, 150, late_share=0)
    write_input(tmp_path, rows)
    sql = (
        SOURCE
        + """
    CREATE TEMPORARY VIEW per10 AS
      SELECT k, window_start, window_end, window_time, COUNT(*) AS c
      FROM TABLE(TUMBLE(TABLE events, DESCRIPTOR(ts), INTERVAL '10' SECOND))
      GROUP BY k, window_start, window_end, window_time;
    CREATE TABLE per30 (k STRING, ws TIMESTAMP(3), c BIGINT, windows BIGINT)
    WITH ('connector' = 'delta', 'path' = 'per30');
    INSERT INTO per30 SELECT k, window_start, SUM(c), COUNT(*)
    FROM TABLE(TUMBLE(TABLE per10, DESCRIPTOR(window_time), INTERVAL '30' SECOND))
    GROUP BY k, window_start, window_end;
    """
    )
    run(tmp_path, sql, max_epoch_rows=8)
    actual = naive(read_sink(tmp_path / "per30")).sort("k", "ws", nulls_last=True)
    expected = duck(
        MARKS
        + """
        , inner_windows AS (
          SELECT k, make_timestamp((e - e % 10000) * 1000) AS ws10, count(*) AS c FROM marks
          WHERE (wm IS NULL OR make_timestamp((e - e % 10000 + 10000) * 1000) - INTERVAL 1 MILLISECOND > wm)
            AND make_timestamp((e - e % 10000 + 10000) * 1000) - INTERVAL 1 MILLISECOND <= (SELECT fwm FROM final)
          GROUP BY k, ws10)
        SELECT k, make_timestamp((epoch_ms(ws10) - epoch_ms(ws10) % 30000) * 1000) AS ws, sum(c) AS c,
               count(*) AS windows
        FROM inner_windows
        WHERE make_timestamp((epoch_ms(ws10) - epoch_ms(ws10) % 30000 + 30000) * 1000) - INTERVAL 1 MILLISECOND
              <= (SELECT fwm FROM final)
        GROUP BY k, ws ORDER BY k, ws NULLS LAST""",
        src=frame(rows),
    )
    assert actual.height > 0
    assert actual.rows() == naive(expected).cast(actual.schema).rows()  # type: ignore[arg-type]


def test_processing_time_windows_fire_in_epochs_without_rows(tmp_path: Path) -> None:
    from engine import Pipeline

    script = tmp_path / "p.sql"
    script.write_text("""
    CREATE TABLE clicks (page STRING, proc AS PROCTIME())
    WITH ('connector' = 'datagen', 'number-of-rows' = '100', 'rows-per-second' = '1000000',
          'fields.page.values' = 'home,cart,help');
    CREATE TABLE per_second (page STRING, ws TIMESTAMP(3), we TIMESTAMP(3), n BIGINT)
    WITH ('connector' = 'delta', 'path' = 'per_second');
    INSERT INTO per_second SELECT page, window_start, window_end, COUNT(*)
    FROM TABLE(TUMBLE(TABLE clicks, DESCRIPTOR(proc), INTERVAL '1' SECOND)) GROUP BY page, window_start, window_end;
    """)
    reports: list = []
    summary = Pipeline.from_sql(script, state=tmp_path / "state").run(
        trigger=0.1, max_epochs=2, on_epoch=reports.append
    )
    assert summary["epochs"] == 2
    assert reports[0].rows_in == {"clicks": 100} and reports[1].rows_in == {}  # the second epoch only fires
    out = read_sink(tmp_path / "per_second")
    assert out.get_column("n").sum() == 100 and set(out.get_column("page")) == {"home", "cart", "help"}
    assert out.get_column("ws").n_unique() == 1


SESSION_EDGE_SQL = (
    SOURCE
    + """
CREATE TABLE sessions (k STRING, ws TIMESTAMP(3), we TIMESTAMP(3), n BIGINT, a DOUBLE, flink_avg INT)
WITH ('connector' = 'delta', 'path' = 'sessions');
INSERT INTO sessions
SELECT k, window_start, window_end, COUNT(*), AVG(v), CAST(AVG(v) AS INT)
FROM TABLE(SESSION(TABLE events PARTITION BY k, DESCRIPTOR(ts), INTERVAL '10' SECOND))
GROUP BY k, window_start, window_end;
"""
)


@pytest.mark.parametrize("max_rows", [None, 1])
def test_session_rows_exactly_one_gap_apart_merge(tmp_path: Path, max_rows: int | None) -> None:
    """Each row opens [ts, ts + gap); a row joins a session when its ts is at most the session's end (the latest
    row's ts + gap): exactly one gap apart merges, one gap and 1 ms apart does not. Documented in docs/sql.md.
    AVG of an INT column is DOUBLE (Flink would give the truncated INT; the CAST gives that value)."""
    at = [  # (key, ms after BASE_MS, v), in arrival order
        ("a", 0, 1),
        ("b", 10_000, 1),
        ("b", 0, 2),  # out of order (within the watermark delay), exactly one gap before: merges backwards
        ("a", 10_000, 2),  # exactly one gap after the first row: same session
        ("a", 20_000, 2),  # exactly one gap after the second: the session grows again
        ("a", 30_001, 4),  # one gap and 1 ms after the last row: a new session
        ("a", 40_001, 5),
        ("z", 120_000, 0),  # moves the watermark past every session above
    ]
    rows = [{"seq": i, "k": k, "v": v, "ts": BASE_MS + ms} for i, (k, ms, v) in enumerate(at)]
    write_jsonl(tmp_path / "in" / "part-0.json", rows)
    run(tmp_path, SESSION_EDGE_SQL, max_epoch_rows=max_rows)
    out = read_sink(tmp_path / "sessions").sort("k", "ws")
    start = pl.datetime(2026, 1, 1, time_zone="UTC")
    expected = pl.DataFrame(
        {
            "k": ["a", "a", "b"],
            "ws": [0, 30_001, 0],
            "we": [30_000, 50_001, 20_000],
            "n": [3, 2, 2],
            "a": [5 / 3, 4.5, 1.5],
            "flink_avg": [1, 4, 1],
        }
    ).with_columns(
        (start + pl.duration(milliseconds=pl.col("ws"))).alias("ws"),
        (start + pl.duration(milliseconds=pl.col("we"))).alias("we"),
    )
    assert out.schema["a"] == pl.Float64
    assert (
        out.select("k", "ws", "we", "n", "flink_avg").rows()
        == expected.select("k", "ws", "we", "n", "flink_avg").rows()
    )
    assert out.get_column("a").to_list() == pytest.approx(expected.get_column("a").to_list())
