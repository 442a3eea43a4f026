"""The running pipeline's side of `engine.control`: actions asked of it through `requests/`, carried out at its
epoch boundaries under its own lease, and answered.

A request is `requests/<id>.json` (`{id, kind, args, user, created_at, deadline}`); its answer is
`requests/<id>.answer.json`: `{ok: true, result}` or `{ok: false, error, exit_code}`. The runner looks once per
epoch (and once per trigger interval while idle): one LIST of the folder, nothing when it is absent. A request
past its deadline is deleted unanswered (whoever asked has given up and reported it as pending). A rollback ends
the run's loop (`Runner.pending_rollback`): `Pipeline.run` performs it with the lease released, answers, and runs
on from the restored cut.

Also the plan graph a run writes for readers without its SQL (`plans/<fingerprint>.json`).
"""

from __future__ import annotations

import datetime as dt
import json
import time
import uuid
from typing import TYPE_CHECKING, Any

from engine.errors import EXIT_INTERNAL, EngineError
from engine.state_dir import StateDir
from engine.storage import Location, read_if_exists, write_atomic
from sql.plan import Plan

if TYPE_CHECKING:
    from engine.runner import Runner

#: what a running pipeline carries out itself; a rollback ends its loop instead (see the module docstring)
KINDS = ("savepoint", "delete_savepoint", "retention", "checkpoint", "rollback")
ANSWER = ".answer.json"
#: answers nobody collected (the asker gave up just as the runner answered) are deleted after this long
STALE_ANSWER_S = 3600.0


def record_plan(directory: StateDir, plan: Plan) -> None:
    """Write the plan graph of this fingerprint once (`Plan.graph`), for the console and other readers."""
    path = directory.plan_file(plan.fingerprint)
    if read_if_exists(path) is None:
        write_atomic(path, json.dumps(plan.graph(), indent=1).encode())


# -- the asking side (engine.control) ----------------------------------------------------------------------------


def submit(directory: StateDir, kind: str, args: dict[str, Any], user: str | None, timeout_s: float) -> str:
    """Write a request; its id names the answer to wait for."""
    request_id = f"{time.time_ns()}-{uuid.uuid4().hex[:8]}"
    now = time.time()
    record = {
        "id": request_id,
        "kind": kind,
        "args": args,
        "user": user,
        "created_at": dt.datetime.fromtimestamp(now, dt.UTC).isoformat(),
        "deadline": now + timeout_s,
    }
    write_atomic(_request(directory, request_id), json.dumps(record).encode())
    return request_id


def read_answer(directory: StateDir, request_id: str) -> dict[str, Any] | None:
    data = read_if_exists(_answer(directory, request_id))
    return None if data is None else dict(json.loads(data))


def withdraw(directory: StateDir, request_id: str) -> None:
    """Take a request back (nobody waits for it any more); an answer written meanwhile goes too."""
    _request(directory, request_id).unlink(missing_ok=True)
    _answer(directory, request_id).unlink(missing_ok=True)


def collect(directory: StateDir, request_id: str) -> dict[str, Any] | None:
    """The answer, if there is one, removed from the folder."""
    found = read_answer(directory, request_id)
    if found is not None:
        _answer(directory, request_id).unlink(missing_ok=True)
    return found


# -- the running side (engine.runner) ----------------------------------------------------------------------------


def pending(directory: StateDir) -> list[dict[str, Any]]:
    """The requests waiting, oldest first (one LIST); expired ones and stale answers are deleted on the way."""
    try:
        names = sorted(p.name for p in directory.requests.iterdir())
    except (FileNotFoundError, NotADirectoryError):
        return []
    now = time.time()
    found = []
    for name in names:
        if name.endswith(ANSWER):
            if now - _created(name) > STALE_ANSWER_S:
                (directory.requests / name).unlink(missing_ok=True)
            continue
        if not name.endswith(".json"):
            continue
        data = read_if_exists(directory.requests / name)
        try:
            request = dict(json.loads(data)) if data is not None else None
        except ValueError:
            request = None  # half-written by hand, or damaged: not a request
        if request is None or float(request.get("deadline", 0)) < now:
            (directory.requests / name).unlink(missing_ok=True)
            continue
        found.append(request)
    return found


def answer(directory: StateDir, request: dict[str, Any], outcome: dict[str, Any]) -> None:
    """Write the answer, then remove the request (a crash between the two leaves the request: it is done again,
    or refused as already done, e.g. a savepoint name that exists)."""
    write_atomic(_answer(directory, request["id"]), json.dumps(outcome, default=str).encode())
    _request(directory, request["id"]).unlink(missing_ok=True)


def outcome_of(action: Any) -> dict[str, Any]:
    """Run `action()` and turn its result or its error into an answer."""
    try:
        return {"ok": True, "result": action()}
    except EngineError as err:
        return {
            "ok": False,
            "error": str(err).splitlines()[0] if str(err) else type(err).__name__,
            "exit_code": err.exit_code,
            "type": type(err).__name__,
        }
    except (ValueError, LookupError) as err:  # an argument the action could not use
        return {"ok": False, "error": str(err).splitlines()[0] if str(err) else type(err).__name__, "exit_code": 2}
    except Exception as err:  # the run goes on; the asker gets one line
        return {"ok": False, "error": f"{type(err).__name__}: {err}".splitlines()[0], "exit_code": EXIT_INTERNAL}


def serve(runner: Runner) -> bool:
    """Carry out the requests waiting, under the runner's lease. True when a rollback was asked: the run ends
    (`runner.pending_rollback`) and `Pipeline.run` performs it."""
    for request in pending(runner.dir):
        if request.get("kind") == "rollback":
            runner.pending_rollback = request
            return True
        answer(runner.dir, request, outcome_of(lambda r=request: _carry_out(runner, r)))
    return False


def _carry_out(runner: Runner, request: dict[str, Any]) -> dict[str, Any]:
    from engine import retention, versioning
    from engine.errors import UserError

    kind, args, user = request.get("kind"), dict(request.get("args") or {}), request.get("user")
    directory = runner.dir
    runner.finish_checkpoint()  # one written in the background commits before anything else touches the tables
    if kind == "savepoint":
        runner.checkpoint()  # the latest epoch is durable before a savepoint names it
        return versioning.savepoint_locked(
            directory, args["name"], args.get("epoch"), reason=args.get("reason"), user=user
        )
    if kind == "delete_savepoint":
        return versioning.delete_savepoint_locked(directory, args["name"], reason=args.get("reason"), user=user)
    if kind == "retention":
        policy = retention.policy_from_options({}, args.get("count"), args.get("age"))
        return retention.apply(directory, policy, reason=args.get("reason"), user=user)
    if kind == "checkpoint":
        runner.requested_by = user
        runner.checkpoint()
        runner.requested_by = None  # nothing to checkpoint: the request does not name a later one
        return {"requested": True, "running": True, "epoch": runner.last_epoch or None}
    raise UserError(f"unknown request kind '{kind}'")


def checkpoint_requester(directory: StateDir) -> str | None:
    """Who wrote the checkpoint-requested file, if it says (`{"user": ...}`; older files hold plain text)."""
    data = read_if_exists(directory.checkpoint_request)
    try:
        user = json.loads(data).get("user") if data else None
    except (ValueError, AttributeError):
        return None
    return str(user) if user else None


def _request(directory: StateDir, request_id: str) -> Location:
    return directory.requests / f"{request_id}.json"


def _answer(directory: StateDir, request_id: str) -> Location:
    return directory.requests / f"{request_id}{ANSWER}"


def _created(name: str) -> float:
    try:
        return int(name.split("-", 1)[0]) / 1e9
    except ValueError:
        return 0.0
