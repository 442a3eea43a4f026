"""State on a local disk beside state on S3: epoch commit latency, checkpoint cost, object-store requests per epoch.

    python -m benchmarks.object_storage [--epochs 150] [--repeats 3] [--keys 1000000] [--changed 10000] [--record]
    python -m benchmarks.object_storage --smoke          # a few seconds: what CI runs (tests/test_benchmarks_smoke.py)

The script starts moto's S3 server itself (tests/s3_server.py; `TIMELAPSE_TEST_S3=http://host:port` points it at
another S3-compatible endpoint instead, where the server-side request count is not available). moto logs one line
per request it answers, so the requests of an epoch are counted on the server's side: the engine's own (obstore)
and delta-rs' alike, by method (GET, PUT, HEAD, LIST, DELETE).

Three measurements, each run in a process of its own, local and S3 runs alternating, `--repeats` times:

- epoch latency, many small epochs: a stateless pipeline (datagen -> filter -> blackhole) and a stateful one
  (TUMBLE aggregation and an unbounded GROUP BY -> blackhole); every epoch a checkpoint. p50 / p99 over the
  epochs after the warm-up.
- checkpoint cost at 1 % of 1M keys: a GROUP BY over `--keys` keys is built by a first epoch, then epochs each
  touching `--changed` keys; the checkpoint's share of those epochs (operator state append and manifest row).
- requests per epoch in the steady state (after the warm-up), total and by method, and whether they grow: the
  first and the last `--block` epochs are compared.

Medians over the repeats are reported with their range. moto costs about 180 ms per Delta commit by itself
(Python, one request at a time), so the S3 latencies are moto's floor, not S3's; the request counts are what any
S3 endpoint would see.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from benchmarks.record import record

METHODS = ("GET", "PUT", "HEAD", "LIST", "DELETE")
LOG_ENV = "TIMELAPSE_BENCH_S3_LOG"  # the moto log a child process counts requests from

STATELESS = """
SET 'checkpoint.retention.count' = '100';
CREATE TABLE readings (sensor BIGINT, temperature DOUBLE, ts TIMESTAMP(3),
  WATERMARK FOR ts AS ts - INTERVAL '5' SECOND)
WITH ('connector' = 'datagen', 'number-of-rows' = '{rows}', 'rows-per-second' = '100',
      'fields.sensor.min' = '1', 'fields.sensor.max' = '50');
CREATE TABLE hot (sensor BIGINT, temperature DOUBLE) WITH ('connector' = 'blackhole');
INSERT INTO hot SELECT sensor, temperature FROM readings WHERE temperature > 30;
"""

STATEFUL = """
SET 'checkpoint.retention.count' = '100';
CREATE TABLE readings (sensor BIGINT, temperature DOUBLE, ts TIMESTAMP(3),
  WATERMARK FOR ts AS ts - INTERVAL '5' SECOND)
WITH ('connector' = 'datagen', 'number-of-rows' = '{rows}', 'rows-per-second' = '100',
      'fields.sensor.min' = '1', 'fields.sensor.max' = '50');
CREATE TABLE windows (sensor BIGINT, ws TIMESTAMP(3), n BIGINT, total DOUBLE) WITH ('connector' = 'blackhole');
CREATE TABLE totals (sensor BIGINT, n BIGINT, PRIMARY KEY (sensor) NOT ENFORCED) WITH ('connector' = 'blackhole');
INSERT INTO windows SELECT sensor, window_start, COUNT(*), SUM(temperature)
FROM TABLE(TUMBLE(TABLE readings, DESCRIPTOR(ts), INTERVAL '10' SECOND)) GROUP BY sensor, window_start, window_end;
INSERT INTO totals SELECT sensor, COUNT(*) FROM readings GROUP BY sensor;
"""

# A sequence source: the first epoch holds keys 0 .. keys-1, every later epoch `changed` of them again.
KEYED = """
CREATE TABLE events (k BIGINT, v DOUBLE, ts TIMESTAMP(3))
WITH ('connector' = 'datagen', 'rows-per-second' = '1000000',
      'fields.k.kind' = 'sequence', 'fields.k.start' = '0', 'fields.k.end' = '{last}');
CREATE TABLE per_key (key BIGINT, n BIGINT, total DOUBLE, PRIMARY KEY (key) NOT ENFORCED)
  WITH ('connector' = 'blackhole');
INSERT INTO per_key SELECT k % {keys}, COUNT(*), SUM(v) FROM events GROUP BY k % {keys};
"""


# -- counting requests on the server's side ------------------------------------------------------------
_LINE = re.compile(r'"([A-Z]+) (/[^ "]*) HTTP/1\.\d"')
_COLOUR = re.compile(r"\x1b\[[0-9;]*m")  # moto's log colours 3xx/4xx answers (a HEAD 404, for one)


def method_of(verb: str, target: str) -> str:
    """GET / PUT / HEAD / LIST / DELETE for one logged request (a bulk delete is a POST `?delete`)."""
    path, _, query = target.partition("?")
    if verb == "GET" and path.count("/") == 1 and ("list-type" in query or "prefix=" in query):
        return "LIST"
    if verb == "POST" and query.startswith("delete"):
        return "DELETE"
    return verb


class RequestLog:
    """The requests for one bucket that a moto log gained since the last `take()`."""

    def __init__(self, log: Path | None, bucket: str) -> None:
        self.log, self.bucket = log, f"/{bucket}"
        self.offset = log.stat().st_size if log is not None and log.exists() else 0

    def take(self) -> Counter[str]:
        counts: Counter[str] = Counter()
        if self.log is None:
            return counts
        with self.log.open("rb") as handle:
            handle.seek(self.offset)
            data = handle.read()
        end = data.rfind(b"\n") + 1  # a line still being written is counted next time
        self.offset += end
        for match in _LINE.finditer(_COLOUR.sub("", data[:end].decode(errors="replace"))):
            verb, target = match.groups()
            if target == self.bucket or target.startswith(self.bucket + "/") or target.startswith(self.bucket + "?"):
                counts[method_of(verb, target)] += 1
        return counts


# -- one run (in a process of its own) --------------------------------------------------------------------
def _root(storage: str, bucket: str | None, workdir: Path) -> Any:
    from engine.storage import location

    return location(f"s3://{bucket}/run") if storage == "s3" else workdir / "run"


def run_epochs(config: dict[str, Any]) -> dict[str, Any]:
    """Many small epochs, every one a checkpoint: latency per epoch and requests per epoch."""
    from engine.runner import Runner
    from sql import plan_script

    epochs, rows, warmup = config["epochs"], config["rows_per_epoch"], config["warmup"]
    sql = STATEFUL if config["pipeline"] == "stateful" else STATELESS
    with tempfile.TemporaryDirectory() as work:
        root = _root(config["storage"], config.get("bucket"), Path(work))
        requests = RequestLog(_log(), config["bucket"]) if config["storage"] == "s3" else None
        runner = Runner(plan_script(sql.format(rows=epochs * rows)), root / "state", Path(work))
        # Inline: each epoch's requests and commit time are its own checkpoint's, not a background one's.
        runner.background_checkpoints = False
        latencies, commits, per_epoch = [], [], []
        try:
            if requests is not None:
                requests.take()  # opening the state directory is not an epoch
            while (report := runner.run_epoch(rows)) is not None:
                latencies.append(report.duration_s * 1000)
                commits.append(report.commit_s * 1000)
                per_epoch.append(requests.take() if requests is not None else Counter())
        finally:
            runner.close()
    steady = slice(warmup, None)
    return {
        **_latency(latencies[steady], commits[steady]),
        **_requests(per_epoch[steady], config["block"]),
        "epochs": len(latencies),
    }


def run_checkpoints(config: dict[str, Any]) -> dict[str, Any]:
    """A GROUP BY over `keys` keys, then epochs touching `changed` keys: the checkpoint's cost."""
    from engine.runner import Runner
    from sql import plan_script

    keys, changed, epochs = config["keys"], config["changed"], config["checkpoint_epochs"]
    sql = KEYED.format(keys=keys, last=keys + changed * epochs - 1)
    with tempfile.TemporaryDirectory() as work:
        root = _root(config["storage"], config.get("bucket"), Path(work))
        requests = RequestLog(_log(), config["bucket"]) if config["storage"] == "s3" else None
        runner = Runner(plan_script(sql), root / "state", Path(work))
        runner.background_checkpoints = False  # the checkpoint's cost is what this measures
        try:
            started = time.perf_counter()
            first = runner.run_epoch(keys)
            assert first is not None
            build_s = time.perf_counter() - started
            if requests is not None:
                requests.take()
            checkpoint_ms, epoch_ms, per_epoch = [], [], []
            while (report := runner.run_epoch(changed)) is not None:
                checkpoint_ms.append(report.commit_s * 1000)
                epoch_ms.append(report.duration_s * 1000)
                per_epoch.append(requests.take() if requests is not None else Counter())
        finally:
            runner.close()
    return {
        "build_s": round(build_s, 2),
        "first_checkpoint_ms": round(first.commit_s * 1000, 1),
        "checkpoint_p50_ms": round(statistics.median(checkpoint_ms), 1),
        "checkpoint_max_ms": round(max(checkpoint_ms), 1),
        "epoch_p50_ms": round(statistics.median(epoch_ms), 1),
        **_requests(per_epoch, len(per_epoch)),
        "epochs": len(checkpoint_ms),
    }


def _log() -> Path | None:
    return Path(os.environ[LOG_ENV]) if os.environ.get(LOG_ENV) else None


def _latency(latencies: list[float], commits: list[float]) -> dict[str, float]:
    return {
        "p50_ms": round(statistics.median(latencies), 1),
        "p99_ms": round(_percentile(latencies, 0.99), 1),
        "commit_p50_ms": round(statistics.median(commits), 1),
        "commit_p99_ms": round(_percentile(commits, 0.99), 1),
    }


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(len(ordered) * share) - 1))]


def _requests(per_epoch: list[Counter[str]], block: int) -> dict[str, Any]:
    """Requests per epoch: median total, median by method, the largest epoch, and the first block's mean beside
    the last block's (a request count that grows with the tables shows as a difference)."""
    if not per_epoch or not any(per_epoch):
        return {}
    totals = [sum(c.values()) for c in per_epoch]
    block = max(1, min(block, len(per_epoch) // 2))
    return {
        "requests_p50": statistics.median(totals),
        "requests_max": max(totals),
        "requests_by_method_p50": {m: statistics.median(c[m] for c in per_epoch) for m in METHODS},
        "requests_by_method_mean": {m: round(sum(c[m] for c in per_epoch) / len(per_epoch), 2) for m in METHODS},
        "requests_first_block_mean": round(statistics.mean(totals[:block]), 2),
        "requests_last_block_mean": round(statistics.mean(totals[-block:]), 2),
    }


def run_one(config: dict[str, Any]) -> dict[str, Any]:
    return run_checkpoints(config) if config["pipeline"] == "checkpoint" else run_epochs(config)


# -- the driver --------------------------------------------------------------------------------------------
@contextlib.contextmanager
def s3_endpoint(workdir: Path, running: Any = None) -> Iterator[Any]:
    if running is not None:
        yield running
        return
    from tests.s3_server import running_s3

    with running_s3(workdir) as server:
        yield server


def _child(config: dict[str, Any], env: dict[str, str]) -> dict[str, Any]:
    """One run in a fresh process (a process forked after delta-rs was used panics; a fresh one also starts
    with cold handles, as a restarted pipeline does)."""
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.object_storage", "--one", json.dumps(config)],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"run {config} failed: {done.stderr.strip()[-2000:]}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def measure(args: argparse.Namespace, in_process: bool = False, server: Any = None) -> list[dict[str, Any]]:
    """Every configuration, local and S3 alternating, `repeats` times; one summary row per configuration.
    `server`: an S3 server already running (tests/s3_server.py), else one is started for the measurement."""
    base = {
        "epochs": args.epochs,
        "rows_per_epoch": args.rows_per_epoch,
        "warmup": args.warmup,
        "block": args.block,
        "keys": args.keys,
        "changed": args.changed,
        "checkpoint_epochs": args.checkpoint_epochs,
    }
    runs: dict[tuple[str, str], list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory() as work, s3_endpoint(Path(work), server) as server:
        env = {**server.env(), **({LOG_ENV: str(server.log)} if server.log else {})}
        if in_process:
            os.environ.update(env)
        for _ in range(args.repeats):
            for pipeline in args.pipelines:
                for storage in ("local", "s3"):
                    bucket = server.bucket(f"bench-{uuid.uuid4().hex[:10]}") if storage == "s3" else None
                    config = {**base, "pipeline": pipeline, "storage": storage, "bucket": bucket}
                    result = run_one(config) if in_process else _child(config, env)
                    runs.setdefault((pipeline, storage), []).append(result)
                    print(json.dumps({"pipeline": pipeline, "storage": storage, **result}), file=sys.stderr)
    return [_summary(pipeline, storage, results, base) for (pipeline, storage), results in runs.items()]


def _summary(pipeline: str, storage: str, results: list[dict[str, Any]], base: dict[str, Any]) -> dict[str, Any]:
    """Median over the repeats of every number, with its range."""
    row: dict[str, Any] = {
        "benchmark": "object-storage",
        "date": time.strftime("%Y-%m-%d"),
        "pipeline": pipeline,
        "storage": "s3 (moto)" if storage == "s3" else "local disk",
        "repeats": len(results),
        **{k: v for k, v in base.items() if k not in ("block",)},
    }
    for key, value in results[0].items():
        if isinstance(value, dict):
            row[key] = {m: statistics.median(r[key][m] for r in results) for m in value}
        elif isinstance(value, int | float) and key != "epochs":
            values = [r[key] for r in results]
            row[key] = statistics.median(values)
            row[f"{key}_range"] = [min(values), max(values)]
        else:
            row[key] = value
    return row


def smoke(args: argparse.Namespace) -> argparse.Namespace:
    """The sizes of the CI run: a few epochs of each configuration, once."""
    args.epochs, args.rows_per_epoch, args.warmup, args.block = 6, 50, 2, 2
    args.keys, args.changed, args.checkpoint_epochs, args.repeats = 20_000, 200, 2, 1
    return args


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=150, help="epochs per latency run")
    parser.add_argument("--rows-per-epoch", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=10, help="epochs left out of the latency and request numbers")
    parser.add_argument("--block", type=int, default=30, help="epochs compared at the start and the end")
    parser.add_argument("--keys", type=int, default=1_000_000)
    parser.add_argument("--changed", type=int, default=10_000, help="keys each checkpoint epoch touches")
    parser.add_argument("--checkpoint-epochs", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--pipelines", default="stateless,stateful,checkpoint")
    parser.add_argument("--smoke", action="store_true", help="a few seconds, in this process: for CI")
    parser.add_argument("--record", action="store_true")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # a child run: its configuration, as JSON
    return parser


def main() -> None:
    args = parser().parse_args()
    if args.one:
        print(json.dumps(run_one(json.loads(args.one))))
        return
    args.pipelines = args.pipelines.split(",")
    if args.smoke:
        smoke(args)
    rows = measure(args, in_process=args.smoke)
    for row in rows:
        print(json.dumps(row))
    if args.record and not args.smoke:
        record("object_storage", rows)


if __name__ == "__main__":
    main()
