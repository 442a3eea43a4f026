"""Window-aggregation throughput: datagen -> TUMBLE(10 s) per key (COUNT, SUM, MAX) -> blackhole; with
`--window hop` HOP(slide 2 s, size 10 s), five windows per row (kept as slices, engine/operators/window_slices.py);
with `--window cumulate` CUMULATE(step 2 s, size 10 s).

    python -m benchmarks.window_agg [--rows 5000000] [--epoch-rows 500000] [--keys 1000] [--window tumble] [--record]

Runs once per thread count (1 and 2) in a fresh process, since Polars fixes its pool size at import.
Reports events/s for whole epochs (read, window, state checkpoint, manifest commit) and, separately, how
fast the source alone generates the same rows, so generation is never mistaken for engine speed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.record import record

SQL = """
CREATE TABLE readings (sensor BIGINT, temperature DOUBLE, ts TIMESTAMP(3),
  WATERMARK FOR ts AS ts - INTERVAL '5' SECOND)
WITH ('connector' = 'datagen', 'number-of-rows' = '{rows}', 'rows-per-second' = '20000',
      'fields.sensor.min' = '1', 'fields.sensor.max' = '{keys}',
      'fields.temperature.min' = '0', 'fields.temperature.max' = '50');
CREATE TABLE sink (sensor BIGINT, ws TIMESTAMP(3), n BIGINT, total DOUBLE, hottest DOUBLE)
WITH ('connector' = 'blackhole');
INSERT INTO sink SELECT sensor, window_start, COUNT(*), SUM(temperature), MAX(temperature)
FROM TABLE({window}) GROUP BY sensor, window_start, window_end;
"""
WINDOWS = {
    "tumble": "TUMBLE(TABLE readings, DESCRIPTOR(ts), INTERVAL '10' SECOND)",
    "hop": "HOP(TABLE readings, DESCRIPTOR(ts), INTERVAL '2' SECOND, INTERVAL '10' SECOND)",
    "cumulate": "CUMULATE(TABLE readings, DESCRIPTOR(ts), INTERVAL '2' SECOND, INTERVAL '10' SECOND)",
}


def measure(rows: int, epoch_rows: int, keys: int, window: str = "tumble") -> dict[str, float]:
    from engine.runner import Runner
    from engine.sources.datagen import DatagenSource
    from sql import plan_script

    plan = plan_script(SQL.format(rows=rows, keys=keys, window=WINDOWS[window]))
    with tempfile.TemporaryDirectory() as state:
        runner = Runner(plan, Path(state), Path.cwd())
        started = time.perf_counter()
        epochs = 0
        while runner.run_epoch(epoch_rows) is not None:
            epochs += 1
        elapsed = time.perf_counter() - started
        runner.close()
    source = DatagenSource(plan.tables["readings"], Path.cwd())
    gen_started = time.perf_counter()
    for start in range(0, rows, epoch_rows):
        source.read({"start": start, "end": min(rows, start + epoch_rows), "started_at": 0})
    generation = time.perf_counter() - gen_started
    return {
        "events_per_s": rows / elapsed,
        "epochs": epochs,
        "elapsed_s": elapsed,
        "engine_only_events_per_s": rows / max(elapsed - generation, 1e-9),
        "generation_s": generation,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=5_000_000)
    parser.add_argument("--epoch-rows", type=int, default=500_000)
    parser.add_argument("--keys", type=int, default=1000)
    parser.add_argument("--window", choices=sorted(WINDOWS), default="tumble")
    parser.add_argument("--threads", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--record", action="store_true")
    args = parser.parse_args()
    if args.threads:
        print(json.dumps(measure(args.rows, args.epoch_rows, args.keys, args.window)))
        return
    results = []
    for threads in (1, 2):
        env = {**os.environ, "POLARS_MAX_THREADS": str(threads)}
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "benchmarks.window_agg",
                "--threads",
                str(threads),
                "--rows",
                str(args.rows),
                "--epoch-rows",
                str(args.epoch_rows),
                "--keys",
                str(args.keys),
                "--window",
                args.window,
            ],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        row = {
            "benchmark": "window-agg",
            "date": time.strftime("%Y-%m-%d"),
            "threads": threads,
            "rows": args.rows,
            "epoch_rows": args.epoch_rows,
            "keys": args.keys,
            "window": args.window,
            **json.loads(out),
        }
        results.append(row)
        print(json.dumps(row))
    if args.record:
        record("window_agg", results)


if __name__ == "__main__":
    main()
