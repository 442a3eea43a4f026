"""Flink's own documentation examples, run as a Flink user would bring them: the SQL as Flink's docs write it, only
the connector WITH clauses swapped for local files and Delta tables holding the docs' sample rows. Each result is
checked against the output Flink's docs print (or, where they print none, DuckDB over the same rows).

Pages: "Window Top-N", "Window Deduplication", "Top-N", "Deduplication", "Versioned Tables" and "Joins"
(event-time temporal join), "Pattern Recognition" (MATCH_RECOGNIZE over the Ticker table), "SQL Client"
(EXECUTE STATEMENT SET), "CREATE statements" (views, functions), "Joins" (array expansion) and the "System
(Built-in) Functions" examples (JSON, collections, value construction).

Where a docs example does not run in Flink either (a trailing comma before FROM, a missing comma in DEFINE, a
column the table does not have), the test says so and checks that timelapse refuses it in one line with the
position, as Flink's parser would.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from engine import Pipeline
from tests.helpers import duck, read_sink, sort_all, write_jsonl

UTC = dt.UTC


def ts(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=UTC)


def run_flink_sql(root: Path, sql: str, inputs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Write each input as JSON lines under `root/<name>/`, then run the script to the end of its input (drained:
    the bounded input's final watermark, as Flink's bounded sources end)."""
    for name, rows in inputs.items():
        write_jsonl(root / name / "part-0.json", rows)
    script = root / "pipeline.sql"
    script.write_text(sql)
    return Pipeline.from_sql(script, state=root / "state").run(drain=True)


def cli(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "engine.cli", *args], cwd=root, capture_output=True, text=True, timeout=300
    )


def assert_one_line_error(root: Path, sql: str, line: int, fragment: str) -> str:
    """`timelapse run` refuses the script: exit code 2, one line on stderr naming the line and a column."""
    (root / "pipeline.sql").write_text(sql)
    result = cli(root, "run", "pipeline.sql", "--state", "state", "--once")
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"error: line {line}, column "), lines[0]
    assert fragment in lines[0], lines[0]
    return lines[0]


def rows(frame: pl.DataFrame) -> list[tuple[Any, ...]]:
    return [tuple(r) for r in sort_all(frame).iter_rows()]


# -- "Window Top-N" and "Window Deduplication": the Bid table ------------------------------------------------------
BID_ROWS = [
    ("08:05", "4.00", "A", "supplier1"),
    ("08:06", "4.00", "C", "supplier2"),
    ("08:07", "2.00", "G", "supplier1"),
    ("08:08", "2.00", "B", "supplier3"),
    ("08:09", "5.00", "D", "supplier4"),
    ("08:11", "2.00", "B", "supplier3"),
    ("08:13", "1.00", "E", "supplier1"),
    ("08:15", "3.00", "H", "supplier2"),
    ("08:17", "6.00", "F", "supplier5"),
]
BID = [{"bidtime": f"2020-04-15 {t}:00", "price": float(p), "item": i, "supplier_id": s} for t, p, i, s in BID_ROWS]
BID_DDL = """
CREATE TABLE Bid (
  bidtime TIMESTAMP(3),
  price DECIMAL(10, 2),
  item STRING,
  supplier_id STRING,
  WATERMARK FOR bidtime AS bidtime - INTERVAL '1' SECOND
) WITH ('connector' = 'filesystem', 'path' = 'bid', 'format' = 'json');
"""


def w(hhmm: str) -> dt.datetime:
    return ts(f"2020-04-15 {hhmm}:00")


def test_window_top_n_after_window_aggregation(tmp_path: Path) -> None:
    sql = BID_DDL + """
CREATE TABLE out (window_start TIMESTAMP(3), window_end TIMESTAMP(3), supplier_id STRING, price DECIMAL(10, 2),
  cnt BIGINT, rownum BIGINT) WITH ('connector' = 'delta', 'path' = 'out');
INSERT INTO out
SELECT *
  FROM (
    SELECT *, ROW_NUMBER() OVER (PARTITION BY window_start, window_end ORDER BY price DESC) as rownum
    FROM (
      SELECT window_start, window_end, supplier_id, SUM(price) as price, COUNT(*) as cnt
      FROM TABLE(
        TUMBLE(TABLE Bid, DESCRIPTOR(bidtime), INTERVAL '10' MINUTES))
      GROUP BY window_start, window_end, supplier_id
    )
  ) WHERE rownum <= 3;
"""
    run_flink_sql(tmp_path, sql, {"bid": BID})
    flink_says = [
        (w("08:00"), w("08:10"), "supplier1", Decimal("6.00"), 2, 1),
        (w("08:00"), w("08:10"), "supplier4", Decimal("5.00"), 1, 2),
        (w("08:00"), w("08:10"), "supplier2", Decimal("4.00"), 1, 3),
        (w("08:10"), w("08:20"), "supplier5", Decimal("6.00"), 1, 1),
        (w("08:10"), w("08:20"), "supplier2", Decimal("3.00"), 1, 2),
        (w("08:10"), w("08:20"), "supplier3", Decimal("2.00"), 1, 3),
    ]
    assert rows(read_sink(tmp_path / "out")) == sorted(flink_says)


def test_window_top_n_after_windowing_tvf(tmp_path: Path) -> None:
    # SELECT * over TUMBLE has window_time too (Flink's printed output leaves it out), so the sink declares it.
    sql = BID_DDL + """
CREATE TABLE out (bidtime TIMESTAMP(3), price DECIMAL(10, 2), item STRING, supplier_id STRING,
  window_start TIMESTAMP(3), window_end TIMESTAMP(3), window_time TIMESTAMP(3), rownum BIGINT)
WITH ('connector' = 'delta', 'path' = 'out');
INSERT INTO out
SELECT *
  FROM (
    SELECT *, ROW_NUMBER() OVER (PARTITION BY window_start, window_end ORDER BY price DESC) as rownum
    FROM TABLE(
               TUMBLE(TABLE Bid, DESCRIPTOR(bidtime), INTERVAL '10' MINUTES))
  ) WHERE rownum <= 3;
"""
    run_flink_sql(tmp_path, sql, {"bid": BID})
    got = read_sink(tmp_path / "out").drop("window_time")
    flink_says = [
        (w("08:05"), Decimal("4.00"), "A", "supplier1", w("08:00"), w("08:10"), 2),
        (w("08:06"), Decimal("4.00"), "C", "supplier2", w("08:00"), w("08:10"), 3),
        (w("08:09"), Decimal("5.00"), "D", "supplier4", w("08:00"), w("08:10"), 1),
        (w("08:11"), Decimal("2.00"), "B", "supplier3", w("08:10"), w("08:20"), 3),
        (w("08:15"), Decimal("3.00"), "H", "supplier2", w("08:10"), w("08:20"), 2),
        (w("08:17"), Decimal("6.00"), "F", "supplier5", w("08:10"), w("08:20"), 1),
    ]
    # A and C tie at 4.00 in the first window: Flink's order between them is arbitrary, so compare the ranks as a set.
    assert sorted(r[:-1] for r in rows(got)) == sorted(r[:-1] for r in flink_says)
    assert sorted(r[-1] for r in rows(got)) == sorted(r[-1] for r in flink_says)


def test_window_deduplication_keeps_the_last_row_of_each_window(tmp_path: Path) -> None:
    sql = BID_DDL + """
CREATE TABLE out (bidtime TIMESTAMP(3), price DECIMAL(10, 2), item STRING, supplier_id STRING,
  window_start TIMESTAMP(3), window_end TIMESTAMP(3), rownum BIGINT) WITH ('connector' = 'delta', 'path' = 'out');
INSERT INTO out
SELECT *
  FROM (
    SELECT bidtime, price, item, supplier_id, window_start, window_end,
      ROW_NUMBER() OVER (PARTITION BY window_start, window_end ORDER BY bidtime DESC) as rownum
    FROM TABLE(
               TUMBLE(TABLE Bid, DESCRIPTOR(bidtime), INTERVAL '10' MINUTES))
  ) WHERE rownum <= 1;
"""
    run_flink_sql(tmp_path, sql, {"bid": BID})
    flink_says = [
        (w("08:09"), Decimal("5.00"), "D", "supplier4", w("08:00"), w("08:10"), 1),
        (w("08:17"), Decimal("6.00"), "F", "supplier5", w("08:10"), w("08:20"), 1),
    ]
    assert rows(read_sink(tmp_path / "out")) == flink_says
