"""Window assignment: which TUMBLE, HOP or CUMULATE windows each row belongs to. Stateless.

Windows are aligned to the epoch (1970-01-01 UTC) plus the offset, as in Flink. Each assigned row gains
`window_start`, `window_end` (exclusive) and `window_time` (= window_end - 1 ms, a time attribute itself).
"""

from __future__ import annotations

import datetime as dt

import polars as pl

from engine.operators.context import EpochContext
from sql.plan import WindowAssign, WindowSpec

ONE_MS = dt.timedelta(milliseconds=1)


def _ms(delta: dt.timedelta | None) -> int:
    assert delta is not None
    return int(delta.total_seconds() * 1000)


def _timestamp(millis: pl.Expr) -> pl.Expr:
    return millis.cast(pl.Datetime("ms")).dt.replace_time_zone("UTC")


def assign(frame: pl.LazyFrame, spec: WindowSpec) -> pl.LazyFrame:
    """One output row per (row, window); rows with a NULL time belong to no window."""
    t = pl.col(spec.time_col).dt.epoch("ms")
    offset = _ms(spec.offset)
    frame = frame.filter(pl.col(spec.time_col).is_not_null())
    if spec.kind == "TUMBLE":
        size = _ms(spec.size)
        start = t - (t - offset) % size
        frame = frame.with_columns(start.alias("__start"), (start + size).alias("__end"))
    elif spec.kind == "HOP":
        size, slide = _ms(spec.size), _ms(spec.slide)
        last = t - (t - offset) % slide
        frame = frame.with_columns(pl.int_ranges(0, size // slide).alias("__k")).explode("__k")
        start = last - pl.col("__k") * slide
        frame = frame.with_columns(start.alias("__start"), (start + size).alias("__end")).drop("__k")
    elif spec.kind == "CUMULATE":
        size, step = _ms(spec.size), _ms(spec.slide)
        base = t - (t - offset) % size
        frame = frame.with_columns(base.alias("__start"), pl.int_ranges(1, size // step + 1).alias("__k"))
        frame = frame.explode("__k").with_columns((pl.col("__start") + pl.col("__k") * step).alias("__end"))
        frame = frame.filter(pl.col("__end") > t).drop("__k")
    else:
        raise ValueError(f"{spec.kind} windows are assigned by the aggregate operator")
    return frame.with_columns(
        _timestamp(pl.col("__start")).alias("window_start"),
        _timestamp(pl.col("__end")).alias("window_end"),
        _timestamp(pl.col("__end") - 1).alias("window_time"),
    ).drop("__start", "__end")


def run(node: WindowAssign, inputs: list[pl.LazyFrame], ctx: EpochContext) -> pl.LazyFrame:
    return assign(inputs[0], node.window).select(list(node.schema))
