"""Unnest: each row once per element of an array (or entry of a map). Stateless: Polars' explode, in the
epoch's lazy query."""

from __future__ import annotations

import polars as pl

from engine.operators.context import EpochContext
from sql.plan import Unnest

ITEMS = "\x00unnest"
POSITION = "\x00position"


def run(node: Unnest, inputs: list[pl.LazyFrame], ctx: EpochContext) -> pl.LazyFrame:
    frame = inputs[0]
    passed = [n for n in node.inputs[0].schema]
    items = node.value
    # (NULL where the collection is: both columns explode to the same rows)
    positions = pl.when(items.is_not_null()).then(pl.int_ranges(1, items.list.len() + 1, dtype=pl.Int32))
    frame = frame.with_columns(items.alias(ITEMS), positions.alias(POSITION))
    # CROSS JOIN: an empty or NULL collection gives no row; LEFT JOIN ... ON TRUE: one row of NULLs
    keep = node.keep_empty
    frame = frame.explode([ITEMS, POSITION], empty_as_null=keep, keep_nulls=keep)
    element = pl.col(ITEMS)
    if node.fields is None:
        added = [element.alias(node.names[0])]
    else:
        added = [element.struct.field(f).alias(n) for f, n in zip(node.fields, node.names, strict=True)]
    if node.ordinality:
        added.append(pl.col(POSITION).alias(node.ordinality))
    return frame.select([pl.col(n) for n in passed] + added).select(list(node.schema))
