"""Scan: a source's rows for this epoch, with computed columns (PROCTIME() included) and row watermarks.

`__wm` is the watermark in force before each row: the running maximum of the WATERMARK expression over the
rows before it (starting from the source's previous watermark), capped by the other sources' watermarks.
Deciding lateness per row, in source order, is what makes results independent of the epoch size.
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
        floor = ctx.watermark_floors.get(name)
        if floor == "undefined":
            row_watermark = pl.lit(None, dtype)
        elif floor is not None:
            row_watermark = pl.min_horizontal(own, pl.lit(floor, dtype))
        else:
            row_watermark = own
        frame = frame.with_columns(row_watermark.alias(WATERMARK_COLUMN))
    return frame.select(list(node.schema))
