"""Partial states of Flink's further aggregate functions (the planner binds them: sql/planner/aggregate_functions.py).

- STDDEV_POP, STDDEV_SAMP, VAR_POP, VAR_SAMP: `count`, `mean`, `d1`, `m2` columns (DOUBLE but the count): the
  values' sum of deviations (`d1`) and of squared deviations (`m2`) around a centre (`mean`). Merging re-centres
  on the combined mean (Chan's pairwise formula), so `d1` is 0 whenever the count is positive and `m2` is
  Welford's M2: no sum of squares of raw values, whose difference loses every digit when the mean is large. The
  merge takes signed counts (an epoch's partial may net to 0), but over a retracting input the values are kept
  instead (see `from_values`): a retraction would leave its rounding in M2.
- FIRST_VALUE, LAST_VALUE: the first / last non-NULL value in arrival order. The stored state is always older
  than an epoch's rows, and an epoch's rows keep their order in a group, so "first" does not depend on where
  epochs are cut.
- LISTAGG, ARRAY_AGG, JSON_ARRAYAGG: the values in arrival order, as a List column (Delta stores it); the stored
  list is older than the epoch's, so the new one is appended.
- COLLECT, JSON_OBJECTAGG: order-free, so kept as counted values in the aggregate's `values_<i>` table (the
  machinery of COUNT(DISTINCT)); their result is recomputed from a touched group's live values, which makes them
  exact over retractions too.
- BOOL_AND, BOOL_OR: counts of non-NULL and of FALSE (TRUE) values, summed: retractable and mergeable anywhere.
"""

from __future__ import annotations

import polars as pl

from engine.operators.aggregates import SIGN, AggState, StateColumn
from engine.operators.distinct_values import COUNT, VALUE
from sql.plan import AggCall

VARIANCES = ("STDDEV_POP", "STDDEV_SAMP", "VAR_POP", "VAR_SAMP")
ORDERED_LISTS = ("LISTAGG", "ARRAY_AGG", "JSON_ARRAYAGG")
FROM_VALUES = ("COLLECT", "JSON_OBJECTAGG")
FUNCTIONS = frozenset((*VARIANCES, "FIRST_VALUE", "LAST_VALUE", *ORDERED_LISTS, *FROM_VALUES, "BOOL_AND", "BOOL_OR"))


def function_state(call: AggCall, prefix: str, retracting: bool) -> AggState:
    """The partial state of one of `FUNCTIONS`, in columns named `prefix + part`."""
    sign = pl.col(SIGN)
    mask = call.filter.fill_null(False) if call.filter is not None else pl.lit(True)
    arg = call.args[0]
    name = call.function
    if name in VARIANCES and retracting:
        # Retracting a value from a running M2 leaves its rounding behind (its square times 1e-16, which can be
        # all of a small variance left): as MIN/MAX do, keep the values with their counts and recompute.
        column = prefix + name.lower()
        return AggState(
            call,
            [StateColumn(column, pl.Float64(), "replace")],
            [pl.lit(None, pl.Float64).alias(column)],
            pl.col(column).alias(call.output),
        )
    if name in VARIANCES:
        return _variance(call, prefix, sign, mask & arg.is_not_null(), arg.cast(pl.Float64))
    if name in ("FIRST_VALUE", "LAST_VALUE"):
        column = prefix + ("first" if name == "FIRST_VALUE" else "last")
        values = arg.filter(mask & arg.is_not_null())
        picked = values.first() if name == "FIRST_VALUE" else values.last()
        return AggState(
            call,
            [StateColumn(column, call.dtype, "first" if name == "FIRST_VALUE" else "last")],
            [picked.alias(column)],
            pl.col(column).alias(call.output),
        )
    if name in ORDERED_LISTS:
        # ARRAY_AGG keeps NULLs (RESPECT NULLS, Flink's default); IGNORE NULLS, LISTAGG's skipping of NULLs and
        # JSON_ARRAYAGG's ABSENT ON NULL are in the FILTER the planner built.
        column = prefix + "list"
        element = arg.cast(pl.String) if name == "LISTAGG" else arg
        dtype = pl.List(pl.String() if name != "ARRAY_AGG" else call.arg_types[0])
        items = pl.col(column)
        if name == "LISTAGG":
            finish = pl.when(items.list.len() > 0).then(items.list.join(call.args[1]))
        elif name == "ARRAY_AGG":
            finish = pl.when(items.list.len() > 0).then(items)  # Flink: NULL, not [], for no values
        else:
            finish = pl.concat_str(pl.lit("["), items.list.join(",").fill_null(""), pl.lit("]"))
        return AggState(
            call,
            [StateColumn(column, dtype, "concat")],
            [element.filter(mask).alias(column)],
            finish.cast(call.dtype).alias(call.output),
        )
    if name in FROM_VALUES:
        # Recomputed by the operator from the live values (`from_values`); the partial is a placeholder.
        column = prefix + ("multiset" if name == "COLLECT" else "object")
        empty = pl.lit([], call.dtype) if name == "COLLECT" else pl.lit("{}")
        return AggState(
            call,
            [StateColumn(column, call.dtype, "replace")],
            [pl.lit(None, call.dtype).alias(column)],
            pl.coalesce(pl.col(column), empty).cast(call.dtype).alias(call.output),
        )
    if name in ("BOOL_AND", "BOOL_OR"):
        present = mask & arg.is_not_null()
        count, decisive = prefix + "count", prefix + ("false" if name == "BOOL_AND" else "true")
        decides = ~arg if name == "BOOL_AND" else arg
        n = pl.col(count)
        result = pl.col(decisive) == 0 if name == "BOOL_AND" else pl.col(decisive) > 0
        return AggState(
            call,
            [StateColumn(count, pl.Int64(), "sum"), StateColumn(decisive, pl.Int64(), "sum")],
            [
                (sign * present.cast(pl.Int64)).sum().alias(count),
                (sign * (present & decides).cast(pl.Int64)).sum().alias(decisive),
            ],
            pl.when(n > 0).then(result).alias(call.output),
        )
    raise ValueError(f"{name} is not one of the aggregate functions here")


def _variance(call: AggCall, prefix: str, sign: pl.Expr, present: pl.Expr, x: pl.Expr) -> AggState:
    count, mean, d1, m2 = (prefix + part for part in ("count", "mean", "d1", "m2"))
    # An epoch's partial is centred on its first value: any value of the group keeps the deviations small.
    centre = x.filter(present).first()
    deviation = pl.when(present).then(sign * (x - centre)).otherwise(0.0)
    squared = pl.when(present).then(sign * (x - centre) ** 2).otherwise(0.0)
    partial = [
        (sign * present.cast(pl.Int64)).sum().alias(count),
        centre.alias(mean),
        deviation.sum().alias(d1),
        squared.sum().alias(m2),
    ]

    def merge(old: dict[str, pl.Expr], new: dict[str, pl.Expr]) -> dict[str, pl.Expr]:
        # Move the new partial's centre onto the stored one, add, then re-centre on the combined mean. The old
        # side is NULL for a new group; a centre is NULL until a value is present (then deviations are 0).
        centre = pl.coalesce(old[mean], new[mean])
        shift = (pl.coalesce(new[mean], centre) - centre).fill_null(0.0)
        n = old[count].fill_null(0) + new[count]
        total = old[d1].fill_null(0.0) + new[d1] + new[count] * shift
        squares = old[m2].fill_null(0.0) + new[m2] + 2.0 * shift * new[d1] + new[count] * shift**2
        positive = n > 0
        return {
            count: n,
            mean: pl.when(positive).then(centre + total / n).otherwise(centre),
            d1: pl.when(positive).then(0.0).otherwise(total),
            m2: pl.when(positive).then(squares - total**2 / n).otherwise(squares),
        }

    # Any number of partial states (merging sessions, combining slices): all moved onto the first centre.
    first = pl.col(mean).drop_nulls().first()
    shift = (pl.col(mean) - first).fill_null(0.0)
    n_all = pl.col(count).sum()
    total_all = (pl.col(d1) + pl.col(count) * shift).sum()
    squares_all = (pl.col(m2) + 2.0 * shift * pl.col(d1) + pl.col(count) * shift**2).sum()
    positive_all = n_all > 0
    merge_many = [
        n_all.alias(count),
        pl.when(positive_all).then(first + total_all / n_all).otherwise(first).alias(mean),
        pl.when(positive_all).then(0.0).otherwise(total_all).alias(d1),
        pl.when(positive_all).then(squares_all - total_all**2 / n_all).otherwise(squares_all).alias(m2),
    ]
    n = pl.col(count)
    spread = (pl.col(m2) - pl.col(d1) ** 2 / n).clip(lower_bound=0.0)  # rounding never makes it negative
    name = call.function
    divisor = n if name.endswith("_POP") else n - 1
    variance = pl.when(divisor > 0).then(spread / divisor)
    finish = variance.sqrt() if name.startswith("STDDEV") else variance
    columns = [
        StateColumn(count, pl.Int64(), "welford"),
        StateColumn(mean, pl.Float64(), "welford"),
        StateColumn(d1, pl.Float64(), "welford"),
        StateColumn(m2, pl.Float64(), "welford"),
    ]
    return AggState(call, columns, partial, finish.cast(call.dtype).alias(call.output), merge, merge_many)


def from_values(call: AggCall) -> pl.Expr:
    """The state column of COLLECT, JSON_OBJECTAGG or a variance over a retracting input, over a group's live
    (`__value`, `__count`) pairs."""
    if call.function in VARIANCES:  # two passes over the values: the mean, then the squared deviations from it
        value, weight = pl.col(VALUE).cast(pl.Float64), pl.col(COUNT).cast(pl.Float64)
        n = weight.sum()
        m2 = (weight * (value - (weight * value).sum() / n) ** 2).sum()
        divisor = n if call.function.endswith("_POP") else n - 1
        variance = pl.when(divisor > 0).then(m2 / divisor)
        return variance.sqrt() if call.function.startswith("STDDEV") else variance
    if call.function == "COLLECT":  # a MULTISET as MAP<value, count>: entries sorted by value
        entry = pl.struct(pl.col(VALUE).alias("key"), pl.col(COUNT).alias("value"))
        return entry.sort_by(pl.col(VALUE))
    # JSON_OBJECTAGG: each value is a `"key":value` member (the planner encodes it); members sorted by text
    return pl.concat_str(pl.lit("{"), pl.col(VALUE).sort().str.join(","), pl.lit("}"))
