"""The API's reads: pipelines, checkpoints, the version tree, the plan graph, operator state through time, diffs,
late rows, dead letters and time-travel SQL. Nothing here changes a state directory.

`at`, `a` and `b` are an epoch number, a savepoint name or an ISO time. Tables come back as `{columns: [{name,
type}], rows: [[...]]}` (rows as lists in the order of `columns`), paged with `offset` and `limit` (at most
1000) after `q` (rows where any column's text contains it, case-insensitive)."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any, Literal

import duckdb
import polars as pl
from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field

from engine import delta_tables
from engine.console import views
from engine.console.app import Console, bearer, viewer
from engine.console.tokens import Grant
from engine.errors import UserError
from engine.history import state_keys
from engine.manifest import DEAD_LETTERS, entries

router = APIRouter(tags=["reads"])
Limit = Query(100, ge=0, le=views.MAX_LIMIT, description="rows per page (at most 1000)")
Offset = Query(0, ge=0, description="rows to skip")
Filter = Query(None, description="keep rows where any column's text contains this (case-insensitive)")
At = Query(None, description="an epoch number, a savepoint name or an ISO time; empty: the current cut")


def _console(request: Request) -> Console:
    return request.app.state.console


def _point(row: dict[str, Any]) -> dict[str, Any]:
    return {"epoch": row["epoch"], "committed_at": views.iso(row["committed_at"])}


@router.get("/me", summary="The pipelines this token may see, with its name and role on each")
def me(request: Request, grant: Grant = viewer) -> dict[str, Any]:
    visible = _console(request).visible(bearer(request))
    return {"pipelines": {n: {"user": g.name, "role": g.role} for n, g in visible.items()}}


@router.get("/pipelines", summary="Every pipeline this token may see: running, last epoch, watermark lag, rows/s")
def pipelines(request: Request, grant: Grant = viewer) -> list[dict[str, Any]]:
    console = _console(request)
    return [
        views.pipeline_summary(name, console.directories[name], console.history(name))
        for name in console.visible(bearer(request))
    ]


@router.get("/pipelines/{name}", summary="A pipeline's summary with its operators, sources, sinks and savepoints")
def pipeline(name: str, request: Request, grant: Grant = viewer) -> dict[str, Any]:
    console = _console(request)
    return views.pipeline_detail(name, console.path(name), console.history(name))


@router.get(
    "/pipelines/{name}/checkpoints", summary="One row per checkpoint and rollback (engine.open(dir).checkpoints())"
)
def checkpoints(name: str, request: Request, grant: Grant = viewer) -> list[dict[str, Any]]:
    return views.checkpoints(_console(request).history(name))


@router.get(
    "/pipelines/{name}/series", summary="Per checkpoint: rows in/out and per second, epoch and checkpoint ms, lag"
)
def series(
    name: str, request: Request, limit: int = Query(200, ge=1, le=views.MAX_LIMIT), grant: Grant = viewer
) -> list[dict[str, Any]]:
    return views.series(_console(request).history(name), limit)


@router.get("/pipelines/{name}/tree", summary="The version tree: runs, savepoints, rollbacks, branches, retention")
def tree(name: str, request: Request, grant: Grant = viewer) -> dict[str, Any]:
    console = _console(request)
    return views.tree(console.path(name), console.name_of)


@router.get("/pipelines/{name}/plan", summary="The plan graph of the current cut (plans/<fingerprint>.json)")
def plan(name: str, request: Request, grant: Grant = viewer) -> dict[str, Any]:
    return views.plan(_console(request).history(name))


@router.get("/pipelines/{name}/operators/{op}/state", summary="An operator's state as of a point, sorted by its key")
def state(
    name: str,
    op: str,
    request: Request,
    at: str | None = At,
    q: str | None = Filter,
    offset: int = Offset,
    limit: int = Limit,
    grant: Grant = viewer,
) -> dict[str, Any]:
    console = _console(request)
    history = console.history(name)
    row = history.row(views.parse_at(at))
    keys = state_keys(history.table_entry(row, op, ("state",)))

    def read() -> pl.DataFrame:
        frame = history.unless_expired(row, lambda: history.scan_state_of(row, op).collect())
        return frame.sort(keys, nulls_last=True) if keys else frame

    frame = console.frame((name, "state", op, row["kind"], row["committed_at"]), read)
    return {"operator": op, "at": _point(row), "keys": keys, **views.page(frame, q, offset, limit)}


@router.get("/pipelines/{name}/operators/{op}/diff", summary="Keys inserted, deleted and changed between a and b")
def diff(
    name: str,
    op: str,
    request: Request,
    a: str = Query(..., description="the earlier point"),
    b: str | None = Query(None, description="the later point (default: the current cut)"),
    q: str | None = Filter,
    offset: int = Offset,
    limit: int = Limit,
    grant: Grant = viewer,
) -> dict[str, Any]:
    console = _console(request)
    history = console.history(name)
    first, second = history.row(views.parse_at(a)), history.row(views.parse_at(b))
    frame = console.frame(
        (name, "diff", op, first["kind"], first["committed_at"], second["kind"], second["committed_at"]),
        lambda: history.diff(op, views.parse_at(a), views.parse_at(b)),
    )
    return {"operator": op, "a": _point(first), "b": _point(second), **views.page(frame, q, offset, limit)}


@router.get("/pipelines/{name}/operators/{op}/late", summary="The rows an operator judged late, as of a point")
def late(
    name: str,
    op: str,
    request: Request,
    at: str | None = At,
    q: str | None = Filter,
    offset: int = Offset,
    limit: int = Limit,
    grant: Grant = viewer,
) -> dict[str, Any]:
    history = _console(request).history(name)
    row = history.row(views.parse_at(at))
    frame = history.late(op, views.parse_at(at))
    return {"operator": op, "at": _point(row), **views.page(frame, q, offset, limit)}


@router.get("/pipelines/{name}/dead-letters", summary="Each source's count of rejected records at the current cut")
def dead_letters(name: str, request: Request, grant: Grant = viewer) -> list[dict[str, Any]]:
    history = _console(request).history(name)
    try:
        row = history.row()
    except LookupError:
        return []
    counts = {
        t.name: int(delta_tables.scan(t.path, version=t.version).select(pl.len()).collect().item())
        for t in entries(row)
        if t.role == DEAD_LETTERS
    }
    sources = list(json.loads(row.get("source_offsets") or "{}"))
    return [{"source": s, "rows": counts.get(s, 0)} for s in dict.fromkeys([*sources, *counts])]


@router.get("/pipelines/{name}/dead-letters/{source}", summary="A source's rejected records: file, position, text, why")
def dead_letters_of(
    name: str,
    source: str,
    request: Request,
    at: str | None = At,
    q: str | None = Filter,
    offset: int = Offset,
    limit: int = Limit,
    grant: Grant = viewer,
) -> dict[str, Any]:
    history = _console(request).history(name)
    row = history.row(views.parse_at(at))
    known = {t.name.lower() for t in entries(row) if t.role == DEAD_LETTERS}
    known |= {s.lower() for s in json.loads(row.get("source_offsets") or "{}")}
    if source.lower() not in known:
        raise HTTPException(404, f"no source named '{source}' (sources: {', '.join(sorted(known)) or 'none'})")
    frame = history.dead_letters(source, views.parse_at(at))
    return {"source": source, "at": _point(row), **views.page(frame, q, offset, limit)}


class SqlQuery(BaseModel):
    query: str = Field(description="DuckDB SQL; tables AS OF EPOCH n / SAVEPOINT 'name' / TIMESTAMP '...'")
    limit: int = Field(1000, ge=0, le=100_000, description="rows to return at most")
    format: Literal["json", "csv"] = "json"


@router.post(
    "/pipelines/{name}/sql",
    summary="Time-travel SQL (read-only): {columns, rows, truncated}, or CSV",
    responses={200: {"content": {"text/csv": {}}}},
)
def sql(name: str, body: SqlQuery, request: Request, grant: Grant = viewer) -> Any:
    history = _console(request).history(name)
    try:
        frame = history.sql(body.query)
    except duckdb.Error as err:  # the query's own mistake (a column that does not exist, a type): the caller's
        raise UserError(str(err).strip().splitlines()[0]) from None
    truncated = frame.height > body.limit
    frame = frame.head(body.limit)
    if body.format == "csv":
        plain = frame.select(
            views._plain(n, t)
            if not isinstance(t, pl.List | pl.Struct | pl.Array)
            else pl.col(n).cast(pl.String, strict=False)
            for n, t in frame.schema.items()
        )
        return Response(plain.write_csv(), media_type="text/csv", headers={"X-Truncated": str(truncated).lower()})
    return {**views.table(frame), "truncated": truncated}


@router.get("/pipelines/{name}/savepoints", summary="The live savepoints: name, epoch, when, by whom")
def savepoints(name: str, request: Request, grant: Grant = viewer) -> list[dict[str, Any]]:
    return views.savepoints(_console(request).history(name))


@router.get("/pipelines/{name}/rollback/preview", summary="What a rollback would restore, empty and repeat (no change)")
def rollback_preview(
    name: str,
    request: Request,
    epoch: int | None = Query(None, ge=0),
    savepoint: str | None = None,
    timestamp: str | None = Query(None, description="ISO time"),
    grant: Grant = viewer,
) -> dict[str, Any]:
    from engine import control

    chosen = [v for v in (epoch, savepoint, timestamp) if v is not None]
    if len(chosen) != 1:
        raise HTTPException(400, "give exactly one of epoch, savepoint or timestamp")
    console = _console(request)
    console.require_savepoint(name, savepoint)
    preview = control.rollback_preview(
        console.path(name), epoch=epoch, savepoint=savepoint, timestamp=parse_time(timestamp)
    )
    if preview.get("refused"):  # the engine's message names the CLI's flag; the page has a checkbox
        preview["refused"] = preview["refused"].replace("Pass --force to", "Tick force to")
    return preview


def parse_time(text: str | None) -> dt.datetime | None:
    """An ISO time (naive is UTC); 400 for anything else."""
    if text is None:
        return None
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        raise HTTPException(400, f"'{text}' is not an ISO time (e.g. 2026-01-01T12:00:00Z)") from None
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)
