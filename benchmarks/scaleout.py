"""Scale-out on Ray: throughput at 1, 2 and 4 single-threaded workers beside the single-process executor.

    python -m benchmarks.scaleout [--events 2M] [--epoch-events 500k] [--keys 1M] [--rows 2M] [--repeats 3]
                                  [--barrier-epochs 40] [--workloads q5,q7,q8,groupby,barrier] [--record]

Workloads: Nexmark q5, q7 and q8 over generated Parquet files (as `benchmarks.nexmark`; the filesystem source
splits each epoch's slice by record range across the workers), an upsert GROUP BY over about a million distinct
keys from datagen (split by row range), and `barrier`: the same GROUP BY with one row per epoch, so that an
epoch's time is the fixed cost of its protocol (with N workers: the calls to every worker and the barrier
between the stages) and not work on rows.

Configurations: the single-process executor (`local`) and the Ray executor with 1, 2 and 4 workers, all with
`POLARS_MAX_THREADS=1` (the script re-executes itself with it; the coordinator passes it to the workers), plus
the single-process executor with 2 threads (`local-2t`, in a child process) as the reference a user gets on this
2-core machine without Ray. Ray is started once per process, and each run's clock starts at its first epoch:
neither Ray's start-up nor the workers' (reported apart as `workers_start_s`) is in the throughput.

Configurations alternate within each repeat (the order rotates between repeats), so that load from other work
on the machine hits them alike; the summary gives min / median / max of the repeats. Each row records
`uptime`'s load average at its start. Every epoch is a checkpoint (state and manifest committed).

What a row holds: events/s over all epochs; per-epoch p50; the cumulative seconds of `RayRunner.timings`
(evaluate: the coordinator waiting for the workers; read, shuffle, operators: the slowest worker's, per phase)
and their shares of the run; `coordinator_s`, the run's time outside the workers' evaluation (planning, the
offset log, watermarks, sinks, state commits, the manifest: the coordinator's own per-epoch work).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

from benchmarks.record import record

DATA_ROOT = Path(tempfile.gettempdir()) / "timelapse-scaleout-data"
CONFIGS: list[tuple[str, int | None]] = [("local", None), ("ray", 1), ("ray", 2), ("ray", 4)]
NEXMARK = ("q5", "q7", "q8")

GROUP_BY = """
CREATE TABLE src (k BIGINT, v DOUBLE)
WITH ('connector' = 'datagen', 'number-of-rows' = '{rows}', 'fields.k.min' = '1', 'fields.k.max' = '{keys}',
      'fields.v.min' = '0', 'fields.v.max' = '100');
CREATE TABLE per_key (k BIGINT, n BIGINT, total DOUBLE, PRIMARY KEY (k) NOT ENFORCED)
WITH ('connector' = 'blackhole');
INSERT INTO per_key SELECT k, COUNT(*), SUM(v) FROM src GROUP BY k;
"""


def load() -> float:
    """The 1-minute load average (what `uptime` shows first)."""
    return round(os.getloadavg()[0], 2)


def nexmark_data(events: int, epoch_events: int) -> Path:
    from benchmarks.nexmark.__main__ import data_dir, generate

    generate(DATA_ROOT, events, chunk=epoch_events)
    return data_dir(DATA_ROOT, events, 0, epoch_events)


def workload_sql(workload: str, args: argparse.Namespace) -> tuple[str, int, int]:
    """The SQL of a workload, the events it reads and the rows per epoch to ask for."""
    if workload in NEXMARK:
        from benchmarks.nexmark.queries import script

        data = nexmark_data(args.events, args.epoch_events)
        return script(workload, data, args.events, epoch_events=args.epoch_events), args.events, args.epoch_events
    if workload == "groupby":
        return GROUP_BY.format(rows=args.rows, keys=args.keys), args.rows, args.epoch_rows
    if workload == "barrier":
        return GROUP_BY.format(rows=args.barrier_epochs, keys=10), args.barrier_epochs, 1
    raise SystemExit(f"unknown workload {workload}")


def run_one(workload: str, executor: str, workers: int | None, args: argparse.Namespace) -> dict[str, Any]:
    """One run in a fresh state directory, in this process; its measurements."""
    from engine.runner import Runner
    from sql import plan_script

    sql, events, epoch_rows = workload_sql(workload, args)
    plan = plan_script(sql)
    started_at_load = load()
    with tempfile.TemporaryDirectory() as work:
        state, base = Path(work) / "state", Path(work)
        opened = time.perf_counter()
        if executor == "ray":
            from engine.scaleout.coordinator import RayRunner

            runner: Runner = RayRunner(plan, state, base, False, sql, None, None, workers or 1)
        else:
            runner = Runner(plan, state, base)
        start_s = time.perf_counter() - opened
        evaluate = _time_evaluate(runner)
        per_worker = _per_worker_seconds(runner)
        processes = [psutil.Process(), *(psutil.Process(p) for p in getattr(runner, "worker_pids", []))]
        cpu_before = [_cpu(p) for p in processes]
        durations: list[float] = []
        commits: list[float] = []
        started = time.perf_counter()
        while (report := runner.run_epoch(epoch_rows)) is not None:
            durations.append(report.duration_s)
            commits.append(report.commit_s)
        elapsed = time.perf_counter() - started
        cpu = [round(_cpu(p) - before, 2) for p, before in zip(processes, cpu_before, strict=True)]
        timings = dict(getattr(runner, "timings", {}))
        runner.close()
    evaluated = evaluate[0]
    row: dict[str, Any] = {
        "benchmark": "scaleout",
        "date": time.strftime("%Y-%m-%d"),
        "workload": workload,
        "executor": executor,
        "workers": workers,
        "polars_threads": int(os.environ.get("POLARS_MAX_THREADS", "0")) or None,
        "load_1m": started_at_load,
        "events": events,
        "epochs": len(durations),
        "elapsed_s": round(elapsed, 3),
        "events_per_s": round(events / elapsed),
        "epoch_p50_ms": round(statistics.median(durations) * 1000, 2),
        "checkpoint_p50_ms": round(statistics.median(commits) * 1000, 2),
        "workers_start_s": round(start_s, 2),
        "evaluate_s": round(evaluated, 3),
        "coordinator_s": round(elapsed - evaluated, 3),
        # CPU seconds (user + system) of the coordinator's process and of each worker's: unlike wall time, not
        # inflated by other load on the machine; their sum against one worker's shows work that does not split
        "coordinator_cpu_s": cpu[0],
        "workers_cpu_s": cpu[1:],
    }
    for phase in ("read", "shuffle", "operators"):
        if phase in timings:
            row[f"{phase}_s"] = round(timings[phase], 3)
            row[f"{phase}_share"] = round(timings[phase] / elapsed, 3)
    if per_worker:  # each worker's own seconds per phase: an imbalance between workers shows here
        row["per_worker_s"] = {phase: [round(s, 3) for s in seconds] for phase, seconds in per_worker.items()}
    return row


def _cpu(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system


def _time_evaluate(runner: Any) -> list[float]:
    """Seconds spent in the runner's `_evaluate` (read and operators; with Ray, waiting for the workers), for
    either executor alike: wraps the bound method on this instance only."""
    spent = [0.0]
    inner = runner._evaluate

    def timed(*a: Any, **k: Any) -> Any:
        t = time.perf_counter()
        try:
            return inner(*a, **k)
        finally:
            spent[0] += time.perf_counter() - t

    runner._evaluate = timed
    return spent


def _per_worker_seconds(runner: Any) -> dict[str, list[float]]:
    """Each worker's cumulative seconds per phase (`RayRunner.timings` keeps the slowest worker's only): taken
    from the workers' end-of-epoch answers as the coordinator receives them, on this instance only."""
    if not hasattr(runner, "timings"):
        return {}
    totals: dict[str, list[float]] = {}
    inner = runner._get

    def get(refs: list[Any], timeout: float | None = None) -> list[Any]:
        answers = inner(refs, timeout)
        if answers and all(isinstance(a, dict) and "seconds" in a for a in answers):
            for phase in answers[0]["seconds"]:
                spent = totals.setdefault(phase, [0.0] * len(answers))
                for i, answer in enumerate(answers):
                    spent[i] += answer["seconds"][phase]
        return answers

    runner._get = get
    return totals


def ensure_ray(workers: int) -> bool:
    """Start a local Ray once for the process (True if this call started it)."""
    import logging

    import ray

    if ray.is_initialized():
        return False
    ray.init(
        address="local",
        num_cpus=max(4, workers),
        include_dashboard=False,
        log_to_driver=False,
        logging_level=logging.ERROR,
        object_store_memory=500_000_000,
    )
    return True


def measure(args: argparse.Namespace, configs: list[tuple[str, int | None]] | None = None) -> list[dict[str, Any]]:
    """Every (workload, configuration), `args.repeats` times, configurations alternating."""
    configs = configs or CONFIGS
    started_ray = False
    if any(executor == "ray" for executor, _ in configs):
        started_ray = ensure_ray(max(w or 1 for _, w in configs))
    rows: list[dict[str, Any]] = []
    try:
        for repeat in range(args.repeats):
            for workload in args.workloads:
                turn = repeat % len(configs)
                for executor, workers in configs[turn:] + configs[:turn]:
                    row = {**run_one(workload, executor, workers, args), "repeat": repeat}
                    rows.append(row)
                    if not args.quiet:
                        print(json.dumps(row), flush=True)
    finally:
        if started_ray:
            import ray

            ray.shutdown()
    return rows


def local_two_threads(args: argparse.Namespace) -> list[dict[str, Any]]:
    """The single-process executor with 2 Polars threads, in a child process (the pool is fixed at import)."""
    command = [sys.executable, "-m", "benchmarks.scaleout", "--child-local", *_forwarded(args)]
    env = {**os.environ, "POLARS_MAX_THREADS": "2"}
    out = subprocess.run(command, env=env, capture_output=True, text=True, check=True).stdout
    return [{**json.loads(line), "executor": "local-2t"} for line in out.splitlines() if line.startswith("{")]


def _forwarded(args: argparse.Namespace) -> list[str]:
    return [
        f"--events={args.events}",
        f"--epoch-events={args.epoch_events}",
        f"--rows={args.rows}",
        f"--epoch-rows={args.epoch_rows}",
        f"--keys={args.keys}",
        f"--barrier-epochs={args.barrier_epochs}",
        f"--repeats={args.repeats}",
        f"--workloads={','.join(args.workloads)}",
    ]


def summarise(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (workload, executor, workers): min / median / max events/s and per-epoch p50, the median shares."""
    groups: dict[tuple[str, str, int | None], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["workload"], row["executor"], row["workers"]), []).append(row)
    out = []
    for (workload, executor, workers), group in groups.items():

        def spread(key: str, group: list[dict[str, Any]] = group) -> list[float]:
            values = sorted(r[key] for r in group if r.get(key) is not None)
            return [values[0], statistics.median(values), values[-1]] if values else []

        out.append(
            {
                "workload": workload,
                "executor": executor,
                "workers": workers,
                "runs": len(group),
                "events_per_s": spread("events_per_s"),
                "epoch_p50_ms": spread("epoch_p50_ms"),
                "shuffle_share": spread("shuffle_share"),
                "coordinator_s": spread("coordinator_s"),
                "coordinator_cpu_s": spread("coordinator_cpu_s"),
                "workers_cpu_s": sorted(sum(r["workers_cpu_s"]) for r in group)[len(group) // 2],
                "elapsed_s": spread("elapsed_s"),
                "load_1m": spread("load_1m"),
            }
        )
    return out


def ratios(summary: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Median throughput of 2 and 4 workers over 1 worker, and of 1 worker over the single-process executor."""
    median = {(s["workload"], s["executor"], s["workers"]): s["events_per_s"][1] for s in summary}
    out: dict[str, dict[str, float]] = {}
    for workload in {s["workload"] for s in summary}:
        one = median.get((workload, "ray", 1))
        got: dict[str, float] = {}
        if one:
            for n in (2, 4):
                if (value := median.get((workload, "ray", n))) is not None:
                    got[f"ray{n}/ray1"] = round(value / one, 2)
            if local := median.get((workload, "local", None)):
                got["ray1/local"] = round(one / local, 2)
            if local2 := median.get((workload, "local-2t", None)):
                got["ray2/local-2t"] = round(median.get((workload, "ray", 2), 0) / local2, 2)
        out[workload] = got
    return out


def parser() -> argparse.ArgumentParser:
    from benchmarks.nexmark.__main__ import count

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--events", type=count, default=2_000_000, help="Nexmark events (all kinds)")
    p.add_argument("--epoch-events", type=count, default=500_000, help="Nexmark events per epoch")
    p.add_argument("--rows", type=count, default=2_000_000, help="GROUP BY input rows")
    p.add_argument("--epoch-rows", type=count, default=500_000, help="GROUP BY rows per epoch")
    p.add_argument("--keys", type=count, default=1_000_000, help="GROUP BY key range (about 86 %% distinct at 2M rows)")
    p.add_argument("--barrier-epochs", type=int, default=40, help="one-row epochs of the barrier workload")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--workloads", type=lambda s: s.split(","), default=[*NEXMARK, "groupby", "barrier"])
    p.add_argument("--no-local-2t", action="store_true", help="skip the 2-thread single-process reference")
    p.add_argument("--record", action="store_true")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--child-local", action="store_true", help=argparse.SUPPRESS)
    return p


def main() -> None:
    args = parser().parse_args()
    if args.child_local:
        args.quiet = False
        measure(args, [("local", None)])
        return
    if os.environ.get("POLARS_MAX_THREADS") != "1":  # Polars fixes its pool at import: run again with it set
        env = {**os.environ, "POLARS_MAX_THREADS": "1"}
        again = [sys.executable, "-m", "benchmarks.scaleout", *sys.argv[1:]]
        raise SystemExit(subprocess.run(again, env=env).returncode)
    for workload in args.workloads:  # generate the input before anything is timed
        workload_sql(workload, args)
    rows = measure(args)
    if not args.no_local_2t:
        rows += local_two_threads(args)
    summary = summarise(rows)
    result = {"summary": summary, "ratios": ratios(summary)}
    for line in summary:
        print(json.dumps(line))
    print(json.dumps({"ratios": result["ratios"]}))
    if args.record:
        record("scaleout", [*rows, {"benchmark": "scaleout", "date": time.strftime("%Y-%m-%d"), **result}])


if __name__ == "__main__":
    main()
