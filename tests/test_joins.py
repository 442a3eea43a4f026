"""Joins against DuckDB: regular INNER/LEFT/RIGHT/FULL, interval joins, lookup joins; bounded state."""

from __future__ import annotations

import json
import random
import shutil
import tempfile
from pathlib import Path

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from tests.helpers import duck, examples, read_sink, run, sort_all, write_jsonl

BASE_MS = 1_767_225_600_000
SOURCES = """
CREATE TABLE orders (id BIGINT, cust BIGINT, amount INT, ts TIMESTAMP(3),
  WATERMARK FOR ts AS ts - INTERVAL '5' SECOND)
WITH ('connector' = 'filesystem', 'path' = 'orders', 'format' = 'json');
CREATE TABLE payments (id BIGINT, cust BIGINT, paid INT, ts TIMESTAMP(3),
  WATERMARK FOR ts AS ts - INTERVAL '5' SECOND)
WITH ('connector' = 'filesystem', 'path' = 'payments', 'format' = 'json');
"""


def make(seed: int, count: int, ids_from: int) -> list[dict[str, object]]:
    rng = random.Random(seed)
    return [
        {
            "id": ids_from + i,
            "cust": rng.choice([1, 2, 3, 4, 5, None]),
            "amount": rng.randint(1, 50),
            "paid": rng.randint(1, 50),
            "ts": BASE_MS + i * 1000 - rng.randint(0, 4) * 1000,
        }
        for i in range(count)
    ]


def frame(rows: list[dict[str, object]]) -> pl.DataFrame:
    df = pl.DataFrame(
        rows, schema={"id": pl.Int64, "cust": pl.Int64, "amount": pl.Int32, "paid": pl.Int32, "ts": pl.Int64}
    )
    return df.with_columns(pl.col("ts").cast(pl.Datetime("ms")).dt.replace_time_zone("UTC"))


def write(root: Path, orders: list[dict[str, object]], payments: list[dict[str, object]]) -> None:
    for name, rows in (("orders", orders), ("payments", payments)):
        half = len(rows) // 2
        write_jsonl(
            root / name / "1.json",
            [{k: v for k, v in r.items() if k != ("paid" if name == "orders" else "amount")} for r in rows[:half]],
        )
        write_jsonl(
            root / name / "2.json",
            [{k: v for k, v in r.items() if k != ("paid" if name == "orders" else "amount")} for r in rows[half:]],
        )


SINK = """
CREATE TABLE out (oid BIGINT, pid BIGINT, amount INT, paid INT, PRIMARY KEY (oid, pid) NOT ENFORCED)
WITH ('connector' = 'delta', 'path' = 'out');
"""


@settings(max_examples=examples(8), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    seed=st.integers(0, 10_000),
    n_orders=st.integers(0, 30),
    n_payments=st.integers(0, 30),
    kind=st.sampled_from(["INNER", "LEFT", "RIGHT", "FULL"]),
    max_rows=st.one_of(st.none(), st.integers(1, 9)),
)
def test_regular_joins_match_duckdb(seed: int, n_orders: int, n_payments: int, kind: str, max_rows: int | None) -> None:
    root = Path(tempfile.mkdtemp())
    try:
        orders, payments = make(seed, n_orders, 0), make(seed + 1, n_payments, 1000)
        write(root, orders, payments)
        query = (
            f"INSERT INTO out SELECT o.id, p.id, o.amount, p.paid FROM orders o {kind} JOIN payments p "
            "ON o.cust = p.cust;"
        )
        run(root, SOURCES + SINK + query, max_epoch_rows=max_rows)
        expected = duck(
            f"SELECT o.id AS oid, p.id AS pid, o.amount, p.paid FROM o {kind} JOIN p ON o.cust = p.cust",
            o=frame(orders),
            p=frame(payments),
        )
        assert_frame_equal(sort_all(read_sink(root / "out")), sort_all(expected), check_dtypes=False)
    finally:
        shutil.rmtree(root)


def test_inner_join_with_a_residual_condition_and_multiway(tmp_path: Path) -> None:
    orders, payments = make(3, 40, 0), make(4, 40, 1000)
    write(tmp_path, orders, payments)
    sql = (
        SOURCES
        + """
    CREATE TABLE out (oid BIGINT, pid BIGINT, qid BIGINT) WITH ('connector' = 'delta', 'path' = 'out');
    INSERT INTO out SELECT o.id, p.id, q.id FROM orders o
      JOIN payments p ON o.cust = p.cust AND p.paid > o.amount
      JOIN payments q ON q.cust = o.cust AND q.id = p.id + 1;
    """
    )
    run(tmp_path, sql, max_epoch_rows=7)
    expected = duck(
        """SELECT o.id AS oid, p.id AS pid, q.id AS qid FROM o JOIN p ON o.cust = p.cust AND p.paid > o.amount
                       JOIN p AS q ON q.cust = o.cust AND q.id = p.id + 1""",
        o=frame(orders),
        p=frame(payments),
    )
    assert_frame_equal(sort_all(read_sink(tmp_path / "out")), sort_all(expected), check_dtypes=False)


@pytest.mark.parametrize("kind", ["INNER", "LEFT", "FULL"])
def test_interval_joins_match_duckdb(tmp_path: Path, kind: str) -> None:
    orders, payments = make(8, 80, 0), make(9, 80, 1000)
    write(tmp_path, orders, payments)
    sql = (
        SOURCES
        + """
    CREATE TABLE out (oid BIGINT, pid BIGINT, amount INT, paid INT) WITH ('connector' = 'delta', 'path' = 'out');
    """
        + (
            f"INSERT INTO out SELECT o.id, p.id, o.amount, p.paid FROM orders o {kind} JOIN payments p "
            "ON o.cust = p.cust AND p.ts BETWEEN o.ts - INTERVAL '2' SECOND AND o.ts + INTERVAL '3' SECOND;"
        )
    )
    summary = run(tmp_path, sql, max_epoch_rows=6)
    assert summary["rows_out"]["out"] > 0
    condition = "o.cust = p.cust AND p.ts BETWEEN o.ts - INTERVAL 2 SECOND AND o.ts + INTERVAL 3 SECOND"
    expected = duck(
        f"SELECT o.id AS oid, p.id AS pid, o.amount, p.paid FROM o {kind} JOIN p ON {condition}",
        o=frame(orders),
        p=frame(payments),
    )
    actual = read_sink(tmp_path / "out")
    if kind != "INNER":
        # Padded rows appear once the watermark passes their bound: compare those the final watermark settled.
        final = max(int(r["ts"]) for r in orders + payments) - 5000  # type: ignore[call-overload]
        settled = {int(r["id"]) for r in orders if int(r["ts"]) + 3000 < final}  # type: ignore[call-overload]
        settled |= {int(r["id"]) for r in payments if int(r["ts"]) + 2000 < final}  # type: ignore[call-overload]
        expected = expected.filter(
            pl.col("pid").is_not_null() & pl.col("oid").is_not_null()
            | pl.col("oid").is_in(settled)
            | pl.col("pid").is_in(settled)
        )
    assert_frame_equal(sort_all(actual), sort_all(expected), check_dtypes=False)


def test_interval_join_state_stays_bounded(tmp_path: Path) -> None:
    sql = """
    CREATE TABLE a (k BIGINT, ts TIMESTAMP(3), WATERMARK FOR ts AS ts - INTERVAL '1' SECOND)
    WITH ('connector' = 'datagen', 'number-of-rows' = '20000', 'rows-per-second' = '100', 'seed' = '1',
          'fields.k.min' = '1', 'fields.k.max' = '50');
    CREATE TABLE b (k BIGINT, ts TIMESTAMP(3), WATERMARK FOR ts AS ts - INTERVAL '1' SECOND)
    WITH ('connector' = 'datagen', 'number-of-rows' = '20000', 'rows-per-second' = '100', 'seed' = '2',
          'fields.k.min' = '1', 'fields.k.max' = '50');
    CREATE TABLE out (k BIGINT, ta TIMESTAMP(3), tb TIMESTAMP(3)) WITH ('connector' = 'blackhole');
    INSERT INTO out SELECT a.k, a.ts, b.ts FROM a JOIN b
      ON a.k = b.k AND b.ts BETWEEN a.ts AND a.ts + INTERVAL '2' SECOND;
    """
    summary = run(tmp_path, sql, max_epoch_rows=1000)
    assert summary["epochs"] == 20
    manifest = pl.read_delta(str(tmp_path / "state" / "manifest")).sort("epoch")
    sizes = [json.loads(m)["state_rows"] for m in manifest.get_column("metrics")]
    join_sizes = [next(iter(s.values())) for s in sizes]
    # 100 rows/s per side, kept for about 3 s of event time: a few hundred rows, whatever the stream's length.
    assert max(join_sizes) < 1500 and join_sizes[-1] <= join_sizes[5] * 1.5
    left = next((tmp_path / "state" / "operators").glob("join-*")) / "left"
    live = pl.read_delta(str(left))
    assert live.filter(~pl.col("_deleted")).height < 40_000


def test_lookup_join_reads_the_latest_dimension(tmp_path: Path) -> None:
    from deltalake import write_deltalake

    write_deltalake(
        str(tmp_path / "customers"), pl.DataFrame({"id": [1, 2, 3], "name": ["ann", "bob", "cy"]}).to_arrow()
    )
    orders = make(5, 20, 0)
    write_jsonl(tmp_path / "orders" / "1.json", [{k: v for k, v in r.items() if k != "paid"} for r in orders])
    (tmp_path / "payments").mkdir()
    sql = (
        SOURCES.replace("'path' = 'orders'", "'path' = 'orders'")
        + """
    CREATE TABLE customers (id BIGINT, name STRING) WITH ('connector' = 'delta', 'path' = 'customers');
    CREATE TABLE out (oid BIGINT, name STRING) WITH ('connector' = 'delta', 'path' = 'out');
    INSERT INTO out SELECT o.id, c.name FROM orders AS o
      LEFT JOIN customers FOR SYSTEM_TIME AS OF o.ts AS c ON o.cust = c.id;
    """
    )
    run(tmp_path, sql, max_epoch_rows=6)
    first = read_sink(tmp_path / "out")
    expected = {int(r["id"]): {1: "ann", 2: "bob", 3: "cy"}.get(r["cust"]) for r in orders}  # type: ignore[call-overload]
    assert dict(first.iter_rows()) == expected
    write_deltalake(str(tmp_path / "customers"), pl.DataFrame({"id": [4], "name": ["dee"]}).to_arrow(), mode="append")
    more = make(6, 10, 100)
    write_jsonl(tmp_path / "orders" / "2.json", [{k: v for k, v in r.items() if k != "paid"} for r in more])
    run(tmp_path, sql)
    later = read_sink(tmp_path / "out").filter(pl.col("oid") >= 100)
    names = {1: "ann", 2: "bob", 3: "cy", 4: "dee"}
    assert dict(later.iter_rows()) == {int(r["id"]): names.get(r["cust"]) for r in more}  # type: ignore[call-overload]


def test_window_join_and_window_top_n(tmp_path: Path) -> None:
    orders, payments = make(31, 120, 0), make(32, 120, 1000)
    write(tmp_path, orders, payments)
    sql = (
        SOURCES
        + """
    CREATE TEMPORARY VIEW o10 AS SELECT cust, window_start, window_end, SUM(amount) AS amount
      FROM TABLE(TUMBLE(TABLE orders, DESCRIPTOR(ts), INTERVAL '10' SECOND)) GROUP BY cust, window_start, window_end;
    CREATE TEMPORARY VIEW p10 AS SELECT cust, window_start, window_end, SUM(paid) AS paid
      FROM TABLE(TUMBLE(TABLE payments, DESCRIPTOR(ts), INTERVAL '10' SECOND)) GROUP BY cust, window_start, window_end;
    CREATE TABLE balance (cust BIGINT, ws TIMESTAMP(3), amount BIGINT, paid BIGINT)
    WITH ('connector' = 'delta', 'path' = 'balance');
    INSERT INTO balance SELECT o.cust, o.window_start, o.amount, p.paid FROM o10 o JOIN p10 p
      ON o.cust = p.cust AND o.window_start = p.window_start AND o.window_end = p.window_end;
    CREATE TABLE top2 (ws TIMESTAMP(3), cust BIGINT, amount BIGINT, rn BIGINT, PRIMARY KEY (ws, rn) NOT ENFORCED)
    WITH ('connector' = 'delta', 'path' = 'top2');
    INSERT INTO top2 SELECT window_start, cust, amount, rn FROM (
      SELECT *, ROW_NUMBER() OVER (PARTITION BY window_start, window_end ORDER BY amount DESC, cust) AS rn FROM o10
    ) WHERE rn <= 2;
    """
    )
    run(tmp_path, sql, max_epoch_rows=11)
    final = max(int(r["ts"]) for r in orders + payments) - 5000  # type: ignore[call-overload]
    closed = f"epoch_ms(ws) + 10000 - 1 <= {final}"
    windows = """
      o10 AS (SELECT cust, make_timestamp((epoch_ms(ts) - epoch_ms(ts) % 10000) * 1000) AS ws, sum(amount) AS amount
              FROM o GROUP BY ALL),
      p10 AS (SELECT cust, make_timestamp((epoch_ms(ts) - epoch_ms(ts) % 10000) * 1000) AS ws, sum(paid) AS paid
              FROM p GROUP BY ALL)"""
    balance = duck(
        f"""WITH {windows} SELECT o10.cust, o10.ws, o10.amount, p10.paid FROM o10 JOIN p10
                       ON o10.cust = p10.cust AND o10.ws = p10.ws WHERE {closed.replace("ws", "o10.ws")}""",
        o=frame(orders),
        p=frame(payments),
    )
    actual = read_sink(tmp_path / "balance").with_columns(pl.col("ws").dt.replace_time_zone(None))
    assert_frame_equal(sort_all(actual), sort_all(balance), check_dtypes=False)
    top2 = duck(
        f"""WITH {windows} SELECT ws, cust, amount, rn FROM (
                      SELECT *, row_number() OVER (PARTITION BY ws ORDER BY amount DESC, cust NULLS LAST) AS rn
                      FROM o10 WHERE {closed}) WHERE rn <= 2""",
        o=frame(orders),
        p=frame(payments),
    )
    actual_top = read_sink(tmp_path / "top2").with_columns(pl.col("ws").dt.replace_time_zone(None))
    assert_frame_equal(sort_all(actual_top), sort_all(top2), check_dtypes=False)
    # The window join forgets windows the watermark has closed: its state holds the open windows only.
    from engine import checkpoint

    last = checkpoint(tmp_path / "state")
    join_rows = {k: v for k, v in json.loads(last["metrics"])["state_rows"].items() if k.startswith("join-")}
    assert join_rows and all(v <= 2 * 5 for v in join_rows.values())  # at most 5 customers x 2 open windows


def test_state_ttl_expires_join_and_group_state(tmp_path: Path) -> None:
    rng = random.Random(2)
    early = [{"id": i, "cust": i, "amount": 1, "paid": 1, "ts": BASE_MS + i * 1000} for i in range(20)]
    late = [{"id": 100 + i, "cust": i, "amount": 1, "paid": 1, "ts": BASE_MS + 600_000 + i * 1000} for i in range(20)]
    del rng
    write_jsonl(tmp_path / "orders" / "1.json", [{k: v for k, v in r.items() if k != "paid"} for r in early])
    write_jsonl(tmp_path / "payments" / "1.json", [{k: v for k, v in r.items() if k != "amount"} for r in late])
    sql = (
        SOURCES
        + """
    CREATE TABLE out (oid BIGINT, pid BIGINT) WITH ('connector' = 'delta', 'path' = 'out');
    INSERT INTO out SELECT /*+ STATE_TTL('1 min', 'event') */ o.id, p.id FROM orders o JOIN payments p
      ON o.cust = p.cust;
    CREATE TABLE counts (cust BIGINT, n BIGINT, PRIMARY KEY (cust) NOT ENFORCED)
    WITH ('connector' = 'delta', 'path' = 'counts');
    INSERT INTO counts SELECT /*+ STATE_TTL('1 min', 'event') */ cust, COUNT(*) FROM orders GROUP BY cust;
    """
    )
    # Orders first, then payments ten minutes of event time later: the orders' state has expired by then.
    # The orders source goes idle, so the watermark follows the payments.
    sql = sql.replace("'format' = 'json'", "'format' = 'json', 'scan.watermark.idle-timeout' = '0 ms'")
    run(tmp_path, sql.replace("'path' = 'payments'", "'path' = 'none'"))
    (tmp_path / "none").mkdir()
    write_jsonl(tmp_path / "none" / "1.json", [{k: v for k, v in r.items() if k != "amount"} for r in late])
    # The GROUP BY reads orders alone, so its event-time clock is the orders' watermark (as in Flink: payments
    # are not upstream of it). One order of a new customer ten minutes later moves it.
    write_jsonl(tmp_path / "orders" / "2.json", [{"id": 999, "cust": 999, "amount": 1, "ts": BASE_MS + 700_000}])
    summary = run(tmp_path, sql.replace("'path' = 'payments'", "'path' = 'none'"))
    assert summary["rows_out"].get("out", 0) == 0
    assert read_sink(tmp_path / "out").height == 0
    operators = tmp_path / "state" / "operators"
    left = pl.read_delta(str(next(operators.glob("join-*")) / "left"))
    live = left.filter(pl.col("_epoch") == pl.col("_epoch").max().over("__k0", "id")).filter(~pl.col("_deleted"))
    assert live.filter(pl.col("id") != 999).height == 0 and "_touched" in left.columns
    group = pl.read_delta(str(next(operators.glob("group-agg-*")) / "state"))
    assert group.filter(pl.col("_deleted")).height == 20  # every group expired through the change log
    assert read_sink(tmp_path / "counts").height == 21  # the sink keeps the results
    manifest = pl.read_delta(str(tmp_path / "state" / "manifest")).sort("epoch")
    ttls = {t["name"]: t["ttl"] for t in manifest.row(-1, named=True)["tables"] if t["role"] == "state"}
    assert set(ttls.values()) == {"60 s event time"}


def test_inner_join_over_an_updating_input(tmp_path: Path) -> None:
    orders, payments = make(41, 60, 0), make(42, 30, 1000)
    write(tmp_path, orders, payments)
    sql = (
        SOURCES
        + """
    CREATE TABLE out (cust BIGINT, n BIGINT, pid BIGINT, PRIMARY KEY (cust, pid) NOT ENFORCED)
    WITH ('connector' = 'delta', 'path' = 'out');
    INSERT INTO out SELECT c.cust, c.n, p.id FROM (SELECT cust, COUNT(*) AS n FROM orders GROUP BY cust) AS c
      JOIN payments p ON c.cust = p.cust;
    """
    )
    run(tmp_path, sql, max_epoch_rows=5)
    expected = duck(
        """SELECT c.cust, c.n, p.id AS pid FROM (SELECT cust, count(*) AS n FROM o GROUP BY cust) c
                       JOIN p ON c.cust = p.cust""",
        o=frame(orders),
        p=frame(payments),
    )
    assert_frame_equal(sort_all(read_sink(tmp_path / "out")), sort_all(expected), check_dtypes=False)


def test_window_over_a_join_never_reopens_a_fired_window(tmp_path: Path) -> None:
    orders, payments = make(51, 200, 0), make(52, 200, 1000)
    write(tmp_path, orders, payments)
    sql = (
        SOURCES
        + """
    CREATE TABLE w (cust BIGINT, ws TIMESTAMP(3), n BIGINT) WITH ('connector' = 'delta', 'path' = 'w');
    CREATE TEMPORARY VIEW joined AS SELECT o.cust, o.ts FROM orders o JOIN payments p ON o.cust = p.cust
      AND p.ts BETWEEN o.ts - INTERVAL '10' SECOND AND o.ts + INTERVAL '10' SECOND;
    INSERT INTO w SELECT cust, window_start, COUNT(*)
    FROM TABLE(TUMBLE(TABLE joined, DESCRIPTOR(ts), INTERVAL '5' SECOND)) GROUP BY cust, window_start, window_end;
    """
    )
    summary = run(tmp_path, sql, max_epoch_rows=10)
    out = read_sink(tmp_path / "w")
    assert out.height == out.select("cust", "ws").n_unique()  # each window emitted once
    late = sum(summary["late_rows"].values())
    assert late > 0  # joined rows that arrived after their window fired are kept, not silently dropped
    joined = duck(
        """SELECT o.cust, o.ts FROM o JOIN p ON o.cust = p.cust
                     AND p.ts BETWEEN o.ts - INTERVAL 10 SECOND AND o.ts + INTERVAL 10 SECOND""",
        o=frame(orders),
        p=frame(payments),
    )
    final = max(int(r["ts"]) for r in orders + payments) - 5000  # type: ignore[call-overload]
    settled = joined.filter(pl.col("ts").dt.epoch("ms") - pl.col("ts").dt.epoch("ms") % 5000 + 5000 - 1 <= final)
    assert out.get_column("n").sum() + late == settled.height  # every settled joined row: counted or late
