"""Failures of a scaled-out run (`timelapse run --executor ray --workers 2`): a worker killed at a fault point of
the epoch protocol or from outside at a random instant (the run recovers by itself: a warning, exit 0,
`workers_lost` in the summary), the coordinator killed with SIGKILL (no Ray process of it survives; a restart with
another number of workers finishes the job), and errors that stay one line.

Every recovered run must end with the sinks DuckDB computes over the input (tests/crash_harness.py) and the state
of an uninterrupted single-process run."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from engine import faults
from tests import crash_harness as harness
from tests import test_decimals as decimals

SEED = 19
CHUNKS = 3
INTERVAL = "2 epochs"
#: environment variables of the crash tests, never inherited from the test's own environment
ARMING = ("TIMELAPSE_WORKER_CRASH_AT", "TIMELAPSE_WORKER_CRASH_INDEX", "TIMELAPSE_CRASH_AT", "TIMELAPSE_FAIL_AT")


def command(state: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "engine.cli", "run", "pipeline.sql", "--state", state, "--once", "--json", *extra]


def environment(**extra: str) -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ARMING} | harness.ENV | extra


def scaled(rows: int, workers: int = 2) -> list[str]:
    return ["--quiet", "--max-epoch-rows", str(rows), "--executor", "ray", "--workers", str(workers)]


def stream_in(root: Path) -> harness.Stream:
    stream = harness.Stream(root, SEED, CHUNKS)
    stream.setup(INTERVAL)
    stream.deliver_all()
    return stream


def check(stream: harness.Stream, scratch: Path) -> None:
    """Sinks equal DuckDB's over the input; every operator's state equals an uninterrupted single-process run's."""
    harness.check_sinks(stream)
    harness.check_state(stream, scratch)


def assert_recovered(code: int, stdout: str, stderr: str) -> dict[str, object]:
    """Exit 0, one warning line per lost worker and nothing else on stderr or stdout; returns the summary."""
    assert code == 0, stderr[-3000:]
    lines = stderr.strip().splitlines()
    assert lines and all(line.startswith("warning: a worker was lost") for line in lines), stderr[-3000:]
    summary = json.loads(stdout)
    assert summary["workers_lost"] == len(lines), (summary, stderr)
    assert "rollbacks" not in summary  # a lost worker is no rollback
    return summary  # type: ignore[no-any-return]


def cases() -> list[tuple[str, int, str | None]]:
    """(point, hit, worker index or None for any) drawn at random, seeded: the first runs in every test run, the
    others (every other point) are slow (each is a Ray run of ~15-50 s on CI's loaded machine); the kill from
    outside covers a loss at an arbitrary instant in every run."""
    rng = random.Random(SEED)
    points = list(faults.WORKER_POINTS)
    rng.shuffle(points)
    return [(point, rng.randint(1, 3), rng.choice([None, "0", "1"])) for point in points]


CASES = cases()


@pytest.mark.parametrize(
    "case", [CASES[0], *[pytest.param(c, marks=pytest.mark.slow) for c in CASES[1:]]], ids=lambda c: f"{c[0]}:{c[1]}"
)
def test_a_worker_killed_at_a_fault_point(tmp_path: Path, case: tuple[str, int, str | None]) -> None:
    point, hit, index = case
    stream = stream_in(tmp_path / "crashed")
    arming = {"TIMELAPSE_WORKER_CRASH_AT": f"{point}:{hit}"}
    if index is not None:
        arming["TIMELAPSE_WORKER_CRASH_INDEX"] = index
    result = subprocess.run(
        command(stream.state, *scaled(10)),
        cwd=stream.root,
        env=environment(**arming),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert_recovered(result.returncode, result.stdout, result.stderr)
    check(stream, tmp_path)


def ray_workers(run: psutil.Process) -> list[psutil.Process]:
    """The run's worker actors' processes (descendants of the run: it started the local Ray instance)."""
    found = []
    for process in run.children(recursive=True):
        try:
            if process.name().startswith("ray::Worker"):
                found.append(process)
        except psutil.Error:
            pass
    return found


def wait_for_workers(process: subprocess.Popen[str], count: int, timeout: float = 120) -> list[psutil.Process]:
    run = psutil.Process(process.pid)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, f"the run ended before its workers were seen ({process.returncode})"
        workers = ray_workers(run)
        if len(workers) >= count:
            return workers
        time.sleep(0.1)
    raise AssertionError(f"no {count} workers within {timeout:g} s")


def test_a_worker_killed_from_outside_at_a_random_instant(tmp_path: Path) -> None:
    rng = random.Random(SEED + 1)
    stream = stream_in(tmp_path / "crashed")
    # 5-row epochs: ~35 epochs, seconds of work after the workers are up
    process = subprocess.Popen(
        command(stream.state, *scaled(5)),
        cwd=stream.root,
        env=environment(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        workers = wait_for_workers(process, 2)
        time.sleep(rng.uniform(0.0, 2.0))
        rng.choice(workers).send_signal(signal.SIGKILL)
        stdout, stderr = process.communicate(timeout=300)
    finally:
        if process.poll() is None:
            process.kill()
    assert_recovered(process.returncode, stdout, stderr)
    check(stream, tmp_path)


def test_the_coordinator_killed_leaves_no_ray_process_and_a_restart_finishes(tmp_path: Path) -> None:
    rng = random.Random(SEED + 2)
    stream = stream_in(tmp_path / "crashed")
    process = subprocess.Popen(
        command(stream.state, *scaled(5)),
        cwd=stream.root,
        env=environment(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        wait_for_workers(process, 2)
        time.sleep(rng.uniform(0.5, 2.5))
        started = psutil.Process(process.pid).children(recursive=True)  # gcs_server, raylet, agents, workers...
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert any(p.name() == "raylet" for p in started if p.is_running())
    _, alive = psutil.wait_procs(started, timeout=5)
    alive = [p for p in alive if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert not alive, f"Ray processes of the killed run still running: {[(p.pid, p.name()) for p in alive]}"
    # the restart rescales: a different number of workers, the same sinks
    restarted = subprocess.run(
        command(stream.state, *scaled(10, workers=rng.choice([1, 3]))),
        cwd=stream.root,
        env=environment(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert restarted.returncode == 0, restarted.stderr[-3000:]
    assert restarted.stderr == "", restarted.stderr[-3000:]
    check(stream, tmp_path)


def one_line_error(result: subprocess.CompletedProcess[str], code: int = 2) -> str:
    assert result.returncode == code, result.stderr[-3000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr[-3000:]
    return lines[0]


def test_errors_stay_one_line(tmp_path: Path) -> None:
    """Bad SQL, bad options and an error raised inside a worker (a DECIMAL overflow in a GROUP BY the workers
    run): the single-process run's one line and exit code, no traceback, nothing of Ray's logs."""

    def timelapse(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "engine.cli", *args],
            cwd=tmp_path,
            env=environment(),
            capture_output=True,
            text=True,
            timeout=300,
        )

    (tmp_path / "bad.sql").write_text("CREATE TABLE t (a INT) WITH ('connector' = 'nowhere'); INSERT INTO t SELEC 1;")
    assert "line 1" in one_line_error(timelapse("run", "bad.sql", "--state", "s1", "--executor", "ray"))
    big = "9" * 36 + ".00"  # the largest DECIMAL(38, 2): two of them overflow
    rows = [{"id": i, "k": "a", "amount": big, "ts": decimals.BASE_MS + i * 1000} for i in range(3)]
    decimals.write(tmp_path / "in" / "1.json", rows, quoted=False)
    (tmp_path / "sum.sql").write_text(
        decimals.source(38, 2) + "CREATE TABLE t (k STRING, total DECIMAL(38, 2), PRIMARY KEY (k) NOT ENFORCED) "
        "WITH ('connector' = 'delta', 'path' = 't'); INSERT INTO t SELECT k, SUM(amount) FROM orders GROUP BY k;"
    )
    run = ("run", "sum.sql", "--state", "s2", "--once")
    assert "--workers" in one_line_error(timelapse(*run, "--executor", "ray", "--workers", "0"))
    assert "--executor ray" in one_line_error(timelapse(*run, "--workers", "2"))
    assert "--executor ray" in one_line_error(timelapse(*run, "--ray-address", "127.0.0.1:1"))
    single = one_line_error(timelapse(*run))
    scaled_out = one_line_error(timelapse(*run, "--executor", "ray", "--workers", "2"))
    assert "SUM(amount)" in scaled_out and "overflowed" in scaled_out
    assert scaled_out == single


def test_a_connector_error_in_a_worker_is_the_same_one_line(tmp_path: Path) -> None:
    """An input file changed after its epoch's slice was logged: the worker replaying the slice meets it, and the
    run fails as the single-process run does (exit 2, the connector's one line)."""
    (tmp_path / "in").mkdir()
    for i in range(3):
        (tmp_path / "in" / f"{i}.json").write_text(json.dumps({"k": f"a{i}", "v": i}) + "\n")
    (tmp_path / "p.sql").write_text(
        "CREATE TABLE events (k STRING, v BIGINT) WITH ('connector' = 'filesystem', 'path' = 'in', 'format' = 'json');"
        "CREATE TABLE totals (k STRING, n BIGINT, s BIGINT, PRIMARY KEY (k) NOT ENFORCED) "
        "WITH ('connector' = 'delta', 'path' = 'totals');"
        "INSERT INTO totals SELECT k, COUNT(*), SUM(v) FROM events GROUP BY k;"
    )

    def timelapse(*extra: str, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "engine.cli", "run", "p.sql", "--state", "st", "--once", *extra],
            cwd=tmp_path,
            env=environment(**env),
            capture_output=True,
            text=True,
            timeout=300,
        )

    assert timelapse(TIMELAPSE_CRASH_AT="epoch.offsets-logged").returncode == -signal.SIGKILL  # the slice is logged
    (tmp_path / "in" / "1.json").write_text(json.dumps({"k": "changed", "v": 100}) + "\n")
    single = one_line_error(timelapse())
    assert "changed after it was registered" in single
    assert one_line_error(timelapse("--executor", "ray", "--workers", "2")) == single
