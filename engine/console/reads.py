"""The API's reads: pipelines, checkpoints, the version tree, the plan graph, operator state through time, diffs,
late rows, dead letters and time-travel SQL. Nothing here changes a state directory."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from engine.console.app import Console, viewer
from engine.console.tokens import Grant

router = APIRouter(tags=["reads"])


def _console(request: Request) -> Console:
    return request.app.state.console


@router.get("/pipelines")
def pipelines(request: Request, grant: Grant = viewer) -> list[dict[str, Any]]:
    """Every pipeline this token may see: running or not, last epoch, watermark and its lag, rows/s."""
    from engine.console import views

    console = _console(request)
    token = request.headers["authorization"].split(" ", 1)[1].strip()
    return [
        views.pipeline_summary(name, path)
        for name, path in console.directories.items()
        if console.grant(name, token) is not None
    ]
