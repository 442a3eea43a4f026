"""Windows: the window TVFs in FROM (TUMBLE, HOP, CUMULATE, SESSION), the legacy GROUP BY TUMBLE(...) form,
and windows a result carries on (its window_start and window_end passed through, for cascaded windows)."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Mapping

import polars as pl
from sqlglot import exp

from sql import types
from sql.dialect import Descriptor, TableArgument, WindowCall
from sql.errors import error_at
from sql.expressions import ExprCompiler
from sql.plan import WATERMARK_COLUMN, Aggregate, Node, Scan, WindowAssign, WindowSpec
from sql.planner import relations
from sql.planner.binder import Binder, Relation

WINDOW_COLUMNS = ("window_start", "window_end", "window_time")

#: each window kind's arguments after the time column, in positional order
_TVF_ARGUMENTS = {
    "TUMBLE": ["SIZE", "OFFSET"],
    "HOP": ["SLIDE", "SIZE", "OFFSET"],
    "CUMULATE": ["STEP", "SIZE", "OFFSET"],
    "SESSION": ["GAP"],
}
# Legacy HOP takes (ts, slide, size) as the TVF does; SESSION takes (ts, gap).
_LEGACY_ARGUMENTS = {
    "TUMBLE": ["SIZE", "OFFSET"],
    "HOP": ["SLIDE", "SIZE"],
    "SESSION": ["GAP"],
    "CUMULATE": ["STEP", "SIZE"],
}

_LEGACY_WINDOW_COLUMNS = {
    "TUMBLE_START": "window_start",
    "TUMBLE_END": "window_end",
    "TUMBLE_ROWTIME": "window_time",
    "HOP_START": "window_start",
    "HOP_END": "window_end",
    "HOP_ROWTIME": "window_time",
    "SESSION_START": "window_start",
    "SESSION_END": "window_end",
    "SESSION_ROWTIME": "window_time",
    "CUMULATE_START": "window_start",
    "CUMULATE_END": "window_end",
}


def window_tvf(binder: Binder, call: WindowCall, aliases: frozenset[str]) -> Relation:
    """`TABLE(TUMBLE(TABLE t [PARTITION BY p], DESCRIPTOR(ts), size [, offset]))` and its kin, with named or
    positional arguments."""
    named = {a.this.name.upper(): a.expression for a in call.expressions if isinstance(a, exp.Kwarg)}
    positional = [a for a in call.expressions if not isinstance(a, exp.Kwarg)]
    source, partition = _tvf_table(binder, call, named.get("DATA") or (positional.pop(0) if positional else None))
    time_arg = named.get("TIMECOL") or (positional.pop(0) if positional else None)
    if isinstance(time_arg, Descriptor):
        time_arg = time_arg.expressions[0]
    if not isinstance(time_arg, exp.Column):
        raise error_at(call, f"{call.kind} needs the time column: DESCRIPTOR(ts)")
    time_col = source.scope.resolve(time_arg)
    if not isinstance(source.node.schema[time_col], pl.Datetime):
        raise error_at(time_arg, f"window time column '{time_col}' must be a TIMESTAMP")
    values: dict[str, exp.Expr] = {}
    for key in _TVF_ARGUMENTS[call.kind]:
        if key in named:
            values[key] = named[key]
        elif positional:
            values[key] = positional.pop(0)
    if positional:
        raise error_at(positional[0], f"too many arguments for {call.kind}")
    spec = window_spec(call, call.kind, time_col, values, partition)
    if is_proctime(source.node, time_col):
        spec = dataclasses.replace(spec, proctime=True)
    for column in partition:
        source.scope.resolve(exp.column(column))
    schema = {k: v for k, v in source.node.schema.items() if k not in WINDOW_COLUMNS}
    schema.update({c: types.timestamp(3) for c in WINDOW_COLUMNS})
    if spec.kind == "SESSION":
        placeholder = Node(binder.ids.node("session"), [source.node], schema)
        return Relation(placeholder, source.qualifiers | aliases, spec, source.node)
    assign = WindowAssign(binder.ids.node("window"), [source.node], schema, source.node.changelog, window=spec)
    return Relation(assign, source.qualifiers | aliases, spec, source.node)


def _tvf_table(binder: Binder, call: WindowCall, table_arg: exp.Expr | None) -> tuple[Relation, tuple[str, ...]]:
    """The windowed table and its PARTITION BY columns."""
    if isinstance(table_arg, TableArgument):
        source = relations.from_item(binder, table_arg.this)
        return source, tuple(c.name for c in table_arg.args.get("partition_by") or [])
    if isinstance(table_arg, exp.Column | exp.Table):  # TUMBLE(t, ts, ...) without TABLE
        return relations.from_item(binder, exp.Table(this=exp.to_identifier(table_arg.name))), ()
    raise error_at(call, f"{call.kind} needs a table as its first argument: TABLE t")


def legacy_window(item: WindowCall, relation: Relation) -> WindowSpec:
    """`GROUP BY TUMBLE(ts, INTERVAL ...)`: Flink's older group-window syntax."""
    args = list(item.expressions)
    if not args or not isinstance(args[0], exp.Column):
        raise error_at(item, f"{item.kind}(time_column, ...) expected in GROUP BY")
    time_col = relation.scope.resolve(args[0])
    if not isinstance(relation.node.schema[time_col], pl.Datetime):
        raise error_at(args[0], f"window time column '{time_col}' must be a TIMESTAMP")
    values = dict(zip(_LEGACY_ARGUMENTS[item.kind], args[1:], strict=False))
    spec = window_spec(item, item.kind, time_col, values, ())
    return dataclasses.replace(spec, proctime=True) if is_proctime(relation.node, time_col) else spec


def window_spec(
    node: exp.Expr, kind: str, time_col: str, values: dict[str, exp.Expr], partition: tuple[str, ...]
) -> WindowSpec:
    def interval(key: str) -> dt.timedelta:
        if key not in values:
            raise error_at(node, f"{kind} needs {key.lower()}")
        length = ExprCompiler.interval(values[key])
        if length <= dt.timedelta(0):
            raise error_at(values[key], f"{kind} {key.lower()} must be positive")
        return length

    offset = ExprCompiler.interval(values["OFFSET"]) if "OFFSET" in values else dt.timedelta(0)
    if kind == "TUMBLE":
        return WindowSpec(kind, time_col, size=interval("SIZE"), offset=offset)
    if kind == "SESSION":
        return WindowSpec(kind, time_col, gap=interval("GAP"), partition_by=partition)
    step = interval("SLIDE" if kind == "HOP" else "STEP")
    size = interval("SIZE")
    if size % step:
        raise error_at(node, f"{kind} size must be a multiple of its {'slide' if kind == 'HOP' else 'step'}")
    return WindowSpec(kind, time_col, size=size, slide=step, offset=offset)


def is_proctime(node: Node, column: str) -> bool:
    """Whether `column` of `node` is a source's `PROCTIME()` column, passed through unchanged by name."""
    if isinstance(node, Scan):
        declared = node.table.column(column)
        return declared is not None and (declared.computed_sql or "").upper().replace(" ", "") == "PROCTIME()"
    return any(column in child.schema and is_proctime(child, column) for child in node.inputs)


def windowed(relation: Relation, window: WindowSpec | None, select: exp.Select) -> Relation:
    """A result that passes window_start and window_end on unchanged carries its windows: grouping by them
    again is a cascaded window aggregation (final, append-only), as in Flink."""
    kept = kept_window_columns(select, relation.node.schema, window) if window is not None else None
    if window is None or kept is None:
        return relation
    attached = dataclasses.replace(window, attached=True, partition_by=(), start_col=kept[0], end_col=kept[1])
    return Relation(relation.node, relation.qualifiers, attached, relation.node, relation.columns)


def window_columns(window: WindowSpec) -> tuple[str, str]:
    """The names under which a windowed relation carries window_start and window_end."""
    return (window.start_col, window.end_col) if window.attached else ("window_start", "window_end")


def kept_window_columns(
    select: exp.Select, schema: Mapping[str, pl.DataType], window: WindowSpec
) -> tuple[str, str] | None:
    """The output names of the window's start and end when the SELECT list passes both on unchanged (under
    any alias, or by `*`), else None: then the result has no windows of its own."""
    if WATERMARK_COLUMN not in schema:
        return None
    start, end = window_columns(window)
    found: dict[str, str] = {}
    for item in select.expressions:
        if isinstance(item, exp.Star) or (isinstance(item, exp.Column) and isinstance(item.this, exp.Star)):
            found.setdefault("window_start", start)
            found.setdefault("window_end", end)
            continue
        body = item.this if isinstance(item, exp.Alias) else item
        if isinstance(body, exp.Column) and body.name.lower() in (start.lower(), end.lower()):
            role = "window_start" if body.name.lower() == start.lower() else "window_end"
        else:
            role = legacy_window_column(body) or ""
        if role in ("window_start", "window_end"):
            found.setdefault(role, item.alias_or_name if isinstance(item, exp.Alias) else body.name)
    if {"window_start", "window_end"} - set(found) or not {found["window_start"], found["window_end"]} <= set(schema):
        return None
    return found["window_start"], found["window_end"]


def legacy_window_column(node: exp.Expr) -> str | None:
    """`TUMBLE_START(...)` and kin: which window column they name."""
    if isinstance(node, exp.Anonymous):
        return _LEGACY_WINDOW_COLUMNS.get(node.name.upper())
    return None


def over_windows(node: Node) -> bool:
    """Whether an unbounded aggregation in `node` reads windowed rows (a window TVF or window aggregation)."""
    return any(
        isinstance(inner, Aggregate)
        and inner.window is None
        and any(isinstance(n, WindowAssign) or (isinstance(n, Aggregate) and n.window) for n in inner.walk())
        for inner in node.walk()
    )
