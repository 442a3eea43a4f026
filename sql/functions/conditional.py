"""Flink's conditional and comparison functions that the core compiler leaves out: GREATEST, LEAST,
IS [NOT] DISTINCT FROM, SIMILAR TO, TYPEOF."""

from __future__ import annotations

from typing import TYPE_CHECKING

import polars as pl
from sqlglot import exp

from sql import types
from sql.functions.common import Builder, arguments, check_regex, literal_string, null_if_any, string

if TYPE_CHECKING:
    from sql.expressions import ExprCompiler


def _extreme(c: ExprCompiler, node: exp.Expr) -> pl.Expr:
    """GREATEST/LEAST: NULL if any argument is NULL (Flink), unlike Polars' horizontal max, which skips NULLs."""
    values = [c.compile(a) for a in arguments(node, 1, 1_000)]
    pick = pl.max_horizontal(values) if isinstance(node, exp.Greatest) else pl.min_horizontal(values)
    c.dtype(pick, node)  # arguments without a common type are refused at planning, not when rows arrive
    return null_if_any(pick, *values)


def _distinct(c: ExprCompiler, node: exp.Expr) -> pl.Expr:
    """IS [NOT] DISTINCT FROM: NULLs compare equal to each other, so the result is never NULL."""
    left, right = c._coerce_pair(node)  # type: ignore[arg-type]
    return left.ne_missing(right) if isinstance(node, exp.NullSafeNEQ) else left.eq_missing(right)


def similar_to_regex(pattern: str) -> str:
    """SQL's SIMILAR TO pattern as a regex over the whole string: `%` any run, `_` one character, and `| * + ?
    {m,n} ( ) [ ]` as in regular expressions; everything else literal."""
    out = ["(?s)^(?:"]
    for ch in pattern:
        if ch == "%":
            out.append(".*")
        elif ch == "_":
            out.append(".")
        elif ch in "|*+?{}()[],-^":
            out.append(ch)
        else:
            out.append("\\" + ch if not ch.isalnum() and ch != " " else ch)
    out.append(")$")
    return "".join(out)


def _similar(c: ExprCompiler, node: exp.Expr) -> pl.Expr:
    pattern = literal_string(node.expression, "the SIMILAR TO pattern")
    return string(c, node.this).str.contains(check_regex(node.expression, similar_to_regex(pattern)))


def _typeof(c: ExprCompiler, node: exp.Expr) -> pl.Expr:
    """TYPEOF(x): the SQL type as this engine names it (nullability is not tracked, so never `NOT NULL`)."""
    args = arguments(node, 1, 2, name="TYPEOF")
    return pl.lit(types.sql_name(c.typed(args[0])[1]), pl.String)


BY_NODE: dict[type, Builder] = {
    exp.Greatest: _extreme,
    exp.Least: _extreme,
    exp.NullSafeEQ: _distinct,
    exp.NullSafeNEQ: _distinct,
    exp.SimilarTo: _similar,
    exp.Typeof: _typeof,
}
BY_NAME: dict[str, Builder] = {"TYPEOF": _typeof}
