"""A state directory on S3 (moto's server, a real S3 API): crash recovery, verify, fencing of two writers,
unsupported schemes and storage options given without environment variables."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import polars as pl
import pytest

from tests import crash_harness as harness
from tests.s3_server import S3Server

#: fault points across the epoch protocol: offset log, operator, sink, state, compaction, manifest
POINTS = [
    "epoch.offsets-logged",
    "operator.mid",
    "sink.commit.during",
    "state.commit.during",
    "compaction.during",
    "manifest.commit.during",
    "manifest.commit.after",
]


def timelapse(cwd: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "engine.cli", *args],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=300,
    )


#: a few points across the epoch protocol (sink, state, manifest), for every test run; the rest (the offset log,
#: compaction, mid-operator, after the commits) in the slow test. Each kill here happens after the epoch's slice
#: is in the offset log on S3, so every restart replays a logged slice from S3.
QUICK_POINTS = ["sink.commit.during", "state.commit.during", "manifest.commit.during"]


def test_crashes_with_the_state_directory_on_s3(s3: S3Server, tmp_path: Path) -> None:
    crash_and_check(s3, tmp_path, QUICK_POINTS)


@pytest.mark.slow  # each restart of a run against moto costs seconds
def test_crashes_at_more_points_with_the_state_directory_on_s3(s3: S3Server, tmp_path: Path) -> None:
    crash_and_check(s3, tmp_path, POINTS)


def crash_and_check(s3: S3Server, tmp_path: Path, points: list[str]) -> None:
    """Killed at each point with the state and the Delta sinks on S3, restarted: sinks equal DuckDB, state equals
    an uninterrupted run's, and `timelapse verify` on the S3 directory finds nothing."""
    bucket = s3.bucket()
    stream = harness.Stream(
        tmp_path / "crashed", seed=8, chunks=len(points) + 1, remote=f"s3://{bucket}/p", remote_sinks=True
    )
    stream.setup("2 epochs")
    missed = []
    for point in points:
        stream.deliver()
        if harness.run_pipeline(stream.root, point, max_rows=60, state=stream.state) != -signal.SIGKILL:
            missed.append(point)
    assert not missed, f"never reached: {missed}"
    harness.finish_and_check(stream, tmp_path)
    assert not (stream.root / "s3:").exists()  # nothing landed in a local folder named after the scheme
    verified = timelapse(stream.root, "verify", stream.state, "--json")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert json.loads(verified.stdout)["problems"] == []


def _pipeline(root: Path, rows: int = 200) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    harness.write_jsonl(
        root / "in" / "part-0000.json",
        [{"seq": i, "k": f"k{i % 5}", "v": i, "ts": i * 1000} for i in range(rows)],
    )
    (root / "pipeline.sql").write_text(
        "CREATE TABLE events (seq BIGINT, k STRING, v INT, ts TIMESTAMP(3)) "
        "WITH ('connector' = 'filesystem', 'path' = 'in', 'format' = 'json');\n"
        "CREATE TABLE totals (k STRING, n BIGINT, s BIGINT, PRIMARY KEY (k) NOT ENFORCED) "
        "WITH ('connector' = 'delta', 'path' = 'totals');\n"
        "INSERT INTO totals SELECT k, COUNT(*), SUM(v) FROM events GROUP BY k;\n"
    )
    return root


def test_verify_on_s3_lists_each_table_once_and_finds_a_missing_data_file(s3: S3Server, tmp_path: Path) -> None:
    root = _pipeline(tmp_path / "p")
    state = f"s3://{s3.bucket()}/st"
    ran = timelapse(root, "run", "pipeline.sql", "--state", state, "--once", "--max-epoch-rows", "100")
    assert ran.returncode == 0, ran.stderr
    before = s3.requests()
    clean = timelapse(root, "verify", state)
    assert clean.returncode == 0, clean.stderr
    assert "no problems found" in clean.stdout
    requests = s3.requests() - before
    # Find a state data file and delete it: verify names it, in one line, and exits 4.
    bucket, prefix = state.removeprefix("s3://").split("/", 1)
    table = next(
        k for k in s3.keys(bucket, f"{prefix}/operators/") if k.endswith("/state/_delta_log/00000000000000000000.json")
    )
    table = table.split("/_delta_log/")[0]
    s3.client.delete_object(Bucket=bucket, Key=f"{table}/{_added_last(f's3://{bucket}/{table}')}")
    damaged = timelapse(root, "verify", state)
    assert damaged.returncode == 4, damaged.stderr
    assert "PROBLEM" in damaged.stdout and "is missing" in damaged.stdout and "Traceback" not in damaged.stderr
    assert requests < 150, f"{requests} requests for one verify"
    # A run finds the same damage before it builds on it, falls back, and recomputes from the sources.
    harness.write_jsonl(root / "in" / "part-0001.json", _rows(200))
    resumed = timelapse(root, "run", "pipeline.sql", "--state", state, "--once")
    assert resumed.returncode == 0 and "fell back" in resumed.stderr, resumed.stderr
    assert timelapse(root, "verify", state).returncode == 0
    assert _totals(root) == [80] * 5


def test_damaged_log_entries_on_s3_are_set_aside_by_copy_and_delete(s3: S3Server, tmp_path: Path) -> None:
    """A garbled manifest head and a garbled offset file of an uncommitted epoch: a run moves them aside (an object
    store has no rename) and resumes; nothing is lost or written twice."""
    root = _pipeline(tmp_path / "p")
    bucket = s3.bucket()
    state = f"s3://{bucket}/st"
    ran = timelapse(root, "run", "pipeline.sql", "--state", state, "--once", "--max-epoch-rows", "100")
    assert ran.returncode == 0, ran.stderr
    log = sorted(k for k in s3.keys(bucket, "st/manifest/_delta_log/") if k.endswith(".json"))
    s3.client.put_object(Bucket=bucket, Key=log[-1], Body=b'{"garbage')
    s3.client.put_object(Bucket=bucket, Key="st/offsets/000000000003.json", Body=b"not json")
    resumed = timelapse(root, "run", "pipeline.sql", "--state", state, "--once")
    assert resumed.returncode == 0, resumed.stderr
    aside = s3.keys(bucket, "st/manifest/_damaged_log/") + s3.keys(bucket, "st/offsets/_damaged/")
    assert sorted(k.rsplit("/", 1)[1] for k in aside) == sorted(["000000000003.json", log[-1].rsplit("/", 1)[1]])
    assert s3.client.get_object(Bucket=bucket, Key=log[-1])["Body"].read() != b'{"garbage'  # rewritten by the run
    assert timelapse(root, "verify", state).returncode == 0
    assert _totals(root) == [40] * 5


def _added_last(uri: str) -> str:
    """A data file the table's latest version added (the previous version does not have it)."""
    from deltalake import DeltaTable

    table = DeltaTable(uri)
    latest = set(table.file_uris())
    table.load_as_version(table.version() - 1)
    return sorted(latest - set(table.file_uris()))[0].rsplit("/", 1)[1]


def _rows(count: int) -> list[dict[str, object]]:
    return [{"seq": i, "k": f"k{i % 5}", "v": i, "ts": i * 1000} for i in range(count)]


def _totals(root: Path) -> list[int]:
    return list(pl.read_delta(str(root / "totals")).sort("k").get_column("n"))


def test_unsupported_schemes_are_refused_without_a_local_folder(tmp_path: Path) -> None:
    root = _pipeline(tmp_path / "p", rows=5)
    for state in ("hdfs://x/state", "foo://x"):
        result = timelapse(root, "run", "pipeline.sql", "--state", state, "--once")
        assert result.returncode == 2
        assert len(result.stderr.strip().splitlines()) == 1 and "not supported" in result.stderr
    assert sorted(p.name for p in root.iterdir()) == ["in", "pipeline.sql"]


def test_storage_options_reach_the_bucket_without_environment_variables(s3: S3Server, tmp_path: Path) -> None:
    root = _pipeline(tmp_path / "p", rows=20)
    bucket = s3.bucket()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    options = [f"--storage-option={k.lower()}={v}" for k, v in s3.env().items()]
    result = subprocess.run(
        [sys.executable, "-m", "engine.cli", "run", "pipeline.sql", "--state", f"s3://{bucket}/st", "--once", *options],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert any(k.startswith("st/manifest/_delta_log/") for k in s3.keys(bucket, "st/"))


def _lease(s3: S3Server, bucket: str) -> dict[str, object]:
    return dict(json.loads(s3.client.get_object(Bucket=bucket, Key="st/lease.json")["Body"].read()))


def _start(root: Path, state: str, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "engine.cli", "run", "pipeline.sql", "--state", state, "--trigger", "200ms"],
        cwd=root,
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for_lease(s3: S3Server, bucket: str, deadline_s: float = 60) -> dict[str, object]:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        keys = s3.keys(bucket, "st/")
        if "st/lease.json" in keys and "st/manifest/_delta_log/00000000000000000001.json" in keys:
            return _lease(s3, bucket)
        time.sleep(0.2)
    raise AssertionError("the first runner never committed")


def test_two_runners_on_one_s3_state_directory(s3: S3Server, tmp_path: Path) -> None:
    """Exactly one writes; the second exits 3 with one line. Then the first is paused past its lease, a third
    takes over, and the first, resumed, stops with exit 3 before committing anything more."""
    root = _pipeline(tmp_path / "p")
    bucket = s3.bucket()
    state = f"s3://{bucket}/st"
    env = {"TIMELAPSE_LEASE_TIMEOUT_S": "3"}
    first = _start(root, state, env)
    try:
        holder = _wait_for_lease(s3, bucket)
        assert holder["pid"] == first.pid
        second = timelapse(root, "run", "pipeline.sql", "--state", state, "--once", env=env)
        assert second.returncode == 3, second.stderr
        assert len(second.stderr.strip().splitlines()) == 1 and "leased to" in second.stderr

        # The first runner is paused past its lease, as a long GC pause or a frozen VM would; another host (the
        # pid check only spares a live process on this host) takes over once the heartbeat is old.
        first.send_signal(signal.SIGSTOP)
        time.sleep(3.5)
        taker = _start(root, state, env)
        try:
            deadline = time.monotonic() + 60
            while _lease(s3, bucket).get("pid") != taker.pid and time.monotonic() < deadline:
                time.sleep(0.2)
            token = int(_lease(s3, bucket)["token"])  # type: ignore[call-overload]
            assert token > int(holder["token"])  # type: ignore[call-overload]
            # New input: the resumed first runner would read it, but is fenced; the taker writes it.
            harness.write_jsonl(
                root / "in" / "part-0001.json",
                [{"seq": i, "k": f"k{i % 5}", "v": i, "ts": i * 1000} for i in range(200)],
            )
            first.send_signal(signal.SIGCONT)
            _, err = first.communicate(timeout=60)
            assert first.returncode == 3, err
            errors = [line for line in err.splitlines() if line.startswith("error:")]
            assert len(errors) == 1 and "taken over" in errors[0] and "Traceback" not in err, err
            deadline = time.monotonic() + 60
            while max(_lease_tokens(state), default=0) != token and time.monotonic() < deadline:
                time.sleep(0.5)
        finally:
            taker.send_signal(signal.SIGINT)
            taker.communicate(timeout=60)
    finally:
        if first.poll() is None:
            # New input: the resumed first runner would read it, but is fenced; the taker writes it.
            harness.write_jsonl(
                root / "in" / "part-0001.json",
                [{"seq": i, "k": f"k{i % 5}", "v": i, "ts": i * 1000} for i in range(200)],
            )
            first.send_signal(signal.SIGCONT)
            first.kill()
            first.communicate()
    manifest = pl.read_delta(f"{state}/manifest")
    tokens = _lease_tokens(state)
    # Every commit after the takeover carries the taker's token: none came from the fenced writer.
    assert max(tokens) == token and tokens == sorted(tokens), tokens
    assert manifest.height == len(tokens)
    totals = pl.read_delta(str(root / "totals")).sort("k")
    expected = pl.DataFrame({"k": [f"k{i}" for i in range(5)], "n": [80] * 5})
    assert totals.select("k", "n").equals(expected.with_columns(pl.col("n").cast(totals.schema["n"])))


def _lease_tokens(state: str) -> list[int]:
    """The lease token each manifest commit carried, in commit order (from the Delta log's txn actions)."""
    from deltalake import DeltaTable

    table = DeltaTable(f"{state}/manifest")
    tokens = []
    for version in range(1, table.version() + 1):
        table.load_as_version(version)
        tokens.append(int(table.transaction_version("timelapse/lease") or 0))
    return tokens


def test_two_writers_racing_appends_on_one_s3_delta_table_both_land(s3: S3Server) -> None:
    from deltalake import write_deltalake

    uri = f"s3://{s3.bucket()}/t"
    write_deltalake(uri, pl.DataFrame({"w": [0], "i": [0]}).to_arrow())
    errors: list[BaseException] = []

    def writer(w: int) -> None:
        try:
            for i in range(5):
                write_deltalake(uri, pl.DataFrame({"w": [w], "i": [i]}).to_arrow(), mode="append")
        except BaseException as err:  # reported below
            errors.append(err)

    threads = [threading.Thread(target=writer, args=(w,)) for w in (1, 2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    frame = pl.read_delta(uri)
    assert frame.height == 11 and frame.filter(pl.col("w") > 0).select("w", "i").n_unique() == 10
