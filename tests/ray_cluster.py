"""A two-node Ray cluster on this machine for the scale-out tests: `ray start --block` twice, each in its own
process group, ended by killing those groups (never `ray stop`: it kills every Ray process on the machine).

Token auth is on by default in Ray 2.60 (a second node is refused without it): the nodes and the driver run with
`RAY_AUTH_MODE=disabled`. Each node has one CPU, so two one-CPU workers must land on both nodes.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil

ENV = {"RAY_AUTH_MODE": "disabled"}
#: Ray's default worker ports; the GCS port must not fall in it
WORKER_PORTS = range(10_002, 20_000)


@dataclass
class Node:
    process: subprocess.Popen[str]
    log: Path

    def ray_processes(self) -> list[psutil.Process]:
        """The node's processes (raylet, workers, agents...): its `ray start` session's (workers have process
        groups of their own, in that session)."""
        session = self.process.pid
        found = []
        for process in psutil.process_iter(["pid"]):
            with contextlib.suppress(psutil.Error, OSError):
                if os.getsid(process.pid) == session:
                    found.append(process)
        return found

    def worker_pids(self) -> set[int]:
        """Processes of this node running a timelapse worker (`ray::WorkerActor...` titles)."""
        pids = set()
        for process in self.ray_processes():
            with contextlib.suppress(psutil.Error):
                if process.name().startswith(("ray::Worker", "ray::WorkerActor")):
                    pids.add(process.pid)
        return pids


@dataclass
class Cluster:
    address: str
    head: Node
    worker: Node


def free_port() -> int:
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port not in WORKER_PORTS:
            return port


def _start(args: list[str], log: Path, env: dict[str, str]) -> Node:
    handle = log.open("w")
    process = subprocess.Popen(
        [str(Path(sys.executable).parent / "ray"), "start", "--block", *args],
        stdout=handle,
        stderr=subprocess.STDOUT,
        text=True,
        env={**env, **ENV},
        start_new_session=True,  # its own session and process group, killed as a whole at the end
    )
    return Node(process, log)


def _wait_started(node: Node, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if "Ray runtime started" in node.log.read_text(errors="replace"):
            return
        if node.process.poll() is not None:
            raise RuntimeError(f"ray start failed: {node.log.read_text(errors='replace')[-2000:]}")
        time.sleep(0.2)
    raise RuntimeError(f"ray start did not finish in {timeout:g} s: {node.log.read_text(errors='replace')[-2000:]}")


def _end(node: Node) -> None:
    for process in node.ray_processes():  # the workers, in groups of their own, too
        with contextlib.suppress(psutil.Error):
            process.kill()
    with contextlib.suppress(ProcessLookupError):
        os.killpg(node.process.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        node.process.wait(timeout=10)


@contextlib.contextmanager
def two_nodes(logs: Path, env: dict[str, str] | None = None) -> Iterator[Cluster]:
    """A head and a second node, one CPU each, on 127.0.0.1, with the environment `env` (default: this
    process's); both killed (their sessions) on exit."""
    env = dict(os.environ) if env is None else env
    port = free_port()
    address = f"127.0.0.1:{port}"
    common = ["--num-cpus=1", "--object-store-memory=300000000", "--node-ip-address=127.0.0.1"]
    head = _start(["--head", f"--port={port}", "--include-dashboard=false", *common], logs / "head.log", env)
    worker: Node | None = None
    try:
        _wait_started(head)
        worker = _start([f"--address={address}", *common], logs / "worker.log", env)
        _wait_started(worker)
        yield Cluster(address, head, worker)
    finally:
        for node in (worker, head):
            if node is not None:
                _end(node)
        # `ray start --head` names itself the machine's current cluster: a later `ray.init(num_cpus=...)` without
        # an address would try to join the dead one
        current = Path("/tmp/ray/ray_current_cluster")
        with contextlib.suppress(OSError):
            if current.read_text().strip().endswith(f":{port}"):  # ours (the node's IP may be written)
                current.unlink()
