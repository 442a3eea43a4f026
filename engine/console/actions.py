"""The API's actions: savepoints, checkpoints, rollback, branches and retention, each behind its role, each
audited in the manifest under the token's name (through `engine.control`).

A running pipeline carries an action out at its next epoch boundary; when it does not answer within
`engine.control`'s timeout, the call answers 202 `{"pending": id}` (the request stays queued)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from engine import control
from engine.console.app import Console, admin, operator
from engine.console.reads import parse_time
from engine.console.tokens import Grant

router = APIRouter(tags=["actions"])


def _console(request: Request) -> Console:
    return request.app.state.console


def _answer(result: dict[str, Any], status: int = 200) -> Any:
    """What an action returns, or 202 when the running pipeline has not answered yet."""
    if isinstance(result, dict) and result.get("pending") is not None:
        status = 202
    return JSONResponse(jsonable_encoder(result), status)


def _one_point(**points: Any) -> None:
    if sum(v is not None for v in points.values()) != 1:
        raise HTTPException(400, f"give exactly one of {', '.join(points)}")


#: savepoint names the console accepts: they appear in URLs, `AS OF SAVEPOINT '...'` and `timelapse log`
SAVEPOINT_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$"


class SavepointBody(BaseModel):
    name: str = Field(
        pattern=SAVEPOINT_NAME, description="the savepoint's name: letters, digits, '_', '.', '-' (at most 100)"
    )
    epoch: int | None = Field(None, ge=0, description="the epoch to name (default: the latest checkpoint)")
    reason: str | None = Field(None, max_length=1000, description="why: the audit keeps it")


@router.post("/pipelines/{name}/savepoints", summary="Name an epoch's cut (operator)", status_code=201)
def create_savepoint(name: str, body: SavepointBody, request: Request, grant: Grant = operator) -> Any:
    path = _console(request).path(name)
    result = control.savepoint(path, body.name, body.epoch, reason=body.reason, user=grant.name)
    return _answer(result, 201)


@router.delete("/pipelines/{name}/savepoints/{savepoint}", summary="Delete a savepoint (admin)")
def delete_savepoint(
    name: str, savepoint: str, request: Request, reason: str | None = Query(None, max_length=1000), grant: Grant = admin
) -> Any:
    console = _console(request)
    console.require_savepoint(name, savepoint)
    return _answer(control.delete_savepoint(console.path(name), savepoint, reason=reason, user=grant.name))


@router.post("/pipelines/{name}/checkpoints", summary="Ask for a checkpoint at the next epoch boundary (operator)")
def request_checkpoint(name: str, request: Request, grant: Grant = operator) -> Any:
    return _answer(control.checkpoint(_console(request).path(name), user=grant.name))


class RollbackBody(BaseModel):
    savepoint: str | None = Field(None, description="roll back to this savepoint's epoch")
    epoch: int | None = Field(None, ge=0, description="or to this epoch")
    timestamp: str | None = Field(None, description="or to the last checkpoint at or before this ISO time")
    reason: str = Field(min_length=1, max_length=1000, description="why (required): the audit keeps it")
    force: bool = Field(False, description="roll back although sinks that cannot would receive output again")


@router.post("/pipelines/{name}/rollback", summary="Roll state, offsets and sinks back together (admin)")
def rollback(name: str, body: RollbackBody, request: Request, grant: Grant = admin) -> Any:
    _one_point(savepoint=body.savepoint, epoch=body.epoch, timestamp=body.timestamp)
    if not body.reason.strip():
        raise HTTPException(400, "say why: a rollback's reason is kept in the audit")
    console = _console(request)
    console.require_savepoint(name, body.savepoint)
    result = control.rollback(
        console.path(name),
        epoch=body.epoch,
        savepoint=body.savepoint,
        timestamp=parse_time(body.timestamp),
        reason=body.reason,
        force=body.force,
        user=grant.name,
    )
    return _answer(result)


class BranchBody(BaseModel):
    name: str = Field(description="the new state directory's folder name, created beside the parent's")
    savepoint: str | None = Field(None, description="branch from this savepoint's cut")
    epoch: int | None = Field(None, ge=0, description="or from this epoch's")


def folder_name(name: str) -> str:
    """A branch's folder: a plain name, so the branch stays beside its parent (nothing escapes the root)."""
    plain = name.strip()
    if not plain or plain != name or "/" in plain or "\\" in plain or ".." in plain or plain.startswith("."):
        raise HTTPException(400, f"'{name}' is not a plain folder name (no '/', '\\', '..', nor a leading '.')")
    if any(ord(c) < 32 for c in plain) or len(plain) > 200:
        raise HTTPException(400, "a branch's folder name must be printable and at most 200 characters")
    return plain


@router.post(
    "/pipelines/{name}/branches", summary="A new state directory from a cut, served too (admin)", status_code=201
)
def branch(name: str, body: BranchBody, request: Request, grant: Grant = admin) -> Any:
    _one_point(savepoint=body.savepoint, epoch=body.epoch)
    console = _console(request)
    console.require_savepoint(name, body.savepoint)
    parent = console.path(name)
    target = parent.parent / folder_name(body.name)
    if target.exists():
        raise HTTPException(400, f"{target} exists already; choose another name")
    result = control.branch(parent, target, savepoint=body.savepoint, epoch=body.epoch, user=grant.name)  # type: ignore[arg-type]
    if isinstance(result, dict) and result.get("pending") is not None:
        return _answer(result)
    _share_tokens(parent, target)
    served = console.add(target)
    return _answer({**result, "branch": str(target), "pipeline": served}, 201)


def _share_tokens(parent: Any, branch: Any) -> None:
    """The branch gets its parent's tokens: whoever may act on the parent may act on what they branched from it
    (without them the branch, served by this console, would be out of every token's reach)."""
    from engine.state_dir import StateDir, write_atomic

    try:
        records = StateDir(parent).tokens.read_bytes()
    except FileNotFoundError:
        return
    write_atomic(StateDir(branch).tokens, records)


class RetentionBody(BaseModel):
    count: str | None = Field(None, description="keep this many checkpoints (e.g. '10')")
    age: str | None = Field(None, description="keep checkpoints younger than this (e.g. '7d', '12h')")
    reason: str | None = Field(None, max_length=1000, description="why: the audit keeps it")


@router.post("/pipelines/{name}/retention", summary="Free the checkpoints the policy no longer keeps (admin)")
def retention(name: str, body: RetentionBody, request: Request, grant: Grant = admin) -> Any:
    if body.count is None and body.age is None:
        raise HTTPException(400, "give count, age or both")
    path = _console(request).path(name)
    return _answer(control.retention(path, body.count, body.age, reason=body.reason, user=grant.name))
