"""Flink's JSON functions as vectorised expressions: IS JSON, JSON_EXISTS, JSON_VALUE, JSON_QUERY, JSON_OBJECT,
JSON_ARRAY, JSON_STRING, JSON_UNQUOTE (JSON_QUOTE is with the strings).

A path is matched by DuckDB's JSON kernels, a batch at a time through Arrow (Polars' own `json_path_match`
returns strings unquoted and JSON `null` as missing, which would blur what Flink tells apart). The kernel gives
per row whether the document is JSON and the match's raw JSON text: `null` for a JSON null, NULL when nothing
matches. Paths are literals, in Flink's `lax` (the default) or `strict` mode: `$.a.b`, `$.a[0]`, `$['a b']`,
`$.["a.b"]`, `$.a[*].b`, `$..b`. `ERROR ON ...` behaviours are refused: a bad document must not stop a pipeline,
so errors always take a NULL or DEFAULT branch.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import polars as pl
from sqlglot import exp

from sql import types
from sql.errors import UnsupportedError, error_at
from sql.functions.common import Builder, arguments, duckdb_batch, literal_string, string
from sql.functions.strings import quote_json_string
from sql.functions.syntax import JsonArrayCall, JsonExistsCall, JsonQueryCall, JsonValueCall
from sql.values import parse_text

if TYPE_CHECKING:
    from sql.expressions import ExprCompiler


_BRACKET_KEY = re.compile(r"""\.?\[\s*(?:'((?:[^']|'')*)'|"((?:[^"]|\\")*)")\s*\]""")


def _path(node: exp.Expr) -> tuple[str, bool, bool]:
    """(the path in DuckDB's syntax, strict?, has wildcards?) of a path literal, checked at planning."""
    text = literal_string(node, "the JSON path").strip()
    lowered = text.lower()
    strict = lowered.startswith("strict ")
    if strict or lowered.startswith("lax "):
        text = text.split(None, 1)[1].strip()
    # Flink's ['key'] and .["key"] name a member with any characters: DuckDB writes that ."key"
    duck = _BRACKET_KEY.sub(lambda m: '."' + (m.group(1) or m.group(2) or "").replace('"', '\\"') + '"', text)
    wildcard = "*" in duck or ".." in duck
    try:
        _matches(pl.Series(["{}"]), duck, wildcard)
    except Exception:
        raise error_at(node, f"invalid JSON path '{text}'") from None
    return duck, strict, wildcard


_MATCH = pl.Struct({"valid": pl.Boolean(), "raw": pl.String(), "text": pl.String()})


def _matches(values: pl.Series, path: str, wildcard: bool) -> pl.Series:
    """Per document: valid (is it JSON), raw (the match as JSON text; a wildcard's matches as a JSON array) and
    text (a string match unquoted, else as raw)."""
    if wildcard:
        select = (
            "json_valid(v) AS valid, CASE WHEN json_valid(v) THEN to_json(json_extract(v, $1)) END AS raw, "
            "NULL::VARCHAR AS text"
        )
    else:
        select = (
            "json_valid(v) AS valid, CASE WHEN json_valid(v) THEN json_extract(v, $1)::VARCHAR END AS raw, "
            "CASE WHEN json_valid(v) THEN json_extract_string(v, $1) END AS text"
        )
    frame = duckdb_batch(values, select, [path])
    matched = frame.select(pl.struct(valid=pl.col("valid").fill_null(False), raw="raw", text="text")).to_series()
    return matched.alias(values.name)


def _match(document: pl.Expr, path: str, wildcard: bool) -> tuple[pl.Expr, pl.Expr, pl.Expr]:
    found = document.map_batches(lambda v: _matches(v, path, wildcard), return_dtype=_MATCH, is_elementwise=True)
    raw = found.struct.field("raw")
    text = found.struct.field("text")
    # a wildcard that matched nothing gives an empty array: that is no match
    raw = pl.when(raw == "[]").then(None).otherwise(raw) if wildcard else raw
    return found.struct.field("valid"), raw, text.fill_null(raw) if not wildcard else raw


def _valid(document: pl.Expr) -> pl.Expr:
    """Whether the text is one JSON value (FALSE for NULL)."""
    whole = document.str.json_path_match("$")
    return (whole.is_not_null() | (document.str.strip_chars() == "null")).fill_null(False)


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
    path, strict, wildcard = _path(node.args["path"])
    returning = node.args.get("returning")
    dtype = types.to_polars(returning) if returning is not None else pl.String()
    valid, raw, text = _match(document, path, wildcard)
    converted = parse_text(text, dtype)
    missing = valid & raw.is_null()
    json_null = raw == "null"
    # only a scalar is a value: an object, an array or several matches are errors
    error = ~valid | (raw.is_not_null() & ~json_null & (raw.str.contains(r"^[\[{]") | converted.is_null()))
    if wildcard:
        error = error | raw.is_not_null()
    if strict:
        error, missing = error | missing, pl.lit(False)
    on_empty = _behaviour(c, node.args.get("on_empty"), dtype)
    on_error = _behaviour(c, node.args.get("on_error"), dtype)
    result = pl.when(document.is_null()).then(None).when(error).then(on_error).when(missing).then(on_empty)
    return result.when(json_null).then(pl.lit(None, dtype)).otherwise(converted)


def _json_query(c: ExprCompiler, node: exp.Expr) -> pl.Expr:
    document = string(c, node.this)
    path, strict, wildcard = _path(node.args["path"])
    returning = node.args.get("returning")
    if returning is not None and not isinstance(types.to_polars(returning), pl.String):
        raise error_at(returning, "JSON_QUERY ... RETURNING supports STRING only", UnsupportedError)
    valid, raw, _text = _match(document, path, wildcard)
    container = raw.str.contains(r"^[\[{]")
    wrapper = node.args.get("wrapper")
    wrap = wrapper.name if wrapper is not None else "WITHOUT"
    wrapped = pl.concat_str([pl.lit("["), raw, pl.lit("]")])
    if wrap == "UNCONDITIONAL" and not wildcard:
        value, error = wrapped, pl.lit(False)
    elif wrap in ("CONDITIONAL", "UNCONDITIONAL"):  # a wildcard's matches are an array already
        value, error = pl.when(raw.str.starts_with("[")).then(raw).otherwise(wrapped), pl.lit(False)
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
    path, strict, wildcard = _path(node.args["path"])
    on_error = node.args.get("on_error")
    _refuse_error(on_error)
    fallback = {"TRUE": True, "FALSE": False, "UNKNOWN": None}[on_error.name if on_error is not None else "FALSE"]
    valid, raw, _text = _match(document, path, wildcard)
    found = raw.is_not_null()
    if strict:  # a strict path that finds nothing is an error
        broken = ~valid | ~found
        return pl.when(document.is_null()).then(None).when(broken).then(pl.lit(fallback, pl.Boolean)).otherwise(True)
    return pl.when(document.is_null()).then(None).when(~valid).then(pl.lit(fallback, pl.Boolean)).otherwise(found)


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
    if _plain_array(dtype):
        # Polars encodes a struct's fields as JSON: wrap the array as the field "v" and cut out its value
        encoded = pl.struct(value.alias("v")).struct.json_encode()
        return pl.when(value.is_null()).then(None).otherwise(encoded.str.slice(5, encoded.str.len_chars() - 6))
    raise error_at(node, f"cannot write a {types.sql_name(dtype)} as JSON", UnsupportedError)


def _plain_array(dtype: pl.DataType) -> bool:
    """An ARRAY of numbers, strings or booleans (or of such ARRAYs), which JSON writes as Flink does. Not a ROW
    (its JSON names its fields, which Flink and Polars may name differently), not a MAP (a JSON object in Flink,
    a list of entries here), not DECIMAL or time leaves (their text differs)."""
    if not isinstance(dtype, pl.List) or types.is_map(dtype):
        return False
    inner = dtype.inner
    if isinstance(inner, pl.List):
        return _plain_array(inner)
    return isinstance(inner, pl.String | pl.Boolean) or (inner.is_numeric() and not isinstance(inner, pl.Decimal))


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
