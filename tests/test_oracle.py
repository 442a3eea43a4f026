"""Differential tests: each stateless function and operator, streamed through timelapse, equals DuckDB
evaluating the equivalent SQL over all the input in one batch. Inputs include NULLs, unicode and negatives."""

from __future__ import annotations

import math
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from tests.helpers import duck, naive, read_sink, run, write_jsonl

ROWS = [
    {
        "id": 1,
        "name": "alpha",
        "n": 1,
        "temperature": 31.25,
        "ts": "2026-03-01T10:15:30Z",
        "path": "a/b/c",
        "numtext": "12",
        "pad": "  x  ",
        "ms": 1767225600123,
    },
    {
        "id": 2,
        "name": "Bravo_b",
        "n": -7,
        "temperature": 29.5,
        "ts": "2026-03-01T23:59:59.250Z",
        "path": "one",
        "numtext": "x1",
        "pad": "y ",
        "ms": 0,
    },
    {
        "id": 3,
        "name": None,
        "n": None,
        "temperature": None,
        "ts": "2026-02-28T00:00:00Z",
        "path": None,
        "numtext": None,
        "pad": None,
        "ms": None,
    },
    {
        "id": 4,
        "name": "ünïcødé✓",
        "n": 2,
        "temperature": -2.5,
        "ts": "2026-03-02T05:00:00Z",
        "path": "/lead/x",
        "numtext": "-5",
        "pad": "",
        "ms": -1000,
    },
    {
        "id": 5,
        "name": "a%b",
        "n": 7,
        "temperature": 30.0,
        "ts": "2026-03-07T12:00:00Z",
        "path": "x//y",
        "numtext": " 3 ",
        "pad": "\tz",
        "ms": 1700000000000,
    },
    {
        "id": 6,
        "name": "abc",
        "n": 0,
        "temperature": 2.5,
        "ts": "2026-03-08T18:30:00Z",
        "path": "p/q",
        "numtext": "3.5",
        "pad": "w",
        "ms": 86400000,
    },
]

SOURCE = """
CREATE TABLE src (
  id BIGINT, name STRING, n INT, temperature DOUBLE, ts TIMESTAMP(3), path STRING, numtext STRING, pad STRING,
  ms BIGINT
) WITH ('connector' = 'filesystem', 'path' = 'in', 'format' = 'json');
"""

# (timelapse expression, DuckDB expression, SQL type of the result)
CASES: list[tuple[str, str, str]] = [
    ("temperature * 2 + 1", "temperature * 2 + 1", "DOUBLE"),
    ("n - 3", "n - 3", "INT"),
    ("-n", "-n", "INT"),
    ("n / 2", "CASE WHEN 2 = 0 THEN NULL ELSE trunc(n / 2) END", "INT"),
    ("n / n", "CASE WHEN n = 0 THEN NULL ELSE trunc(n / n) END", "INT"),
    ("temperature / 2", "temperature / 2", "DOUBLE"),
    ("MOD(n, 3)", "n % 3", "INT"),
    ("n % -3", "n % -3", "INT"),
    ("ABS(n)", "abs(n)", "INT"),
    ("ROUND(temperature, 1)", "round(temperature, 1)", "DOUBLE"),
    ("ROUND(temperature)", "round(temperature)", "DOUBLE"),
    ("FLOOR(temperature)", "floor(temperature)", "DOUBLE"),
    ("CEIL(temperature)", "ceil(temperature)", "DOUBLE"),
    ("UPPER(name)", "upper(name)", "STRING"),
    ("LOWER(name)", "lower(name)", "STRING"),
    ("TRIM(pad)", "trim(pad, ' ')", "STRING"),
    ("SUBSTRING(name, 2, 3)", "substring(name, 2, 3)", "STRING"),
    ("SUBSTRING(name, 3)", "substring(name, 3)", "STRING"),
    ("CONCAT(name, '-', path)", "name || '-' || path", "STRING"),
    ("name || '!'", "name || '!'", "STRING"),
    ("CHAR_LENGTH(name)", "length(name)", "INT"),
    (
        "REGEXP_EXTRACT(name, '([a-z]+)_([a-z])', 2)",
        "nullif(regexp_extract(name, '([a-z]+)_([a-z])', 2), '')",
        "STRING",
    ),
    (
        "SPLIT_INDEX(path, '/', 1)",
        "CASE WHEN len(string_split(path, '/')) > 1 THEN string_split(path, '/')[2] END",
        "STRING",
    ),
    (
        "CASE WHEN temperature > 30 THEN 'hot' WHEN temperature IS NULL THEN 'unknown' ELSE 'ok' END",
        "CASE WHEN temperature > 30 THEN 'hot' WHEN temperature IS NULL THEN 'unknown' ELSE 'ok' END",
        "STRING",
    ),
    ("CASE n WHEN 1 THEN 'one' WHEN 2 THEN 'two' END", "CASE n WHEN 1 THEN 'one' WHEN 2 THEN 'two' END", "STRING"),
    ("COALESCE(name, path, 'none')", "coalesce(name, path, 'none')", "STRING"),
    ("NULLIF(n, 2)", "nullif(n, 2)", "INT"),
    ("n IN (1, 2, NULL)", "n IN (1, 2, NULL)", "BOOLEAN"),
    ("n NOT IN (1, 2)", "n NOT IN (1, 2)", "BOOLEAN"),
    ("temperature BETWEEN 2.5 AND 30", "temperature BETWEEN 2.5 AND 30", "BOOLEAN"),
    ("name LIKE 'a%'", "name LIKE 'a%'", "BOOLEAN"),
    ("name NOT LIKE '%_b'", "name NOT LIKE '%_b'", "BOOLEAN"),
    ("name LIKE 'a!%b' ESCAPE '!'", "name LIKE 'a!%b' ESCAPE '!'", "BOOLEAN"),
    ("name IS NULL", "name IS NULL", "BOOLEAN"),
    ("temperature IS NOT NULL", "temperature IS NOT NULL", "BOOLEAN"),
    ("NOT (n > 1 AND temperature < 30)", "NOT (n > 1 AND temperature < 30)", "BOOLEAN"),
    ("n > 1 OR temperature < 30", "n > 1 OR temperature < 30", "BOOLEAN"),
    ("CAST(n AS STRING)", "CAST(n AS VARCHAR)", "STRING"),
    # Flink reads only integer text as INT ('3.5' is not an INT); DuckDB would round it.
    (
        "CAST(numtext AS INT)",
        "CASE WHEN regexp_matches(trim(numtext), '^-?[0-9]+$') THEN TRY_CAST(trim(numtext) AS INTEGER) END",
        "INT",
    ),
    ("CAST(numtext AS DOUBLE)", "TRY_CAST(trim(numtext) AS DOUBLE)", "DOUBLE"),
    ("CAST(temperature AS BIGINT)", "CAST(trunc(temperature) AS BIGINT)", "BIGINT"),
    ("EXTRACT(HOUR FROM ts)", "extract(hour FROM ts)", "BIGINT"),
    ("EXTRACT(YEAR FROM ts)", "extract(year FROM ts)", "BIGINT"),
    ("EXTRACT(DOW FROM ts)", "dayofweek(ts) + 1", "BIGINT"),
    ("HOUR(ts)", "hour(ts)", "BIGINT"),
    ("MINUTE(ts)", "minute(ts)", "BIGINT"),
    ("DATE_FORMAT(ts, 'yyyy-MM-dd HH:mm')", "strftime(ts, '%Y-%m-%d %H:%M')", "STRING"),
    ("DATE_FORMAT(ts, 'yyyy-MM-dd''T''HH:mm:ss.SSS')", "strftime(ts, '%Y-%m-%dT%H:%M:%S.%g')", "STRING"),
    ("TO_TIMESTAMP_LTZ(ms, 3)", "make_timestamp(ms * 1000)", "TIMESTAMP(3)"),
    ("ts + INTERVAL '90' MINUTE", "ts + INTERVAL 90 MINUTE", "TIMESTAMP(3)"),
    ("ts > TIMESTAMP '2026-03-02 00:00:00'", "ts > TIMESTAMP '2026-03-02 00:00:00'", "BOOLEAN"),
    ("ts > '2026-03-02 00:00:00'", "ts > TIMESTAMP '2026-03-02 00:00:00'", "BOOLEAN"),
]


def _stream(tmp_path: Path, exprs: list[str], types: list[str], where: str = "") -> pl.DataFrame:
    write_jsonl(tmp_path / "in" / "part-1.json", ROWS[:3])
    write_jsonl(tmp_path / "in" / "part-2.json", ROWS[3:])
    columns = ", ".join(f"c{i} {t}" for i, t in enumerate(types))
    select = ", ".join(exprs)
    sql = (
        SOURCE + f"CREATE TABLE out (id BIGINT, {columns}) WITH ('connector' = 'delta', 'path' = 'out');\n"
        f"INSERT INTO out SELECT id, {select} FROM src {where};"
    )
    run(tmp_path, sql, max_epoch_rows=2)
    return naive(read_sink(tmp_path / "out")).sort("id")


def _input() -> pl.DataFrame:
    frame = pl.DataFrame(
        ROWS,
        schema={
            "id": pl.Int64,
            "name": pl.String,
            "n": pl.Int32,
            "temperature": pl.Float64,
            "ts": pl.String,
            "path": pl.String,
            "numtext": pl.String,
            "pad": pl.String,
            "ms": pl.Int64,
        },
    )
    return frame.with_columns(pl.col("ts").str.to_datetime(time_zone="UTC", time_unit="ms"))


def _compare(actual: pl.Series, expected: pl.Series, label: str) -> None:
    assert actual.len() == expected.len(), label
    for a, e in zip(actual.to_list(), expected.to_list(), strict=True):
        if isinstance(a, float) and e is not None:
            assert math.isclose(a, float(e), rel_tol=1e-9, abs_tol=1e-9), f"{label}: {a} != {e}"
        else:
            assert a == e, f"{label}: {a!r} != {e!r}"


def test_every_function_matches_duckdb(tmp_path: Path) -> None:
    streamed = _stream(tmp_path, [c[0] for c in CASES], [c[2] for c in CASES])
    select = ", ".join(f"{c[1]} AS c{i}" for i, c in enumerate(CASES))
    oracle = duck(f"SELECT id, {select} FROM src ORDER BY id", src=_input())
    for i, (flink, _, _) in enumerate(CASES):
        _compare(streamed.get_column(f"c{i}"), naive(oracle).to_series(i + 1), flink)


@pytest.mark.parametrize(
    "where",
    [
        "WHERE temperature > 30",
        "WHERE n > 1 OR temperature > 30",
        "WHERE NOT (name LIKE 'a%')",
        "WHERE n IN (1, NULL)",
        "WHERE name IS NULL OR n NOT BETWEEN 0 AND 2",
        "WHERE FALSE",
    ],
)
def test_filters_use_three_valued_logic(tmp_path: Path, where: str) -> None:
    streamed = _stream(tmp_path, ["name"], ["STRING"], where)
    oracle = duck(f"SELECT id, name FROM src {where} ORDER BY id", src=_input())
    assert streamed.get_column("id").to_list() == oracle.get_column("id").to_list()


def test_union_all_subqueries_and_views(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "in" / "part-1.json", ROWS)
    sql = (
        SOURCE
        + """
    CREATE TEMPORARY VIEW warm AS SELECT id, temperature FROM src WHERE temperature > 10;
    CREATE TABLE out (id BIGINT, t DOUBLE, tag STRING) WITH ('connector' = 'delta', 'path' = 'out');
    INSERT INTO out
      SELECT id, temperature, 'warm' FROM warm
      UNION ALL
      SELECT q.id, q.t * 10, 'scaled' FROM (SELECT id, temperature AS t FROM src WHERE n < 2) AS q;
    """
    )
    run(tmp_path, sql, max_epoch_rows=4)
    streamed = read_sink(tmp_path / "out").sort("id", "tag")
    oracle = duck(
        "SELECT id, temperature AS t, 'warm' AS tag FROM src WHERE temperature > 10 "
        "UNION ALL SELECT id, temperature * 10, 'scaled' FROM src WHERE n < 2 ORDER BY id, tag",
        src=_input(),
    )
    assert_frame_equal(streamed, oracle, check_dtypes=False)


def test_empty_input_commits_nothing_and_fails_nothing(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "empty.json").write_text("")
    sql = (
        SOURCE
        + """
    CREATE TABLE out (id BIGINT) WITH ('connector' = 'delta', 'path' = 'out');
    INSERT INTO out SELECT id FROM src;
    """
    )
    summary = run(tmp_path, sql)
    assert read_sink(tmp_path / "out").height == 0
    assert summary["rows_out"].get("out", 0) == 0
