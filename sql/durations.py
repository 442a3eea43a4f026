"""Durations and sizes as users write them: `500ms`, `2 s`, `1 min`, `1 h`, `7 d`; `64 MB`, `1 GiB`."""

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


_SIZE_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "kib": 2**10, "mib": 2**20, "gib": 2**30}


def parse_size(text: str) -> int:
    """Bytes in `text` (`64 MB`, `512KiB`, `1000`); ValueError if it is not a size."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", text)
    if not match or match.group(2).lower() not in _SIZE_UNITS:
        raise ValueError(f"'{text}' is not a size; write e.g. 64 MB or 1 GiB")
    return int(float(match.group(1)) * _SIZE_UNITS[match.group(2).lower()])
