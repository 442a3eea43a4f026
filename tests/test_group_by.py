"""Unbounded GROUP BY: changelogs, upsert sinks, aggregates of aggregates, state recovery and compaction."""

from __future__ import annotations

import random
import shutil
import tempfile
from pathlib import Path

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from engine import HistoryError, Pipeline
from sql import SqlError
from tests.helpers import duck, examples, read_sink, run, sort_all, write_jsonl

SOURCE = """
CREATE TABLE orders (id BIGINT, customer STRING, amount INT)
WITH ('connector' = 'filesystem', 'path' = 'in', 'format' = 'json');
"""


def make_orders(seed: int, count: int) -> list[dict[str, object]]:
    rng = random.Random(seed)
    return [
        {
            "id": i,
            "customer": rng.choice(["ann", "bob", "cy", "dee", None]),
            "amount": rng.choice([None, 1, 2, 5, 8, 13, 40]),
        }
        for i in range(count)
    ]


def frame(rows: list[dict[str, object]]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema={"id": pl.Int64, "customer": pl.String, "amount": pl.Int32})


UPSERT = """
CREATE TABLE totals (customer STRING, n BIGINT, total BIGINT, mean DOUBLE, PRIMARY KEY (customer) NOT ENFORCED)
WITH ('connector' = 'delta', 'path' = 'totals');
INSERT INTO totals
SELECT customer, COUNT(*), SUM(amount), AVG(amount) FROM orders GROUP BY customer HAVING AVG(amount) > 6;
"""
ORACLE = """SELECT customer, count(*) AS n, sum(amount) AS total, avg(amount) AS mean FROM src
            GROUP BY customer HAVING avg(amount) > 6"""


@settings(max_examples=examples(10), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 10_000), count=st.integers(0, 60), max_rows=st.one_of(st.none(), st.integers(1, 20)))
def test_upsert_sink_equals_duckdb_group_by(seed: int, count: int, max_rows: int | None) -> None:
    root = Path(tempfile.mkdtemp())
    try:
        rows = make_orders(seed, count)
        write_jsonl(root / "in" / "a.json", rows[: count // 2])
        write_jsonl(root / "in" / "b.json", rows[count // 2 :])
        run(root, SOURCE + UPSERT, max_epoch_rows=max_rows)
        assert_frame_equal(
            sort_all(read_sink(root / "totals")), sort_all(duck(ORACLE, src=frame(rows))), check_dtypes=False
        )
    finally:
        shutil.rmtree(root)


def test_print_changelog_is_consistent(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = make_orders(3, 80)
    # zed qualifies (average 40), then stops qualifying (average falls under 6): a -D follows.
    rows += [{"id": 100 + i, "customer": "zed", "amount": a} for i, a in enumerate([40, 1, 1, 1, 1, 1, 1, 1, 1])]
    write_jsonl(tmp_path / "in" / "a.json", rows)
    sql = (
        SOURCE
        + """
    CREATE TABLE log (customer STRING, n BIGINT, total BIGINT) WITH ('connector' = 'print');
    INSERT INTO log SELECT customer, COUNT(*), SUM(amount) FROM orders GROUP BY customer HAVING AVG(amount) > 6;
    """
    )
    run(tmp_path, sql, max_epoch_rows=7)
    lines = capsys.readouterr().out.splitlines()
    kinds = [line[:2] for line in lines]
    assert {"+I", "-U", "+U"} <= set(kinds) and "-D" in kinds
    materialised: dict[str, str] = {}
    for i, line in enumerate(lines):
        kind, body = line[:2], line[3:-1]
        key = body.split(", ")[0]
        if kind == "-U":
            assert lines[i + 1][:2] == "+U" and lines[i + 1][3:].split(", ")[0] == key  # every -U has its +U
        if kind in ("-U", "-D"):
            assert materialised.pop(key) == body  # retracts exactly what was emitted
        else:
            assert key not in materialised
            materialised[key] = body
    expected = duck(
        "SELECT customer, count(*), sum(amount) FROM src GROUP BY customer HAVING avg(amount) > 6", src=frame(rows)
    )
    rendered = {", ".join("NULL" if v is None else str(v) for v in row) for row in expected.iter_rows()}
    assert set(materialised.values()) == rendered


def test_aggregate_of_an_aggregate_consumes_retractions(tmp_path: Path) -> None:
    rows = make_orders(9, 120)
    write_jsonl(tmp_path / "in" / "a.json", rows)
    sql = (
        SOURCE
        + """
    CREATE TABLE histogram (orders_per_customer BIGINT, customers BIGINT, amount BIGINT,
                            PRIMARY KEY (orders_per_customer) NOT ENFORCED)
    WITH ('connector' = 'delta', 'path' = 'histogram');
    INSERT INTO histogram
    SELECT n, COUNT(*), SUM(total) FROM (
      SELECT customer, COUNT(*) AS n, SUM(amount) AS total FROM orders GROUP BY customer
    ) GROUP BY n;
    """
    )
    run(tmp_path, sql, max_epoch_rows=9)
    expected = duck(
        """SELECT n AS orders_per_customer, count(*) AS customers, sum(total) AS amount FROM (
                         SELECT customer, count(*) AS n, sum(amount) AS total FROM src GROUP BY customer)
                       GROUP BY n""",
        src=frame(rows),
    )
    assert_frame_equal(sort_all(read_sink(tmp_path / "histogram")), sort_all(expected), check_dtypes=False)


def test_global_aggregate_and_select_distinct(tmp_path: Path) -> None:
    rows = make_orders(2, 50)
    write_jsonl(tmp_path / "in" / "a.json", rows)
    sql = (
        SOURCE
        + """
    CREATE TABLE stats (name STRING, n BIGINT, biggest INT, PRIMARY KEY (name) NOT ENFORCED)
    WITH ('connector' = 'delta', 'path' = 'stats');
    CREATE TABLE customers (customer STRING, PRIMARY KEY (customer) NOT ENFORCED)
    WITH ('connector' = 'delta', 'path' = 'customers');
    INSERT INTO stats SELECT 'all', COUNT(*), MAX(amount) FROM orders;
    INSERT INTO customers SELECT DISTINCT customer FROM orders;
    """
    )
    run(tmp_path, sql, max_epoch_rows=6)
    stats = read_sink(tmp_path / "stats")
    assert stats.rows() == [("all", 50, max(r["amount"] for r in rows if r["amount"] is not None))]
    assert sorted(read_sink(tmp_path / "customers").get_column("customer").to_list(), key=str) == sorted(
        {r["customer"] for r in rows}, key=str
    )


def test_append_only_sink_refuses_an_updating_result(tmp_path: Path) -> None:
    sql = (
        SOURCE
        + """
    CREATE TABLE totals (customer STRING, n BIGINT) WITH ('connector' = 'delta', 'path' = 'totals');
    INSERT INTO totals SELECT customer, COUNT(*) FROM orders GROUP BY customer;
    """
    )
    with pytest.raises(SqlError, match="PRIMARY KEY") as caught:
        Pipeline.from_sql(sql, state=tmp_path / "state")
    assert caught.value.line == 6


def test_state_survives_restarts_and_compacts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import engine.state_store as store

    monkeypatch.setattr(store, "COMPACT_MIN_ROWS", 10)
    rows = make_orders(4, 200)
    for part in range(4):  # four runs, each resuming from the state the previous one committed
        write_jsonl(tmp_path / "in" / f"p{part}.json", rows[part * 50 : (part + 1) * 50])
        run(tmp_path, SOURCE + UPSERT, max_epoch_rows=5)
    assert_frame_equal(
        sort_all(read_sink(tmp_path / "totals")), sort_all(duck(ORACLE, src=frame(rows))), check_dtypes=False
    )
    table = next((tmp_path / "state" / "operators").glob("group-agg-*")) / "state"
    from deltalake import DeltaTable

    operations = [h["operation"] for h in DeltaTable(str(table)).history()]
    assert "WRITE" in operations and operations.count("WRITE") > 1  # appends, plus compaction overwrites
    live = pl.read_delta(str(table))
    assert live.height <= 3 * 5 + 10  # compacted: bounded by live keys, not by epochs


def test_state_as_of_each_epoch_equals_a_recomputation(tmp_path: Path) -> None:
    from engine import checkpoint, state_at

    rows = make_orders(12, 60)
    write_jsonl(tmp_path / "in" / "a.json", rows)
    sql = (
        SOURCE
        + """
    CREATE TABLE totals (customer STRING, n BIGINT, total BIGINT, PRIMARY KEY (customer) NOT ENFORCED)
    WITH ('connector' = 'delta', 'path' = 'totals');
    INSERT INTO totals SELECT /*+ STATE_ID('totals_by_customer') */ customer, COUNT(*), SUM(amount)
    FROM orders GROUP BY customer;
    """
    )
    summary = run(tmp_path, sql, max_epoch_rows=5)
    assert summary["last_epoch"] == 12
    for epoch in (1, 4, 12):
        state = state_at(tmp_path / "state", "totals_by_customer", epoch).collect()
        expected = duck(
            "SELECT customer, count(*) AS __rows, sum(amount) AS sum_amount__sum FROM src GROUP BY customer",
            src=frame(rows[: 5 * epoch]),
        )
        actual = state.select(
            "customer", "__rows", pl.when(pl.col("sum_amount__count") > 0).then(pl.col("sum_amount__sum"))
        )
        assert_frame_equal(sort_all(actual), sort_all(expected), check_dtypes=False)
        assert checkpoint(tmp_path / "state", epoch)["epoch"] == epoch
    with pytest.raises(HistoryError, match=r"'nope' at epoch 12; tables: totals_by_customer \(state\)"):
        state_at(tmp_path / "state", "nope")


def test_min_max_and_count_distinct_over_an_updating_input(tmp_path: Path) -> None:
    rows = make_orders(17, 150)
    write_jsonl(tmp_path / "in" / "a.json", rows)
    sql = (
        SOURCE
        + """
    CREATE TABLE spread (bucket BIGINT, customers BIGINT, lowest BIGINT, highest BIGINT, totals BIGINT,
                         PRIMARY KEY (bucket) NOT ENFORCED)
    WITH ('connector' = 'delta', 'path' = 'spread');
    INSERT INTO spread
    SELECT n % 3, COUNT(*), MIN(total), MAX(total), COUNT(DISTINCT total) FROM (
      SELECT customer, COUNT(*) AS n, SUM(amount) AS total FROM orders GROUP BY customer
    ) GROUP BY n % 3;
    """
    )
    run(tmp_path, sql, max_epoch_rows=4)
    expected = duck(
        """SELECT n % 3 AS bucket, count(*) AS customers, min(total) AS lowest, max(total) AS highest,
                              count(DISTINCT total) AS totals
                       FROM (SELECT customer, count(*) AS n, sum(amount) AS total FROM src GROUP BY customer)
                       GROUP BY n % 3""",
        src=frame(rows),
    )
    assert_frame_equal(sort_all(read_sink(tmp_path / "spread")), sort_all(expected), check_dtypes=False)
