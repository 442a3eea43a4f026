"""The console's API latency: what a page waits for, on a state directory with many keys.

A GROUP BY over `keys` sensors runs `epochs` epochs (every key changes in the first, a tenth of them in each
later one), then every read the pages make is timed in-process through the ASGI app (no network): the pipelines
list, the chart series, the version tree, the plan, one page of an operator's state at the first and the last
epoch, the same with a filter, a diff of two epochs, time-travel SQL and `/metrics`. Then the round trip of an
action asked of a running pipeline (`timelapse run --trigger 200ms` in a subprocess): a savepoint through the API,
which the run carries out at its next epoch boundary.

    python -m benchmarks.console [--keys 100000] [--repeat 7] [--record]
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

import polars as pl

from benchmarks.record import record

SQL = """
CREATE TABLE readings (sensor STRING, celsius DOUBLE, ts TIMESTAMP(3), WATERMARK FOR ts AS ts - INTERVAL '5' SECOND)
WITH ('connector' = 'filesystem', 'path' = 'in', 'format' = 'json');
CREATE TABLE per_sensor (sensor STRING, n BIGINT, max_c DOUBLE, PRIMARY KEY (sensor) NOT ENFORCED)
WITH ('connector' = 'delta', 'path' = 'out/per_sensor');
INSERT INTO per_sensor SELECT /*+ STATE_ID('per_sensor') */ sensor, COUNT(*), MAX(celsius)
FROM readings GROUP BY sensor;
"""


def _write_epoch(folder: Path, index: int, keys: int, share: float) -> int:
    count = keys if index == 0 else max(1, int(keys * share))
    start = 0 if index == 0 else (index * 7919) % keys
    sensors = [(start + i) % keys for i in range(count)]
    frame = pl.DataFrame(
        {
            "sensor": [f"s{n:07d}" for n in sensors],
            "celsius": [float((n * 31 + index) % 400) / 10 for n in sensors],
            "ts": [f"2026-01-01T00:{index // 60:02d}:{index % 60:02d}.000" for _ in sensors],
        }
    )
    frame.write_ndjson(folder / f"part-{index:04d}.json")
    return count


def build(root: Path, keys: int, epochs: int) -> Path:
    """A project whose state directory has `epochs` epochs over `keys` keys."""
    from engine import Pipeline

    (root / "in").mkdir(parents=True)
    (root / "pipeline.sql").write_text(SQL)
    for index in range(epochs):
        rows = _write_epoch(root / "in", index, keys, 0.1)
        Pipeline.from_sql(root / "pipeline.sql", state=root / "state").run(once=True, max_epoch_rows=rows)
    return root / "state"


def spread(samples: list[float]) -> dict[str, float]:
    """The first call (nothing cached yet: the console keeps a cut's state in memory once read), then the median
    and range of all calls, in ms: what a rerun should compare."""
    return {
        "first_ms": round(samples[0], 2),
        "p50_ms": round(statistics.median(samples), 2),
        "min_ms": round(min(samples), 2),
        "max_ms": round(max(samples), 2),
    }


def _time(client: Any, method: str, url: str, token: str, repeat: int, **kwargs: Any) -> dict[str, float]:
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        response = client.request(method, url, headers={"Authorization": f"Bearer {token}"}, **kwargs)
        samples.append((time.perf_counter() - started) * 1000)
        if response.status_code >= 400:
            raise RuntimeError(f"{method} {url}: {response.status_code} {response.text}")
    return spread(samples)


def reads(state: Path, repeat: int) -> dict[str, dict[str, float]]:
    from fastapi.testclient import TestClient

    from engine.console import tokens
    from engine.console.app import Console, create_app

    token = tokens.create(state, "bench", "viewer")
    epochs = engine_epochs(state)
    first, last = epochs[0], epochs[-1]
    base = "/api/pipelines/state"
    op = "/operators/per_sensor"
    timed = {
        "pipelines": ("GET", "/api/pipelines", {}),
        "series": ("GET", f"{base}/series", {}),
        "tree": ("GET", f"{base}/tree", {}),
        "plan": ("GET", f"{base}/plan", {}),
        "state page, first epoch": ("GET", f"{base}{op}/state?at={first}&limit=100", {}),
        "state page, last epoch": ("GET", f"{base}{op}/state?at={last}&limit=100", {}),
        "state page, filtered": ("GET", f"{base}{op}/state?at={last}&q=s00001&limit=100", {}),
        "diff first..last": ("GET", f"{base}{op}/diff?a={first}&b={last}&limit=100", {}),
        "sql count(*)": ("POST", f"{base}/sql", {"json": {"query": "SELECT count(*) FROM sink.per_sensor"}}),
        "metrics": ("GET", "/metrics", {}),
    }
    with TestClient(create_app(Console.serving([state]))) as client:
        return {name: _time(client, method, url, token, repeat, **kw) for name, (method, url, kw) in timed.items()}


def engine_epochs(state: Path) -> list[int]:
    import engine

    rows = engine.open(state).checkpoints()
    return rows.filter(pl.col("kind") == "epoch").get_column("epoch").to_list()


def running_action(root: Path, repeat: int) -> dict[str, float]:
    """Savepoints asked through the API of a pipeline running with a 200 ms trigger: the request's round trip."""
    from fastapi.testclient import TestClient

    from engine.console import tokens
    from engine.console.app import Console, create_app

    state = root / "state"
    command = [sys.executable, "-m", "engine.cli", "run", "pipeline.sql", "--state", "state", "--trigger", "200ms"]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent.parent), os.environ.get("PYTHONPATH", "")]),
    }
    process = subprocess.Popen(
        [*command, "--quiet"], cwd=root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        from engine.control import holder

        deadline = time.monotonic() + 60
        while holder(state) is None:
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError("the pipeline did not start")
            time.sleep(0.1)
        token = tokens.create(state, "bench-operator", "operator")
        samples = []
        with TestClient(create_app(Console.serving([state]))) as client:
            for n in range(repeat):
                started = time.perf_counter()
                answer = client.post(
                    "/api/pipelines/state/savepoints",
                    json={"name": f"bench-{n}"},
                    headers={"Authorization": f"Bearer {token}"},
                )
                samples.append((time.perf_counter() - started) * 1000)
                if answer.status_code != 201:
                    raise RuntimeError(f"savepoint: {answer.status_code} {answer.text}")
    finally:
        process.send_signal(2)
        process.wait(30)
    return spread(samples)


def run(keys: int, epochs: int, repeat: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="timelapse-console-bench-") as folder:
        root = Path(folder)
        started = time.perf_counter()
        state = build(root, keys, epochs)
        built_s = time.perf_counter() - started
        result = {
            "benchmark": "console",
            "keys": keys,
            "epochs": epochs,
            "repeat": repeat,
            "build_s": round(built_s, 1),
            "reads": reads(state, repeat),
            "savepoint on a running pipeline (trigger 200 ms)": running_action(root, repeat),
            "measured_at": time.strftime("%Y-%m-%d"),
        }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=100_000)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--record", action="store_true")
    args = parser.parse_args()
    result = run(args.keys, args.epochs, args.repeat)
    print(json.dumps(result, indent=1))
    if args.record:
        record("console", [result])


if __name__ == "__main__":
    main()
