"""One Nexmark query on timelapse, in this process: `python -m benchmarks.nexmark.run_timelapse Q DATA EVENTS EPOCH`.

The sources read the generated Parquet files; each epoch takes `EPOCH` events' worth of every kind (1:3:46), so
the three streams stay aligned in event time. Sinks are `blackhole` (q10 writes its partitioned Delta table, which
is its point). Every epoch is a checkpoint (state and manifest committed). Prints one JSON line.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import benchmarks.nexmark.udfs  # noqa: F401 - registers count_char for q14
from benchmarks.nexmark.queries import script
from engine.runner import Runner
from sql import plan_script
from sql.udf import REGISTRY


def main(query: str, data: Path, events: int, epoch_events: int) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as work:
        sink = Path(work) / "sink" if query == "q10" else None
        text = script(query, data, events, sink=sink, side_input=data / "side_input", epoch_events=epoch_events)
        try:
            plan = plan_script(text, dict(REGISTRY))
        except Exception as err:  # the query is not supported: say why
            return {"engine": "timelapse", "query": query, "status": "unsupported", "reason": str(err)}
        runner = Runner(plan, Path(work) / "state", Path(work))
        durations, commits = [], []
        started = time.perf_counter()
        cpu_started = time.process_time()
        first_epoch_s = 0.0
        while (report := runner.run_epoch(epoch_events)) is not None:
            durations.append(report.duration_s)
            commits.append(report.commit_s)
            if len(durations) == 1:
                first_epoch_s = time.perf_counter() - started
        elapsed = time.perf_counter() - started
        cpu = time.process_time() - cpu_started
        runner.close()
    warm = elapsed - first_epoch_s if len(durations) > 1 else elapsed
    warm_events = events * (len(durations) - 1) / len(durations) if len(durations) > 1 else events
    cores = os.cpu_count() or 1
    rate = warm_events / warm
    ordered = sorted(durations)
    return {
        "engine": "timelapse",
        "query": query,
        "status": "ok",
        "events": events,
        "epochs": len(durations),
        "elapsed_s": round(elapsed, 2),
        "events_per_s": round(rate),
        "events_per_s_per_core": round(rate / cores),
        "cpu_utilisation": round(cpu / elapsed, 2),
        "epoch_p50_ms": round(statistics.median(ordered) * 1000, 1),
        "epoch_p99_ms": round(ordered[max(0, int(len(ordered) * 0.99) - 1)] * 1000, 1),
        "checkpoint_p50_ms": round(statistics.median(commits) * 1000, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }


if __name__ == "__main__":
    q, data, events, epoch = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    print(json.dumps(main(q, data, events, epoch)))
