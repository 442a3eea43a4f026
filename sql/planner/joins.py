"""Joins, and which physical join each one is: a lookup join (`FOR SYSTEM_TIME AS OF` a processing time or a
plain dimension; over a versioned table at event time: sql/planner/temporal_joins.py), an interval join (time
bounds between two watermarked append-only inputs), a window join (equal window ends), or a regular join."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import polars as pl
from sqlglot import exp

from sql.catalog import TableDef
from sql.dialect import Flink
from sql.errors import SqlError, UnsupportedError, error_at
from sql.expressions import ExprCompiler
from sql.plan import OP_COLUMN, WATERMARK_COLUMN, Join, Node, TimeBound, TimeBounds
from sql.planner import changelog, hints, join_filters, relations, temporal_joins, windows
from sql.planner.binder import Binder, Relation, Scope

Bound = tuple[str, str, str, dt.timedelta]  # (left time, right time, op, constant)
#: `SELECT /*+ REGULAR_JOIN */ ...`: plan the SELECT's joins as regular joins even where time bounds would make
#: them interval joins, so that rows behind the watermark are still joined (both sides are then kept forever).
REGULAR_JOIN = "REGULAR_JOIN"


@dataclass
class _Conditions:
    """The ON clause taken apart: equi-keys, time bounds, what is left, and equal window ends."""

    left_keys: list[pl.Expr] = field(default_factory=list)
    right_keys: list[pl.Expr] = field(default_factory=list)
    bounds: list[Bound] = field(default_factory=list)
    bound_conjuncts: list[exp.Expr] = field(default_factory=list)
    residual: list[exp.Expr] = field(default_factory=list)
    window_ends: tuple[str, str] | None = None


def join(binder: Binder, left: Relation, node: exp.Join, select: exp.Select) -> Relation:
    kind = (node.side or node.kind or "INNER").upper()
    if kind not in ("INNER", "LEFT", "RIGHT", "FULL"):
        raise error_at(node, f"{kind} JOIN is not supported", UnsupportedError)
    on = node.args.get("on")
    if on is None:
        raise error_at(node, "a join needs ON with at least one equality between the two sides", UnsupportedError)
    item = node.this
    lookup = isinstance(item, exp.Table) and item.args.get("version") is not None
    if lookup and temporal_joins.versioned(binder, left, item):  # event time, a versioned table
        return temporal_joins.join(binder, left, node, select, kind)
    table, right = _lookup_side(binder, node, item, kind) if lookup else (None, relations.from_item(binder, item))
    for side in (left, right):
        if side.window is not None and side.window.unassigned_session:
            raise error_at(node, "SESSION windows need GROUP BY window_start, window_end", UnsupportedError)
    if not lookup:
        left, right, _ = join_filters.push_down(binder, select, on, kind, left, right)
    left_names, right_names, columns, schema = _output_names(left, right)
    # Pushed ON conditions stay in the residual as well: state an earlier engine kept before it pushed them (rows
    # the filter would now drop) must not join on an upgrade; on rows already filtered they cost a cheap re-check.
    found = _conditions(binder, on, left, right)
    if kind == "INNER" and not lookup:
        found.bounds += _where_bounds(select, left, right)
    regular = _hinted(select, REGULAR_JOIN)  # the user wants late rows joined: both sides kept
    time_bounds = None if (lookup or regular) else _interval(found.bounds, left.node, right.node)
    if time_bounds is None:  # a lookup or regular join: the bounds only filter
        found.residual = found.bound_conjuncts + found.residual
    out_scope = Scope(schema, left.qualifiers | right.qualifiers, columns)
    residual = _residual(binder, found.residual, out_scope)
    if lookup and kind != "INNER" and changelog.updating(left.node):
        # the dimension is read as of each change: a retraction could pad (or not) unlike the row it retracts
        raise error_at(
            node,
            f"{kind} lookup JOIN over an updating input is not supported yet" + changelog.origin(left.node),
            UnsupportedError,
        )
    mode = changelog.join(kind, lookup, time_bounds is not None, left.node, right.node)
    if mode == changelog.RETRACT:
        schema[OP_COLUMN] = pl.String()
    sql_text = on.sql(dialect=Flink)
    watermarked = WATERMARK_COLUMN in left.node.schema and WATERMARK_COLUMN in right.node.schema
    window_join = mode == changelog.APPEND and not lookup and time_bounds is None and watermarked
    result = Join(
        binder.ids.node("join"),
        [left.node] if lookup else [left.node, right.node],
        schema,
        mode,
        kind=kind,
        left_keys=found.left_keys,
        right_keys=found.right_keys,
        left_names=left_names,
        right_names=right_names,
        residual=residual,
        bounds=time_bounds,
        lookup=lookup,
        dimension=table,
        ttl=None if (lookup or time_bounds is not None) else hints.ttl(select, binder.options),
        window_ends=found.window_ends if window_join else None,
        state_id=binder.ids.state("join", f"{kind}|{sql_text}|{sorted(left.qualifiers)}|{sorted(right.qualifiers)}"),
        sql=sql_text[:150],
    )
    return Relation(result, left.qualifiers | right.qualifiers, columns=columns)


def _lookup_side(binder: Binder, node: exp.Join, item: exp.Table, kind: str) -> tuple[TableDef, Relation]:
    """The dimension table of a lookup join: read by the operator as of each row, so no node of its own."""
    if kind not in ("INNER", "LEFT"):
        raise error_at(node, "a lookup join is INNER or LEFT", UnsupportedError)
    table = binder.table(item)
    if changelog.source(table) != changelog.APPEND:
        # the dimension is read whole as a table of rows; a file of changes is not one (Flink cannot look it up)
        raise error_at(
            item,
            f"a lookup join reads '{table.name}' as a table of rows, but '{table.name}' is a changelog "
            f"(connector '{table.connector}', format '{table.options.get('format', '')}'); join it with a "
            "regular join instead",
            UnsupportedError,
        )
    alias = item.alias_or_name.lower()
    right_node = Node(f"dim:{table.name}", [], dict(table.schema))
    return table, Relation(right_node, frozenset({alias, table.name.lower()}))


def _output_names(
    left: Relation, right: Relation
) -> tuple[dict[str, str], dict[str, str], dict[tuple[str, str], str], dict[str, pl.DataType]]:
    """Output names: the left side's as they are; a clashing right name gets a digit (id, id0)."""
    left_map, right_map = left.column_map(), right.column_map()
    left_cols = [n for n in left.node.schema if not n.startswith("__")]
    right_cols = [n for n in right.node.schema if not n.startswith("__")]
    used = {n.lower() for n in left_cols}
    right_names: dict[str, str] = {}
    for name in right_cols:
        out, suffix = name, 0
        while out.lower() in used:
            out, suffix = f"{name}{suffix}", suffix + 1
        used.add(out.lower())
        right_names[name] = out
    left_names = {n: n for n in left_cols}
    columns = {**left_map, **{k: right_names[v] for k, v in right_map.items()}}
    schema = {
        **{n: left.node.schema[n] for n in left_cols},
        **{right_names[n]: right.node.schema[n] for n in right_cols},
    }
    return left_names, right_names, columns, schema


def _conditions(binder: Binder, on: exp.Expr, left: Relation, right: Relation) -> _Conditions:
    found = _Conditions()
    left_compiler, right_compiler = binder.compiler(left.scope), binder.compiler(right.scope)
    for conjunct in relations.conjuncts(on):
        sides = left.sides(conjunct, right)
        if isinstance(conjunct, exp.EQ) and {
            left.sides(conjunct.this, right),
            left.sides(conjunct.expression, right),
        } == {"left", "right"}:
            l_node, r_node = (
                (conjunct.this, conjunct.expression)
                if left.sides(conjunct.this, right) == "left"
                else (conjunct.expression, conjunct.this)
            )
            found.left_keys.append(left_compiler.compile(l_node))
            found.right_keys.append(right_compiler.compile(r_node))
            if all(_is_window_end(n, side) for n, side in ((l_node, left), (r_node, right))):
                found.window_ends = (left.scope.resolve(l_node), right.scope.resolve(r_node))
            continue
        bounds = time_bounds(conjunct, left, right) if sides == "both" else None
        if bounds:
            found.bounds.extend(bounds)
            found.bound_conjuncts.append(conjunct)
            continue
        found.residual.append(conjunct)
    if not found.left_keys:
        raise error_at(on, "a join needs at least one equality between the two sides", UnsupportedError)
    return found


def _where_bounds(select: exp.Select, left: Relation, right: Relation) -> list[Bound]:
    """Time bounds between the two sides in the WHERE of a SELECT whose joins are all INNER (Nexmark q7's
    `JOIN ... ON B.price = B1.maxprice WHERE B.dateTime BETWEEN B1.dateTime - INTERVAL '10' SECOND AND
    B1.dateTime`): there they hold of every joined row as much as in ON, so they can bound the state too. They
    only decide whether the join is an interval join; the WHERE still filters the joined rows."""
    where = select.args.get("where")
    if where is None or not join_filters.all_inner(select):
        return []
    found: list[Bound] = []
    for conjunct in relations.conjuncts(where.this):
        try:
            both = left.sides(conjunct, right) == "both"
        except SqlError:  # a column of another FROM item
            continue
        if both and (bounds := time_bounds(conjunct, left, right)):
            found.extend(bounds)
    return found


def _is_window_end(node: exp.Expr, side: Relation) -> bool:
    ends = {"window_end", windows.window_columns(side.window)[1].lower() if side.window else ""}
    return isinstance(node, exp.Column) and node.name.lower() in ends


def _interval(bounds: list[Bound], left: Node, right: Node) -> TimeBounds | None:
    """An interval join: over watermarked append-only inputs, bounds that let each side's rows leave the state.

    A left row can leave once no on-time right row can match it: a bound `r.t <= l.x + c` (r.t the right time
    attribute) does that when the watermark passes l.x + c. A right row needs `l.t <= r.y - c` likewise. The
    classic interval join has x = l.t and y = r.t; q4's `B.dateTime BETWEEN A.dateTime AND A.expires` has
    x = A.expires. Otherwise (one side could match forever) the join is regular and the bounds only filter.
    """
    watermarked = WATERMARK_COLUMN in left.schema and WATERMARK_COLUMN in right.schema
    if not bounds or not watermarked or changelog.updating(left, right):
        return None
    tightest: dict[tuple[str, str, str], dt.timedelta] = {}
    for l_col, r_col, op, constant in bounds:
        pick = max if op == ">=" else min
        key = (l_col, r_col, op)
        tightest[key] = pick(tightest[key], constant) if key in tightest else constant
    uppers = [(k[0], k[1], c) for k, c in tightest.items() if k[2] == "<="]  # (left until, right time, upper)
    lowers = [(k[0], k[1], c) for k, c in tightest.items() if k[2] == ">="]  # (left time, right until, lower)
    if not uppers or not lowers:
        return None
    # The classic form when there is one (a pair bounded both ways), else the first of each.
    classic = [(u, lo) for u in uppers for lo in lowers if u[:2] == lo[:2]]
    (l_until, r_time, upper), (l_time, r_until, lower) = classic[0] if classic else (uppers[0], lowers[0])
    conditions = tuple(TimeBound(k[0], k[1], k[2], c) for k, c in tightest.items())
    return TimeBounds(l_time, r_time, lower, upper, left_until=l_until, right_until=r_until, conditions=conditions)


def _hinted(select: exp.Select, name: str) -> bool:
    """Whether the SELECT carries hint `name`, with or without parentheses."""
    found = select.args.get("hint")
    return any(
        isinstance(item, exp.Var | exp.Anonymous | exp.Column) and item.name.upper() == name
        for item in (found.expressions if found is not None else [])
    )


def _residual(binder: Binder, residual: list[exp.Expr], scope: Scope) -> pl.Expr | None:
    """Conditions other than keys and bounds, on the joined row. In an outer join they decide which pairs are
    partners (a row with no pair passing them is padded): a regular outer join counts each row's partners, an
    interval join marks the rows that found one, a lookup join joins row by row."""
    if not residual:
        return None
    combined = residual[0]
    for extra in residual[1:]:
        combined = exp.And(this=combined, expression=extra)
    return binder.compiler(scope).condition(combined)


def time_bounds(node: exp.Expr, left: Relation, right: Relation) -> list[Bound] | None:
    """`l.t BETWEEN r.t - a AND r.t + b`, `l.t >= r.t - a`, ... as bounds on (right time - left time)."""
    if isinstance(node, exp.Between):
        low = time_bounds(exp.GTE(this=node.this, expression=node.args["low"]), left, right)
        high = time_bounds(exp.LTE(this=node.this, expression=node.args["high"]), left, right)
        return (low + high) if low and high else None
    ops = {exp.GTE: ">=", exp.GT: ">", exp.LTE: "<=", exp.LT: "<"}
    if type(node) not in ops:
        return None
    a, b = _time_term(node.this), _time_term(node.expression)
    if a is None or b is None:
        return None
    (a_col, a_shift), (b_col, b_shift) = a, b
    side_a, side_b = left.sides(a_col, right), left.sides(b_col, right)
    if {side_a, side_b} != {"left", "right"}:
        return None
    op = ops[type(node)]
    # a_col + a_shift OP b_col + b_shift
    if side_a == "left":  # l OP r + (b - a)  =>  r - l FLIP (a - b)
        l_col, r_col, constant = a_col, b_col, a_shift - b_shift
        op = {">=": "<=", ">": "<", "<=": ">=", "<": ">"}[op]
    else:  # r OP l + (b - a)  =>  r - l OP (b - a)
        l_col, r_col, constant = b_col, a_col, b_shift - a_shift
    if op == ">":  # times are in milliseconds: a strict bound is the inclusive one a millisecond inside
        op, constant = ">=", constant + dt.timedelta(milliseconds=1)
    elif op == "<":
        op, constant = "<=", constant - dt.timedelta(milliseconds=1)
    l_name, r_name = left.scope.resolve(l_col), right.scope.resolve(r_col)
    if not isinstance(left.node.schema[l_name], pl.Datetime) or not isinstance(right.node.schema[r_name], pl.Datetime):
        return None
    return [(l_name, r_name, op, constant)]


def _time_term(node: exp.Expr) -> tuple[exp.Column, dt.timedelta] | None:
    """`col`, `col + INTERVAL ...` or `col - INTERVAL ...` as (column, shift)."""
    if isinstance(node, exp.Paren):
        return _time_term(node.this)
    if isinstance(node, exp.Column):
        return node, dt.timedelta(0)
    if (
        isinstance(node, exp.Add | exp.Sub)
        and isinstance(node.this, exp.Column)
        and isinstance(node.expression, exp.Interval)
    ):
        shift = ExprCompiler.interval(node.expression)
        return node.this, shift if isinstance(node, exp.Add) else -shift
    return None
