"""One Nexmark query on timelapse, in this process: `python -m benchmarks.nexmark.run_timelapse Q DATA EVENTS EPOCH`.

The sources read the generated Parquet files; each epoch takes `EPOCH` events' worth of every kind (1:3:46), so
the three streams stay aligned in event time. Sinks are `blackhole` (q10 writes its partitioned Delta table, which
is its point). Every epoch is a checkpoint (state and manifest committed). Prints one JSON line.
`NEXMARK_STATE_BUDGET` (e.g. `1 GB`) runs the query under `SET 'state.memory.budget'`.
"""

from __future__ import annotations

import os
import resource
import tempfile
import time
from pathlib import Path

import benchmarks.nexmark.udfs  # noqa: F401 - registers count_char for q14
from benchmarks.nexmark.measure import cli, result, unsupported
from benchmarks.nexmark.queries import script
from engine.runner import Runner
from sql import plan_script
from sql.udf import REGISTRY


def main(query: str, data: Path, events: int, epoch_events: int) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as work:
        sink = Path(work) / "sink" if query == "q10" else None
        text = script(query, data, events, sink=sink, side_input=data / "side_input", epoch_events=epoch_events)
        if budget := os.environ.get("NEXMARK_STATE_BUDGET"):  # benchmarks/memory_budget.py
            text = f"SET 'state.memory.budget' = '{budget}';\n{text}"
        try:
            plan = plan_script(text, dict(REGISTRY))
        except Exception as err:  # the query is not supported: say why
            return unsupported("timelapse", query, str(err))
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
        runner.finish_checkpoint()  # the last checkpoint, if still written in the background, counts
        elapsed = time.perf_counter() - started
        cpu = time.process_time() - cpu_started
        runner.close()
    warm = elapsed - first_epoch_s if len(durations) > 1 else elapsed
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return result(
        "timelapse", query, events, elapsed, warm, durations, commits, peak, cpu_utilisation=round(cpu / elapsed, 2)
    )


if __name__ == "__main__":
    cli(main)
