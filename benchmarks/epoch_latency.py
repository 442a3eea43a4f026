"""Per-epoch latency and disk use over many epochs of a stateful pipeline: do both stay flat?

    python -m benchmarks.epoch_latency [--epochs 2000] [--rows-per-epoch 200] [--retain 100|all] [--record]

The soak (reliability issue): `python -m benchmarks.epoch_latency --epochs 10000 --retain 100 --block 1000 --record`.

A datagen source feeds a TUMBLE window aggregation (COUNT, SUM per key) and an unbounded GROUP BY upserted
into Delta. Every epoch commits the state change logs, the sinks and the manifest. Latency percentiles are
reported per block of epochs, with the state directory's size at the end of the block: with log checkpoints,
small-file compaction and retention (`--retain`: checkpoints kept; the engine default is 1000) neither may
grow.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

from benchmarks.record import record
from engine.runner import Runner
from sql import plan_script

SQL = """
CREATE TABLE readings (sensor BIGINT, temperature DOUBLE, ts TIMESTAMP(3),
  WATERMARK FOR ts AS ts - INTERVAL '5' SECOND)
WITH ('connector' = 'datagen', 'number-of-rows' = '{rows}', 'rows-per-second' = '{rate}',
      'fields.sensor.min' = '1', 'fields.sensor.max' = '{sensors}');
CREATE TABLE windows (sensor BIGINT, ws TIMESTAMP(3), n BIGINT, total DOUBLE) WITH ('connector' = 'delta',
  'path' = '{root}/windows');
CREATE TABLE totals (sensor BIGINT, n BIGINT, PRIMARY KEY (sensor) NOT ENFORCED) WITH ('connector' = 'delta',
  'path' = '{root}/totals');
INSERT INTO windows SELECT sensor, window_start, COUNT(*), SUM(temperature)
FROM TABLE(TUMBLE(TABLE readings, DESCRIPTOR(ts), INTERVAL '10' SECOND)) GROUP BY sensor, window_start, window_end;
INSERT INTO totals SELECT sensor, COUNT(*) FROM readings GROUP BY sensor;
"""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=2000)
    parser.add_argument("--rows-per-epoch", type=int, default=200)
    parser.add_argument("--block", type=int, default=250)
    parser.add_argument("--retain", default="1000", help="checkpoints to keep, or 'all'")
    parser.add_argument("--record", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as root:
        retention = f"SET 'checkpoint.retention.count' = '{args.retain}';\n"
        plan = plan_script(
            retention + SQL.format(rows=args.epochs * args.rows_per_epoch, root=root, rate=100, sensors=50)
        )
        runner = Runner(plan, Path(root) / "state", Path(root))
        latencies = []
        disk: list[float] = []
        memory: list[float] = []
        started = time.perf_counter()
        while (report := runner.run_epoch(args.rows_per_epoch)) is not None:
            latencies.append(report.duration_s * 1000)
            if len(latencies) % args.block == 0:
                disk.append(_megabytes(Path(root)))
                memory.append(_resident_megabytes())
        elapsed = time.perf_counter() - started
        runner.close()
        disk_mb = _megabytes(Path(root))
    blocks = []
    for start in range(0, len(latencies), args.block):
        block = sorted(latencies[start : start + args.block])
        blocks.append(
            {
                "epochs": f"{start + 1}-{start + len(block)}",
                "p50_ms": round(statistics.median(block), 1),
                "p99_ms": round(block[int(len(block) * 0.99) - 1], 1),
                "disk_mb": disk[start // args.block] if start // args.block < len(disk) else round(disk_mb, 1),
                "rss_mb": memory[start // args.block] if start // args.block < len(memory) else None,
            }
        )
    result = {
        "benchmark": "epoch-latency",
        "date": time.strftime("%Y-%m-%d"),
        "epochs": len(latencies),
        "rows_per_epoch": args.rows_per_epoch,
        "retain": args.retain,
        "elapsed_s": round(elapsed, 1),
        "disk_mb": round(disk_mb, 1),
        "blocks": blocks,
    }
    print(json.dumps(result, indent=1))
    if args.record:
        record("epoch_latency", [result])


def _resident_megabytes() -> float:
    """The process's resident memory now (not its peak), so growth across blocks shows."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return round(pages * os.sysconf("SC_PAGE_SIZE") / 1e6, 1)


def _megabytes(root: Path) -> float:
    return round(sum(f.stat().st_size for f in root.rglob("*") if f.is_file()) / 1e6, 1)


if __name__ == "__main__":
    main()
