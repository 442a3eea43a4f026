"""Small-epoch latency of stateful pipelines: per-epoch p50 / p99 / mean at 1, 100 and 10k rows per epoch,
with a checkpoint every epoch and with `SET 'checkpoint.interval' = '10 epochs'`.

    python -m benchmarks.small_epochs [--rows 1,100,10000] [--epochs 300] [--pipelines window-upsert,join]
                                      [--written background|inline|both] [--profile out.prof] [--record]

Pipelines (datagen sources, Delta sinks, whole epochs: slice logged, rows read, operators run, sinks committed,
and on a checkpoint the state change logs and the manifest row):

- *window-upsert*: a TUMBLE(10 s) aggregation per sensor (COUNT, SUM) appended to a Delta table, and an unbounded
  GROUP BY sensor upserted (MERGE) into a Delta table with a primary key;
- *join*: an interval join (±1 s) of two streams on a key, appended to a Delta table.

An epoch's time is `EpochReport.duration_s`, which includes the checkpoint when one is due; the mean over the
epochs is the amortised cost. The first `--warmup` epochs are left out. Each configuration runs in a fresh state
directory, one after the other in one process. Checkpoints are written in the background (engine/checkpoints.py),
so an epoch's time holds only taking the checkpoint; `wall_per_epoch_ms` (wall time over the measured epochs, the
last background write included) is what they cost in throughput. `--written inline` writes each checkpoint
before the next epoch, as before; `both` alternates the two.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.epoch_latency import SQL
from benchmarks.record import record
from engine.runner import Runner
from sql import plan_script

# the soak's pipeline (benchmarks/epoch_latency.py) over 1,000 sensors
WINDOW_UPSERT = SQL.replace("{sensors}", "1000")

STREAM = """CREATE TABLE {name} (k BIGINT, v BIGINT, ts TIMESTAMP(3), WATERMARK FOR ts AS ts - INTERVAL '1' SECOND)
WITH ('connector' = 'datagen', 'number-of-rows' = '{rows}', 'rows-per-second' = '{rate}', 'seed' = '{seed}',
      'fields.k.min' = '1', 'fields.k.max' = '1000', 'fields.v.min' = '0', 'fields.v.max' = '1000000');
"""
JOIN = (
    STREAM.replace("{name}", "a").replace("{seed}", "1")
    + STREAM.replace("{name}", "b").replace("{seed}", "2")
    + "CREATE TABLE matches (k BIGINT, va BIGINT, vb BIGINT) WITH ('connector' = 'delta', 'path' = '{root}/matches');\n"
    "INSERT INTO matches SELECT a.k, a.v, b.v FROM a JOIN b ON a.k = b.k "
    "AND b.ts BETWEEN a.ts - INTERVAL '1' SECOND AND a.ts + INTERVAL '1' SECOND;"
)
PIPELINES = {"window-upsert": WINDOW_UPSERT, "join": JOIN}
POLICIES = {"every epoch": None, "10 epochs": "10 epochs"}


def run_one(
    pipeline: str, rows: int, epochs: int, warmup: int, interval: str | None, background: bool = True
) -> dict[str, Any]:
    total = rows * (epochs + warmup)
    # Event time advances a second per epoch whatever its size, so windows fire and join state is evicted at the
    # same pace in every configuration.
    sql = PIPELINES[pipeline].replace("{rows}", str(total)).replace("{rate}", str(rows))
    if interval:
        sql = f"SET 'checkpoint.interval' = '{interval}';\n" + sql
    with tempfile.TemporaryDirectory() as root:
        plan = plan_script(sql.replace("{root}", root))
        runner = Runner(plan, Path(root) / "state", Path(root))
        runner.background_checkpoints = background
        latencies: list[float] = []
        commits: list[float] = []
        started = time.perf_counter()
        measured_from = started
        while (report := runner.run_epoch(rows)) is not None:
            latencies.append(report.duration_s * 1000)
            commits.append(report.commit_s * 1000)
            if len(latencies) == warmup:
                measured_from = time.perf_counter()
        runner.finish_checkpoint()  # a checkpoint still written in the background counts in the wall time
        finished = time.perf_counter()
        elapsed = finished - started
        runner.checkpoint()
        runner.close()
    measured = sorted(latencies[warmup:])
    return {
        "pipeline": pipeline,
        "rows_per_epoch": rows,
        "checkpoint": interval or "every epoch",
        "written": "background" if background else "inline",
        "epochs": len(measured),
        "p50_ms": round(statistics.median(measured), 1),
        "p99_ms": round(measured[max(0, int(len(measured) * 0.99) - 1)], 1),
        "mean_ms": round(statistics.fmean(measured), 1),
        "checkpoint_mean_ms": round(statistics.fmean(commits[warmup:]), 1),
        # wall time per measured epoch, the background writes included: what the epochs cost in throughput
        "wall_per_epoch_ms": round((finished - measured_from) * 1000 / len(measured), 1),
        "elapsed_s": round(elapsed, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", default="1,100,10000", help="rows per epoch, comma-separated")
    parser.add_argument("--epochs", type=int, default=300, help="measured epochs (a tenth of it at 10k rows)")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--pipelines", default=",".join(PIPELINES))
    parser.add_argument("--policies", default=",".join(POLICIES))
    parser.add_argument(
        "--written",
        default="background",
        help="checkpoints written in the background, inline (before the next epoch), or both (alternated)",
    )
    parser.add_argument("--profile", help="write a cProfile of all runs to this file")
    parser.add_argument("--note", default="", help="recorded with the results (e.g. which commit)")
    parser.add_argument("--record", action="store_true")
    args = parser.parse_args()
    profile = cProfile.Profile() if args.profile else None
    results = []
    for pipeline in args.pipelines.split(","):
        for rows in (int(r) for r in args.rows.split(",")):
            for policy in args.policies.split(","):
                for written in ("background", "inline") if args.written == "both" else (args.written,):
                    epochs = args.epochs if rows < 10000 else max(30, args.epochs // 10)
                    if profile:
                        profile.enable()
                    result = run_one(pipeline, rows, epochs, args.warmup, POLICIES[policy], written == "background")
                    if profile:
                        profile.disable()
                    result.update(benchmark="small-epochs", date=time.strftime("%Y-%m-%d"), note=args.note)
                    print(json.dumps(result), flush=True)
                    results.append(result)
    if profile:
        profile.dump_stats(args.profile)
    if args.record:
        record("small_epochs", results)


if __name__ == "__main__":
    main()
