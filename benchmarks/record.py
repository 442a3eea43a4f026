"""Appending benchmark results to `benchmarks/results/<name>.jsonl`, one JSON object a line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def record(name: str, rows: list[dict[str, Any]]) -> None:
    path = Path(__file__).parent / "results" / f"{name}.jsonl"
    path.parent.mkdir(exist_ok=True)
    with path.open("a") as handle:
        for row in rows:
            handle.write(json.dumps(row) + "\n")
