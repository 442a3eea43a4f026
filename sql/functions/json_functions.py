"""Flink's JSON functions as Polars expressions: IS JSON, JSON_EXISTS, JSON_VALUE, JSON_QUERY, JSON_OBJECT,
JSON_ARRAY, JSON_STRING, JSON_UNQUOTE (JSON_QUOTE is with the strings).

Paths are literals, read by Polars' JSONPath (`$.a.b`, `$.a[0]`, `$['a b']`, Flink's `$.["a.b"]`), with Flink's
`lax` (the default) or `strict` mode prefix. Polars returns the first match of a path as text (a string
unquoted, anything else as compact JSON), which sets two limits, documented in docs/sql.md: a member holding JSON
`null` looks absent (JSON_EXISTS is FALSE for it, JSON_VALUE takes the ON EMPTY branch), and a path with
wildcards (`[*]`, `..`) is refused. `ERROR ON ...` behaviours are refused: a bad document must not stop a
pipeline, so errors always take a NULL or DEFAULT branch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import polars as pl
from sqlglot import exp

from sql import types
from sql.errors import UnsupportedError, error_at
from sql.functions.common import Builder, arguments, literal_string, string
from sql.functions.strings import quote_json_string
from sql.functions.syntax import JsonArrayCall, JsonExistsCall, JsonQueryCall, JsonValueCall
from sql.values import parse_text

if TYPE_CHECKING:
    from sql.expressions import ExprCompiler


def _path(node: exp.Expr) -> tuple[str, bool]:
    """(the JSONPath, strict?) of a path literal, checked at planning."""
    text = literal_string(node, "the JSON path").strip()
    lowered = text.lower()
    strict = lowered.startswith("strict ")
    if strict or lowered.startswith("lax "):
        text = text.split(None, 1)[1].strip()
    text = text.replace("$.[", "$[")
    if "*" in text or ".." in text:
        raise error_at(node, f"JSON path '{text}': wildcards are not supported (one match per path)", UnsupportedError)
    try:
        pl.select(pl.lit("{}").str.json_path_match(text)).item()
    except pl.exceptions.PolarsError:
        raise error_at(node, f"invalid JSON path '{text}'") from None
    return text, strict


def _valid(document: pl.Expr) -> pl.Expr:
    """Whether the text is one JSON value (FALSE for NULL)."""
    whole = document.str.json_path_match("$")
    return (whole.is_not_null() | (document.str.strip_chars() == "null")).fill_null(False)


def _is_container(raw: pl.Expr) -> pl.Expr:
    return raw.str.contains(r"^[\[{]") & _valid(raw)


def is_json(c: ExprCompiler, node: exp.Is) -> pl.Expr:
    """`s IS JSON [VALUE | SCALAR | ARRAY | OBJECT]`."""
    document = string(c, node.this)
    kind = node.expression.this
    kind = kind.upper() if isinstance(kind, str) else str(kind.name if isinstance(kind, exp.Expr) else "VALUE")
    kind = "VALUE" if kind in ("FALSE", "") else kind
    valid = _valid(document)
    first = document.str.strip_chars().str.head(1)
    if kind == "OBJECT":
        return valid & (first == "{")
    if kind == "ARRAY":
        return valid & (first == "[")
    if kind == "SCALAR":
        return valid & ~first.is_in(["{", "["])
    return valid


def _refuse_error(node: exp.Expr | None) -> None:
    if isinstance(node, exp.Var) and node.name == "ERROR":
        raise error_at(
            node,
            "ERROR ON EMPTY/ERROR is not supported: a bad document must not stop the pipeline; "
            "use NULL or DEFAULT and filter on the result",
            UnsupportedError,
        )


def _behaviour(c: ExprCompiler, node: exp.Expr | None, dtype: pl.DataType) -> pl.Expr:
    _refuse_error(node)
    if node is None or (isinstance(node, exp.Var) and node.name == "NULL") or isinstance(node, exp.Null):
        return pl.lit(None, dtype)
    if isinstance(node, exp.Var) and node.name == "EMPTY ARRAY":
        return pl.lit("[]")
    if isinstance(node, exp.Var) and node.name == "EMPTY OBJECT":
        return pl.lit("{}")
    return c.cast(c.compile(node), dtype, node)


def _json_value(c: ExprCompiler, node: exp.Expr) -> pl.Expr:
    document = string(c, node.this)
    path, strict = _path(node.args["path"])
    returning = node.args.get("returning")
    dtype = types.to_polars(returning) if returning is not None else pl.String()
    raw = document.str.json_path_match(path)
    valid = _valid(document)
    converted = parse_text(raw, dtype)
    missing = valid & raw.is_null()
    error = ~valid | (raw.is_not_null() & (_is_container(raw) | converted.is_null()))
    if strict:
        error, missing = error | missing, pl.lit(False)
    on_empty = _behaviour(c, node.args.get("on_empty"), dtype)
    on_error = _behaviour(c, node.args.get("on_error"), dtype)
    result = pl.when(document.is_null()).then(None).when(error).then(on_error).when(missing).then(on_empty)
    return result.otherwise(converted)


def _json_query(c: ExprCompiler, node: exp.Expr) -> pl.Expr:
    document = string(c, node.this)
    path, strict = _path(node.args["path"])
    returning = node.args.get("returning")
    if returning is not None and not isinstance(types.to_polars(returning), pl.String):
        raise error_at(returning, "JSON_QUERY ... RETURNING supports STRING only", UnsupportedError)
    raw = document.str.json_path_match(path)
    valid = _valid(document)
    container = _is_container(raw)
    wrapper = node.args.get("wrapper")
    wrap = wrapper.name if wrapper is not None else "WITHOUT"
    # a scalar comes back unquoted: numbers and booleans are valid JSON as they are, other text is a string
    scalar_json = pl.when(_valid(raw)).then(raw).otherwise(quote_json_string(raw, escape_slash=False))
    as_json = pl.when(container).then(raw).otherwise(scalar_json)
    if wrap == "UNCONDITIONAL":
        value, error = pl.concat_str([pl.lit("["), as_json, pl.lit("]")]), pl.lit(False)
    elif wrap == "CONDITIONAL":
        wrapped = pl.concat_str([pl.lit("["), as_json, pl.lit("]")])
        value, error = pl.when(raw.str.starts_with("[") & container).then(raw).otherwise(wrapped), pl.lit(False)
    else:
        value, error = raw, raw.is_not_null() & ~container  # a scalar needs a wrapper to be returned
    missing = valid & raw.is_null()
    error = ~valid | error
    if strict:
        error, missing = error | missing, pl.lit(False)
    on_empty = _behaviour(c, node.args.get("on_empty"), pl.String())
    on_error = _behaviour(c, node.args.get("on_error"), pl.String())
    result = pl.when(document.is_null()).then(None).when(error).then(on_error).when(missing).then(on_empty)
    return result.otherwise(value)


def _json_exists(c: ExprCompiler, node: exp.Expr) -> pl.Expr:
    document = string(c, node.this)
    path, _strict = _path(node.args["path"])
    on_error = node.args.get("on_error")
    _refuse_error(on_error)
    fallback = {"TRUE": True, "FALSE": False, "UNKNOWN": None}[on_error.name if on_error is not None else "FALSE"]
    found = document.str.json_path_match(path).is_not_null()
    return (
        pl.when(document.is_null())
        .then(None)
        .when(~_valid(document))
        .then(pl.lit(fallback, pl.Boolean))
        .otherwise(found)
    )


def to_json(c: ExprCompiler, node: exp.Expr) -> pl.Expr:
    """A value as JSON text: a nested JSON_OBJECT/JSON_ARRAY as it is, a string quoted, NULL as NULL."""
    if isinstance(node, exp.JSONObject | JsonArrayCall):
        return c.compile(node)
    value, dtype = c.typed(node)
    if isinstance(dtype, pl.Null):
        return pl.lit(None, pl.String)
    if isinstance(dtype, pl.String):
        return quote_json_string(value, escape_slash=False)
    if isinstance(dtype, pl.Boolean):
        return pl.when(value).then(pl.lit("true")).when(~value).then(pl.lit("false")).otherwise(None)
    if dtype.is_numeric():
        return value.cast(pl.String)
    if isinstance(dtype, pl.Datetime):
        return quote_json_string(value.dt.strftime("%Y-%m-%dT%H:%M:%S%.3f"), escape_slash=False)
    if isinstance(dtype, pl.Date):
        return quote_json_string(value.dt.strftime("%Y-%m-%d"), escape_slash=False)
    raise error_at(node, f"cannot write a {types.sql_name(dtype)} as JSON", UnsupportedError)


def _members(parts: list[pl.Expr], open_: str, close: str) -> pl.Expr:
    if not parts:
        return pl.lit(open_ + close)
    return pl.concat_str([pl.lit(open_), pl.concat_str(parts, separator=",", ignore_nulls=True), pl.lit(close)])


def _json_object(c: ExprCompiler, node: exp.Expr) -> pl.Expr:
    absent = (node.args.get("null_handling") or "NULL ON NULL").upper().startswith("ABSENT")
    parts = []
    for pair in node.expressions:
        if not isinstance(pair, exp.JSONKeyValue):
            raise error_at(pair, "JSON_OBJECT takes KEY 'name' VALUE expr pairs")
        key = literal_string(pair.this, "a JSON_OBJECT key")
        value = to_json(c, pair.expression)
        if not absent:
            value = value.fill_null(pl.lit("null"))
        head = quote_json_string(pl.lit(key), escape_slash=False)
        parts.append(pl.concat_str([head, pl.lit(":"), value]))
    return _members(parts, "{", "}")


def _json_array(c: ExprCompiler, node: exp.Expr) -> pl.Expr:
    absent = (node.args.get("null_handling") or "ABSENT ON NULL").upper().startswith("ABSENT")
    parts = [to_json(c, v) if absent else to_json(c, v).fill_null(pl.lit("null")) for v in node.expressions]
    return _members(parts, "[", "]")


def _json_string(c: ExprCompiler, node: exp.Expr) -> pl.Expr:
    (arg,) = arguments(node, 1, name="JSON_STRING")
    return to_json(c, arg)


def _json_unquote(c: ExprCompiler, node: exp.Expr) -> pl.Expr:
    """The text of a JSON string literal; any other text passes through unchanged (Flink)."""
    (arg,) = arguments(node, 1, name="JSON_UNQUOTE")
    text = string(c, arg)
    quoted = text.str.starts_with('"') & text.str.ends_with('"') & (text.str.len_chars() >= 2)
    decoded = text.str.json_path_match("$")
    return pl.when(quoted & decoded.is_not_null()).then(decoded).otherwise(text)


BY_NODE: dict[type, Builder] = {
    JsonValueCall: _json_value,
    JsonQueryCall: _json_query,
    JsonExistsCall: _json_exists,
    JsonArrayCall: _json_array,
    exp.JSONObject: _json_object,
}
BY_NAME: dict[str, Builder] = {"JSON_STRING": _json_string, "JSON_UNQUOTE": _json_unquote}
