"""Durations as users write them: `500ms`, `2 s`, `1 min`, `1 h`."""

from __future__ import annotations

import re


def parse_duration(text: str) -> float:
    """Seconds in `text`; ValueError if it is not a duration."""
    match = re.fullmatch(
        r"\s*(\d+(?:\.\d+)?)\s*(ms|s|sec|second|seconds|m|min|minute|minutes|h|hour|hours|d|day|days)?\s*", text
    )
    if not match:
        raise ValueError(f"'{text}' is not a duration; write e.g. 500ms, 2s or 1min")
    unit = (match.group(2) or "s").lower()
    scales = {"ms": 0.001, "m": 60.0, "h": 3600.0, "d": 86400.0}
    scale = scales["ms"] if unit == "ms" else scales.get(unit[0], 1.0)
    return float(match.group(1)) * scale
