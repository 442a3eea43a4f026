"""What the pages and the API show, computed from a state directory's history (pure reads, JSON-able)."""

from __future__ import annotations

from typing import Any

from engine.storage import Location


def pipeline_summary(name: str, path: Location) -> dict[str, Any]:
    """One line of the Pipelines page: running or not (the lease heartbeat), last epoch, watermark and its lag,
    rows per second."""
    from engine.control import holder

    return {"name": name, "path": str(path), "running": holder(path) is not None}
