"""Who may write a state directory: one writer at a time, and a writer that lost the directory stops before it
commits.

Every holder carries a fencing token, incremented at each acquisition and checked before each manifest commit
(`check`), so a holder that was paused past its lease and taken over stops instead of committing.

- **Local disk** (`LocalLease`): an flock decides on one machine (the kernel drops it when the holder dies,
  kill -9 included, so a restart takes over at once); the lease file covers what an flock cannot see, such as a
  holder on another host sharing the directory over a network file system.
- **Object store** (`ObjectLease`): no locks exist, so the lease object itself is the lock. It is created with a
  conditional put (`If-None-Match: *`), renewed with `If-Match` on the ETag the holder last wrote, and taken over
  with `If-Match` on the ETag the taker read: of two takers exactly one wins. A holder whose renewal fails (the
  ETag moved) has lost the lease. A lease is free when its holder released it, when its heartbeat is
  LEASE_TIMEOUT_S old, or when its holder was a process on this host that no longer exists.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import time
from pathlib import Path
from typing import IO, Any

from engine.errors import Busy
from engine.storage import ConditionFailed, Location, ObjectPath, put_if_absent, put_if_match, read_versioned
from engine.storage import write_atomic as write_atomic


def _timeout_from_environment(default: float = 30.0) -> float:
    try:
        value = float(os.environ.get("TIMELAPSE_LEASE_TIMEOUT_S", default))
    except ValueError:
        return default  # a malformed value must not stop every command at import; the default is safe
    return value if value > 0 else default


#: a lease whose holder has not renewed it for this long may be taken over by another host
#: (TIMELAPSE_LEASE_TIMEOUT_S sets it, for all processes that share a directory: they must agree)
LEASE_TIMEOUT_S = _timeout_from_environment()
#: a holder renews this often, well within the timeout
RENEW_EVERY_S = min(5.0, LEASE_TIMEOUT_S / 4)
LEASE_FILE = "lease.json"


class StateDirBusy(Busy, RuntimeError):
    """Another process is running a pipeline on this state directory."""


class LeaseLost(Busy, RuntimeError):
    """Another process took the state directory over; this one must not commit."""


def acquire(root: Location) -> Lease:
    """Take the directory at `root` for this process until the lease is closed."""
    if isinstance(root, ObjectPath):
        return ObjectLease.acquire(root)
    return LocalLease.acquire(root)


def read_lease(root: Location) -> dict[str, Any] | None:
    try:
        return dict(json.loads((root / LEASE_FILE).read_text()))
    except (FileNotFoundError, ValueError):
        return None


def _record(token: int, released: bool = False) -> dict[str, Any]:
    record = {"token": token, "pid": os.getpid(), "host": socket.gethostname(), "heartbeat": time.time()}
    return record | ({"released": True} if released else {})


def _held_by(holder: dict[str, Any]) -> str:
    return f"pid {holder.get('pid')} on {holder.get('host')}"


def _alive(holder: dict[str, Any]) -> bool:
    """Whether the holder may still be writing: not released, heartbeat fresh, and (on this host) running."""
    if holder.get("released"):
        return False
    if time.time() - float(holder.get("heartbeat", 0)) >= LEASE_TIMEOUT_S:
        return False
    if holder.get("host") == socket.gethostname():
        try:
            os.kill(int(holder.get("pid", 0)), 0)
        except ProcessLookupError:
            return False  # died without releasing (kill -9): take over at once, as an flock would allow
        except (PermissionError, ValueError):
            pass
    return True


class Lease:
    """What the runner, rollback and savepoints hold: a token, renewed each epoch, checked before each commit."""

    token: int
    root: Location

    def __init__(self) -> None:
        self.renewed = time.monotonic()

    def renew(self) -> None:
        raise NotImplementedError

    def check(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def heartbeat(self) -> None:
        """Renew the lease if it is due; the runner calls this every epoch."""
        if time.monotonic() - self.renewed >= RENEW_EVERY_S:
            self.check()
            self.renew()

    def lost(self, holder: dict[str, Any] | None) -> LeaseLost:
        taken = f"{_held_by(holder)}, token {holder.get('token')}" if holder else "nobody"
        return LeaseLost(
            f"the lease on {self.root} was taken over ({taken}; this run had token {self.token}); "
            "this run stops without committing"
        )

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class LocalLease(Lease):
    def __init__(self, root: Path, handle: IO[bytes], token: int) -> None:
        super().__init__()
        self.root = root
        self.handle = handle
        self.token = token

    @classmethod
    def acquire(cls, root: Path) -> LocalLease:
        root.mkdir(parents=True, exist_ok=True)
        handle = open(root / ".lock", "ab+")  # noqa: SIM115 - held open until the lease is closed
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            holder = read_lease(root)
            who = f" ({_held_by(holder)})" if holder else ""
            raise StateDirBusy(f"another timelapse process is running on {root}{who}") from None
        holder = read_lease(root)
        if holder is not None and holder.get("host") != socket.gethostname():
            age = time.time() - float(holder.get("heartbeat", 0))
            if age < LEASE_TIMEOUT_S and not holder.get("released"):
                handle.close()
                raise StateDirBusy(
                    f"{root} is leased to {_held_by(holder)} (heartbeat {age:.0f} s ago); "
                    f"it may be taken over once the heartbeat is {LEASE_TIMEOUT_S:.0f} s old"
                )
        lease = cls(root, handle, int(holder["token"]) + 1 if holder else 1)
        lease.renew()
        return lease

    def renew(self) -> None:
        write_atomic(self.root / LEASE_FILE, json.dumps(_record(self.token)).encode())
        self.renewed = time.monotonic()

    def check(self) -> None:
        holder = read_lease(self.root)
        if holder is None or int(holder["token"]) != self.token:
            raise self.lost(holder)

    def close(self) -> None:
        # Marked released (if still ours) while the flock is held: a copy of the directory (uploaded to S3, moved
        # to another host) then carries no live-looking lease that a run there would wait out.
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            holder = read_lease(self.root)
            if holder is not None and int(holder["token"]) == self.token:
                write_atomic(self.root / LEASE_FILE, json.dumps(_record(self.token, released=True)).encode())
        self.handle.close()


class ObjectLease(Lease):
    def __init__(self, root: ObjectPath, token: int, e_tag: str) -> None:
        super().__init__()
        self.root = root
        self.token = token
        self.e_tag = e_tag
        self.path = root / LEASE_FILE

    @classmethod
    def acquire(cls, root: ObjectPath) -> ObjectLease:
        path = root / LEASE_FILE
        for _ in range(3):  # a lost race on a free lease is tried again; a live holder is final
            current = read_versioned(path)
            try:
                if current is None:
                    return cls(root, 1, put_if_absent(path, json.dumps(_record(1)).encode()))
                data, e_tag = current
                try:
                    holder = dict(json.loads(data))
                except ValueError:
                    holder = {"token": 0}
                if _alive(holder):
                    age = time.time() - float(holder.get("heartbeat", 0))
                    raise StateDirBusy(
                        f"{root} is leased to {_held_by(holder)} (heartbeat {age:.0f} s ago); "
                        f"it may be taken over once the heartbeat is {LEASE_TIMEOUT_S:.0f} s old"
                    )
                token = int(holder.get("token", 0)) + 1
                return cls(root, token, put_if_match(path, json.dumps(_record(token)).encode(), e_tag))
            except ConditionFailed:
                continue
        raise StateDirBusy(f"another timelapse process took {root} at the same moment")

    def renew(self) -> None:
        try:
            self.e_tag = put_if_match(self.path, json.dumps(_record(self.token)).encode(), self.e_tag)
        except ConditionFailed:
            raise self.lost(read_lease(self.root)) from None
        self.renewed = time.monotonic()

    def check(self) -> None:
        current = read_versioned(self.path)
        if current is None or current[1] != self.e_tag:
            holder = None
            with contextlib.suppress(ValueError, TypeError):
                holder = dict(json.loads(current[0])) if current else None
            raise self.lost(holder)

    def close(self) -> None:
        """Release, so the next run need not wait for the heartbeat to age (only if still ours)."""
        with contextlib.suppress(ConditionFailed, OSError):
            put_if_match(self.path, json.dumps(_record(self.token, released=True)).encode(), self.e_tag)
