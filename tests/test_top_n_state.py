"""Incremental Top-N over an append-only input against DuckDB: ties broken by the other columns, NULLs in the
ORDER BY column and the partition, identical rows, partitions by one or two columns, any epoch split. The state
keeps at most n rows per partition."""

from __future__ import annotations

import random
import shutil
import tempfile
from pathlib import Path

import polars as pl
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from tests.helpers import duck, examples, read_sink, run, sort_all, write_jsonl

SOURCE = """
CREATE TABLE orders (id BIGINT, cust STRING, region STRING, amount INT, ts TIMESTAMP(3))
WITH ('connector' = 'filesystem', 'path' = 'orders', 'format' = 'json');
"""


def make(seed: int, count: int) -> list[dict[str, object]]:
    rng = random.Random(seed)
    rows: list[dict[str, object]] = []
    for i in range(count):
        if rows and rng.random() < 0.1:
            rows.append(dict(rng.choice(rows)))  # an identical row: ROW_NUMBER ranks both
            continue
        rows.append(
            {
                "id": rng.randint(0, 30),  # repeats: ties on amount are broken by id, then the rest
                "cust": rng.choice(["ann", "bob", "cy", None]),
                "region": rng.choice(["n", "s"]),
                "amount": rng.choice([None, 1, 2, 3, 4, 5]),
                "ts": 1_767_225_600_000 + i * 1000,
            }
        )
    return rows


def frame(rows: list[dict[str, object]]) -> pl.DataFrame:
    schema = {"id": pl.Int64, "cust": pl.String, "region": pl.String, "amount": pl.Int32, "ts": pl.Int64}
    df = pl.DataFrame(rows, schema=schema)
    return df.with_columns(pl.col("ts").cast(pl.Datetime("ms")).dt.replace_time_zone("UTC"))


def query(partition: str, n: int) -> str:
    return f"""
    CREATE TABLE top (cust STRING, region STRING, id BIGINT, amount INT, rn BIGINT,
                      PRIMARY KEY (cust, region, rn) NOT ENFORCED)
    WITH ('connector' = 'delta', 'path' = 'top');
    INSERT INTO top SELECT cust, region, id, amount, rn FROM (
      SELECT *, ROW_NUMBER() OVER (PARTITION BY {partition} ORDER BY amount DESC) AS rn FROM orders
    ) WHERE rn <= {n};
    """


def oracle(rows: list[dict[str, object]], partition: str, n: int) -> pl.DataFrame:
    # the engine breaks ties by the other columns, ascending, NULLs last
    order = "amount DESC NULLS LAST, id NULLS LAST, cust NULLS LAST, region NULLS LAST, ts NULLS LAST"
    found = duck(
        f"""SELECT cust, region, id, amount, rn FROM (
              SELECT *, row_number() OVER (PARTITION BY {partition} ORDER BY {order}) AS rn FROM src)
            WHERE rn <= {n}""",
        src=frame(rows),
    )
    return found


@settings(max_examples=examples(12), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    seed=st.integers(0, 10_000),
    count=st.integers(0, 70),
    max_rows=st.one_of(st.none(), st.integers(1, 15)),
    n=st.sampled_from([1, 2, 3]),
    partition=st.sampled_from(["cust", "cust, region"]),
)
def test_incremental_top_n_matches_duckdb_whatever_the_epochs(
    seed: int, count: int, max_rows: int | None, n: int, partition: str
) -> None:
    root = Path(tempfile.mkdtemp())
    try:
        rows = make(seed, count)
        half = len(rows) // 2
        write_jsonl(root / "orders" / "1.json", rows[:half])
        write_jsonl(root / "orders" / "2.json", rows[half:])
        run(root, SOURCE + query(partition, n), max_epoch_rows=max_rows)
        expected = oracle(rows, partition, n)
        assert_frame_equal(sort_all(read_sink(root / "top")), sort_all(expected), check_dtypes=False)
        state = pl.read_delta(str(next((root / "state" / "operators").glob("*/state"))))
        keys = [c for c in state.columns if c not in ("_epoch", "_deleted", "_kg", "__count")]
        live = state.filter(pl.col("_epoch") == pl.col("_epoch").max().over(keys)).filter(~pl.col("_deleted"))
        per_partition = live.group_by(partition.split(", ")).agg(pl.col("__count").sum())
        assert (per_partition.get_column("__count").max() or 0) <= n  # bounded: the top n, nothing more
        assert live.get_column("__count").sum() == expected.height  # the top n exactly
    finally:
        shutil.rmtree(root)


def test_only_changed_ranks_are_emitted(tmp_path: Path) -> None:
    # Epoch 1 fills ann's top 2; epoch 2 brings rows that do not enter it, and one for bob: nothing of ann's moves.
    first = [
        {"id": 1, "cust": "ann", "region": "n", "amount": 9, "ts": 0},
        {"id": 2, "cust": "ann", "region": "n", "amount": 8, "ts": 1000},
    ]
    second = [
        {"id": 3, "cust": "ann", "region": "n", "amount": 1, "ts": 2000},
        {"id": 4, "cust": "ann", "region": "n", "amount": 2, "ts": 3000},
        {"id": 5, "cust": "bob", "region": "n", "amount": 7, "ts": 4000},
    ]
    write_jsonl(tmp_path / "orders" / "1.json", first)
    write_jsonl(tmp_path / "orders" / "2.json", second)
    summary = run(tmp_path, SOURCE + query("cust, region", 2), max_epoch_rows=2)
    assert summary["rows_out"]["top"] == 3  # ann's two rows, then bob's row only
    assert_frame_equal(
        sort_all(read_sink(tmp_path / "top")),
        sort_all(oracle(first + second, "cust, region", 2)),
        check_dtypes=False,
    )
