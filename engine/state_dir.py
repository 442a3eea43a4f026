"""The layout of a state directory, its pipeline identity, and the lock that keeps one runner per directory."""

from __future__ import annotations

import fcntl
import json
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import IO


class StateDirBusy(RuntimeError):
    """Another process is running a pipeline on this state directory."""


@dataclass(frozen=True)
class StateDir:
    root: Path

    @property
    def manifest(self) -> Path:
        return self.root / "manifest"

    @property
    def offsets(self) -> Path:
        return self.root / "offsets"

    def dead_letters(self, source: str) -> Path:
        return self.root / "dead_letters" / source.lower()

    def pipeline_id(self) -> str:
        """A stable id for this pipeline; prefixes the transaction markers written to its Delta tables."""
        path = self.root / "pipeline.json"
        if path.exists():
            return str(json.loads(path.read_text())["pipeline_id"])
        self.root.mkdir(parents=True, exist_ok=True)
        pid = uuid.uuid4().hex[:12]
        write_atomic(path, json.dumps({"pipeline_id": pid}).encode())
        return pid

    @property
    def checkpoint_request(self) -> Path:
        """Present while someone has asked the running pipeline for a checkpoint at its next epoch boundary."""
        return self.root / "checkpoint-requested"

    def lock(self) -> IO[bytes]:
        """Hold an exclusive lock for the life of the run; the kernel drops it if the process dies."""
        self.root.mkdir(parents=True, exist_ok=True)
        handle = open(self.root / ".lock", "ab+")  # noqa: SIM115 - held open until the run ends
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise StateDirBusy(f"another timelapse process is running on {self.root}") from None
        return handle


def write_atomic(path: Path, data: bytes) -> None:
    """Write-then-rename with fsyncs, so a crash leaves the old file or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
