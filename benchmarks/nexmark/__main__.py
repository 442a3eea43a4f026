"""Nexmark: timelapse beside Spark Structured Streaming and Flink SQL, on the same generated data.

    python -m benchmarks.nexmark generate --events 10M --out /tmp/nexmark          # files every engine reads
    python -m benchmarks.nexmark run --engine timelapse --query q5 --events 10M [--json] [--record]
    python -m benchmarks.nexmark run --engine spark|flink --query q5 --events 10M
    python -m benchmarks.nexmark suite --engines timelapse,spark,flink --events 10M --record
    python -m benchmarks.nexmark setup-flink          # once: Flink's own virtual environment (see below)
    python -m benchmarks.nexmark suite --engines timelapse,pathway --queries q0,q1,q2,tumble_count --format json

`--format json|csv` makes timelapse (and Pathway, which reads text only: `run_pathway.py`) read JSON-lines or CSV
copies of the generated files (written once beside them, timestamps as `yyyy-MM-dd HH:mm:ss.SSS` text).

Every run happens in a process of its own and reads the same Parquet files (generated once per event count and
seed, into --data, default `~/.cache/timelapse/nexmark`), so generation is never timed as engine work; its own
speed is reported by `generate`. A run measures throughput (events of all three kinds in the input / wall time
of processing, warm-up excluded: see the engine modules), per core, the p50/p99 latency of an epoch
(micro-batch), the checkpoint time, and the peak RSS of the process. `--record` appends the JSON result to
`benchmarks/results/nexmark.jsonl`.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.nexmark.queries import EXTRA_QUERIES, FORMATS, QUERIES, text_folder
from benchmarks.record import record

ENGINES = ("timelapse", "spark", "flink", "pathway", "polars")
RUN_TIMEOUT_S = int(os.environ.get("NEXMARK_TIMEOUT", "300"))
DEFAULT_DATA = Path(os.environ.get("NEXMARK_DATA", Path.home() / ".cache" / "timelapse" / "nexmark"))
# apache-flink pins pyarrow 16, which timelapse cannot share: Flink runs from a virtual environment of its own.
FLINK_VENV = Path(os.environ.get("NEXMARK_FLINK_VENV", Path.home() / ".cache" / "timelapse" / "flink-venv"))
# Pathway pins its own dependencies too: `python -m venv <it> && <it>/bin/pip install pathway==0.33.0 psutil`.
PATHWAY_VENV = Path(os.environ.get("NEXMARK_PATHWAY_VENV", Path.home() / ".cache" / "timelapse" / "pathway-venv"))


def setup_flink() -> int:
    """Create the Flink virtual environment (apache-flink and psutil)."""
    import venv

    venv.create(FLINK_VENV, with_pip=True)
    pip = [str(FLINK_VENV / "bin" / "python"), "-m", "pip", "install", "-q", "apache-flink>=2.0", "psutil"]
    return subprocess.run(pip, check=False).returncode


def csv_copies(target: Path) -> None:
    """CSV copies of the Parquet files, for Flink (its pip package ships no Parquet format)."""
    import polars as pl

    done = target / "csv" / "_SUCCESS"
    if done.exists():
        return
    for kind in ("person", "auction", "bid"):
        (target / "csv" / kind).mkdir(parents=True, exist_ok=True)
        for part in sorted((target / kind).glob("*.parquet")):
            frame = pl.read_parquet(part)
            frame.write_csv(
                target / "csv" / kind / f"{part.stem}.csv",
                include_header=False,
                datetime_format="%Y-%m-%d %H:%M:%S%.3f",
            )
    done.write_text("ok")


def text_copies(target: Path, fmt: str) -> None:
    """JSON-lines or CSV (with a header) copies of the Parquet files, for the text-reading runs (`--format`)."""
    import polars as pl

    if fmt == "parquet":
        return
    done = text_folder(target, fmt, "_SUCCESS")
    if done.exists():
        return
    for kind in ("person", "auction", "bid"):
        folder = text_folder(target, fmt, kind)
        folder.mkdir(parents=True, exist_ok=True)
        for part in sorted((target / kind).glob("*.parquet")):
            frame = pl.read_parquet(part)
            times = [n for n, t in frame.schema.items() if isinstance(t, pl.Datetime)]
            frame = frame.with_columns(pl.col(n).dt.strftime("%Y-%m-%d %H:%M:%S%.3f") for n in times)
            if fmt == "json":
                frame.write_ndjson(folder / f"{part.stem}.json")
            else:
                frame.write_csv(folder / f"{part.stem}.csv", include_header=True)
    done.write_text("ok")


def count(text: str) -> int:
    """`10M`, `500k`, `2000` -> events."""
    scale = {"k": 1_000, "m": 1_000_000, "g": 1_000_000_000}.get(text[-1].lower(), 1)
    return int(float(text[:-1] if scale > 1 else text) * scale)


def data_dir(root: Path, events: int, seed: int, chunk: int) -> Path:
    return root / f"events-{events}-seed-{seed}-chunk-{chunk}"


def generate(root: Path, events: int, seed: int = 0, chunk: int = 1_000_000) -> dict[str, object]:
    """Write the events once (Parquet files of `chunk` events each, plus the q13 side table); report the
    generator's own speed. File engines read one file of each kind per micro-batch."""
    import polars as pl

    from engine.sources.nexmark import write_files

    target = data_dir(root, events, seed, chunk)
    done = target / "_SUCCESS"
    if done.exists():
        return json.loads(done.read_text())
    started = time.perf_counter()
    counts = write_files(target, events, "parquet", seed, chunk=chunk)
    elapsed = time.perf_counter() - started
    side = pl.DataFrame({"key": range(10_000), "value": [f"side-{i}" for i in range(10_000)]})
    (target / "side_input").mkdir(parents=True, exist_ok=True)
    side.write_parquet(target / "side_input" / "part-0.parquet")
    result = {
        "events": events,
        "rows": counts,
        "generate_s": round(elapsed, 2),
        "generator_events_per_s": round(events / elapsed),
        "bytes": sum(f.stat().st_size for f in target.rglob("*.parquet")),
    }
    done.write_text(json.dumps(result))
    return result


def run_isolated(
    engine: str, query: str, data: Path, events: int, epoch_events: int, fmt: str = "parquet"
) -> dict[str, object]:
    """Run one (engine, query) in a fresh process and return its measurements. `fmt`: the files timelapse and
    Pathway read (Spark reads Parquet, Flink CSV, whatever it is)."""
    module = {
        "timelapse": "benchmarks.nexmark.run_timelapse",
        "spark": "benchmarks.nexmark.run_spark",
        "flink": "benchmarks.nexmark.run_flink",
        "pathway": "benchmarks.nexmark.run_pathway",
        "polars": "benchmarks.nexmark.run_polars",  # raw Polars, q0-q2: the ceiling (run_polars.py)
    }[engine]
    python = sys.executable
    if engine == "flink":
        python = str(FLINK_VENV / "bin" / "python")
        if not Path(python).exists():
            return {"engine": engine, "query": query, "status": "not installed", "reason": "run setup-flink first"}
        csv_copies(data)
    if engine == "pathway":
        python = str(PATHWAY_VENV / "bin" / "python")
        if not Path(python).exists():
            reason = f"no Pathway virtual environment at {PATHWAY_VENV} (pip install pathway==0.33.0 psutil there)"
            return {"engine": engine, "query": query, "status": "not installed", "reason": reason}
        fmt = "json" if fmt == "parquet" else fmt  # Pathway reads the text copies
    if engine in ("timelapse", "pathway"):
        text_copies(data, fmt)
    command = [python, "-m", module, query, str(data), str(events), str(epoch_events)]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2]), "NEXMARK_FORMAT": fmt}
    # A session of its own, so that a run that overstays is killed with its JVM.
    child = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, start_new_session=True
    )
    try:
        stdout, stderr = child.communicate(timeout=RUN_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(child.pid, signal.SIGKILL)
        child.communicate()
        return {"engine": engine, "query": query, "status": "timed out", "reason": f"over {RUN_TIMEOUT_S} s"}
    lines = [line for line in stdout.splitlines() if line.startswith("{")]
    if child.returncode != 0 or not lines:
        reason = (stderr.strip().splitlines() or ["no output"])[-1][:300]
        return {"engine": engine, "query": query, "status": "failed", "reason": reason}
    measured = {**json.loads(lines[-1]), "format": fmt if engine in ("timelapse", "pathway") else None}
    if engine == "timelapse":  # engine/checkpoints.py: written while the next epochs run, unless asked inline
        measured["checkpoints"] = "inline" if os.environ.get("TIMELAPSE_INLINE_CHECKPOINTS") == "1" else "background"
    return measured


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.nexmark")
    commands = parser.add_subparsers(dest="command", required=True)
    gen = commands.add_parser("generate")
    run = commands.add_parser("run")
    suite = commands.add_parser("suite")
    commands.add_parser("setup-flink", help="create the virtual environment Flink runs from")
    for command in (gen, run, suite):
        command.add_argument("--events", default="1M")
        command.add_argument("--seed", type=int, default=0)
        command.add_argument("--data", type=Path, default=DEFAULT_DATA)
        command.add_argument("--epoch-events", default="1M", help="events per epoch / micro-batch / file")
    for command in (run, suite):
        command.add_argument("--json", action="store_true")
        command.add_argument("--record", action="store_true")
    for command in (run, suite):
        command.add_argument("--format", choices=FORMATS, default="parquet", help="the files timelapse reads")
    run.add_argument("--engine", choices=ENGINES, default="timelapse")
    run.add_argument("--query", choices=QUERIES + EXTRA_QUERIES, required=True)
    suite.add_argument("--engines", default="timelapse")
    suite.add_argument("--queries", default=",".join(QUERIES))
    args = parser.parse_args(argv)

    if args.command == "setup-flink":
        return setup_flink()
    events = count(args.events)
    chunk = count(args.epoch_events)
    info = generate(args.data, events, args.seed, chunk)
    if args.command == "generate":
        print(json.dumps(info))
        return 0
    data = data_dir(args.data, events, args.seed, chunk)
    if args.command == "run":
        plan = [(args.engine, args.query)]
    else:
        plan = [(e, q) for q in args.queries.split(",") for e in args.engines.split(",")]
    for engine, query in plan:
        result = {
            "benchmark": "nexmark",
            "date": time.strftime("%Y-%m-%d"),
            "cores": os.cpu_count(),
            **run_isolated(engine, query, data, events, chunk, args.format),
        }
        print(json.dumps(result) if args.json else _line(result), flush=True)
        if args.record:
            record("nexmark", [result])
    return 0


def _line(result: dict[str, object]) -> str:
    if result.get("status") != "ok":
        return f"{result['engine']:<10} {result['query']:<4} {result.get('status')}: {result.get('reason')}"
    return (
        f"{result['engine']:<10} {result['query']:<4} {result['events_per_s']:>12,.0f} events/s "
        f"({result['events_per_s_per_core']:>10,.0f}/core)  epoch p50 {result.get('epoch_p50_ms')} ms "
        f"p99 {result.get('epoch_p99_ms')} ms  checkpoint p50 {result.get('checkpoint_p50_ms')} ms  "
        f"peak RSS {result['peak_rss_mb']} MB"
    )


if __name__ == "__main__":
    sys.exit(main())
