"""A Delta table's change data feed as a changelog source (`'read.change-data-feed' = 'true'`): a GROUP BY over it
retracts updates and deletes, and with a primary key and a watermark it is the versioned table of an event-time
temporal join; both against DuckDB over the table's contents, whatever the epoch sizes and however many runs the
changes arrive over."""

from __future__ import annotations

import random
from pathlib import Path

import deltalake
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sql.errors import SqlError
from tests.helpers import duck, examples, read_sink, run, sort_all

BASE_MS = 1_767_225_600_000
CDF = {"delta.enableChangeDataFeed": "true"}


def accounts(max_rows: int) -> str:
    return f"""
CREATE TABLE accounts (id BIGINT, region STRING, balance INT, ts TIMESTAMP(3),
  PRIMARY KEY (id) NOT ENFORCED, WATERMARK FOR ts AS ts - INTERVAL '5' SECOND)
WITH ('connector' = 'delta', 'path' = 'accounts', 'read.change-data-feed' = 'true',
      'scan.max-epoch-rows' = '{max_rows}');
"""


TOTALS = """
CREATE TABLE totals (region STRING, n BIGINT, total BIGINT, PRIMARY KEY (region) NOT ENFORCED)
WITH ('connector' = 'delta', 'path' = 'totals');
INSERT INTO totals SELECT region, COUNT(*), SUM(balance) FROM accounts GROUP BY region;
"""


def apply(path: Path, rng: random.Random, live: dict[int, dict], step: int) -> None:
    """One Delta commit of random changes: new rows appended, then an UPDATE and a DELETE of existing ones."""
    new = [
        {
            "id": len(live) + step * 100 + i,
            "region": rng.choice("nsew"),
            "balance": rng.randint(-5, 50),
            "ts": BASE_MS + step * 10_000 + i,
        }
        for i in range(rng.randint(1, 4))
    ]
    frame = pl.DataFrame(new, schema={"id": pl.Int64, "region": pl.String, "balance": pl.Int32, "ts": pl.Int64})
    frame = frame.with_columns(pl.col("ts").cast(pl.Datetime("ms", "UTC")))
    deltalake.write_deltalake(str(path), frame.to_arrow(), mode="append", configuration=CDF)
    live.update({row["id"]: row for row in new})
    table = deltalake.DeltaTable(str(path))
    if live and rng.random() < 0.7:
        key = rng.choice(sorted(live))
        table.update(predicate=f"id = {key}", updates={"balance": str(rng.randint(-5, 50)), "region": "'x'"})
    if len(live) > 1 and rng.random() < 0.5:
        key = rng.choice(sorted(live))
        table.delete(f"id = {key}")
        live.pop(key)


def expected_totals(path: Path) -> pl.DataFrame:
    final = pl.read_delta(str(path))
    return duck("SELECT region, COUNT(*) AS n, SUM(balance) AS total FROM a GROUP BY region", a=final)


@settings(max_examples=examples(12), deadline=None, suppress_health_check=list(HealthCheck))
@given(seed=st.integers(0, 10_000), max_rows=st.sampled_from([1, 3, 1_000]), runs=st.integers(1, 3))
def test_a_group_by_over_the_change_feed_equals_duckdb_over_the_table(
    tmp_path_factory: pytest.TempPathFactory, seed: int, max_rows: int, runs: int
) -> None:
    root = tmp_path_factory.mktemp("cdf")
    rng, live = random.Random(seed), {}
    sql = accounts(max_rows) + TOTALS
    commits = 6
    for step in range(commits):
        apply(root / "accounts", rng, live, step)
        if (step + 1) % (commits // runs) == 0 or step == commits - 1:
            run(root, sql)  # the changes so far, in a run of its own
    got = read_sink(root / "totals").filter(pl.col("n") > 0)
    want = expected_totals(root / "accounts")
    assert sort_all(got.select("region", "n", "total")).equals(
        sort_all(want.cast(got.select("region", "n", "total").schema))
    )


def test_the_change_feed_is_a_versioned_table_for_a_temporal_join(tmp_path: Path) -> None:
    """Rates change by UPDATE in Delta; each order joins the rate valid at its time (DuckDB's ASOF JOIN over the
    versions the feed holds: the inserts and every update's after image)."""
    rates = tmp_path / "rates"
    versions = []

    def commit(frame: pl.DataFrame) -> None:
        frame = frame.with_columns(pl.col("ts").cast(pl.Datetime("ms", "UTC")))
        deltalake.write_deltalake(str(rates), frame.to_arrow(), mode="append", configuration=CDF)

    first = pl.DataFrame({"currency": ["a", "b"], "rate": [10, 20], "ts": [BASE_MS, BASE_MS]})
    commit(first)
    versions += first.to_dicts()
    for i, (key, rate) in enumerate([("a", 11), ("b", 21), ("a", 12)], start=1):
        ts = BASE_MS + i * 10_000
        deltalake.DeltaTable(str(rates)).update(
            predicate=f"currency = '{key}'", updates={"rate": str(rate), "ts": f"to_timestamp_millis({ts})"}
        )
        versions.append({"currency": key, "rate": rate, "ts": ts})
    orders = pl.DataFrame(
        {
            "id": range(8),
            "currency": ["a", "b", "a", "b", "a", "c", "a", "b"],
            "ts": [BASE_MS + i * 5_000 for i in range(8)],
        }
    )
    (tmp_path / "orders").mkdir()
    orders.write_ndjson(tmp_path / "orders" / "part-0.json")
    sql = """
CREATE TABLE orders (id BIGINT, currency STRING, ts TIMESTAMP(3), WATERMARK FOR ts AS ts - INTERVAL '5' SECOND)
WITH ('connector' = 'filesystem', 'path' = 'orders', 'format' = 'json');
CREATE TABLE rates (currency STRING, rate INT, ts TIMESTAMP(3), PRIMARY KEY (currency) NOT ENFORCED,
  WATERMARK FOR ts AS ts - INTERVAL '5' SECOND)
WITH ('connector' = 'delta', 'path' = 'rates', 'read.change-data-feed' = 'true');
CREATE TABLE out (id BIGINT, rate INT) WITH ('connector' = 'delta', 'path' = 'out');
INSERT INTO out SELECT o.id, r.rate FROM orders AS o
  LEFT JOIN rates FOR SYSTEM_TIME AS OF o.ts AS r ON o.currency = r.currency;
"""
    run(tmp_path, sql, drain=True)
    to_time = pl.col("ts").cast(pl.Datetime("ms"))
    want = duck(
        "SELECT o.id, r.rate FROM o ASOF LEFT JOIN v AS r ON o.currency = r.currency AND o.ts >= r.ts",
        o=orders.with_columns(to_time),
        v=pl.DataFrame(versions).with_columns(to_time),
    )
    got = read_sink(tmp_path / "out")
    assert sort_all(got).equals(sort_all(want.cast(got.schema)))


def test_a_table_without_the_feed_is_one_line(tmp_path: Path) -> None:
    frame = pl.DataFrame({"id": [1], "region": ["n"], "balance": [1], "ts": [BASE_MS]})
    frame = frame.with_columns(pl.col("ts").cast(pl.Datetime("ms", "UTC")))
    deltalake.write_deltalake(str(tmp_path / "accounts"), frame.to_arrow())
    with pytest.raises(Exception) as caught:
        run(tmp_path, accounts(1000) + TOTALS)
    message = str(caught.value)
    assert "change data feed" in message and "\n" not in message and "Traceback" not in message
    assert not isinstance(caught.value, SqlError)
