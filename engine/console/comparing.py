"""`GET /api/compare`: two served pipelines side by side (`engine.compare`), for the console's compare view.

The token must be a viewer on both pipelines. The answer is `engine.compare`'s result with the pipelines' console
names: `counts`, `only_a` / `only_b` / `changed` as tables (`{columns, rows, total}`, the first `limit` rows),
`per_epoch` as records (`epoch_a`, `epoch_b`: the pair of checkpoints compared); with neither `sink` nor
`operator`, `summary` instead (every sink and operator, counts). 404 for a pipeline, sink, operator or point that
does not exist; 400 for a comparison that cannot be done as asked (both `sink` and `operator`, an unknown or
non-unique key column, a number that is not an epoch).
Nothing is cached: each call reads both sides once per common checkpoint epoch (`at` reads one point only).
"""

from __future__ import annotations

from typing import Any

import polars as pl
from fastapi import APIRouter, Query, Request

from engine.comparison import compare
from engine.console import views
from engine.console.app import Console, _deny, bearer, viewer
from engine.console.tokens import Grant

router = APIRouter(tags=["reads"])


@router.get("/compare", summary="Rows only in A, only in B and changed, per epoch, of two pipelines (an A/B test)")
def compare_pipelines(
    request: Request,
    a: str = Query(..., description="a served pipeline (A)"),
    b: str = Query(..., description="another served pipeline (B), e.g. a branch of A"),
    sink: str | None = Query(None, description="a Delta sink both have"),
    operator: str | None = Query(None, description="an operator both have (its state)"),
    at: str | None = Query(None, description="an epoch, a savepoint name or an ISO time; empty: each current cut"),
    key: str | None = Query(None, description="COL,...: the columns identifying a row (default: the recorded key)"),
    limit: int = Query(100, ge=0, le=views.MAX_LIMIT, description="rows of each table (at most 1000)"),
    grant: Grant = viewer,
) -> dict[str, Any]:
    console: Console = request.app.state.console
    token = bearer(request)
    for name in (a, b):
        console.path(name)  # 404 for a pipeline this console does not serve
        found = console.grant(name, token)
        if found is None or not found.allows("viewer"):
            raise _deny(request, 403, f"this token has no access to pipeline '{name}'")
    result = compare(
        console.history(a),
        console.history(b),
        sink=sink or None,
        operator=operator or None,
        at=views.parse_at(at),
        key=key if key and key.strip(",").strip() else None,
    )
    answer: dict[str, Any] = {
        "a": a,
        "b": b,
        "kind": result.kind,
        "name": result.name,
        "key": result.key,
        "epoch_a": result.epoch_a,
        "epoch_b": result.epoch_b,
        # the common ancestor's path is the server's to know: the console names only what it serves
        "origin": None if result.origin is None else {k: v for k, v in result.origin.items() if k != "ancestor"},
        "note": result.note,
    }
    if result.summary is not None:
        return {**answer, "counts": result.counts(), "summary": views.records(result.summary)}

    def shown(frame: pl.DataFrame) -> dict[str, Any]:
        return {**views.table(frame.head(limit)), "total": frame.height}

    return {
        **answer,
        "counts": result.counts(),
        "only_a": shown(result.only_a),
        "only_b": shown(result.only_b),
        "changed": shown(result.changed),
        "per_epoch": views.records(result.per_epoch),
    }
