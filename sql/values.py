"""Runtime value parsing: text -> typed values, NULL where the text does not hold one; date patterns.

Its own module because sources (engine/sources) parse what they read with it at run time, while the expression
compiler uses it only for CAST and timestamp literals: readers of input need not load the compiler.
"""

from __future__ import annotations

import polars as pl

from sql import types
from sql.errors import SqlError

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


def java_to_strftime(pattern: str) -> str:
    """Translate a Java date pattern (`yyyy-MM-dd HH:mm:ss.SSS`) into chrono's strftime language."""
    table = {
        "yyyy": "%Y",
        "yy": "%y",
        "MMMM": "%B",
        "MMM": "%b",
        "MM": "%m",
        "M": "%-m",
        "dd": "%d",
        "d": "%-d",
        "HH": "%H",
        "H": "%-H",
        "hh": "%I",
        "mm": "%M",
        "ss": "%S",
        "SSSSSS": "%6f",
        "SSS": "%3f",
        "a": "%p",
        "EEEE": "%A",
        "EEE": "%a",
        "D": "%j",
        "XXX": "%:z",
        "Z": "%z",
    }
    out: list[str] = []
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "'":
            end = pattern.find("'", i + 1)
            end = len(pattern) if end < 0 else end
            out.append(pattern[i + 1 : end].replace("%", "%%"))
            i = end + 1
        elif ch.isalpha():
            j = i
            while j < len(pattern) and pattern[j] == ch:
                j += 1
            run = pattern[i:j]
            if run not in table:
                raise SqlError(f"date pattern letter run '{run}' is not supported in '{pattern}'")
            out.append(table[run])
            i = j
        else:
            out.append("%%" if ch == "%" else ch)
            i += 1
    return "".join(out)
