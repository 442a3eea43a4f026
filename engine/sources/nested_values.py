"""Nested values (ROW, ARRAY, MAP) read from JSON text and from typed columns, under the scalar rules.

A nested value is read in two steps. Its JSON text is parsed (`json_lines.loads`, the JSON lines rules) and its
shape checked against the declared type: an object for a ROW (fields by exact name, absent ones NULL), an array
for an ARRAY, an object (or an array of `{"key": .., "value": ..}` entries, as Arrow-minded writers give a map) for
a MAP. Every leaf keeps the text the JSON readers give a scalar (`json_lines.as_text`). Then the leaves are
converted by the vectorised rules every scalar column follows (`engine.sources.base._from_text`), in one Polars
expression over the whole column.

A value whose shape does not match, or one of whose leaves does not convert, is NULL as a whole: the callers then
make its record a dead letter naming the column and value (as for a scalar), never a silent NULL inside the value.
Loss is found by counting the non-NULL nodes before and after conversion (`present`): conversion only ever turns
a value into NULL, so the counts differ exactly when something was lost.

The shape check walks each parsed value in Python: Polars' own JSON decoder converts leniently (1.5 read as the
INT 1, a scalar as a one-element list, an overflow as NULL), which would lose data silently.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import polars as pl

from engine.sources.json_lines import as_text, loads
from sql.types import is_map, sql_name

Leaf = Callable[[pl.Expr, pl.DataType], pl.Expr]


def is_nested(dtype: pl.DataType) -> bool:
    return isinstance(dtype, pl.List | pl.Struct | pl.Array)


def skeleton(dtype: pl.DataType) -> pl.DataType:
    """`dtype` with every leaf as STRING: what the shape check gives, before the leaves are converted."""
    if isinstance(dtype, pl.Struct):
        return pl.Struct({f.name: skeleton(f.dtype) for f in dtype.fields})
    if isinstance(dtype, pl.List | pl.Array):
        return pl.List(skeleton(dtype.inner))
    return pl.String()


class Mismatch(ValueError):
    pass


def shaped(value: Any, dtype: pl.DataType) -> Any:
    """A parsed JSON value in the skeleton of `dtype` (leaves as text); Mismatch when its shape differs."""
    if value is None:
        return None
    if isinstance(dtype, pl.Struct):
        if not isinstance(value, dict):
            raise Mismatch(f"expected an object for {sql_name(dtype)}")
        return {f.name: shaped(value.get(f.name), f.dtype) for f in dtype.fields}
    if is_map(dtype):
        key, item = (f.dtype for f in dtype.inner.fields)  # type: ignore[attr-defined]
        if isinstance(value, dict):
            entries = list(value.items())
        elif isinstance(value, list) and all(isinstance(e, dict) and set(e) <= {"key", "value"} for e in value):
            entries = [(e.get("key"), e.get("value")) for e in value]
        else:
            raise Mismatch(f"expected an object for {sql_name(dtype)}")
        if any(k is None for k, _ in entries):
            raise Mismatch("a MAP key is NULL")
        return [{"key": shaped(k, key), "value": shaped(v, item)} for k, v in entries]
    if isinstance(dtype, pl.List | pl.Array):
        if not isinstance(value, list):
            raise Mismatch(f"expected an array for {sql_name(dtype)}")
        return [shaped(v, dtype.inner) for v in value]
    # A scalar leaf: an object or array there is kept as its JSON text, which only a STRING reads (as for a
    # scalar column of JSON lines).
    return as_text(value)


def _parse_batch(texts: pl.Series, dtype: pl.DataType) -> pl.Series:
    out: list[Any] = []
    for text in texts.to_list():
        if text is None:
            out.append(None)
            continue
        try:
            out.append(shaped(loads(text), dtype))
        except (ValueError, RecursionError):
            out.append(None)
    return pl.Series(texts.name, out, dtype=skeleton(dtype))


def convert(value: pl.Expr, dtype: pl.DataType, leaf: Leaf) -> pl.Expr:
    """`value` (a nested column) with each leaf converted by `leaf` to the leaf type of `dtype`; a NULL stays NULL."""
    if isinstance(dtype, pl.Struct):
        fields = [convert(value.struct.field(f.name), f.dtype, leaf).alias(f.name) for f in dtype.fields]
        return pl.when(value.is_not_null()).then(pl.struct(fields))
    if isinstance(dtype, pl.List | pl.Array):
        return value.list.eval(convert(pl.element(), dtype.inner, leaf)).cast(pl.List(dtype.inner))
    return leaf(value, dtype)


def present(value: pl.Expr, dtype: pl.DataType) -> pl.Expr:
    """How many nodes of each nested value are not NULL (the value itself, its fields, elements and leaves)."""
    here = value.is_not_null().cast(pl.Int64)
    if isinstance(dtype, pl.Struct):
        return pl.sum_horizontal(here, *[present(value.struct.field(f.name), f.dtype) for f in dtype.fields])
    if isinstance(dtype, pl.List | pl.Array):
        inner = value.list.eval(present(pl.element(), dtype.inner)).list.sum().fill_null(0)
        return here + inner
    return here


def lossless(value: pl.Expr, source: pl.DataType, converted: pl.Expr, target: pl.DataType) -> pl.Expr:
    """`converted` where the conversion of `value` lost nothing, else NULL (the whole value)."""
    return pl.when(present(value, source) == present(converted, target)).then(converted)


def from_json_text(text: pl.Expr, dtype: pl.DataType, leaf: Leaf) -> pl.Expr:
    """JSON text -> a value of the nested `dtype`; NULL where its shape or a leaf does not match."""
    shape = skeleton(dtype)
    parsed = text.map_batches(lambda s: _parse_batch(s, dtype), return_dtype=shape, is_elementwise=True)
    return lossless(parsed, shape, convert(parsed, dtype, leaf), dtype)


def same_shape(stored: pl.DataType, declared: pl.DataType) -> bool:
    """Whether two nested types have the same structure (field names in order, lists at the same places)."""
    if isinstance(stored, pl.Struct) and isinstance(declared, pl.Struct):
        return [f.name for f in stored.fields] == [f.name for f in declared.fields] and all(
            same_shape(a.dtype, b.dtype) for a, b in zip(stored.fields, declared.fields, strict=True)
        )
    if isinstance(stored, pl.List | pl.Array) and isinstance(declared, pl.List | pl.Array):
        return same_shape(stored.inner, declared.inner)
    return not is_nested(stored) and not is_nested(declared)


def as_json_text(value: pl.Expr) -> pl.Expr:
    """A typed nested column as JSON text (the detour a typed column whose leaves may not convert takes)."""
    wrapped = pl.struct(value.alias("v")).struct.json_encode().str.strip_prefix('{"v":').str.strip_suffix("}")
    return pl.when(value.is_not_null()).then(wrapped)


def _map_free(dtype: pl.DataType) -> pl.DataType:
    """`dtype` with each Polars Map (how Polars reads a Parquet or Arrow map) as the list of key/value entries
    timelapse holds a MAP as."""
    if isinstance(dtype, pl.Map):
        return pl.List(pl.Struct({"key": _map_free(dtype.key), "value": _map_free(dtype.value)}))
    if isinstance(dtype, pl.Struct):
        return pl.Struct({f.name: _map_free(f.dtype) for f in dtype.fields})
    if isinstance(dtype, pl.List | pl.Array):
        return pl.List(_map_free(dtype.inner))
    return dtype


def maps_as_entries(frame: pl.DataFrame) -> pl.DataFrame:
    """`frame` with its Map columns (at any depth) as lists of key/value entries (the same values)."""
    changed = {n: _map_free(t) for n, t in frame.schema.items() if _map_free(t) != t}
    return frame.with_columns(pl.col(n).cast(t) for n, t in changed.items()) if changed else frame
