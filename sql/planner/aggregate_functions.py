"""Binding of Flink's further aggregate functions into `AggCall`s (the engine's side:
engine/operators/aggregate_functions.py): STDDEV_POP, STDDEV_SAMP (STDDEV), VAR_POP, VAR_SAMP (VARIANCE),
FIRST_VALUE, LAST_VALUE, LISTAGG, ARRAY_AGG, JSON_ARRAYAGG, JSON_OBJECTAGG, COLLECT, BOOL_AND, BOOL_OR.

Options become plain parts of the call, so the plan needs no new fields: which NULLs are skipped (LISTAGG's,
ARRAY_AGG's IGNORE NULLS, the JSON functions' ABSENT ON NULL) joins the call's FILTER; LISTAGG's separator is
its second argument, a literal; the JSON functions aggregate the JSON text of their values."""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl
from sqlglot import exp

from sql import types
from sql.errors import UnsupportedError, error_at
from sql.expressions import ExprCompiler
from sql.plan import AggCall
from sql.planner import changelog

_CLASSES: dict[type[exp.Expr], str] = {
    exp.StddevPop: "STDDEV_POP",
    exp.StddevSamp: "STDDEV_SAMP",
    exp.Stddev: "STDDEV_SAMP",
    exp.VariancePop: "VAR_POP",
    exp.Variance: "VAR_SAMP",
    exp.FirstValue: "FIRST_VALUE",
    exp.LastValue: "LAST_VALUE",
    exp.GroupConcat: "LISTAGG",
    exp.ArrayAgg: "ARRAY_AGG",
    exp.JSONArrayAgg: "JSON_ARRAYAGG",
    exp.JSONObjectAgg: "JSON_OBJECTAGG",
    exp.LogicalAnd: "BOOL_AND",
    exp.LogicalOr: "BOOL_OR",
}
#: functions sqlglot leaves as plain calls
ANONYMOUS = ("COLLECT",)
#: their result depends on the order rows arrive in
ORDERED = ("FIRST_VALUE", "LAST_VALUE", "LISTAGG", "ARRAY_AGG", "JSON_ARRAYAGG")
#: whose partial states are not merged when SESSION windows merge (they keep arrival order, or values)
NOT_IN_SESSIONS = frozenset((*ORDERED, "COLLECT", "JSON_OBJECTAGG"))


def is_function(node: exp.Expr) -> bool:
    """Whether `node` is one of these aggregate calls (possibly under IGNORE NULLS / RESPECT NULLS)."""
    if isinstance(node, exp.IgnoreNulls | exp.RespectNulls):
        node = node.this
    return type(node) in _CLASSES or (isinstance(node, exp.Anonymous) and node.name.upper() in ANONYMOUS)


@dataclass
class _Bound:
    function: str
    args: tuple[pl.Expr, ...]
    arg_types: tuple[pl.DataType, ...]
    dtype: pl.DataType
    skip_nulls: pl.Expr | None  # rows whose value is NULL do not count: joined to the FILTER


def bind(
    call: exp.Expr, compiler: ExprCompiler, mode: str, output: str, filter_expr: pl.Expr | None, sql_text: str
) -> AggCall | None:
    """`call` as an AggCall if it is one of these functions, else None."""
    if not is_function(call):
        return None
    bound = _bind(call, compiler, mode)
    mask = filter_expr
    if bound.skip_nulls is not None:
        mask = bound.skip_nulls if mask is None else (mask.fill_null(False) & bound.skip_nulls)
    return AggCall(bound.function, bound.args, bound.arg_types, output, bound.dtype, False, mask, sql_text)


def _bind(call: exp.Expr, compiler: ExprCompiler, mode: str) -> _Bound:
    ignore_nulls = isinstance(call, exp.IgnoreNulls)
    if isinstance(call, exp.IgnoreNulls | exp.RespectNulls):
        call = call.this
    function = call.name.upper() if isinstance(call, exp.Anonymous) else _CLASSES[type(call)]
    if isinstance(call.this, exp.Distinct) or call.args.get("distinct"):
        raise error_at(call, "DISTINCT is supported in COUNT(DISTINCT x) only", UnsupportedError)
    if ignore_nulls and function != "ARRAY_AGG":
        raise error_at(call, f"IGNORE NULLS is supported in ARRAY_AGG only, not in {function}", UnsupportedError)
    if function in ORDERED and mode != changelog.APPEND:
        raise error_at(
            call,
            f"{function} over an updating input is not supported: the order of its values would depend on how"
            " the input's updates are cut into epochs",
            UnsupportedError,
        )
    if function == "JSON_OBJECTAGG":
        return _json_object(call, compiler)
    arg_nodes = list(call.expressions) if isinstance(call, exp.Anonymous) else [call.this]
    if len(arg_nodes) != 1 or arg_nodes[0] is None:
        raise error_at(call, f"{function} takes one argument, not {len(arg_nodes)}")
    arg, dtype = compiler.typed(arg_nodes[0])
    name = types.sql_name(dtype)
    if function.startswith(("STDDEV", "VAR")):
        if not dtype.is_numeric():
            raise error_at(call, f"{function} needs a number, got {name}")
        return _Bound(function, (arg,), (dtype,), pl.Float64(), None)
    if function in ("FIRST_VALUE", "LAST_VALUE"):
        return _Bound(function, (arg,), (dtype,), dtype, None)
    if function == "LISTAGG":
        if dtype != pl.String():
            raise error_at(call, f"LISTAGG needs a STRING, got {name}: CAST it to STRING")
        separator = call.args.get("separator")
        if separator is None:
            text = ","  # Flink's default
        elif isinstance(separator, exp.Literal) and separator.is_string:
            text = separator.this
        else:
            raise error_at(separator, "LISTAGG's separator must be a string literal")
        return _Bound(function, (arg, pl.lit(text)), (dtype, pl.String()), pl.String(), arg.is_not_null())
    if function == "ARRAY_AGG":
        return _Bound(function, (arg,), (dtype,), pl.List(dtype), arg.is_not_null() if ignore_nulls else None)
    if function == "JSON_ARRAYAGG":  # Flink's default: ABSENT ON NULL
        absent = (call.args.get("null_handling") or "ABSENT ON NULL").upper().startswith("ABSENT")
        return _Bound(
            function, (json_text(arg, dtype),), (pl.String(),), pl.String(), arg.is_not_null() if absent else None
        )
    if function == "COLLECT":  # a MULTISET, as MAP<value, BIGINT count>: a list of (key, value) entries
        return _Bound(
            function, (arg,), (dtype,), pl.List(pl.Struct({"key": dtype, "value": pl.Int64()})), arg.is_not_null()
        )
    if dtype != pl.Boolean():
        raise error_at(call, f"{function} needs a BOOLEAN, got {name}")
    return _Bound(function, (arg,), (dtype,), pl.Boolean(), None)


def _json_object(call: exp.Expr, compiler: ExprCompiler) -> _Bound:
    pairs = call.expressions
    if len(pairs) != 1 or not isinstance(pairs[0], exp.JSONKeyValue):
        raise error_at(call, "JSON_OBJECTAGG takes one KEY key VALUE value pair")
    key, key_type = compiler.typed(pairs[0].this)
    value, value_type = compiler.typed(pairs[0].expression)
    if key_type != pl.String():
        raise error_at(pairs[0].this, f"JSON_OBJECTAGG's key must be a STRING, got {types.sql_name(key_type)}")
    # Flink's default: NULL ON NULL. A NULL key makes the member NULL: skipped (Flink fails the job).
    absent = (call.args.get("null_handling") or "NULL ON NULL").upper().startswith("ABSENT")
    member = pl.when(key.is_not_null()).then(
        pl.concat_str(json_text(key, key_type), pl.lit(":"), json_text(value, value_type))
    )
    return _Bound("JSON_OBJECTAGG", (member,), (pl.String(),), pl.String(), value.is_not_null() if absent else None)


def json_text(expr: pl.Expr, dtype: pl.DataType) -> pl.Expr:
    """The JSON text of a value, `null` for NULL: strings quoted and escaped, numbers and booleans bare,
    timestamps as ISO-8601 strings."""
    if isinstance(dtype, pl.Decimal):  # exact digits, as a JSON number
        return pl.when(expr.is_null()).then(pl.lit("null")).otherwise(expr.cast(pl.String))
    # Encoded as the one field of an object, `{"v":...}`, then unwrapped: Polars' JSON writer does the escaping.
    return pl.struct(expr.alias("v")).struct.json_encode().str.slice(5).str.strip_suffix("}")
