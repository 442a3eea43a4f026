"""Expressions over nested values (ROW, ARRAY, MAP): field access, element access, constructors, collection
functions and CAST between nested types, as vectorised Polars expressions.

Layouts (sql.types): a ROW is a Polars Struct, an ARRAY a List, a MAP a List of {key, value} Structs (Arrow's,
Parquet's and Delta's layout of a map). Semantics follow Flink's: arrays are indexed from 1 and an index out of
range (or NULL) gives NULL; `m[k]` gives the value of key k (the last one if a key repeats), NULL if absent.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import polars as pl
from sqlglot import exp

from sql import types
from sql.errors import UnsupportedError, error_at

if TYPE_CHECKING:
    from sql.expressions import ExprCompiler


def is_nested(dtype: pl.DataType) -> bool:
    return isinstance(dtype, pl.List | pl.Struct | pl.Array)


# -- access -------------------------------------------------------------------------------------------------------
def field(value: pl.Expr, dtype: pl.DataType, name: str, node: exp.Expr) -> tuple[pl.Expr, pl.DataType]:
    """`value.name` for a ROW `value` (the field's name matched as columns are: exactly, else ignoring case)."""
    if not isinstance(dtype, pl.Struct):
        raise error_at(node, f"cannot take field '{name}' of {types.sql_name(dtype)}: only a ROW has fields")
    names = [f.name for f in dtype.fields]
    found = name if name in names else next((n for n in names if n.lower() == name.lower()), None)
    if found is None:
        raise error_at(node, f"{types.sql_name(dtype)} has no field '{name}' (it has {', '.join(names)})")
    return value.struct.field(found), dict(zip(names, (f.dtype for f in dtype.fields), strict=True))[found]


def column(c: ExprCompiler, node: exp.Column) -> pl.Expr:
    """A column, or a path into a ROW column: `r.a`, `t.r.a.b` (a table qualifier first when there is one)."""
    name, fields = c.scope.resolve_path(node)
    value, dtype = pl.col(name), c.scope.schema[name]
    for part in fields:
        value, dtype = field(value, dtype, part, node)
    return value


def dot(c: ExprCompiler, node: exp.Dot) -> pl.Expr:
    """`(expression).field`, and paths longer than sqlglot's four-part column names."""
    value, dtype = c.typed(node.this)
    return field(value, dtype, node.expression.name, node)[0]


def bracket(c: ExprCompiler, node: exp.Bracket) -> pl.Expr:
    """`arr[i]` (from 1; NULL out of range), `m[key]`, and the `MAP[k1, v1, ...]` constructor."""
    if isinstance(node.this, exp.Column) and not node.this.table and node.this.name.upper() == "MAP":
        return map_value(c, node, list(node.expressions))
    if len(node.expressions) != 1:
        raise error_at(node, f"{node.sql()}: one index expected")
    value, dtype = c.typed(node.this)
    index = node.expressions[0]
    if types.is_map(dtype):
        return lookup(c, value, dtype, index)
    if isinstance(dtype, pl.List | pl.Array):
        position, ptype = c.typed(index)
        if not ptype.is_integer() and not isinstance(ptype, pl.Null):
            raise error_at(index, f"an ARRAY index must be an integer, not {types.sql_name(ptype)}")
        position = position.cast(pl.Int64)
        return pl.when(position >= 1).then(value.list.get(position - 1, null_on_oob=True))
    raise error_at(node, f"cannot index {types.sql_name(dtype)}: only an ARRAY or a MAP can be")


def lookup(c: ExprCompiler, value: pl.Expr, dtype: pl.DataType, key: exp.Expr) -> pl.Expr:
    """The value of `key` in a map (its last entry with that key). The key must be a constant: Polars evaluates
    per-element expressions (`list.eval`) without access to other columns of the row."""
    if any(True for _ in key.find_all(exp.Column)):
        raise error_at(
            key,
            "a MAP key in m[key] must be a constant (Polars cannot compare a map's keys with a column)",
            UnsupportedError,
        )
    key_type, value_type = (f.dtype for f in dtype.inner.fields)  # type: ignore[attr-defined]
    wanted = pl.select(c.cast(c.compile(key), key_type, key)).to_series()[0]
    entry = pl.element()
    found = value.list.eval(entry.filter(entry.struct.field("key") == pl.lit(wanted, key_type)).struct.field("value"))
    return found.list.last().cast(value_type)


# -- construction -------------------------------------------------------------------------------------------------
def array_value(c: ExprCompiler, node: exp.Array) -> pl.Expr:
    """`ARRAY[a, b, ...]`: the elements cast to their common type."""
    if not node.expressions:
        raise error_at(node, "ARRAY[] needs at least one element (its type comes from them)", UnsupportedError)
    items = _common(c, list(node.expressions), node)
    if any(isinstance(t, pl.List) for _, t in (c.typed(n) for n in node.expressions)):
        # concat_list concatenates list elements: wrap each ARRAY in a struct, then unwrap it inside the list
        wrapped = pl.concat_list([pl.struct(item.alias("e")) for item in items])
        return wrapped.list.eval(pl.element().struct.field("e"))
    return pl.concat_list(items)


def map_value(c: ExprCompiler, node: exp.Expr, args: list[exp.Expr]) -> pl.Expr:
    """`MAP[k1, v1, k2, v2, ...]`: a list of key/value entries, in order."""
    if not args or len(args) % 2:
        raise error_at(node, "MAP[...] needs key, value pairs")
    keys = _common(c, args[0::2], node)
    values = _common(c, args[1::2], node)
    entries = [pl.struct(k.alias("key"), v.alias("value")) for k, v in zip(keys, values, strict=True)]
    return pl.concat_list(entries)


def row_value(c: ExprCompiler, node: exp.Expr, args: list[exp.Expr]) -> pl.Expr:
    """`ROW(a, b, ...)`: fields named EXPR$0, EXPR$1, ... as Flink names them (a CAST or an INSERT renames them)."""
    if not args:
        raise error_at(node, "ROW() needs at least one field")
    return pl.struct([c.compile(a).alias(f"EXPR${i}") for i, a in enumerate(args)])


def _common(c: ExprCompiler, nodes: list[exp.Expr], where: exp.Expr) -> list[pl.Expr]:
    """The expressions cast to their common supertype (Polars' rules), so a list can hold them."""
    typed = [c.typed(n) for n in nodes]
    known = [t for _, t in typed if not isinstance(t, pl.Null)]
    if not known:
        return [e for e, _ in typed]
    try:
        common = (
            pl.select([pl.struct(pl.lit(None, dtype=t).alias("e")).alias(str(i)) for i, t in enumerate(known)])
            .select(pl.concat_list(pl.all()))  # each wrapped in a struct: concat_list would flatten ARRAYs
            .to_series()
            .dtype.inner.fields[0]
            .dtype
        )  # type: ignore[attr-defined]
    except pl.exceptions.PolarsError:
        names = ", ".join(types.sql_name(t) for t in known)
        raise error_at(where, f"{where.sql()}: the elements have no common type ({names})") from None
    return [c.cast(e, common, n) for (e, _), n in zip(typed, nodes, strict=True)]


# -- functions ----------------------------------------------------------------------------------------------------
def _one(node: exp.Expr, args: list[exp.Expr], count: int, name: str) -> None:
    if len(args) != count:
        raise error_at(node, f"{name} takes {count} argument(s)")


def _collection(
    c: ExprCompiler, node: exp.Expr, arg: exp.Expr, name: str, what: str = "an ARRAY"
) -> tuple[pl.Expr, pl.DataType]:
    """An ARRAY argument (a MAP is a list of entries, so functions over arrays accept it as one)."""
    value, dtype = c.typed(arg)
    if not isinstance(dtype, pl.List | pl.Array | pl.Null):
        raise error_at(node, f"{name} needs {what}, not {types.sql_name(dtype)}")
    return value, dtype


def _map(c: ExprCompiler, node: exp.Expr, arg: exp.Expr, name: str) -> pl.Expr:
    value, dtype = c.typed(arg)
    if not types.is_map(dtype):
        raise error_at(node, f"{name} needs a MAP, not {types.sql_name(dtype)}")
    return value


def _cardinality(c: ExprCompiler, node: exp.Expr, args: list[exp.Expr]) -> pl.Expr:
    _one(node, args, 1, "CARDINALITY")
    return _collection(c, node, args[0], "CARDINALITY", "an ARRAY or a MAP")[0].list.len().cast(pl.Int32)


def _element(c: ExprCompiler, node: exp.Expr, args: list[exp.Expr]) -> pl.Expr:
    """The only element of an array; NULL when it is empty or NULL. Flink raises an error for more than one
    element; a row's value must not stop a pipeline here, so that is NULL too (docs/sql.md says so)."""
    _one(node, args, 1, "ELEMENT")
    value = _collection(c, node, args[0], "ELEMENT")[0]
    return pl.when(value.list.len() == 1).then(value.list.first())


def _map_keys(c: ExprCompiler, node: exp.Expr, args: list[exp.Expr]) -> pl.Expr:
    _one(node, args, 1, "MAP_KEYS")
    return _map(c, node, args[0], "MAP_KEYS").list.eval(pl.element().struct.field("key"))


def _map_values(c: ExprCompiler, node: exp.Expr, args: list[exp.Expr]) -> pl.Expr:
    _one(node, args, 1, "MAP_VALUES")
    return _map(c, node, args[0], "MAP_VALUES").list.eval(pl.element().struct.field("value"))


def _args(node: exp.Expr) -> list[exp.Expr]:
    if isinstance(node, exp.Anonymous):
        return list(node.expressions)
    keys = ("this", "expression", "null")
    return [node.args[k] for k in keys if isinstance(node.args.get(k), exp.Expr)] + list(
        node.args.get("expressions") or []
    )


Builder = Callable[["ExprCompiler", exp.Expr, list[exp.Expr]], pl.Expr]

#: function name (as the expression compiler names calls) -> builder
FUNCTIONS: dict[str, Builder] = {
    "CARDINALITY": _cardinality,
    "ELEMENT": _element,
    "MAP_KEYS": _map_keys,
    "MAP_VALUES": _map_values,
    "MAP_ENTRIES": lambda c, node, args: _map(c, node, args[0], "MAP_ENTRIES"),  # (a MAP is its entries)
    "ROW": row_value,
    "MAP": lambda c, node, args: map_value(c, node, args),
    "VAR_MAP": lambda c, node, args: map_value(c, node, args),
}


def function(c: ExprCompiler, node: exp.Func, name: str) -> pl.Expr | None:
    """The call `node` if it is a collection function, else None."""
    builder = FUNCTIONS.get(name)
    if builder is None:
        return None
    if isinstance(node, exp.Map | exp.VarMap):  # MAP(k, v) as sqlglot parses it: keys and values as two arrays
        keys, values = node.args.get("keys"), node.args.get("values")
        pairs = [x for kv in zip(keys.expressions, values.expressions, strict=True) for x in kv] if keys else []
        return map_value(c, node, pairs)
    return builder(c, node, _args(node))


# -- CAST -----------------------------------------------------------------------------------------------------------
def cast(
    value: pl.Expr, source: pl.DataType, target: pl.DataType, node: exp.Expr | None, leaf: Callable[..., pl.Expr]
) -> pl.Expr:
    """CAST between nested types of the same shape: ROW fields by position (renamed to the target's names), ARRAY
    elements and MAP keys and values one by one, each leaf by `leaf` (the scalar CAST)."""
    if not _castable(source, target):
        raise error_at(node, f"cannot CAST {types.sql_name(source)} to {types.sql_name(target)}", UnsupportedError)
    return _cast(value, source, target, leaf)


def _castable(source: pl.DataType, target: pl.DataType) -> bool:
    if isinstance(source, pl.Null):
        return True
    if isinstance(source, pl.Struct) and isinstance(target, pl.Struct):
        return len(source.fields) == len(target.fields) and all(
            _castable(a.dtype, b.dtype) for a, b in zip(source.fields, target.fields, strict=True)
        )
    if isinstance(source, pl.List | pl.Array) and isinstance(target, pl.List):
        return _castable(source.inner, target.inner)
    return not is_nested(source) and not is_nested(target)


def _cast(value: pl.Expr, source: pl.DataType, target: pl.DataType, leaf: Callable[..., pl.Expr]) -> pl.Expr:
    if source == target:
        return value
    if isinstance(source, pl.Null):
        return value.cast(target)
    if isinstance(source, pl.Struct) and isinstance(target, pl.Struct):
        fields = [
            _cast(value.struct.field(a.name), a.dtype, b.dtype, leaf).alias(b.name)
            for a, b in zip(source.fields, target.fields, strict=True)
        ]
        return pl.when(value.is_not_null()).then(pl.struct(fields))
    if isinstance(source, pl.List | pl.Array) and isinstance(target, pl.List):
        return value.list.eval(_cast(pl.element(), source.inner, target.inner, leaf)).cast(target)
    return leaf(value, source, target)
