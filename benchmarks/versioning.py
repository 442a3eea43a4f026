"""Versioned state: rollback time against state size, and opening the state as of a random epoch.

    python -m benchmarks.versioning rollback [--keys 10000,100000,1000000] [--record]
    python -m benchmarks.versioning open [--epochs 10000] [--samples 200] [--record]

`rollback`: a GROUP BY over N keys, upserted into a Delta sink, runs one epoch that fills the state and the
sink with N keys, then 10 epochs that change 1% of them. `timelapse rollback` to epoch 1 is timed: it
restores every table (state, sink) with one Delta RESTORE each, so its cost follows the files changed since,
not N.

`open`: a window aggregation and a GROUP BY run E epochs, every one a checkpoint, all kept. Then the state of
the GROUP BY as of a random epoch is opened through the manifest (`engine.state_at(...).collect()`), as a
notebook would, with no engine running. Target: p50 <= 150 ms at E = 10,000.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time
from pathlib import Path

from benchmarks.record import record
from engine import state_at, versioning
from engine.runner import Runner
from sql import plan_script

ROLLBACK_SQL = """
SET 'checkpoint.retention.count' = 'all';
CREATE TABLE events (k BIGINT, v DOUBLE, ts TIMESTAMP(3))
WITH ('connector' = 'datagen', 'number-of-rows' = '{rows}', 'rows-per-second' = '1000000',
      'fields.k.min' = '0', 'fields.k.max' = '{max_key}');
CREATE TABLE totals (k BIGINT, n BIGINT, total DOUBLE, PRIMARY KEY (k) NOT ENFORCED)
WITH ('connector' = 'delta', 'path' = '{root}/totals');
INSERT INTO totals SELECT /*+ STATE_ID('totals') */ k, COUNT(*), SUM(v) FROM events GROUP BY k;
"""

OPEN_SQL = """
SET 'checkpoint.retention.count' = 'all';
CREATE TABLE readings (sensor BIGINT, temperature DOUBLE, ts TIMESTAMP(3),
  WATERMARK FOR ts AS ts - INTERVAL '5' SECOND)
WITH ('connector' = 'datagen', 'number-of-rows' = '{rows}', 'rows-per-second' = '100',
      'fields.sensor.min' = '1', 'fields.sensor.max' = '500');
CREATE TABLE windows (sensor BIGINT, ws TIMESTAMP(3), n BIGINT) WITH ('connector' = 'delta',
  'path' = '{root}/windows');
CREATE TABLE totals (sensor BIGINT, n BIGINT, PRIMARY KEY (sensor) NOT ENFORCED) WITH ('connector' = 'delta',
  'path' = '{root}/totals');
INSERT INTO windows SELECT sensor, window_start, COUNT(*)
FROM TABLE(TUMBLE(TABLE readings, DESCRIPTOR(ts), INTERVAL '10' SECOND)) GROUP BY sensor, window_start, window_end;
INSERT INTO totals SELECT /*+ STATE_ID('totals') */ sensor, COUNT(*) FROM readings GROUP BY sensor;
"""


def rollback_time(keys: int) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as root:
        change = max(1, keys // 100)
        plan = plan_script(ROLLBACK_SQL.format(rows=2 * keys + 10 * change, max_key=keys - 1, root=root))
        runner = Runner(plan, Path(root) / "state", Path(root))
        runner.run_epoch(2 * keys)
        for _ in range(10):
            runner.run_epoch(change)
        live = runner.operators[next(iter(runner.operators))].state_rows
        runner.close()
        started = time.perf_counter()
        versioning.rollback(Path(root) / "state", to_epoch=1, reason="benchmark")
        elapsed = time.perf_counter() - started
    return {"state_keys": live, "changed_per_epoch": change, "rollback_ms": round(elapsed * 1000, 1)}


def open_times(epochs: int, samples: int, rows_per_epoch: int = 50) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as root:
        plan = plan_script(OPEN_SQL.format(rows=epochs * rows_per_epoch, root=root))
        runner = Runner(plan, Path(root) / "state", Path(root))
        started = time.perf_counter()
        while runner.run_epoch(rows_per_epoch) is not None:
            pass
        run_s = time.perf_counter() - started
        last = runner.last_epoch
        runner.close()
        rng = random.Random(7)
        timings = []
        for _ in range(samples):
            epoch = rng.randint(1, last)
            began = time.perf_counter()
            frame = state_at(Path(root) / "state", "totals", epoch).collect()
            timings.append((time.perf_counter() - began) * 1000)
            assert frame.height > 0
        timings.sort()
    return {
        "epochs": last,
        "run_s": round(run_s, 1),
        "samples": samples,
        "open_p50_ms": round(statistics.median(timings), 1),
        "open_p99_ms": round(timings[int(len(timings) * 0.99) - 1], 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("what", choices=["rollback", "open"])
    parser.add_argument("--keys", default="10000,100000,1000000")
    parser.add_argument("--epochs", type=int, default=10_000)
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--record", action="store_true")
    args = parser.parse_args()
    date = time.strftime("%Y-%m-%d")
    if args.what == "rollback":
        rows = [{"benchmark": "rollback", "date": date, **rollback_time(int(k))} for k in args.keys.split(",")]
    else:
        rows = [{"benchmark": "open-epoch", "date": date, **open_times(args.epochs, args.samples)}]
    for row in rows:
        print(json.dumps(row))
    if args.record:
        record("versioning", rows)


if __name__ == "__main__":
    main()
