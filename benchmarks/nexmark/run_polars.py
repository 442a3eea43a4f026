"""q0-q2 in raw Polars over the same files, batch by batch: the ceiling for an engine built on Polars.

    python -m benchmarks.nexmark.run_polars Q DATA EVENTS EPOCH

Each batch reads one generated bid file (the bids of `EPOCH` events, as a timelapse epoch does) and runs the
query's projection or filter in one lazy query; the output is discarded. Nothing is logged, checkpointed or
committed, and the auction and person files are not read. Prints one JSON line, as the engine runners do.
"""

from __future__ import annotations

import resource
import time
from collections.abc import Callable
from pathlib import Path

import polars as pl

from benchmarks.nexmark.measure import cli, result, unsupported

QUERIES: dict[str, Callable[[pl.LazyFrame], pl.LazyFrame]] = {
    "q0": lambda bids: bids.select("auction", "bidder", "price", "dateTime", "extra"),
    "q1": lambda bids: bids.select("auction", "bidder", (0.908 * pl.col("price")).alias("price"), "dateTime", "extra"),
    "q2": lambda bids: bids.filter(pl.col("auction") % 123 == 0).select("auction", "price"),
}


def main(query: str, data: Path, events: int, epoch_events: int) -> dict[str, object]:
    if query not in QUERIES:
        return unsupported("polars", query, "raw Polars runs q0-q2 only (the stateless queries)")
    files = sorted((data / "bid").glob("*.parquet"))
    durations: list[float] = []
    started = time.perf_counter()
    first_s = 0.0
    for file in files:
        began = time.perf_counter()
        QUERIES[query](pl.scan_parquet(file)).collect()
        durations.append(time.perf_counter() - began)
        if len(durations) == 1:
            first_s = time.perf_counter() - started
    elapsed = time.perf_counter() - started
    warm = elapsed - first_s if len(durations) > 1 else elapsed
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return result("polars", query, events, elapsed, warm, durations, [], peak)


if __name__ == "__main__":
    cli(main)
