"""The layout of a state directory, its pipeline identity, and the lease that keeps one writer per directory.

A state directory is relocatable: it can be moved, copied or uploaded and behaves as the original. So no path
it records names its current location. `StateDir.record` turns a path into what is stored (the manifest's table
paths and operator directories, branch.json, branches/*.json), `StateDir.locate` turns a stored path back into
a real one at the directory's current location; nothing else reads or writes stored paths.

The rule (docs/architecture.md, "Paths are relative"):
- a path inside the state directory is stored relative to it: `operators/totals/state`, `dead_letters/orders`;
- a path beside it, inside the folder that holds it (the project folder: SQL, data, sinks and state), is stored
  relative to the state directory too: `../out/totals`. Moving or copying the whole project keeps them together;
- anything else (a sink in another tree, `/data/out`) is stored absolute, as declared.

Directories written by earlier versions store absolute paths. `original_roots` finds where such a directory
lived from the structure of what it stored (`<root>/operators/<id>`, `<root>/dead_letters/<source>`), and
`locate` maps an absolute path under an original root (or beside it, in its project folder) to the same place
under the current root. Nothing is rewritten: old rows are read through that mapping, new rows are relative.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Any

from engine.errors import Busy


class StateDirBusy(Busy, RuntimeError):
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

    @property
    def damaged_offsets(self) -> Path:
        """Where offset files of uncommitted epochs that cannot be read are set aside (`<time>/` under it)."""
        return self.offsets / "_damaged"

    def dead_letters(self, source: str) -> Path:
        return self.root / "dead_letters" / source.lower()

    @property
    def operators(self) -> Path:
        return self.root / "operators"

    def operator(self, state_id: str, since: int | None = None) -> Path:
        """The directory of an operator's state tables; `since`: of state started afresh at that epoch, beside
        state it could not restore (which stays where it was, so earlier epochs remain readable)."""
        return self.operators / (state_id if since is None else f"{state_id}@{since}")

    def foreign_table(self, name: str) -> Path:
        """Where a branch keeps its copy of a non-sink table that lived outside its parent's directory."""
        return self.root / "tables" / name

    @property
    def pipeline_file(self) -> Path:
        """The pipeline id (`pipeline_id`)."""
        return self.root / "pipeline.json"

    @property
    def rollback_intent(self) -> Path:
        """Present while a rollback is under way: what it restores, so a crash part-way is finished by the next run."""
        return self.root / "rollback-in-progress.json"

    @property
    def branch_file(self) -> Path:
        """In a branch: its parent and where its sinks are (engine.branching)."""
        return self.root / "branch.json"

    @property
    def branches(self) -> Path:
        """In a parent: one record per branch made from it (`timelapse log` shows them)."""
        return self.root / "branches"

    @staticmethod
    def set_aside_log(table: Path) -> Path:
        """Where a Delta table's unreadable log entries are set aside (`<time>/` under it); the manifest's too."""
        return table / "_damaged_log"

    def pipeline_id(self) -> str:
        """A stable id for this pipeline; prefixes the transaction markers written to its Delta tables."""
        path = self.pipeline_file
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

    # -- stored paths ----------------------------------------------------------------------------
    @property
    def base(self) -> Path:
        """The directory's current location: absolute, `..` and `.` folded (symlinks are kept)."""
        return Path(os.path.abspath(self.root))

    def record(self, path: str | Path) -> str:
        """How `path` is stored: relative to this directory (POSIX separators) if it lies inside it or beside it
        in the folder that holds it, else absolute."""
        text = os.path.abspath(path)  # callers hold real paths; a relative one is relative to the working directory
        # As written first; then with symlinks followed, for callers that resolved the path (branching does).
        for base, target in ((self.base, Path(text)), (self.base.resolve(), Path(text).resolve())):
            if target.is_relative_to(base):
                return target.relative_to(base).as_posix()
            project = base.parent
            if project != project.parent and target.is_relative_to(project):
                return (PurePosixPath("..") / target.relative_to(project).as_posix()).as_posix()
        return text

    def locate(self, stored: str, origins: Iterable[Path] = ()) -> Path:
        """The real path of a stored one at this directory's current location; `origins` are where the
        directory lived when it stored absolute paths (`original_roots`)."""
        if not os.path.isabs(stored):
            return Path(os.path.normpath(self.base / stored))
        path = Path(os.path.normpath(stored))
        moved = [origin for origin in origins if origin != self.base]
        for origin in moved:
            if path.is_relative_to(origin):
                return self.base / path.relative_to(origin)
        for origin in moved:  # beside the original, in its project folder: beside the current one
            project = origin.parent
            if project != project.parent and path.is_relative_to(project):
                return self.base.parent / path.relative_to(project)
        return path

    @staticmethod
    def original_roots(stored: Iterable[tuple[str, str]]) -> list[Path]:
        """Where a directory lived when it stored absolute paths, from (role, path) pairs of what it stored:
        operator directories (`<root>/operators/<id>`), their tables (`<root>/operators/<id>/<table>...`) and
        dead-letter tables (`<root>/dead_letters/<source>`). Longest first, so the most specific root wins."""
        roots: set[Path] = set()
        for role, text in stored:
            if not os.path.isabs(text):
                continue
            parts = Path(os.path.normpath(text)).parts
            anchor = "dead_letters" if role == "dead_letters" else "operators"
            if role == "dead_letters" or role == "directory":
                if len(parts) >= 3 and parts[-2] == anchor:
                    roots.add(Path(*parts[:-2]))
            elif role in ("state", "late") and anchor in parts[:-2]:
                at = max(i for i, part in enumerate(parts[:-2]) if part == anchor)
                roots.add(Path(*parts[:at]))
        return sorted(roots, key=lambda p: len(p.parts), reverse=True)

    def lock(self) -> Lease:
        """Take the directory for this process (a run, a rollback, a savepoint) until `close()`."""
        self.root.mkdir(parents=True, exist_ok=True)
        return Lease.acquire(self.root)


#: a lease whose holder has not renewed it for this long may be taken over by another host
LEASE_TIMEOUT_S = 30.0
RENEW_EVERY_S = 5.0


class Lease:
    """Who may write a state directory: an flock plus a lease file with a heartbeat and a fencing token.

    On one machine the flock decides: the kernel drops it when the holder dies (kill -9 included), so a
    restart takes over at once. The lease file covers what an flock cannot see, such as a holder on another
    host sharing the directory: its lease is respected until its heartbeat is LEASE_TIMEOUT_S old. Every
    acquisition increments the token; the runner checks that the token is still its own before each manifest
    commit (`check`), so a holder that was paused past its lease and taken over stops instead of committing.
    """

    def __init__(self, root: Path, handle: IO[bytes], token: int) -> None:
        self.root = root
        self.handle = handle
        self.token = token
        self.renewed = time.monotonic()

    @classmethod
    def acquire(cls, root: Path) -> Lease:
        handle = open(root / ".lock", "ab+")  # noqa: SIM115 - held open until the lease is closed
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            holder = read_lease(root)
            who = f" (pid {holder['pid']} on {holder['host']})" if holder else ""
            raise StateDirBusy(f"another timelapse process is running on {root}{who}") from None
        holder = read_lease(root)
        if holder is not None and holder.get("host") != socket.gethostname():
            age = time.time() - float(holder.get("heartbeat", 0))
            if age < LEASE_TIMEOUT_S:
                handle.close()
                raise StateDirBusy(
                    f"{root} is leased to pid {holder['pid']} on {holder['host']} (heartbeat {age:.0f} s ago); "
                    f"it may be taken over once the heartbeat is {LEASE_TIMEOUT_S:.0f} s old"
                )
        lease = cls(root, handle, int(holder["token"]) + 1 if holder else 1)
        lease.renew()
        return lease

    def renew(self) -> None:
        record = {"token": self.token, "pid": os.getpid(), "host": socket.gethostname(), "heartbeat": time.time()}
        write_atomic(self.root / LEASE_FILE, json.dumps(record).encode())
        self.renewed = time.monotonic()

    def heartbeat(self) -> None:
        """Renew the lease if it is due; the runner calls this every epoch."""
        if time.monotonic() - self.renewed >= RENEW_EVERY_S:
            self.check()
            self.renew()

    def check(self) -> None:
        """Raise LeaseLost unless the lease still carries this holder's token."""
        holder = read_lease(self.root)
        if holder is None or int(holder["token"]) != self.token:
            taken = f"pid {holder['pid']} on {holder['host']}, token {holder['token']}" if holder else "nobody"
            raise LeaseLost(
                f"the lease on {self.root} was taken over ({taken}; this run had token {self.token}); "
                "this run stops without committing"
            )

    def close(self) -> None:
        self.handle.close()

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class LeaseLost(Busy, RuntimeError):
    """Another process took the state directory over; this one must not commit."""


LEASE_FILE = "lease.json"


def read_lease(root: Path) -> dict[str, Any] | None:
    try:
        return dict(json.loads((root / LEASE_FILE).read_text()))
    except (FileNotFoundError, ValueError):
        return None


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
