"""Top-N and deduplication against DuckDB, over append-only and updating inputs."""

from __future__ import annotations

import random
import shutil
import tempfile
from pathlib import Path

import polars as pl
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from tests.helpers import duck, examples, naive, read_sink, run, sort_all, write_jsonl

BASE_MS = 1_767_225_600_000
SOURCE = """
CREATE TABLE orders (id BIGINT, cust STRING, amount INT, ts TIMESTAMP(3),
  WATERMARK FOR ts AS ts - INTERVAL '5' SECOND)
WITH ('connector' = 'filesystem', 'path' = 'orders', 'format' = 'json');
"""


def make(seed: int, count: int) -> list[dict[str, object]]:
    rng = random.Random(seed)
    return [
        {
            "id": i,
            "cust": rng.choice(["ann", "bob", "cy", "dee", None]),
            "amount": rng.randint(1, 20),
            "ts": BASE_MS + i * 1000 - rng.randint(0, 4) * 1000,
        }
        for i in range(count)
    ]


def frame(rows: list[dict[str, object]]) -> pl.DataFrame:
    df = pl.DataFrame(rows, schema={"id": pl.Int64, "cust": pl.String, "amount": pl.Int32, "ts": pl.Int64})
    return df.with_columns(pl.col("ts").cast(pl.Datetime("ms")).dt.replace_time_zone("UTC"))


def write(root: Path, rows: list[dict[str, object]]) -> None:
    half = len(rows) // 2
    write_jsonl(root / "orders" / "1.json", rows[:half])
    write_jsonl(root / "orders" / "2.json", rows[half:])


TOP3 = """
CREATE TABLE top3 (cust STRING, id BIGINT, amount INT, rn BIGINT, PRIMARY KEY (cust, rn) NOT ENFORCED)
WITH ('connector' = 'delta', 'path' = 'top3');
INSERT INTO top3 SELECT cust, id, amount, rn FROM (
  SELECT *, ROW_NUMBER() OVER (PARTITION BY cust ORDER BY amount DESC, id) AS rn FROM orders
) WHERE rn <= 3;
"""
TOP3_ORACLE = """SELECT cust, id, amount, rn FROM (
  SELECT *, row_number() OVER (PARTITION BY cust ORDER BY amount DESC, id) AS rn FROM src) WHERE rn <= 3"""


@settings(max_examples=examples(8), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 10_000), count=st.integers(0, 50), max_rows=st.one_of(st.none(), st.integers(1, 12)))
def test_top_n_matches_duckdb_whatever_the_epoch_size(seed: int, count: int, max_rows: int | None) -> None:
    root = Path(tempfile.mkdtemp())
    try:
        rows = make(seed, count)
        write(root, rows)
        run(root, SOURCE + TOP3, max_epoch_rows=max_rows)
        assert_frame_equal(
            sort_all(read_sink(root / "top3")), sort_all(duck(TOP3_ORACLE, src=frame(rows))), check_dtypes=False
        )
    finally:
        shutil.rmtree(root)


def test_top_n_without_rank_and_over_an_updating_input(tmp_path: Path) -> None:
    rows = make(5, 80)
    write(tmp_path, rows)
    sql = (
        SOURCE
        + """
    CREATE TABLE biggest (id BIGINT, amount INT, PRIMARY KEY (id) NOT ENFORCED)
    WITH ('connector' = 'delta', 'path' = 'biggest');
    INSERT INTO biggest SELECT id, amount FROM (
      SELECT *, ROW_NUMBER() OVER (ORDER BY amount DESC, id) AS rn FROM orders) WHERE rn <= 5;
    CREATE TABLE leaders (cust STRING, total BIGINT, PRIMARY KEY (cust) NOT ENFORCED)
    WITH ('connector' = 'delta', 'path' = 'leaders');
    INSERT INTO leaders SELECT cust, total FROM (
      SELECT cust, total, ROW_NUMBER() OVER (ORDER BY total DESC, cust) AS rn FROM (
        SELECT cust, SUM(amount) AS total FROM orders GROUP BY cust)
    ) WHERE rn <= 2;
    """
    )
    run(tmp_path, sql, max_epoch_rows=7)
    biggest = duck("SELECT id, amount FROM src ORDER BY amount DESC, id LIMIT 5", src=frame(rows))
    assert_frame_equal(sort_all(read_sink(tmp_path / "biggest")), sort_all(biggest), check_dtypes=False)
    leaders = duck(
        """SELECT cust, sum(amount) AS total FROM src GROUP BY cust
                      ORDER BY total DESC, cust NULLS LAST LIMIT 2""",
        src=frame(rows),
    )
    assert_frame_equal(sort_all(read_sink(tmp_path / "leaders")), sort_all(leaders), check_dtypes=False)


def test_deduplication_keep_last_and_keep_first(tmp_path: Path) -> None:
    rows = make(7, 90)
    write(tmp_path, rows)
    sql = (
        SOURCE
        + """
    CREATE TABLE latest (cust STRING, id BIGINT, PRIMARY KEY (cust) NOT ENFORCED)
    WITH ('connector' = 'delta', 'path' = 'latest');
    INSERT INTO latest SELECT cust, id FROM (
      SELECT *, ROW_NUMBER() OVER (PARTITION BY cust ORDER BY ts DESC, id DESC) AS rn FROM orders) WHERE rn = 1;
    CREATE TABLE firsts (cust STRING, id BIGINT, ts TIMESTAMP(3)) WITH ('connector' = 'delta', 'path' = 'firsts');
    INSERT INTO firsts SELECT cust, id, ts FROM (
      SELECT *, ROW_NUMBER() OVER (PARTITION BY cust ORDER BY ts ASC) AS rn FROM orders) WHERE rn = 1;
    """
    )
    plan_text = run(tmp_path, sql, max_epoch_rows=9)
    assert plan_text["rows_out"]["firsts"] == read_sink(tmp_path / "firsts").height  # append-only: no updates
    latest = duck(
        """SELECT cust, id FROM (SELECT *, row_number() OVER (PARTITION BY cust ORDER BY ts DESC, id DESC)
                     AS rn FROM src) WHERE rn = 1""",
        src=frame(rows),
    )
    assert_frame_equal(sort_all(read_sink(tmp_path / "latest")), sort_all(latest), check_dtypes=False)
    final_wm = max(int(r["ts"]) for r in rows) - 5000  # type: ignore[call-overload]
    firsts = duck(
        f"""SELECT cust, id, ts FROM (SELECT *, row_number() OVER (PARTITION BY cust ORDER BY ts, id) AS rn
                      FROM src) WHERE rn = 1 AND epoch_ms(ts) <= {final_wm}""",
        src=frame(rows),
    )
    assert_frame_equal(sort_all(naive(read_sink(tmp_path / "firsts"))), sort_all(naive(firsts)), check_dtypes=False)
