"""Scan: a source's rows for this epoch, with computed columns (PROCTIME() included) and row watermarks.

`__wm` is the watermark in force before each row: the running maximum of the WATERMARK expression over the
rows of the same source before it, starting from the source's previous watermark. It depends on that source's
row order alone, never on other sources or on where epoch boundaries fall: an operator judges a row late by
it, and fires by the minimum over its upstream sources' watermarks, which is never ahead of any of them
(docs/sql.md, "Event time, watermarks and late rows").
"""

from __future__ import annotations

import polars as pl

from engine.operators.context import EpochContext
from sql.expressions import PROCTIME_COLUMN
from sql.plan import WATERMARK_COLUMN, Scan


def run(node: Scan, inputs: list[pl.LazyFrame], ctx: EpochContext) -> pl.LazyFrame:
    name = node.table.name
    if name in ctx.scanned:
        return ctx.scanned[name].lazy()
    frame = ctx.sources[name].lazy()
    computed = node.table.computed
    if computed:
        frame = frame.with_columns(pl.lit(ctx.proctime).cast(pl.Datetime("ms", "UTC")).alias(PROCTIME_COLUMN))
        for column in computed:
            assert column.computed is not None
            frame = frame.with_columns(column.computed)
    watermark = node.table.watermark
    if watermark is not None:
        previous = ctx.previous_watermarks.get(name)
        dtype = pl.Datetime("ms", "UTC")
        running = watermark.expr.cast(dtype).cum_max().shift(1)
        own = pl.max_horizontal(running, pl.lit(previous, dtype)) if previous is not None else running
        frame = frame.with_columns(own.alias(WATERMARK_COLUMN))
    return frame.select(list(node.schema))
