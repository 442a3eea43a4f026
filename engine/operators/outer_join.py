"""Regular LEFT/RIGHT/FULL joins: which rows of an outer side are emitted padded with NULLs, epoch by epoch, over
append-only or updating inputs, with or without a residual condition (the semantics of Flink's streaming join).

A row of an outer side is padded while it has no partner: no row of the other side with its (non-NULL) key that
also passes the residual condition. Its partner count is the sum of those rows' multiplicities. Per distinct row r
of the keys the epoch touches (the keys of either side's epoch rows), the padded output changes by

    count_after(r) * [partners_after(r) == 0]  -  count_before(r) * [partners_before(r) == 0]

so a row that loses its last partner (a retraction on the other side) is emitted padded again (+I), one that gains
its first retracts its padded row (-D), and a retracted row retracts its padded row only if it had one.

Where the partner count comes from:
- without a residual condition it depends on the key alone: the other side's stored count of the key, plus the
  epoch's. Nothing more is stored (the layout of an equi-join's state is that of an inner join).
- with one, each row has its own, kept in the outer side's state table as `__partners` (Flink's
  associated-records count): an epoch adds what the other side's epoch rows that pass the condition bring, and a
  row new to the state counts its partners among the stored rows once. A stored row whose count changes only
  through its partners is restaged with its new count.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import polars as pl

from sql.plan import Join

if TYPE_CHECKING:
    from engine.operators.join import JoinOperator

COUNT = "__count"  # as in engine.operators.join (not imported from there: that module imports this one)
PARTNERS = "__partners"
# per distinct row of the touched keys, while an epoch runs
_ROW, _M_OLD, _DM, _P_OLD, _STORED, _OTHER = "__row", "__m_old", "__dm", "__p_old", "__stored", "__other"
_P_NEW = "__p_new"


def outer_sides(kind: str) -> tuple[str, ...]:
    """The sides whose rows are emitted padded when they have no partner."""
    return {"LEFT": ("left",), "RIGHT": ("right",), "FULL": ("left", "right")}.get(kind, ())


def keeps_partners(node: Join, side: str) -> bool:
    """Whether `side`'s state table keeps each row's partner count: an outer side of a regular join with a
    residual condition."""
    regular = node.bounds is None and not node.lookup
    return regular and node.residual is not None and side in outer_sides(node.kind)


@dataclass
class Padding:
    output: pl.DataFrame  # padded rows: the output columns and a signed COUNT
    delta: pl.DataFrame  # the side's changes for `JoinOperator._apply` (the epoch's rows, or with PARTNERS)


def padding(
    op: JoinOperator,
    side: str,
    delta: pl.DataFrame,
    old: pl.DataFrame,
    other_delta: pl.DataFrame,
    other_old: pl.DataFrame,
) -> Padding:
    """The change of `side`'s padded rows this epoch. `delta`/`other_delta`: the epoch's distinct rows with their
    signed counts (`_collapse`); `old`/`other_old`: the stored rows that may share a key with them."""
    keys = op.keys
    group = [*keys, *op._columns(side)]
    kept = PARTNERS in old.columns
    zero = pl.lit(0, pl.Int64)
    touched = pl.concat([delta.select(keys), other_delta.select(keys)]).unique()
    before = old.join(touched, on=keys, how="semi", nulls_equal=True)  # NULL keys too: their rows' counts change
    rows = (
        pl.concat(
            [
                before.select(
                    *group,
                    pl.col(COUNT).alias(_M_OLD),
                    zero.alias(_DM),
                    (pl.col(PARTNERS) if kept else zero).alias(_P_OLD),
                    pl.lit(1, pl.Int64).alias(_STORED),
                ),
                delta.select(
                    *group, zero.alias(_M_OLD), pl.col(COUNT).alias(_DM), zero.alias(_P_OLD), zero.alias(_STORED)
                ),
            ],
            how="vertical_relaxed",
        )
        .group_by(group)
        .agg(pl.col(_M_OLD, _DM, _P_OLD, _STORED).sum())
        .with_row_index(_ROW)
    )
    other_cols = [*keys, *op._columns("right" if side == "left" else "left")]
    theirs_old = other_old.select(*other_cols, pl.col(COUNT).alias(_OTHER))
    theirs_new = other_delta.select(*other_cols, pl.col(COUNT).alias(_OTHER))
    if op.node.residual is None:
        rows = _key_partners(rows, keys, touched, theirs_old, theirs_new)
    else:
        rows = _row_partners(rows, keys, op.node.residual, theirs_old, theirs_new)
    m_new = pl.col(_M_OLD) + pl.col(_DM)
    padded_now = pl.when((m_new > 0) & (pl.col(_P_NEW) <= 0)).then(m_new).otherwise(0)
    padded_before = pl.when((pl.col(_M_OLD) > 0) & (pl.col(_P_OLD) <= 0)).then(pl.col(_M_OLD)).otherwise(0)
    changed = rows.select(*group, (padded_now - padded_before).alias(COUNT)).filter(pl.col(COUNT) != 0)
    output = op._pad(changed, side)
    if not kept:
        return Padding(output, delta)
    # The state's change: the epoch's counts, and each row's partner count as a difference (`_apply` sums them).
    moved = rows.filter((pl.col(_DM) != 0) | (pl.col(_P_NEW) != pl.col(_P_OLD)))
    new_delta = moved.select(
        *group, pl.col(_DM).alias(COUNT), (pl.col(_P_NEW) - pl.col(_P_OLD)).alias(PARTNERS)
    ).with_columns(op._hash(side))
    return Padding(output, new_delta)


def _key_partners(
    rows: pl.DataFrame, keys: list[str], touched: pl.DataFrame, theirs_old: pl.DataFrame, theirs_new: pl.DataFrame
) -> pl.DataFrame:
    """Partners by key (an equi-join): the other side's summed counts of the key, before and after the epoch. A
    NULL key equals nothing (the joins below do not match NULLs), so its rows have none."""
    valid = pl.all_horizontal([pl.col(k).is_not_null() for k in keys])
    before = theirs_old.join(touched, on=keys, how="semi").group_by(keys).agg(pl.col(_OTHER).sum().alias("__kb"))
    added = theirs_new.filter(valid).group_by(keys).agg(pl.col(_OTHER).sum().alias("__ka"))
    counts = before.join(added, on=keys, how="full", coalesce=True)
    return (
        rows.drop(_P_OLD)
        .join(counts, on=keys, how="left")
        .with_columns(pl.col("__kb", "__ka").fill_null(0))
        .with_columns(pl.col("__kb").alias(_P_OLD), (pl.col("__kb") + pl.col("__ka")).alias(_P_NEW))
    )


def _row_partners(
    rows: pl.DataFrame, keys: list[str], residual: pl.Expr, theirs_old: pl.DataFrame, theirs_new: pl.DataFrame
) -> pl.DataFrame:
    """Partners by row (a residual condition): the stored count, plus the other side's epoch rows that pass the
    condition with the row; a row not stored yet first counts its partners among the other side's stored rows."""
    lazy = rows.lazy()
    gained = (
        lazy.join(theirs_new.lazy(), on=keys, how="inner")
        .filter(residual)
        .group_by(_ROW)
        .agg(pl.col(_OTHER).sum().alias("__gained"))
    )
    first = (
        lazy.filter(pl.col(_STORED) == 0)
        .join(theirs_old.lazy(), on=keys, how="inner")
        .filter(residual)
        .group_by(_ROW)
        .agg(pl.col(_OTHER).sum().alias("__first"))
    )
    gained_df, first_df = pl.collect_all([gained, first])
    return (
        rows.join(gained_df, on=_ROW, how="left")
        .join(first_df, on=_ROW, how="left")
        .with_columns((pl.col(_P_OLD) + pl.col("__gained").fill_null(0) + pl.col("__first").fill_null(0)).alias(_P_NEW))
    )


def net(frame: pl.DataFrame, columns: list[str], updating: bool) -> pl.DataFrame:
    """An epoch's output as net changes, retractions first: a sink that upserts by key applies the epoch's last
    change per key, so a retraction must not follow the insert of a row with the same key. Over updating inputs
    the same row can come out with both signs (its inputs changed both ways): the counts are summed per row."""
    if updating:
        frame = frame.group_by(columns).agg(pl.col(COUNT).sum()).filter(pl.col(COUNT) != 0)
    return frame.sort(pl.col(COUNT) > 0, maintain_order=True)
