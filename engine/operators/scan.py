"""Scan: a source's rows for this epoch, with computed columns (PROCTIME() included) and row watermarks.

`__wm` is the watermark in force before each row: the running maximum of the WATERMARK expression over the
rows of the same source partition (split) before it, starting from that partition's previous watermark. A source
with partitions (Kafka) marks each row's with the hidden SPLIT_COLUMN; any other source is one partition. `__wm`
depends on that partition's row order alone, never on other partitions or sources, nor on where epoch or fetch
boundaries fall: an operator judges a row late by it, and fires by the minimum over its upstream sources'
watermarks (each the minimum over its active partitions), which is never ahead of any of them (docs/sql.md,
"Event time, watermarks and late rows").

The first call of an epoch (evaluate_epoch's, which materialises every scan once) keeps SPLIT_COLUMN in its
output, for engine.watermarks to advance each partition's watermark; the operators reading the scan never see it.
"""

from __future__ import annotations

import polars as pl

from engine.operators.context import EpochContext
from engine.sources.base import SPLIT_COLUMN, split_key
from sql.expressions import PROCTIME_COLUMN
from sql.plan import WATERMARK_COLUMN, Scan

_PREVIOUS = "\x00previous_wm"


def run(node: Scan, inputs: list[pl.LazyFrame], ctx: EpochContext) -> pl.LazyFrame:
    name = node.table.name
    if name in ctx.scanned:
        return ctx.scanned[name].lazy().select(list(node.schema))
    raw = ctx.sources[name]
    frame = raw.lazy()
    split = SPLIT_COLUMN in raw.columns
    computed = node.table.computed
    if computed:
        frame = frame.with_columns(pl.lit(ctx.proctime).cast(pl.Datetime("ms", "UTC")).alias(PROCTIME_COLUMN))
        for column in computed:
            assert column.computed is not None
            frame = frame.with_columns(column.computed)
    watermark = node.table.watermark
    dtype = pl.Datetime("ms", "UTC")
    if watermark is not None and split:
        previous = pl.DataFrame(
            {
                SPLIT_COLUMN: (splits := raw.get_column(SPLIT_COLUMN).unique().sort()),
                _PREVIOUS: [ctx.previous_watermarks.get(split_key(name, s)) for s in splits],
            },
            schema={SPLIT_COLUMN: pl.String(), _PREVIOUS: dtype},
        )
        running = watermark.expr.cast(dtype).cum_max().shift(1).over(SPLIT_COLUMN)
        frame = frame.join(previous.lazy(), on=SPLIT_COLUMN, how="left", maintain_order="left")
        frame = frame.with_columns(pl.max_horizontal(running, pl.col(_PREVIOUS)).alias(WATERMARK_COLUMN))
    elif watermark is not None:
        previous = ctx.previous_watermarks.get(name)
        running = watermark.expr.cast(dtype).cum_max().shift(1)
        own = pl.max_horizontal(running, pl.lit(previous, dtype)) if previous is not None else running
        frame = frame.with_columns(own.alias(WATERMARK_COLUMN))
    return frame.select([*node.schema, *([SPLIT_COLUMN] if split else [])])
