"""The changelog an unbounded GROUP BY emits for the groups an epoch touched, as one lazy query: -D for a group
that left (or stopped passing HAVING), -U/+U pairs for a group whose output row changed, +I for a new group.

Built lazily so that it runs in the epoch's one `collect_all` with the state update (a one-row epoch would
otherwise pay for a dozen eager Polars calls on tiny frames)."""

from __future__ import annotations

import polars as pl

from sql.plan import DELETE, INSERT, OP_COLUMN, UPDATE_AFTER, UPDATE_BEFORE


def changelog(
    before: pl.LazyFrame, after: pl.LazyFrame, keys: list[str], values: list[str], schema: list[str]
) -> pl.LazyFrame:
    """`before` / `after`: the output rows (group keys as `keys`, the SELECT list as `values`) of the touched
    groups before and after the epoch. Deletions first, then each changed group's -U and +U, then insertions."""
    deleted = before.join(after.select(keys), on=keys, how="anti", nulls_equal=True)
    inserted = after.join(before.select(keys), on=keys, how="anti", nulls_equal=True)
    pairs = before.join(after, on=keys, how="inner", suffix="__after", nulls_equal=True)
    if values:
        changed = pairs.filter(~pl.all_horizontal(pl.col(v).eq_missing(pl.col(v + "__after")) for v in values))
    else:
        changed = pairs.filter(pl.lit(False))
    changed = changed.with_row_index("__pair")
    parts = [
        deleted.select(*values, pl.lit(DELETE).alias(OP_COLUMN), pl.lit(-1, pl.Int64).alias("__order")),
        changed.select(
            *values, pl.lit(UPDATE_BEFORE).alias(OP_COLUMN), (pl.col("__pair") * 2).cast(pl.Int64).alias("__order")
        ),
        changed.select(
            *[pl.col(v + "__after").alias(v) for v in values],
            pl.lit(UPDATE_AFTER).alias(OP_COLUMN),
            (pl.col("__pair") * 2 + 1).cast(pl.Int64).alias("__order"),
        ),
        inserted.select(*values, pl.lit(INSERT).alias(OP_COLUMN), pl.lit(1 << 62, pl.Int64).alias("__order")),
    ]
    out = pl.concat(parts, how="vertical_relaxed")
    return out.sort("__order", maintain_order=True).drop("__order").select(schema)
