"""Runtime value parsing: text -> typed values, NULL where the text does not hold one.

Its own module because sources (engine/sources) parse what they read with it at run time, while the expression
compiler uses it only for CAST and timestamp literals: readers of input need not load the compiler.
"""

from __future__ import annotations

import polars as pl

from sql import types

_TIMESTAMP_FORMATS = ("%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f%#z", "%Y-%m-%d %H:%M", "%Y-%m-%d")


def parse_timestamp(text: pl.Expr, dtype: pl.Datetime | None = None) -> pl.Expr:
    """ISO-8601-ish text (`T` or space, optional fraction and zone; no zone means UTC) -> timestamp, NULL if bad."""
    target = dtype or types.timestamp(6)
    unit = target.time_unit
    normalised = text.str.strip_chars().str.replace("T", " ", literal=True).str.replace(r"Z$", "+00:00")
    candidates = [
        normalised.str.to_datetime(fmt, strict=False, time_zone="UTC", time_unit=unit) for fmt in _TIMESTAMP_FORMATS
    ]
    return pl.coalesce(candidates).cast(target)


def parse_text(text: pl.Expr, dtype: pl.DataType) -> pl.Expr:
    """Text -> dtype, NULL where the text does not hold a value of that type."""
    if isinstance(dtype, pl.String):
        return text
    if isinstance(dtype, pl.Datetime):
        return parse_timestamp(text, dtype)
    if isinstance(dtype, pl.Date):
        return parse_timestamp(text).dt.date()
    if isinstance(dtype, pl.Boolean):
        lowered = text.str.strip_chars().str.to_lowercase()
        return pl.when(lowered == "true").then(True).when(lowered == "false").then(False).otherwise(None)
    if isinstance(dtype, pl.Binary):
        return text.cast(pl.Binary)
    return text.str.strip_chars().cast(dtype, strict=False)
