"""Helpers shared by the built-in function families: argument checks, literals, Flink's NULL rule."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import polars as pl
from sqlglot import exp

from sql import types
from sql.errors import UnsupportedError, error_at

if TYPE_CHECKING:  # the compiler imports this package; the builders only receive it
    from sql.expressions import ExprCompiler

#: a builder compiles one call (its sqlglot node) with the compiler of the enclosing scope
Builder = Callable[["ExprCompiler", exp.Expr], pl.Expr]


def call_name(node: exp.Expr) -> str:
    if isinstance(node, exp.Anonymous | exp.Column):
        return node.name.upper()
    return node.sql_name().upper() if isinstance(node, exp.Func) else type(node).__name__.upper()


def arguments(node: exp.Expr, low: int, high: int | None = None, name: str | None = None) -> list[exp.Expr]:
    """The positional arguments of a call, between `low` and `high` of them (a plain call's or a parsed node's)."""
    if isinstance(node, exp.Anonymous):
        args = list(node.expressions)
    else:
        args = []
        for value in node.args.values():
            if isinstance(value, exp.Expr):
                args.append(value)
            elif isinstance(value, list):
                args.extend(v for v in value if isinstance(v, exp.Expr))
    high = low if high is None else high
    if not low <= len(args) <= high:
        wanted = str(low) if low == high else f"{low} to {high}"
        raise error_at(node, f"{name or call_name(node)} takes {wanted} argument(s), got {len(args)}")
    return args


def literal_string(node: exp.Expr | None, what: str) -> str:
    if not (isinstance(node, exp.Literal) and node.is_string):
        raise error_at(node, f"{what} must be a string literal", UnsupportedError)
    return node.this


def literal_int(node: exp.Expr | None, what: str) -> int:
    value = node.this if isinstance(node, exp.Neg) else node
    if not (isinstance(value, exp.Literal) and not value.is_string and value.this.lstrip("-").isdigit()):
        raise error_at(node, f"{what} must be an integer literal", UnsupportedError)
    return -int(value.this) if isinstance(node, exp.Neg) else int(value.this)


def null_if_any(result: pl.Expr, *inputs: pl.Expr) -> pl.Expr:
    """Flink's rule for most functions: NULL when any argument is NULL."""
    if not inputs:
        return result
    return pl.when(pl.any_horizontal([i.is_null() for i in inputs])).then(None).otherwise(result)


def string(c: ExprCompiler, node: exp.Expr) -> pl.Expr:
    """A STRING argument (a NULL literal counts as one)."""
    value, dtype = c.typed(node)
    if isinstance(dtype, pl.Null):
        return value.cast(pl.String)
    if not isinstance(dtype, pl.String):
        raise error_at(node, f"expected a STRING, got {types.sql_name(dtype)}: {node.sql()}")
    return value


def numeric(c: ExprCompiler, node: exp.Expr) -> tuple[pl.Expr, pl.DataType]:
    value, dtype = c.typed(node)
    if isinstance(dtype, pl.Null):
        return value.cast(pl.Float64), pl.Float64()
    if not dtype.is_numeric():
        raise error_at(node, f"expected a number, got {types.sql_name(dtype)}: {node.sql()}")
    return value, dtype


def integer(c: ExprCompiler, node: exp.Expr) -> pl.Expr:
    value, dtype = c.typed(node)
    if isinstance(dtype, pl.Null):
        return value.cast(pl.Int64)
    if not dtype.is_integer():
        raise error_at(node, f"expected an integer, got {types.sql_name(dtype)}: {node.sql()}")
    return value.cast(pl.Int64)


def double(c: ExprCompiler, node: exp.Expr) -> pl.Expr:
    return numeric(c, node)[0].cast(pl.Float64)


def check_regex(node: exp.Expr, pattern: str) -> str:
    """A regular expression literal, refused at planning if the regex engine cannot compile it."""
    try:
        pl.select(pl.lit("").str.contains(pattern)).item()
    except pl.exceptions.PolarsError as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else "invalid"
        raise error_at(node, f"invalid regular expression '{pattern}': {first}") from None
    return pattern


def refuse(reason: str) -> Builder:
    """A Flink built-in refused at planning, with the reason users read (docs/sql.md lists the same)."""

    def build(_c: ExprCompiler, node: exp.Expr) -> pl.Expr:
        raise error_at(node, f"{call_name(node)} is not supported: {reason}", UnsupportedError)

    return build


#: the hex form of valid UTF-8 (lower-case digits): what a BINARY must match to become a STRING without error
UTF8_HEX = (
    r"^(?:[0-7][0-9a-f]|c[2-9a-f][89ab][0-9a-f]|d[0-9a-f][89ab][0-9a-f]|e0[ab][0-9a-f][89ab][0-9a-f]"
    r"|e[1-9a-cef][89ab][0-9a-f][89ab][0-9a-f]|ed[89][0-9a-f][89ab][0-9a-f]"
    r"|f0[9ab][0-9a-f](?:[89ab][0-9a-f]){2}|f[1-3][89ab][0-9a-f](?:[89ab][0-9a-f]){2}|f48[0-9a-f](?:[89ab][0-9a-f]){2})*$"
)


_local = threading.local()


def duckdb_connection() -> Any:
    """This thread's in-memory DuckDB connection, for the vectorised kernels Polars lacks (digests, JSON paths).
    DuckDB is imported on first use: planning, and the rest of sql/, never need it."""
    connection = getattr(_local, "connection", None)
    if connection is None:
        import duckdb

        connection = _local.connection = duckdb.connect()
    return connection


def duckdb_batch(values: pl.Series, select: str, parameters: list[object] | None = None) -> pl.DataFrame:
    """Run `SELECT <select> FROM batch` in DuckDB over one batch of strings (column `v`), through Arrow."""
    connection = duckdb_connection()
    connection.register("batch", pl.DataFrame({"v": values.cast(pl.String)}).to_arrow())
    try:
        table = connection.sql(f"SELECT {select} FROM batch", params=parameters or None).to_arrow_table()
        return pl.from_arrow(table)  # type: ignore[return-value]
    finally:
        connection.unregister("batch")
