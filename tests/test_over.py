"""OVER aggregates against DuckDB: ROWS n, RANGE interval and UNBOUNDED frames, by event time."""

from __future__ import annotations

import random
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from tests.helpers import duck, naive, read_sink, run, sort_all, write_jsonl

BASE_MS = 1_767_225_600_000
SOURCE = """
CREATE TABLE trades (id BIGINT, account STRING, amount INT, ts TIMESTAMP(3),
  WATERMARK FOR ts AS ts - INTERVAL '5' SECOND)
WITH ('connector' = 'filesystem', 'path' = 'trades', 'format' = 'json');
CREATE TABLE out (id BIGINT, account STRING, ts TIMESTAMP(3), n BIGINT, total BIGINT, mean DOUBLE, lo INT, hi INT)
WITH ('connector' = 'delta', 'path' = 'out');
"""
AGGS = "COUNT(amount) OVER w, SUM(amount) OVER w, AVG(amount) OVER w, MIN(amount) OVER w, MAX(amount) OVER w"
DUCK_AGGS = "count(amount) OVER w, sum(amount) OVER w, avg(amount) OVER w, min(amount) OVER w, max(amount) OVER w"


def make(seed: int, count: int) -> list[dict[str, object]]:
    rng = random.Random(seed)
    # Distinct times per account keep ROWS frames unambiguous; rows arrive out of order within the delay.
    return [
        {
            "id": i,
            "account": rng.choice(["a", "b", "c"]),
            "amount": rng.choice([None, 1, 5, 9, 20]),
            "ts": BASE_MS + i * 1000 - rng.randint(0, 4) * 250,
        }
        for i in range(count)
    ]


@pytest.mark.parametrize(
    ("frame_sql", "duck_frame"),
    [
        ("ROWS BETWEEN 2 PRECEDING AND CURRENT ROW", "ROWS BETWEEN 2 PRECEDING AND CURRENT ROW"),
        (
            "RANGE BETWEEN INTERVAL '3' SECOND PRECEDING AND CURRENT ROW",
            "RANGE BETWEEN INTERVAL 3 SECOND PRECEDING AND CURRENT ROW",
        ),
        ("ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW", "ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW"),
    ],
)
def test_over_aggregates_match_duckdb(tmp_path: Path, frame_sql: str, duck_frame: str) -> None:
    rows = make(3, 90)
    write_jsonl(tmp_path / "trades" / "1.json", rows[:45])
    write_jsonl(tmp_path / "trades" / "2.json", rows[45:])
    window = f"(PARTITION BY account ORDER BY ts {frame_sql})"
    run(
        tmp_path,
        SOURCE + f"INSERT INTO out SELECT id, account, ts, {AGGS.replace('OVER w', 'OVER ' + window)} FROM trades;",
        max_epoch_rows=7,
    )
    src = pl.DataFrame(rows, schema={"id": pl.Int64, "account": pl.String, "amount": pl.Int32, "ts": pl.Int64})
    src = src.with_columns(pl.col("ts").cast(pl.Datetime("ms")).dt.replace_time_zone("UTC"))
    final = max(int(r["ts"]) for r in rows) - 5000  # type: ignore[call-overload]
    expected = duck(
        f"""SELECT id, account, ts, {DUCK_AGGS} FROM src
                        WINDOW w AS (PARTITION BY account ORDER BY ts {duck_frame})
                        QUALIFY epoch_ms(ts) <= {final}""",
        src=src,
    )
    expected = expected.rename(
        dict(zip(expected.columns, ["id", "account", "ts", "n", "total", "mean", "lo", "hi"], strict=True))
    )
    assert_frame_equal(sort_all(naive(read_sink(tmp_path / "out"))), sort_all(naive(expected)), check_dtypes=False)
