"""Throughput of joins and Top-N, with the size of their state tables.

    python -m benchmarks.stateful_ops [--rows 1000000] [--epoch-rows 100000] [--record]
    python -m benchmarks.stateful_ops --nexmark-joins 2M,8M [--record]

Each pipeline reads generated streams (datagen, numeric columns) and writes to a blackhole sink, so the
numbers are the operator's: rows in per second of whole epochs (state checkpoint and manifest included),
the live state rows at the end, and the bytes of the state tables on disk.

`--nexmark-joins` runs the joins of Nexmark q4, q9 and q20 at each input size (`python -m benchmarks.nexmark run`,
500k events per epoch, every epoch a checkpoint): whether throughput and peak RSS hold as the input grows.
Besides events/s per core of wall time it records events per CPU second of the run, which a loaded machine
disturbs less.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import polars as pl

from benchmarks.record import record
from engine.runner import Runner
from sql import plan_script

STREAM = """CREATE TABLE {name} (k BIGINT, v BIGINT, ts TIMESTAMP(3), WATERMARK FOR ts AS ts - INTERVAL '1' SECOND)
WITH ('connector' = 'datagen', 'number-of-rows' = '{rows}', 'rows-per-second' = '10000', 'seed' = '{seed}',
      'fields.k.min' = '1', 'fields.k.max' = '{keys}', 'fields.v.min' = '0', 'fields.v.max' = '1000000');
"""
PIPELINES = {
    "interval-join": (
        STREAM.format(name="a", rows="{rows}", seed=1, keys=10000)
        + STREAM.format(name="b", rows="{rows}", seed=2, keys=10000)
        + "CREATE TABLE out (k BIGINT, va BIGINT, vb BIGINT) WITH ('connector' = 'blackhole');\n"
        "INSERT INTO out SELECT a.k, a.v, b.v FROM a JOIN b ON a.k = b.k "
        "AND b.ts BETWEEN a.ts - INTERVAL '1' SECOND AND a.ts + INTERVAL '1' SECOND;"
    ),
    "regular-join": (
        STREAM.format(name="orders", rows="{rows}", seed=3, keys=10000)
        + "CREATE TABLE customers (k BIGINT, v BIGINT) WITH ('connector' = 'datagen', 'number-of-rows' = '10000', "
        "'fields.k.kind' = 'sequence', 'fields.k.start' = '1');\n"
        "CREATE TABLE out (k BIGINT, amount BIGINT, score BIGINT) WITH ('connector' = 'blackhole');\n"
        "INSERT INTO out SELECT o.k, o.v, c.v FROM orders o JOIN customers c ON o.k = c.k;"
    ),
    "top-n": (
        STREAM.format(name="bids", rows="{rows}", seed=4, keys=1000)
        + "CREATE TABLE out (k BIGINT, v BIGINT, rn BIGINT) WITH ('connector' = 'blackhole');\n"
        "INSERT INTO out SELECT k, v, rn FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY k ORDER BY v DESC) AS rn "
        "FROM bids) WHERE rn <= 3;"
    ),
}


def measure(name: str, rows: int, epoch_rows: int) -> dict[str, object]:
    plan = plan_script(PIPELINES[name].format(rows=rows))
    with tempfile.TemporaryDirectory() as root:
        runner = Runner(plan, Path(root), Path(root))
        started = time.perf_counter()
        rows_in = 0
        while (report := runner.run_epoch(epoch_rows)) is not None:
            rows_in += sum(report.rows_in.values())
        elapsed = time.perf_counter() - started
        state_rows = sum(op.state_rows for op in runner.operators.values())
        runner.close()
        state_bytes = sum(f.stat().st_size for f in (Path(root) / "operators").rglob("*.parquet"))
        live_files = {
            p.parent.name: pl.read_delta(str(p.parent)).height
            for p in (Path(root) / "operators").rglob("_delta_log")
            if p.parent.name in ("left", "right", "state")
        }
    return {
        "benchmark": name,
        "date": time.strftime("%Y-%m-%d"),
        "rows_in": rows_in,
        "epoch_rows": epoch_rows,
        "events_per_s": round(rows_in / elapsed),
        "elapsed_s": round(elapsed, 2),
        "state_rows_live": state_rows,
        "state_log_rows": live_files,
        "state_mb_on_disk": round(state_bytes / 1e6, 1),
    }


JOIN_QUERIES = ("q4", "q9", "q20")


def nexmark_joins(sizes: list[str], epoch_events: str = "500k") -> list[dict[str, object]]:
    rows = []
    for size in sizes:
        for query in JOIN_QUERIES:
            command = [sys.executable, "-m", "benchmarks.nexmark", "run", "--engine", "timelapse", "--query", query]
            command += ["--events", size, "--epoch-events", epoch_events, "--json"]
            lines = subprocess.run(command, capture_output=True, text=True, check=False).stdout.splitlines()
            found = json.loads(next((line for line in reversed(lines) if line.startswith("{")), "{}"))
            if found.get("status") == "ok":
                cpu_s = float(found["elapsed_s"]) * float(found["cpu_utilisation"])
                found["events_per_cpu_s"] = round(int(found["events"]) / cpu_s) if cpu_s else None
            rows.append({**found, "benchmark": "nexmark-join-scaling", "query": query, "size": size})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--epoch-rows", type=int, default=100_000)
    parser.add_argument("--record", action="store_true")
    parser.add_argument("--nexmark-joins", help="input sizes, e.g. 2M,8M: Nexmark q4, q9, q20 at each")
    args = parser.parse_args()
    if args.nexmark_joins:
        rows = nexmark_joins(args.nexmark_joins.split(","))
        for row in rows:
            print(json.dumps(row))
        if args.record:
            record("stateful_ops", rows)
        return
    results = []
    for name in PIPELINES:
        row = measure(name, args.rows, args.epoch_rows)
        results.append(row)
        print(json.dumps(row))
    if args.record:
        record("stateful_ops", results)


if __name__ == "__main__":
    main()
