"""Durations as users write them: `500ms`, `2 s`, `1 min`, `1 h`."""

from __future__ import annotations

import re


def parse_duration(text: str) -> float:
    """Seconds in `text`; ValueError if it is not a duration."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|sec|second|seconds|m|min|minute|minutes|h|hour|hours)?\s*", text)
    if not match:
        raise ValueError(f"'{text}' is not a duration; write e.g. 500ms, 2s or 1min")
    unit = (match.group(2) or "s").lower()
    scale = 0.001 if unit == "ms" else 60 if unit.startswith("m") else 3600 if unit.startswith("h") else 1
    return float(match.group(1)) * scale
