"""Checkpoint cost against changed keys: the state store's append beside a plain Delta append.

    python -m benchmarks.checkpoint [--record]

For a state of N live keys (partial aggregates in typed columns), each epoch changes a share of the keys.
A checkpoint appends those rows, with the exactly-once marker, to the operator's Delta change log. The
baseline is a plain `write_deltalake` append of the same rows to a table of the same shape. The target:
checkpoint <= 2x the plain append, and flat as N grows. Compaction (amortised: it runs when the log outgrows
the live state) is timed separately.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import polars as pl
from deltalake import write_deltalake

from benchmarks.record import record
from engine.delta_tables import to_arrow
from engine.state_store import StateTable, key_group

VALUES = {"__rows": pl.Int64(), "a0_count": pl.Int64(), "a1_sum": pl.Float64(), "a1_count": pl.Int64()}


def state_rows(keys: pl.Series, seed: int) -> pl.DataFrame:
    n = keys.len()
    return pl.DataFrame({"key": keys}).with_columns(
        pl.lit(seed, pl.Int64).alias("__rows"),
        pl.lit(seed, pl.Int64).alias("a0_count"),
        (pl.col("key").cast(pl.Float64) * 0.5 + seed).alias("a1_sum"),
        pl.lit(n, pl.Int64).alias("a1_count"),
        key_group(["key"]).alias("_kg"),
    )


def run(total: int, share: float, epochs: int = 8) -> dict[str, float]:
    changed = max(1, int(total * share))
    with tempfile.TemporaryDirectory() as root:
        table = StateTable(Path(root) / "state", ["key"], VALUES, "bench/state", {"key": pl.Int64()})
        table.stage(state_rows(pl.Series("key", range(total), dtype=pl.Int64), 1), pl.DataFrame())
        table.commit(1, total)
        plain_path = Path(root) / "plain"
        checkpoint_ms, plain_ms = [], []
        for epoch in range(2, epochs + 2):
            keys = pl.Series("key", range((epoch * 7919) % total, (epoch * 7919) % total + changed)) % total
            rows = state_rows(keys.cast(pl.Int64), epoch)
            started = time.perf_counter()
            table.stage(rows, pl.DataFrame())
            table.log_rows = 0  # time the append itself; compaction is measured below
            table.commit(epoch, total)
            checkpoint_ms.append((time.perf_counter() - started) * 1000)
            plain = to_arrow(
                rows.with_columns(pl.lit(epoch, pl.Int64).alias("_epoch"), pl.lit(False).alias("_deleted"))
            )
            started = time.perf_counter()
            write_deltalake(str(plain_path), plain, mode="append")
            plain_ms.append((time.perf_counter() - started) * 1000)
        table.log_rows = 10 * total
        started = time.perf_counter()
        table.compact()
        compaction_ms = (time.perf_counter() - started) * 1000
    checkpoint, plain = statistics.median(checkpoint_ms[1:]), statistics.median(plain_ms[1:])
    return {
        "total_keys": total,
        "changed_share": share,
        "changed_keys": changed,
        "checkpoint_ms": round(checkpoint, 2),
        "plain_append_ms": round(plain, 2),
        "ratio": round(checkpoint / plain, 2),
        "compaction_ms": round(compaction_ms, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--record", action="store_true")
    args = parser.parse_args()
    results = []
    for total in (100_000, 1_000_000):
        for share in (0.001, 0.01, 0.1):
            row = {"benchmark": "checkpoint", "date": time.strftime("%Y-%m-%d"), **run(total, share)}
            results.append(row)
            print(json.dumps(row))
    if args.record:
        record("checkpoint", results)


if __name__ == "__main__":
    main()
