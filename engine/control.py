"""Actions on a state directory, whether a pipeline is running on it or not: savepoints, checkpoints, rollback,
branches, retention. The console and its REST API call these; `user` is who the audit names (a token's name).

Each action returns a JSON-able dict on success and raises an `EngineError` (a `UserError` for a request that
cannot be carried out, `Busy` when the directory's writer did not answer in time).

A stopped directory is changed directly, under its lease, as the CLI does. A running pipeline owns its
directory's lease, so an action is handed to it instead: a request file under `requests/`, which the runner
carries out at its next epoch boundary, under its own lease, and answers.
"""

from __future__ import annotations

import datetime as dt
import getpass
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from engine import lease, requests
from engine.errors import Busy, EngineError, UserError, VersioningError
from engine.state_dir import StateDir, StateDirBusy
from engine.storage import Location, location

#: how long an action waits for the running pipeline to answer before it reports the request as pending
ANSWER_TIMEOUT_S = 60.0
#: how often the answer file is looked for
POLL_S = 0.1


def holder(state: str | Location) -> dict[str, Any] | None:
    """The running writer of `state` (host, pid, heartbeat, token), or None when no pipeline holds it."""
    found = lease.read_lease(StateDir(location(state)).root)
    return found if found is not None and lease._alive(found) else None


class Pending(Busy):
    """The running pipeline did not answer in time; the request was withdrawn (`request_id` names it)."""

    def __init__(self, message: str, request_id: str) -> None:
        super().__init__(message)
        self.request_id = request_id


def _act(
    state: str | Location,
    kind: str,
    args: dict[str, Any],
    user: str | None,
    directly: Callable[[], dict[str, Any]],
    timeout: float | None,
) -> dict[str, Any]:
    """Do an action directly under the directory's lease when nobody runs on it, else ask the running pipeline."""
    if holder(state) is None:
        try:
            return directly()
        except StateDirBusy:
            pass  # a run started meanwhile: ask it
    return _ask(StateDir(location(state)), kind, args, user, directly, ANSWER_TIMEOUT_S if timeout is None else timeout)


def _ask(
    directory: StateDir,
    kind: str,
    args: dict[str, Any],
    user: str | None,
    directly: Callable[[], dict[str, Any]],
    timeout: float,
) -> dict[str, Any]:
    request_id = requests.submit(directory, kind, args, user, timeout)
    deadline = time.monotonic() + timeout
    checked = time.monotonic()
    while time.monotonic() < deadline:
        if (found := requests.collect(directory, request_id)) is not None:
            return _result(found)
        if time.monotonic() - checked >= 1.0:
            checked = time.monotonic()
            if holder(directory.root) is None and (found := requests.collect(directory, request_id)) is None:
                # The run ended without taking it (a run serves requests until it closes its lease): do it here.
                requests.withdraw(directory, request_id)
                try:
                    return directly()
                except StateDirBusy:
                    request_id = requests.submit(directory, kind, args, user, deadline - time.monotonic())
            elif found is not None:
                return _result(found)
        time.sleep(POLL_S)
    requests.withdraw(directory, request_id)
    raise Pending(f"the running pipeline did not answer within {timeout:g} s", request_id)


def _result(found: dict[str, Any]) -> dict[str, Any]:
    if found.get("ok"):
        return dict(found.get("result") or {})
    message = str(found.get("error") or "the running pipeline refused the request")
    code = int(found.get("exit_code", 1))
    if code == 2:
        raise VersioningError(message) if found.get("type") == "VersioningError" else UserError(message)
    if code == 3:
        raise Busy(message)
    error = EngineError(message)
    error.exit_code = code
    raise error


def savepoint(
    state: str | Location,
    name: str,
    epoch: int | None = None,
    reason: str | None = None,
    user: str | None = None,
    timeout: float | None = None,
) -> dict[str, Any]:
    """Name an epoch's cut (default: the latest checkpoint; a running pipeline checkpoints first)."""
    from engine import versioning

    return _act(
        state,
        "savepoint",
        {"name": name, "epoch": epoch, "reason": reason},
        user,
        lambda: versioning.create_savepoint(state, name, epoch, reason=reason, user=user),
        timeout,
    )


def delete_savepoint(
    state: str | Location,
    name: str,
    reason: str | None = None,
    user: str | None = None,
    timeout: float | None = None,
) -> dict[str, Any]:
    from engine import versioning

    return _act(
        state,
        "delete_savepoint",
        {"name": name, "reason": reason},
        user,
        lambda: versioning.delete_savepoint(state, name, reason=reason, user=user),
        timeout,
    )


def checkpoint(state: str | Location, user: str | None = None) -> dict[str, Any]:
    """Ask for a checkpoint at the running pipeline's next epoch boundary (or the next run's first); the
    checkpoint row records `requested_by: user`. Returns at once (the checkpoint is not waited for)."""
    from engine.pipeline import request_checkpoint

    request_checkpoint(state, user=user or getpass.getuser())
    return {"requested": True, "running": holder(state) is not None}


def rollback_preview(
    state: str | Location,
    epoch: int | None = None,
    savepoint: str | None = None,
    timestamp: dt.datetime | None = None,
) -> dict[str, Any]:
    """What `rollback` would do, changing nothing: the target epoch, the tables restored and emptied, and the
    output that sinks which cannot be rolled back would receive again."""
    from engine import versioning

    return versioning.rollback_preview(state, to_epoch=epoch, savepoint=savepoint, timestamp=timestamp)


def rollback(
    state: str | Location,
    epoch: int | None = None,
    savepoint: str | None = None,
    timestamp: dt.datetime | None = None,
    reason: str | None = None,
    force: bool = False,
    user: str | None = None,
    timeout: float | None = None,
) -> dict[str, Any]:
    """Roll state, offsets and sinks back together (a running pipeline does it at its next epoch boundary and
    continues from the restored cut)."""
    from engine import versioning

    return _act(
        state,
        "rollback",
        {
            "epoch": epoch,
            "savepoint": savepoint,
            "timestamp": timestamp.isoformat() if timestamp else None,
            "reason": reason,
            "force": force,
        },
        user,
        lambda: versioning.rollback(
            state, to_epoch=epoch, savepoint=savepoint, timestamp=timestamp, reason=reason, force=force, user=user
        ),
        timeout,
    )


def branch(
    state: str | Location,
    new_state: str | Path,
    savepoint: str | None = None,
    epoch: int | None = None,
    user: str | None = None,
) -> dict[str, Any]:
    """A new state directory from a savepoint's or an epoch's cut; the parent is only read (it may be running)."""
    from engine.branching import create_branch

    return create_branch(state, new_state, savepoint=savepoint, epoch=epoch, user=user)


def retention(
    state: str | Location,
    count: str | None = None,
    age: str | None = None,
    reason: str | None = None,
    user: str | None = None,
    timeout: float | None = None,
) -> dict[str, Any]:
    """Free the checkpoints the policy no longer keeps (savepoints and the current cut always stay)."""
    from engine import retention as policy_module

    def directly() -> dict[str, Any]:
        directory = StateDir(location(state))
        policy = policy_module.policy_from_options({}, count, age)
        with directory.lock():
            return policy_module.apply(directory, policy, reason=reason, user=user)

    return _act(state, "retention", {"count": count, "age": age, "reason": reason}, user, directly, timeout)
