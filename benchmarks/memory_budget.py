"""State larger than memory: Nexmark queries with and without `SET 'state.memory.budget'`, RSS over time.

    python -m benchmarks.memory_budget --queries q20,q4,q9 --events 40M --budgets none,1GB [--repeat N]
        [--only q20=none+1GB] [--record] [--chart]

Each run is the Nexmark harness's timelapse run (`benchmarks.nexmark.run_timelapse`, every epoch a checkpoint,
sinks discarded) in a fresh process, with `NEXMARK_STATE_BUDGET` set to the budget; this process samples the
child's resident set (`/proc/<pid>/status` VmRSS) every half second. Budgets alternate query by query, so a
slower stretch of the machine does not fall on one configuration. `--record` appends one row per run to
results/memory_budget.jsonl; `--chart` draws RSS over time per query from the rows of this invocation.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from benchmarks.nexmark.__main__ import DEFAULT_DATA, count, data_dir
from benchmarks.record import record

HERE = Path(__file__).resolve().parent
SAMPLE_S = 0.5
TIMEOUT_S = int(os.environ.get("NEXMARK_TIMEOUT", "1800"))


def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def run(query: str, data: Path, events: int, epoch_events: int, budget: str | None) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(HERE.parent), "NEXMARK_STATE_BUDGET": budget or ""}
    module = "benchmarks.nexmark.run_timelapse"
    command = [sys.executable, "-m", module, query, str(data), str(events), str(epoch_events)]
    started = time.perf_counter()
    child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    samples: list[tuple[float, float]] = []

    def sample() -> None:
        while child.poll() is None:
            if (mb := rss_mb(child.pid)) is not None:
                samples.append((round(time.perf_counter() - started, 2), round(mb)))
            time.sleep(SAMPLE_S)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        stdout, stderr = child.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        child.kill()
        child.communicate()
        return {"query": query, "budget": budget, "status": "timed out", "reason": f"over {TIMEOUT_S} s"}
    finally:
        sampler.join()
    lines = [line for line in stdout.splitlines() if line.startswith("{")]
    if child.returncode != 0 or not lines:
        return {"query": query, "budget": budget, "status": "failed", "reason": stderr.strip()[-300:]}
    measured = json.loads(lines[-1])
    return {
        **measured,
        "budget": budget,
        "sampled_peak_rss_mb": max((mb for _, mb in samples), default=None),
        "rss_mb_over_time": samples,
    }


def chart(rows: list[dict[str, Any]], target: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    queries = sorted({row["query"] for row in rows})
    figure, axes = plt.subplots(1, len(queries), figsize=(5 * len(queries), 3.6), squeeze=False)
    for axis, query in zip(axes[0], queries, strict=True):
        for row in rows:
            if row["query"] != query or not row.get("rss_mb_over_time"):
                continue
            times, mbs = zip(*row["rss_mb_over_time"], strict=True)
            axis.plot(times, mbs, label=f"budget {row['budget'] or 'none'}")
        axis.set_title(f"{query}, {rows[0]['events'] // 1_000_000}M events")
        axis.set_xlabel("seconds")
        axis.set_ylabel("RSS (MB)")
        axis.legend()
    figure.tight_layout()
    figure.savefig(target, dpi=110)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--queries", default="q20,q4,q9")
    parser.add_argument("--events", default="40M")
    parser.add_argument("--epoch-events", default="1M")
    parser.add_argument("--budgets", default="none,1GB", help="comma-separated; 'none' runs without a budget")
    parser.add_argument("--only", default="", help="per-query budgets overriding --budgets: q20=none+1GB,q4=1GB")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--record", action="store_true")
    parser.add_argument("--chart", action="store_true")
    args = parser.parse_args(argv)
    events, epoch_events = count(args.events), count(args.epoch_events)
    data = data_dir(args.data, events, 0, epoch_events)
    if not data.exists():
        print(f"no data at {data}: python -m benchmarks.nexmark generate --events {args.events} "
              f"--epoch-events {args.epoch_events}", file=sys.stderr)  # fmt: skip
        return 2
    budgets = [None if b.strip().lower() == "none" else b.strip() for b in args.budgets.split(",")]
    overrides = {
        query: [None if b.lower() == "none" else b for b in spec.split("+")]
        for query, spec in (item.split("=") for item in args.only.split(",") if item)
    }
    rows = []
    for repeat in range(args.repeat):
        for query in args.queries.split(","):
            mine = overrides.get(query, budgets)
            order = mine if repeat % 2 == 0 else list(reversed(mine))
            for budget in order:
                row = run(query, data, events, epoch_events, budget)
                rows.append(row)
                shown = {k: v for k, v in row.items() if k != "rss_mb_over_time"}
                print(json.dumps(shown), flush=True)
                if args.record:
                    record("memory_budget", [{**row, "epoch_events": epoch_events, "repeat": repeat}])
    if args.chart:
        chart([r for r in rows if r.get("status") == "ok"], HERE / "results" / "memory_budget.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
