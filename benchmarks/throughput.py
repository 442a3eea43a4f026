"""Engine overhead: datagen -> filter -> blackhole through timelapse, beside raw Polars on the same batches.

    python -m benchmarks.throughput [--rows 10000000] [--epoch-rows 1000000] [--json]

Measures, in one process:
  - timelapse: whole epochs (read the datagen slice, run the plan, write the sink, commit the manifest row);
  - raw Polars: the same datagen slices read through the same source, then the same filter expression;
  - the fixed cost of one epoch with commit, from 1-row epochs (the floor under every epoch).
Results are printed and, with --record, appended to benchmarks/results/throughput.jsonl.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import polars as pl

from benchmarks.record import record
from engine.runner import CheckpointPolicy, Runner
from engine.sources.datagen import DatagenSource
from sql import plan_script

SQL = """
CREATE TABLE readings (id BIGINT, temperature DOUBLE, ts TIMESTAMP(3),
  WATERMARK FOR ts AS ts - INTERVAL '5' SECOND)
WITH ('connector' = 'datagen', 'number-of-rows' = '{rows}', 'rows-per-second' = '100000',
      'fields.id.kind' = 'sequence', 'fields.temperature.min' = '0', 'fields.temperature.max' = '50');
CREATE TABLE sink (id BIGINT, temperature DOUBLE, ts TIMESTAMP(3)) WITH ('connector' = 'blackhole');
INSERT INTO sink SELECT id, temperature, ts FROM readings WHERE temperature > 30;
"""


def engine_run(rows: int, epoch_rows: int, checkpoint_every: int = 1) -> tuple[float, list[float]]:
    plan = plan_script(SQL.format(rows=rows))
    with tempfile.TemporaryDirectory() as state:
        runner = Runner(plan, Path(state), Path.cwd())
        runner.policy = CheckpointPolicy(every_epochs=checkpoint_every)
        durations: list[float] = []
        started = time.perf_counter()
        while (report := runner.run_epoch(epoch_rows)) is not None:
            durations.append(report.duration_s)
        elapsed = time.perf_counter() - started
        runner.close()
    return elapsed, durations


def polars_run(rows: int, epoch_rows: int) -> float:
    plan = plan_script(SQL.format(rows=rows))
    source = DatagenSource(plan.tables["readings"], Path.cwd())
    source.restore(None, [])
    started = time.perf_counter()
    for start in range(0, rows, epoch_rows):
        batch = source.read({"start": start, "end": min(rows, start + epoch_rows), "started_at": 0}).rows
        batch.lazy().filter(pl.col("temperature") > 30).select("id", "temperature", "ts").collect()
    return time.perf_counter() - started


def generation_only(rows: int, epoch_rows: int) -> float:
    plan = plan_script(SQL.format(rows=rows))
    source = DatagenSource(plan.tables["readings"], Path.cwd())
    started = time.perf_counter()
    for start in range(0, rows, epoch_rows):
        source.read({"start": start, "end": min(rows, start + epoch_rows), "started_at": 0})
    return time.perf_counter() - started


def epoch_floor(epochs: int, checkpoint_every: int = 1) -> list[float]:
    """Per-epoch cost with 1 row each: offsets logged, plan run, manifest committed (every `checkpoint_every`)."""
    _, durations = engine_run(epochs, 1, checkpoint_every)
    return durations[10:]  # warm-up excluded


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--epoch-rows", type=int, default=1_000_000)
    parser.add_argument("--floor-epochs", type=int, default=300)
    parser.add_argument("--record", action="store_true")
    args = parser.parse_args()

    engine_run(args.epoch_rows, args.epoch_rows)  # warm-up
    engine_s, durations = engine_run(args.rows, args.epoch_rows)
    polars_s = polars_run(args.rows, args.epoch_rows)
    generation_s = generation_only(args.rows, args.epoch_rows)
    floor = epoch_floor(args.floor_epochs)
    floor10 = epoch_floor(args.floor_epochs, checkpoint_every=10)
    result = {
        "benchmark": "datagen-filter-blackhole",
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()} {platform.python_version()} polars {pl.__version__}",
        "rows": args.rows,
        "epoch_rows": args.epoch_rows,
        "timelapse_events_per_s": round(args.rows / engine_s),
        "raw_polars_events_per_s": round(args.rows / polars_s),
        "ratio": round(polars_s / engine_s, 3),
        "generation_s": round(generation_s, 3),
        "epoch_p50_ms": round(statistics.median(durations) * 1000, 1),
        "epoch_overhead_p50_ms": round(statistics.median(floor) * 1000, 2),
        "epoch_overhead_p99_ms": round(sorted(floor)[int(len(floor) * 0.99) - 1] * 1000, 2),
        "epoch_overhead_mean_ms_checkpoint_every_10": round(statistics.mean(floor10) * 1000, 2),
    }
    print(json.dumps(result, indent=2))
    if args.record:
        record("throughput", [result])


if __name__ == "__main__":
    main()
