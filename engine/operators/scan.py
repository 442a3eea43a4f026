"""Scan: a source's rows for this epoch, with computed columns (including PROCTIME()) evaluated."""

from __future__ import annotations

import polars as pl

from engine.operators.context import EpochContext
from sql.expressions import PROCTIME_COLUMN
from sql.plan import Scan


def run(node: Scan, inputs: list[pl.LazyFrame], ctx: EpochContext) -> pl.LazyFrame:
    frame = ctx.sources[node.table.name].lazy()
    computed = node.table.computed
    if not computed:
        return frame
    frame = frame.with_columns(pl.lit(ctx.proctime).cast(pl.Datetime("ms", "UTC")).alias(PROCTIME_COLUMN))
    for column in computed:
        assert column.computed is not None
        frame = frame.with_columns(column.computed)
    return frame.select(list(node.schema))
