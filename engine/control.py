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
from pathlib import Path
from typing import Any

from engine import lease
from engine.state_dir import StateDir
from engine.storage import Location, location

#: how long an action waits for the running pipeline to answer before it reports the request as pending
ANSWER_TIMEOUT_S = 60.0


def holder(state: str | Location) -> dict[str, Any] | None:
    """The running writer of `state` (host, pid, heartbeat, token), or None when no pipeline holds it."""
    found = lease.read_lease(StateDir(location(state)).root)
    return found if found is not None and lease._alive(found) else None


def savepoint(
    state: str | Location,
    name: str,
    epoch: int | None = None,
    reason: str | None = None,
    user: str | None = None,
) -> dict[str, Any]:
    """Name an epoch's cut (default: the latest checkpoint; a running pipeline checkpoints first)."""
    from engine import versioning

    return versioning.create_savepoint(state, name, epoch, reason=reason, user=user)


def delete_savepoint(
    state: str | Location, name: str, reason: str | None = None, user: str | None = None
) -> dict[str, Any]:
    from engine import versioning

    return versioning.delete_savepoint(state, name, reason=reason, user=user)


def checkpoint(state: str | Location, user: str | None = None) -> dict[str, Any]:
    """Ask for a checkpoint at the running pipeline's next epoch boundary (or the next run's first)."""
    from engine.pipeline import request_checkpoint

    request_checkpoint(state)
    return {"requested": True, "running": holder(state) is not None}


def rollback_preview(
    state: str | Location,
    epoch: int | None = None,
    savepoint: str | None = None,
    timestamp: dt.datetime | None = None,
) -> dict[str, Any]:
    """What `rollback` would do, changing nothing: the target epoch, the tables restored and emptied, and the
    output that sinks which cannot be rolled back would receive again."""
    raise NotImplementedError


def rollback(
    state: str | Location,
    epoch: int | None = None,
    savepoint: str | None = None,
    timestamp: dt.datetime | None = None,
    reason: str | None = None,
    force: bool = False,
    user: str | None = None,
) -> dict[str, Any]:
    """Roll state, offsets and sinks back together (a running pipeline does it at its next epoch boundary and
    continues from the restored cut)."""
    from engine import versioning

    return versioning.rollback(
        state, to_epoch=epoch, savepoint=savepoint, timestamp=timestamp, reason=reason, force=force, user=user
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
) -> dict[str, Any]:
    """Free the checkpoints the policy no longer keeps (savepoints and the current cut always stay)."""
    from engine import retention as policy_module

    directory = StateDir(location(state))
    policy = policy_module.policy_from_options({}, count, age)
    with directory.lock():
        return policy_module.apply(directory, policy, reason=reason, user=user)
