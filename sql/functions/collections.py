"""Flink's ARRAY_* functions over Polars List columns. (CARDINALITY, ELEMENT, `arr[i]`, the constructors and the
MAP functions belong to the collection types' own modules.)

Polars evaluates list elements with `list.eval`, which sees no other column: where Flink compares the elements
with an argument (ARRAY_POSITION, ARRAY_REMOVE), that argument must be a literal.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import polars as pl
from sqlglot import exp

from sql import types
from sql.errors import UnsupportedError, error_at
from sql.functions.common import Builder, arguments, null_if_any

if TYPE_CHECKING:
    from sql.expressions import ExprCompiler


def _array(c: ExprCompiler, node: exp.Expr) -> tuple[pl.Expr, pl.DataType]:
    value, dtype = c.typed(node)
    if not isinstance(dtype, pl.List):
        raise error_at(node, f"expected an ARRAY, got {types.sql_name(dtype)}: {node.sql()}")
    return value, dtype


def _element(c: ExprCompiler, node: exp.Expr, dtype: pl.List) -> pl.Expr:
    return c.cast(c.compile(node), dtype.inner, node)


def _literal_element(c: ExprCompiler, node: exp.Expr, dtype: pl.List) -> pl.Expr:
    if not isinstance(node, exp.Literal | exp.Null | exp.Boolean | exp.Neg):
        raise error_at(node, "the element to look for must be a literal here", UnsupportedError)
    return _element(c, node, dtype)


def _append(c: ExprCompiler, node: exp.Expr) -> pl.Expr:
    array, dtype = _array(c, node.this)
    element = _element(c, node.expression, dtype)
    parts = [array, element] if isinstance(node, exp.ArrayAppend) else [element, array]
    return pl.when(array.is_null()).then(None).otherwise(pl.concat_list(parts))


def _contains(c: ExprCompiler, node: exp.Expr) -> pl.Expr:
    """ARRAY_CONTAINS(a, e): NULL for a NULL array; a NULL e looks for NULL elements (Flink)."""
    array, dtype = _array(c, node.this)
    element = _element(c, node.expression, dtype)
    has_null = array.list.eval(pl.element().is_null()).list.any()
    return (
        pl.when(array.is_null())
        .then(None)
        .when(element.is_null())
        .then(has_null)
        .otherwise(array.list.contains(element))
    )


def _position(c: ExprCompiler, node: exp.Expr) -> pl.Expr:
    """ARRAY_POSITION(a, e): 1-based, 0 when absent, NULL when either is NULL."""
    array, dtype = _array(c, node.this)
    element = _literal_element(c, node.expression, dtype)
    if isinstance(node.expression, exp.Null):
        return pl.lit(None, pl.Int32)
    first = array.list.eval((pl.element() == element).arg_true().first()).list.first()
    return pl.when(array.is_null()).then(None).otherwise(first.fill_null(-1) + 1).cast(pl.Int32)


def _remove(c: ExprCompiler, node: exp.Expr) -> pl.Expr:
    array, dtype = _array(c, node.this)
    element = _literal_element(c, node.expression, dtype)
    if isinstance(node.expression, exp.Null):
        return array.list.drop_nulls()
    return array.list.eval(pl.element().filter(pl.element().ne_missing(element)))


def _slice(c: ExprCompiler, node: exp.Expr) -> pl.Expr:
    """ARRAY_SLICE(a, start [, end]): 1-based, inclusive, negative from the end, 0 as the beginning."""
    array, _ = _array(c, node.this)
    size = array.list.len().cast(pl.Int64)
    start = c.compile(node.args["start"]).cast(pl.Int64)
    end_node = node.args.get("end")
    end = c.compile(end_node).cast(pl.Int64) if end_node is not None else size
    first = pl.when(start < 0).then(size + start + 1).when(start == 0).then(1).otherwise(start).clip(1)
    last = pl.when(end < 0).then(size + end + 1).otherwise(end).clip(upper_bound=size)
    sliced = array.list.slice(first - 1, (last - first + 1).clip(0))
    return null_if_any(sliced, array, start, end)


def _sort(c: ExprCompiler, node: exp.Expr) -> pl.Expr:
    """ARRAY_SORT(a [, ascending [, nulls_first]]): ascending with NULLs first by default; descending puts NULLs
    last unless told; the flags are literals."""
    args = arguments(node, 1, 3, name="ARRAY_SORT")
    array, _ = _array(c, args[0])
    flags = []
    for flag in args[1:]:
        if not isinstance(flag, exp.Boolean):
            raise error_at(flag, "ARRAY_SORT's flags must be TRUE or FALSE", UnsupportedError)
        flags.append(bool(flag.this))
    ascending = flags[0] if flags else True
    nulls_first = flags[1] if len(flags) > 1 else ascending
    return array.list.sort(descending=not ascending, nulls_last=not nulls_first)


def _concat(c: ExprCompiler, node: exp.Expr) -> pl.Expr:
    arrays = [_array(c, a)[0] for a in arguments(node, 1, 1_000, name="ARRAY_CONCAT")]
    return null_if_any(pl.concat_list(arrays), *arrays)


def _set_operation(method: str) -> Builder:
    """ARRAY_UNION / ARRAY_EXCEPT / ARRAY_INTERSECT: without duplicates, in the first array's order (Flink)."""

    def build(c: ExprCompiler, node: exp.Expr) -> pl.Expr:
        first, second = (_array(c, a)[0] for a in arguments(node, 2))
        combined = getattr(first.list, method)(second)
        if method == "set_difference":  # its order is not the first array's; intersecting with that restores it
            combined = first.list.unique(maintain_order=True).list.set_intersection(combined)
        return null_if_any(combined.list.unique(maintain_order=True), first, second)

    return build


def _join(c: ExprCompiler, node: exp.Expr) -> pl.Expr:
    """ARRAY_JOIN(a, delimiter [, null_replacement]): NULL elements are left out unless a replacement is given."""
    array, _ = _array(c, node.this)
    delimiter = c._string_arg(node.expression)
    replacement_node = node.args.get("null")
    if replacement_node is None:
        return array.list.join(delimiter, ignore_nulls=True)
    replacement = c._string_arg(replacement_node)
    filled = array.list.eval(pl.element().cast(pl.String).fill_null(pl.lit("\x00null")))
    joined = filled.list.join(delimiter)
    return null_if_any(joined.str.replace_all("\x00null", replacement, literal=True), replacement)


BY_NODE: dict[type, Builder] = {
    exp.ArrayAppend: _append,
    exp.ArrayPrepend: _append,
    exp.ArrayContains: _contains,
    exp.ArrayDistinct: lambda c, n: _array(c, n.this)[0].list.unique(maintain_order=True),
    exp.ArrayPosition: _position,
    exp.ArrayRemove: _remove,
    exp.ArrayReverse: lambda c, n: _array(c, n.this)[0].list.reverse(),
    exp.ArraySlice: _slice,
    exp.ArrayConcat: _concat,
    exp.ArrayExcept: _set_operation("set_difference"),
    exp.ArrayIntersect: _set_operation("set_intersection"),
    exp.ArrayMax: lambda c, n: _array(c, n.this)[0].list.max(),
    exp.ArrayMin: lambda c, n: _array(c, n.this)[0].list.min(),
    exp.ArrayToString: _join,
}
BY_NAME: dict[str, Builder] = {"ARRAY_SORT": _sort, "ARRAY_UNION": _set_operation("set_union")}
