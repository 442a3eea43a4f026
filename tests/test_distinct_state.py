"""COUNT(DISTINCT) and MIN/MAX over retractions keep every (group, value) pair with its count: stored pairs are
updated in place and new ones appended (engine/operators/distinct_values.py). Results and the state table must
be what DuckDB computes, over append-only and updating inputs, whatever the epochs, across restarts, and when
pairs whose count fell to 0 are dropped from memory."""

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

import engine
from engine import state_at
from engine.operators import distinct_values
from tests.helpers import duck, examples, read_sink, run, sort_all, write_jsonl

SOURCE = """
CREATE TABLE orders (id BIGINT, customer STRING, amount INT)
WITH ('connector' = 'filesystem', 'path' = 'in', 'format' = 'json');
"""

# Append-only input: NULL groups and NULL values, a FILTER, the same column counted twice.
APPEND_ONLY = """
CREATE TABLE spread (customer STRING, amounts BIGINT, even_amounts BIGINT, ids BIGINT, n BIGINT,
                     PRIMARY KEY (customer) NOT ENFORCED)
WITH ('connector' = 'delta', 'path' = 'spread');
INSERT INTO spread SELECT /*+ STATE_ID('spread') */ customer, COUNT(DISTINCT amount),
  COUNT(DISTINCT amount) FILTER (WHERE id % 2 = 0), COUNT(DISTINCT id % 7), COUNT(*)
FROM orders GROUP BY customer;
"""
APPEND_ONLY_ORACLE = """SELECT customer, count(DISTINCT amount) AS amounts,
  count(DISTINCT amount) FILTER (WHERE id % 2 = 0) AS even_amounts, count(DISTINCT id % 7) AS ids, count(*) AS n
FROM src GROUP BY customer"""

# Updating input: each customer's total changes as its orders arrive, so a total leaves its bucket's distinct
# values (-U) and a new one enters (+U). Totals modulo 4 make values shared by customers (counts above 1) that
# fall to a count of 0 and come back.
UPDATING = """
CREATE TABLE buckets (bucket BIGINT, customers BIGINT, totals BIGINT, big_totals BIGINT, lowest BIGINT,
                      highest BIGINT, PRIMARY KEY (bucket) NOT ENFORCED)
WITH ('connector' = 'delta', 'path' = 'buckets');
INSERT INTO buckets SELECT /*+ STATE_ID('buckets') */ n % 3, COUNT(*), COUNT(DISTINCT total),
  COUNT(DISTINCT total) FILTER (WHERE n > 2), MIN(total), MAX(total)
FROM (SELECT customer, COUNT(*) AS n, SUM(amount) % 4 AS total FROM orders GROUP BY customer) GROUP BY n % 3;
"""
UPDATING_ORACLE = """SELECT n % 3 AS bucket, count(*) AS customers, count(DISTINCT total) AS totals,
  count(DISTINCT total) FILTER (WHERE n > 2) AS big_totals, min(total) AS lowest, max(total) AS highest
FROM (SELECT customer, count(*) AS n, sum(amount) % 4 AS total FROM src GROUP BY customer) GROUP BY n % 3"""


def make_orders(seed: int, count: int, customers: int) -> list[dict[str, object]]:
    rng = random.Random(seed)
    names = [f"c{i}" for i in range(customers)] + [None]
    return [
        {"id": i, "customer": rng.choice(names), "amount": rng.choice([None, 1, 2, 3, 5, 8, 13])} for i in range(count)
    ]


def frame(rows: list[dict[str, object]]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema={"id": pl.Int64, "customer": pl.String, "amount": pl.Int32})


def write_files(root: Path, rows: list[dict[str, object]], files: int) -> None:
    size = -(-len(rows) // files) if rows else 1
    for index in range(files):
        write_jsonl(root / "in" / f"{index:02d}.json", rows[index * size : (index + 1) * size])


def check(
    root: Path,
    sql: str,
    oracle: str,
    sink: str,
    rows: list[dict[str, object]],
    max_rows: int,
    restart_after: int | None,
) -> None:
    write_files(root, rows, 3)
    if restart_after is not None:
        run(root, SOURCE + sql, max_epoch_rows=max_rows, max_epochs=restart_after)
    run(root, SOURCE + sql, max_epoch_rows=max_rows)
    expected = duck(oracle, src=frame(rows))
    assert_frame_equal(sort_all(read_sink(root / sink)), sort_all(expected), check_dtypes=False)


EPOCHS = {
    "seed": st.integers(0, 10_000),
    "count": st.integers(10, 90),
    "customers": st.integers(1, 12),
    "max_rows": st.integers(1, 15),
    "restart_after": st.one_of(st.none(), st.integers(1, 4)),
}


@settings(max_examples=examples(15), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(**EPOCHS)
def test_count_distinct_over_an_append_only_input_equals_duckdb(
    seed: int, count: int, customers: int, max_rows: int, restart_after: int | None
) -> None:
    """Random epochs, a restart from the checkpoint after some of them."""
    root = Path(tempfile.mkdtemp())
    try:
        rows = make_orders(seed, count, customers)
        check(root, APPEND_ONLY, APPEND_ONLY_ORACLE, "spread", rows, max_rows, restart_after)
    finally:
        shutil.rmtree(root)


@settings(max_examples=examples(15), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(**EPOCHS, drop_absent=st.booleans())
def test_distinct_aggregates_over_an_updating_input_equal_duckdb(
    seed: int,
    count: int,
    customers: int,
    max_rows: int,
    restart_after: int | None,
    drop_absent: bool,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Random epochs, a restart from the checkpoint after some of them, and (`drop_absent`) the in-memory pairs
    rebuilt whenever one has fallen to a count of 0."""
    if drop_absent:
        monkeypatch.setattr(distinct_values, "REBUILD_MIN_ABSENT", 0)
    root = Path(tempfile.mkdtemp())
    try:
        rows = make_orders(seed, count, customers)
        check(root, UPDATING, UPDATING_ORACLE, "buckets", rows, max_rows, restart_after)
    finally:
        shutil.rmtree(root)


def test_the_distinct_values_table_holds_each_value_with_its_count(tmp_path: Path) -> None:
    """The state is plain Delta: per (group, value) the number of input rows holding it, as of each checkpoint;
    values whose count fell to 0 are gone (tombstoned)."""
    rows = make_orders(5, 120, 12)
    write_jsonl(tmp_path / "in" / "a.json", rows)
    run(tmp_path, SOURCE + UPDATING, max_epoch_rows=7)
    state = state_at(tmp_path / "state", "buckets/distinct_1").collect()
    expected = duck(
        """SELECT n % 3 AS bucket, total AS __value, count(*) AS __count
           FROM (SELECT customer, count(*) AS n, sum(amount) % 4 AS total FROM src GROUP BY customer)
           WHERE total IS NOT NULL GROUP BY ALL""",
        src=frame(rows),
    )
    actual = state.select(pl.col(state.columns[0]).alias("bucket"), "__value", "__count")
    assert_frame_equal(sort_all(actual), sort_all(expected), check_dtypes=False)


def test_a_group_back_after_its_state_ttl_counts_its_values_afresh(tmp_path: Path) -> None:
    """STATE_TTL forgets a group with its distinct values: when the group comes back it starts afresh, as in
    Flink, and its old values are not counted (nor left in the distinct-values table)."""
    base = 1_767_225_600_000
    rows = [
        {"k": "a", "v": 1, "ts": base},
        {"k": "a", "v": 2, "ts": base + 1_000},
        {"k": "b", "v": 9, "ts": base + 600_000},  # ten minutes later: the watermark expires group a
        {"k": "a", "v": 1, "ts": base + 660_000},
    ]
    write_jsonl(tmp_path / "in" / "1.json", rows)
    sql = """
    CREATE TABLE events (k STRING, v INT, ts TIMESTAMP(3), WATERMARK FOR ts AS ts)
    WITH ('connector' = 'filesystem', 'path' = 'in', 'format' = 'json');
    CREATE TABLE counts (k STRING, n BIGINT, d BIGINT, PRIMARY KEY (k) NOT ENFORCED)
    WITH ('connector' = 'delta', 'path' = 'counts');
    INSERT INTO counts SELECT /*+ STATE_TTL('1 min', 'event') */ k, COUNT(*), COUNT(DISTINCT v)
    FROM events GROUP BY k;
    """
    run(tmp_path, sql, max_epoch_rows=1)
    counts = {r["k"]: (r["n"], r["d"]) for r in read_sink(tmp_path / "counts").to_dicts()}
    assert counts == {"a": (1, 1), "b": (1, 1)}
    history = engine.open(tmp_path / "state")
    (name,) = [n for n in history.tables(kind="state").get_column("name").to_list() if n.endswith("distinct_1")]
    live = history.state(name)
    assert sorted(live.filter(pl.col("k") == "a").get_column("__value").to_list()) == [1]
