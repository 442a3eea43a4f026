"""Test helpers for the console, shared by the API tests and the browser tests: a pipeline running in a real
`timelapse run` subprocess, a real `timelapse ui` server, and tokens of each role made by `timelapse token create`.

    with running_pipeline(tmp_path) as p:        # writes pipeline.sql, starts `timelapse run --trigger 200ms`
        p.append(20)                              # one more input file of 20 readings
        p.wait_epochs(2)                          # until 2 epochs are committed
        tokens = make_tokens(p.state)             # {"viewer": "tl_...", "operator": ..., "admin": ...}
        with console([p.state]) as url:           # `timelapse ui` on a free port, answering
            ...

Everything is a context manager (stopping its subprocess at the end, SIGINT then SIGKILL); the pytest fixtures at
the end wrap them for tests that prefer fixtures (import them into the test module).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
BASE_MS = 1_767_225_600_000  # 2026-01-01 00:00:00 UTC
ROLES = ("viewer", "operator", "admin")
IDLE_S = 2.0  # running_pipeline: no new epoch for this long means the input so far is committed

#: a JSON-lines folder source with event time and a watermark, a windowed aggregation and a keyed GROUP BY into
#: Delta sinks: two stateful operators (ids `window-agg-...` and `group-agg-...`: see
#: `engine.open(state).operators()`)
PIPELINE_SQL = """
CREATE TABLE readings (
  sensor STRING, celsius DOUBLE, ts TIMESTAMP(3),
  WATERMARK FOR ts AS ts - INTERVAL '5' SECOND
) WITH ('connector' = 'filesystem', 'path' = 'in', 'format' = 'json');
CREATE TABLE per_window (sensor STRING, window_start TIMESTAMP(3), n BIGINT, avg_c DOUBLE)
WITH ('connector' = 'delta', 'path' = 'out/per_window');
CREATE TABLE per_sensor (sensor STRING, n BIGINT, max_c DOUBLE, PRIMARY KEY (sensor) NOT ENFORCED)
WITH ('connector' = 'delta', 'path' = 'out/per_sensor');
INSERT INTO per_window SELECT sensor, window_start, COUNT(*), AVG(celsius)
FROM TABLE(TUMBLE(TABLE readings, DESCRIPTOR(ts), INTERVAL '10' SECOND)) GROUP BY sensor, window_start, window_end;
INSERT INTO per_sensor SELECT sensor, COUNT(*), MAX(celsius) FROM readings GROUP BY sensor;
"""


def env() -> dict[str, str]:
    """The environment of a `timelapse` subprocess: this worktree's code first."""
    variables = {k: v for k, v in os.environ.items() if k not in ("TIMELAPSE_CRASH_AT", "TIMELAPSE_FAIL_AT")}
    variables["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
    return variables


def timelapse(*args: str, cwd: Path | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """`timelapse ARGS` to its end (stdout and stderr captured as text)."""
    return subprocess.run(
        [sys.executable, "-m", "engine.cli", *args],
        cwd=cwd,
        env=env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def stop(process: subprocess.Popen[Any], timeout: float = 20) -> None:
    """SIGINT (a clean stop), then SIGKILL if it does not end in time."""
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def readings(start: int, count: int) -> list[dict[str, Any]]:
    """`count` readings of 4 sensors, one every 500 ms of event time from reading number `start` on."""
    return [
        {
            "sensor": f"s{(start + i) % 4}",
            "celsius": round(15 + ((start + i) * 7919 % 300) / 10, 1),
            "ts": BASE_MS + (start + i) * 500,
        }
        for i in range(count)
    ]


@dataclass
class Workdir:
    """A pipeline's folder: `pipeline.sql`, its input folder `in/`, its state directory `state/`, sinks `out/`."""

    root: Path
    files: int = 0
    rows: int = 0

    @property
    def state(self) -> Path:
        return self.root / "state"

    def append(self, count: int = 20) -> Path:
        """One more input file of `count` readings, written whole (a rename) so a running source never sees half."""
        lines = "".join(json.dumps(r) + "\n" for r in readings(self.rows, count))
        path = self.root / "in" / f"part-{self.files:04d}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".tmp")
        partial.write_text(lines)
        partial.rename(path)
        self.files += 1
        self.rows += count
        return path

    def epochs(self) -> int:
        """The number of committed epochs (0 before the first)."""
        import engine

        if not (self.state / "manifest").exists():
            return 0
        try:
            checkpoints = engine.open(self.state).checkpoints()
        except Exception:  # the manifest may be mid-creation: not yet
            return 0
        return int((checkpoints.get_column("kind") == "epoch").sum())

    def wait_epochs(self, n: int, timeout: float = 60) -> int:
        deadline = time.monotonic() + timeout
        while (found := self.epochs()) < n:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{found} epochs committed in {self.state} after {timeout} s, wanted {n}")
            time.sleep(0.1)
        return found

    def run_once(self, *extra: str) -> dict[str, Any]:
        """`timelapse run pipeline.sql --state state --once --json`: its summary."""
        done = timelapse(
            "run", "pipeline.sql", "--state", "state", "--once", "--json", "--quiet", *extra, cwd=self.root
        )
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout.strip().splitlines()[-1])


@dataclass
class RunningPipeline(Workdir):
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)


def workdir(root: Path, sql: str = PIPELINE_SQL) -> Workdir:
    """A folder with `pipeline.sql` written (no input yet)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "pipeline.sql").write_text(sql)
    (root / "in").mkdir(exist_ok=True)
    return Workdir(root)


def pipeline_once(root: Path, epochs: int = 3, per_epoch: int = 20, sql: str = PIPELINE_SQL) -> Workdir:
    """A stopped pipeline's folder with `epochs` committed epochs of `per_epoch` readings each, from one real
    `timelapse run --once --max-epoch-rows N` over `epochs` input files (one subprocess: fast)."""
    work = workdir(root, sql)
    for _ in range(epochs):
        work.append(per_epoch)
    work.run_once("--max-epoch-rows", str(per_epoch))
    return work


@contextmanager
def running_pipeline(
    root: Path,
    sql: str = PIPELINE_SQL,
    *extra: str,
    initial: int = 1,
    per_file: int = 20,
    epochs: int = 1,
    trigger: str = "200ms",
) -> Iterator[RunningPipeline]:
    """`timelapse run pipeline.sql --state state --trigger 200ms EXTRA...` in `root` (a subprocess), after writing
    `initial` input files; yields once `epochs` epochs are committed (appending one more file of `per_file` readings
    whenever no epoch came for IDLE_S: the input so far is committed); stops it with SIGINT at the end."""
    work = RunningPipeline(workdir(root, sql).root)
    for _ in range(initial):
        work.append(per_file)
    command = [sys.executable, "-m", "engine.cli", "run", "pipeline.sql", "--state", "state", "--trigger", trigger]
    log = (root / "run.log").open("wb")
    work.process = subprocess.Popen([*command, "--quiet", *extra], cwd=root, env=env(), stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 60
        seen, since = 0, time.monotonic()
        while (done := work.epochs()) < epochs:
            if done != seen:
                seen, since = done, time.monotonic()
            elif done and time.monotonic() - since > IDLE_S:  # the input so far is committed: one more file
                work.append(per_file)
                since = time.monotonic()
            if work.process.poll() is not None:
                raise RuntimeError(f"timelapse run ended ({work.process.returncode}): {_tail(root / 'run.log')}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"no {epochs} epochs in 60 s: {_tail(root / 'run.log')}")
            time.sleep(0.1)
        yield work
    finally:
        stop(work.process)
        log.close()


def _tail(path: Path) -> str:
    return path.read_text(errors="replace")[-2000:] if path.exists() else ""


def create_token(state: Path, name: str, role: str) -> str:
    """A new token through `timelapse token create --json`."""
    done = timelapse("token", "create", "--state", str(state), "--name", name, "--role", role, "--json")
    assert done.returncode == 0, done.stderr
    return str(json.loads(done.stdout)["token"])


def make_tokens(state: Path, prefix: str = "") -> dict[str, str]:
    """One token of each role for `state`, named `<prefix><role>` (e.g. `alice-admin` with prefix `alice-`)."""
    return {role: create_token(state, f"{prefix}{role}", role) for role in ROLES}


def get(url: str, token: str | None = None, timeout: float = 10) -> tuple[int, bytes]:
    """GET `url` (with a bearer token); (status, body), errors included."""
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


@contextmanager
def console(
    dirs: Sequence[Path | str], tokens: dict[str, str] | None = None, *extra: str, port: int | None = None
) -> Iterator[str]:
    """`timelapse ui DIR... --port P` (a free port) as a subprocess; yields its base URL (`http://127.0.0.1:P`)
    once it answers, stops it at the end. `tokens` is not passed anywhere (tokens live in the directories): it is
    accepted so callers can keep them beside the server they are for. Without tokens in any directory the console
    makes a session token that only its stderr shows, so create tokens first (`make_tokens`)."""
    del tokens
    port = port or free_port()
    command = [sys.executable, "-m", "engine.cli", "ui", *map(str, dirs), "--port", str(port), *extra]
    process = subprocess.Popen(command, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                _out, err = process.communicate()
                raise RuntimeError(f"timelapse ui ended ({process.returncode}): {err.decode()[-2000:]}")
            try:
                status, _ = get(url + "/api/openapi.json", timeout=2)
                if status == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError("timelapse ui did not answer in 30 s")
            time.sleep(0.1)
        yield url
    finally:
        stop(process)


# -- pytest fixtures (import them into a test module: `from tests.console_server import pipeline_dir, ...`) --------
@pytest.fixture
def pipeline_dir(tmp_path: Path) -> Workdir:
    """A stopped pipeline with 3 epochs committed by real `timelapse run --once` runs."""
    return pipeline_once(tmp_path / "p", epochs=3)


@pytest.fixture
def live_pipeline(tmp_path: Path) -> Iterator[RunningPipeline]:
    """A pipeline running in a `timelapse run --trigger 200ms` subprocess, with one epoch committed."""
    with running_pipeline(tmp_path / "live") as work:
        yield work


@pytest.fixture
def role_tokens(pipeline_dir: Workdir) -> dict[str, str]:
    """A token of each role for `pipeline_dir`."""
    return make_tokens(pipeline_dir.state)
