"""Python scalar UDFs: vectorised functions over Polars Series, callable from SQL by name."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import polars as pl


@dataclass(frozen=True)
class ScalarUdf:
    name: str
    function: Callable[..., pl.Series]
    return_type: pl.DataType

    def expression(self, args: Sequence[pl.Expr]) -> pl.Expr:
        def call(series: Sequence[pl.Series]) -> pl.Series:
            return pl.Series(self.function(*series)).cast(self.return_type)

        return pl.map_batches(list(args), call, return_dtype=self.return_type, is_elementwise=True)


REGISTRY: dict[str, ScalarUdf] = {}
#: where `@udf` leaves the declared UDF on the function, so `CREATE FUNCTION ... AS 'module.fn'` can find it
UDF_ATTRIBUTE = "__timelapse_udf__"


def udf(
    return_type: pl.DataType | type[pl.DataType], name: str | None = None
) -> Callable[[Callable[..., pl.Series]], Callable[..., pl.Series]]:
    """Register `fn(*series) -> Series` as a SQL function.

    >>> @udf(pl.Int64)
    ... def count_c(s: pl.Series) -> pl.Series:
    ...     return s.str.count_matches("c")
    """
    dtype = return_type() if isinstance(return_type, type) else return_type

    def register(fn: Callable[..., pl.Series]) -> Callable[..., pl.Series]:
        key = (name or fn.__name__).upper()
        REGISTRY[key] = ScalarUdf(key, fn, dtype)
        setattr(fn, UDF_ATTRIBUTE, REGISTRY[key])
        return fn

    return register


@dataclass(frozen=True)
class AggregateUdf:
    """A Python aggregate, vectorised as Polars expressions over whole groups.

    - `state`: the typed partial-state columns kept per group (they become columns of the state table);
    - `partial(*args)`: one aggregation expression per state column, evaluated over a group's new rows;
    - `merge(old, new)`: one expression per state column combining two partial states (given as dicts of
      column expressions);
    - `finish(state)`: the result expression from the state columns.
    """

    name: str
    state: dict[str, pl.DataType]
    partial: Callable[..., dict[str, pl.Expr]]
    merge: Callable[[dict[str, pl.Expr], dict[str, pl.Expr]], dict[str, pl.Expr]]
    finish: Callable[[dict[str, pl.Expr]], pl.Expr]
    result_type: pl.DataType


AGGREGATES: dict[str, AggregateUdf] = {}


def udaf(
    name: str,
    state: dict[str, pl.DataType],
    partial: Callable[..., dict[str, pl.Expr]],
    merge: Callable[[dict[str, pl.Expr], dict[str, pl.Expr]], dict[str, pl.Expr]],
    finish: Callable[[dict[str, pl.Expr]], pl.Expr],
    result_type: pl.DataType,
) -> AggregateUdf:
    """Register an aggregate callable from SQL as `name(args)`.

    >>> udaf("SUM_SQ", {"s": pl.Float64()}, partial=lambda x: {"s": (x * x).sum()},
    ...      merge=lambda a, b: {"s": a["s"] + b["s"]}, finish=lambda st: st["s"], result_type=pl.Float64())
    """
    aggregate = AggregateUdf(name.upper(), state, partial, merge, finish, result_type)
    AGGREGATES[aggregate.name] = aggregate
    return aggregate
