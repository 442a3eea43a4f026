"""Aggregate functions as partial states: how each aggregate is computed, combined and finished.

Every aggregate keeps typed partial-state columns (they become columns of the operator's state table):
COUNT keeps a count, SUM and AVG a sum and a count of non-NULL values, MIN and MAX the extreme value.
Sums of decimals are DECIMAL(38, s), exact; Polars raises when an addition needs more than 38 digits.
Partial states are computed over the new rows of an epoch with Polars aggregations, then combined with the
stored state. Retractions (-U/-D rows) enter with sign -1, so COUNT, SUM and AVG stay exact over updating
inputs. Flink's further aggregates (STDDEV, LISTAGG, COLLECT, ...) are in aggregate_functions.py.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import polars as pl

from engine.operators.decimals import average, checked_sum, is_decimal
from engine.operators.distinct_values import VALUE
from sql.plan import AggCall
from sql.types import sum_type

SIGN = "__sign"
ROWS = "__rows"  # rows currently in a group: a group whose count falls to 0 is deleted


@dataclass(frozen=True)
class StateColumn:
    name: str
    dtype: pl.DataType
    # how two partial states merge: sum | min | max | udaf | replace (recomputed by the operator) | and for the
    # functions of aggregate_functions.py: welford (its merge) | first | last | concat (arrival order)
    combine: str


@dataclass
class AggState:
    """The partial-state view of one aggregate call."""

    call: AggCall
    columns: list[StateColumn]
    partial: list[pl.Expr]  # aggregation expressions over a group of input rows, one per state column
    finish: pl.Expr  # the result from the state columns, aliased to call.output
    udaf_merge: Callable[[dict[str, pl.Expr], dict[str, pl.Expr]], dict[str, pl.Expr]] | None = None
    #: aggregations merging any number of a group's partial states, for kinds that neither sum nor take extremes
    merge_many: list[pl.Expr] | None = None

    @property
    def distinct(self) -> bool:
        return self.call.distinct

    @property
    def needs_values(self) -> bool:
        """Whether the operator must keep every value with its count (COUNT DISTINCT, and what is recomputed from
        values: MIN/MAX and the variances over retractions, COLLECT, JSON_OBJECTAGG)."""
        return self.call.distinct or any(c.combine == "replace" for c in self.columns)


def state_prefixes(calls: list[AggCall]) -> list[str]:
    """Readable, unique column prefixes for the calls' partial states: `SUM(amount)` -> `sum_amount__`, so a
    state table reads as `cust, sum_amount__sum, sum_amount__count` when opened in a notebook."""
    prefixes: list[str] = []
    for index, call in enumerate(calls):
        base = re.sub(r"[^a-z0-9]+", "_", (call.sql or call.function).lower()).strip("_")[:40] or f"agg{index}"
        prefix = f"{base}__"
        if prefix in prefixes:
            prefix = f"{base}_{index}__"
        prefixes.append(prefix)
    return prefixes


def agg_state(call: AggCall, prefix: str, retracting: bool = False) -> AggState:
    """The partial state of `call`, in columns named `prefix + part`; over a `retracting` input MIN and MAX
    are recomputed from stored values."""
    from engine.operators import aggregate_functions  # it builds on this module's AggState

    if call.function in aggregate_functions.FUNCTIONS:
        return aggregate_functions.function_state(call, prefix, retracting)
    sign = pl.col(SIGN)
    mask = call.filter.fill_null(False) if call.filter is not None else pl.lit(True)
    arg = call.args[0] if call.args else None
    name = call.function

    if name == "COUNT" and call.distinct:
        # The operator maintains the distinct values; this column receives the change in their number.
        count = prefix + "count"
        return AggState(
            call,
            [StateColumn(count, pl.Int64(), "sum")],
            [pl.lit(0, pl.Int64).alias(count)],
            pl.col(count).alias(call.output),
        )
    if name == "COUNT":
        present = mask if arg is None else (mask & arg.is_not_null())
        count = prefix + "count"
        return AggState(
            call,
            [StateColumn(count, pl.Int64(), "sum")],
            [(sign * present.cast(pl.Int64)).sum().alias(count)],
            pl.col(count).alias(call.output),
        )
    if name in ("SUM", "AVG"):
        assert arg is not None
        present = mask & arg.is_not_null()
        # SUM keeps its result type; AVG of decimals keeps an exact DECIMAL(38, s) sum, of other numbers a DOUBLE.
        exact = name == "SUM" or is_decimal(call.dtype)
        total_type = sum_type(call.arg_types[0]) if exact else pl.Float64()
        total, count = prefix + "sum", prefix + "count"
        signed = pl.when(present).then(arg.cast(total_type) * sign).otherwise(pl.lit(0, total_type))
        partial = [
            (checked_sum(signed, total_type.scale) if isinstance(total_type, pl.Decimal) else signed.sum())
            .cast(total_type)
            .alias(total),
            (sign * present.cast(pl.Int64)).sum().alias(count),
        ]
        if name == "SUM":
            result = pl.col(total)
        elif isinstance(total_type, pl.Decimal) and isinstance(call.dtype, pl.Decimal):
            result = average(pl.col(total), pl.col(count), total_type.scale, call.dtype.scale)
        else:
            result = pl.col(total) / pl.col(count)
        finish = pl.when(pl.col(count) > 0).then(result).otherwise(None).cast(call.dtype).alias(call.output)
        return AggState(
            call, [StateColumn(total, total_type, "sum"), StateColumn(count, pl.Int64(), "sum")], partial, finish
        )
    if name in ("MIN", "MAX") and retracting:
        # A retraction can remove the extreme: the operator keeps every value with its count and recomputes.
        column = prefix + name.lower()
        return AggState(
            call,
            [StateColumn(column, call.dtype, "replace")],
            [pl.lit(None, call.dtype).alias(column)],
            pl.col(column).alias(call.output),
        )
    if name in ("MIN", "MAX"):
        assert arg is not None
        column = prefix + name.lower()
        values = arg.filter(mask)
        extreme = values.min() if name == "MIN" else values.max()
        return AggState(
            call,
            [StateColumn(column, call.dtype, name.lower())],
            [extreme.alias(column)],
            pl.col(column).alias(call.output),
        )
    udaf = call.udaf  # carried by the plan: no registry lookup at run time
    assert udaf is not None, f"{name} is planned without its aggregate"
    columns = [StateColumn(prefix + col, dtype, "udaf") for col, dtype in udaf.state.items()]
    args = [a.filter(mask) for a in call.args]
    produced = udaf.partial(*args)
    partial = [produced[col].alias(prefix + col) for col in udaf.state]
    finish = udaf.finish({col: pl.col(prefix + col) for col in udaf.state}).cast(call.dtype).alias(call.output)

    def merge(old: dict[str, pl.Expr], new: dict[str, pl.Expr]) -> dict[str, pl.Expr]:
        plain_old = {c: old[prefix + c] for c in udaf.state}
        plain_new = {c: new[prefix + c] for c in udaf.state}
        merged = udaf.merge(plain_old, plain_new)
        return {prefix + c: merged[c] for c in udaf.state}

    return AggState(call, columns, partial, finish, merge)


def merge_pairwise(states: list[AggState], old_suffix: str) -> list[pl.Expr]:
    """Expressions combining the stored state (columns suffixed `old_suffix`) with new partials (plain names).

    A missing side (a new group, or a group without new rows) is NULL and contributes nothing.
    """
    merged: list[pl.Expr] = []
    for state in states:
        if state.udaf_merge is not None:
            old = {c.name: pl.col(c.name + old_suffix) for c in state.columns}
            new = {c.name: pl.col(c.name) for c in state.columns}
            combined = state.udaf_merge(old, new)
            for column in state.columns:
                if column.combine != "udaf":  # a built-in merge (welford) takes a missing old side itself
                    merged.append(combined[column.name].cast(column.dtype).alias(column.name))
                    continue
                o, n = old[column.name], new[column.name]
                merged.append(
                    pl.when(n.is_null())
                    .then(o)
                    .when(o.is_null())
                    .then(n)
                    .otherwise(combined[column.name])
                    .cast(column.dtype)
                    .alias(column.name)
                )
            continue
        for column in state.columns:
            o, n = pl.col(column.name + old_suffix), pl.col(column.name)
            if column.combine == "replace":
                expr = n
            elif column.combine in ("first", "last", "concat"):
                expr = merge_ordered(column.combine, o, n)
            elif column.combine == "sum":
                expr = o.fill_null(0) + n.fill_null(0)
            elif column.combine == "min":
                expr = pl.min_horizontal(o, n)
            else:
                expr = pl.max_horizontal(o, n)
            merged.append(expr.cast(column.dtype).alias(column.name))
    return merged


def from_values(call: AggCall) -> pl.Expr:
    """What a `replace` state column holds, from a group's live (`__value`, `__count`) pairs."""
    from engine.operators.aggregate_functions import from_values

    if call.function in ("MIN", "MAX"):
        return pl.col(VALUE).min() if call.function == "MIN" else pl.col(VALUE).max()
    return from_values(call)


def merge_ordered(combine: str, old: pl.Expr, new: pl.Expr) -> pl.Expr:
    """Combine a stored state (older) with an epoch's partial for the order-dependent kinds."""
    if combine == "first":
        return pl.coalesce(old, new)
    if combine == "last":
        return pl.coalesce(new, old)
    return pl.when(old.is_null()).then(new).when(new.is_null()).then(old).otherwise(old.list.concat(new))


def merge_grouped(states: list[AggState]) -> list[pl.Expr]:
    """Aggregations that merge any number of partial states of one group (when sessions merge, or a HOP or
    CUMULATE window is combined from its slices)."""
    exprs: list[pl.Expr] = []
    for state in states:
        if state.merge_many is not None:
            exprs += state.merge_many
            continue
        for column in state.columns:
            if column.combine not in ("sum", "min", "max"):
                raise ValueError(f"{state.call.function} cannot merge sessions")
            agg = {
                "sum": checked_sum(pl.col(column.name), column.dtype.scale)
                if isinstance(column.dtype, pl.Decimal)
                else pl.col(column.name).sum(),
                "min": pl.col(column.name).min(),
                "max": pl.col(column.name).max(),
            }[column.combine]
            exprs.append(agg.cast(column.dtype).alias(column.name))
    return exprs
