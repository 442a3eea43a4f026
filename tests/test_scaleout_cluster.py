"""Scale-out beyond one local Ray instance: a two-node cluster (tests/ray_cluster.py) with the state directory
and the sinks on S3 (moto's server), and a Kafka source split by partition between two workers. Results must
equal a single-process run's (and, for the crash pipeline, DuckDB's over all the input)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import polars as pl

from tests import crash_harness as harness
from tests import test_kafka_pipeline as kafka_pipeline
from tests.helpers import read_sink, run, sort_all, write_jsonl
from tests.ray_cluster import ENV as CLUSTER_ENV
from tests.ray_cluster import two_nodes
from tests.s3_server import S3Server


def timelapse(cwd: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "engine.cli", *args],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_two_node_cluster_with_the_state_on_s3(s3: S3Server, tmp_path: Path) -> None:
    """Two workers on a two-node cluster (one CPU each, so one worker per node), the state directory and the
    Delta sinks on S3: sinks equal DuckDB's over the input, state equals a single-process run's."""
    bucket = s3.bucket()
    stream = harness.Stream(tmp_path / "cluster", seed=5, chunks=4, remote=f"s3://{bucket}/p", remote_sinks=True)
    stream.setup("2 epochs")
    logs = tmp_path / "logs"
    logs.mkdir()
    # The cluster's processes get no AWS_* variables: the workers reach the bucket by what the run hands them.
    clean = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    with two_nodes(logs, clean) as cluster:
        nodes: dict[str, set[int]] = {"head": set(), "worker": set()}
        done = threading.Event()

        def watch() -> None:  # which node runs which Worker actor, while the runs last
            while not done.wait(0.2):
                nodes["head"] |= cluster.head.worker_pids()
                nodes["worker"] |= cluster.worker.worker_pids()

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        try:
            # two runs: the second one's workers load the first one's state from S3
            for chunks in (2, 2):
                for _ in range(chunks):
                    stream.deliver()
                result = timelapse(
                    stream.root,
                    *("run", "pipeline.sql", "--state", stream.state, "--once", "--max-epoch-rows", "30", "--json"),
                    *("--quiet", "--executor", "ray", "--workers", "2", "--ray-address", cluster.address),
                    env=CLUSTER_ENV,
                )
                assert result.returncode == 0, result.stderr[-3000:]
                assert result.stderr == "", result.stderr[-3000:]
                assert json.loads(result.stdout)["epochs"] >= 2
        finally:
            done.set()
            watcher.join()
        assert nodes["head"] and nodes["worker"], f"workers not spread over both nodes: {nodes}"
    harness.check_sinks(stream)
    harness.check_state(stream, tmp_path)


def test_kafka_partitions_split_between_two_workers(kafka: Any, tmp_path: Path) -> None:
    """Three partitions read by two workers (each a share of the partitions of every epoch's slice): window
    aggregation, GROUP BY and join results equal the single-process run's."""
    messages = kafka_pipeline.make_messages(seed=19, count=240)
    for message in messages:
        message["partition"] %= 3
    topic = kafka.create_topic(3)
    kafka.produce(topic, [{k: m[k] for k in ("partition", "value", "key")} for m in messages])
    sql = kafka_pipeline.pipeline(topic, kafka.bootstrap, None)
    single, scaled = tmp_path / "single", tmp_path / "scaled"
    for workdir in (single, scaled):
        write_jsonl(workdir / "names" / "1.json", kafka_pipeline.NAMES.to_dicts())
        (workdir / "pipeline.sql").write_text(sql)
    run(single, sql, max_epoch_rows=40)
    started = time.monotonic()
    result = timelapse(
        scaled,
        *("run", "pipeline.sql", "--state", "state", "--once", "--max-epoch-rows", "40", "--json", "--quiet"),
        *("--executor", "ray", "--workers", "2"),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert time.monotonic() - started < 120
    for sink in ("w", "totals", "named"):
        expected, actual = read_sink(single / sink), read_sink(scaled / sink)
        assert actual.height > 0
        assert sort_all(actual).to_dicts() == sort_all(expected).to_dicts(), sink
    dead = [pl.read_delta(str(w / "state" / "dead_letters" / "events")) for w in (single, scaled)]
    assert sort_all(dead[0].drop("reason")).equals(sort_all(dead[1].drop("reason")))
