"""Window Top-N and window deduplication: `ROW_NUMBER() OVER (PARTITION BY window_start, window_end [, k] ORDER BY
...)` over a windowed, append-only input (a window TVF, or a window aggregation's result).

As in Flink's window rank operator, a window's ranking is final once the watermark passes its end
(`window_end - 1 ms <= watermark`, the rule window aggregations fire by): its top n rows are emitted then, each
once, with their rank (append-only), and the window's rows leave the state (tombstones through the normal
checkpoint). Until then the state holds, per partition of an open window, the rows that can still rank: the
top n so far (the input is append-only, so a row outside it never ranks again); the Top-N operator's
append-only maintenance (`TopNOperator._top_n_append`) keeps them, and its changes are not emitted. A row whose
window had already closed by the row's own watermark (`__wm`, from its source alone) is late: it goes to the
late-rows table, so results do not depend on where epochs are cut.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import polars as pl

from engine.operators.base import UTC_MS
from engine.operators.context import EpochContext
from engine.operators.windows import ONE_MS
from sql.plan import WATERMARK_COLUMN

if TYPE_CHECKING:
    from engine.operators.top_n import TopNOperator


def process(op: TopNOperator, rows: pl.DataFrame, ctx: EpochContext) -> pl.DataFrame:
    end = op.node.window_end
    assert end is not None
    if rows.height:
        # never below the watermark this operator last fired at: a window that fired is never reopened
        own = pl.col(WATERMARK_COLUMN)
        if op.last_watermark is not None:
            own = pl.max_horizontal(own, pl.lit(op.last_watermark).cast(UTC_MS))
        reason = pl.format("its window had closed (ends {}); watermark was {}", pl.col(end), pl.col(WATERMARK_COLUMN))
        # one chunk: Polars 2.1 panics formatting rows filtered by a mask of several chunks ("i < self.len()")
        rows = op.late.split(rows.rechunk(), pl.col(end) - ONE_MS <= own, reason)
        if rows.height:
            op._top_n_append(rows)  # the open windows' candidates; a window's rows are emitted when it closes
    output = fire(op, ctx.watermark)
    if ctx.watermark is not None:
        op.last_watermark = ctx.watermark
    return output


def fire(op: TopNOperator, watermark: object) -> pl.DataFrame:
    """The windows the watermark has passed: their top n, ranked, in order of window end; they leave the state."""
    end = op.node.window_end
    assert end is not None
    if watermark is None or op.rows.height == 0:
        return op.empty_output()
    due = pl.col(end) - ONE_MS <= pl.lit(watermark).cast(UTC_MS)
    closed = op.rows.filter(due)
    if closed.height == 0:
        return op.empty_output()
    op.rows = op.rows.filter(~due)
    op.table.stage(closed.head(0), closed.select(*op.columns, "_kg"))
    ranked = op._ranked(closed).sort(end, *op.partition, "__rank", nulls_last=True)
    rank = op.node.rank_column
    out = ranked.select(*op.visible, *([pl.col("__rank").alias(rank)] if rank else []))
    return out.select(list(op.node.schema))
