"""GROUP BY and SELECT DISTINCT: group keys, the window if any, aggregate calls (with their UDAF; Flink's further
aggregates are bound in aggregate_functions.py), and the SELECT list and HAVING rewritten over the groups' key and
aggregate columns."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import polars as pl
from sqlglot import exp

from sql import types
from sql.dialect import Flink, WindowCall
from sql.errors import SqlError, UnsupportedError, error_at, relocated
from sql.expressions import ExprCompiler
from sql.plan import OP_COLUMN, WATERMARK_COLUMN, AggCall, Aggregate, Calc, Node, WindowSpec
from sql.planner import aggregate_functions, changelog, hints, relations, windows
from sql.planner.binder import Binder, Relation, Scope
from sql.udf import AggregateUdf

Key = tuple[str, pl.Expr, str]  # (output name, expression, canonical SQL)


@dataclass
class _Groups:
    keys: list[Key]
    window: WindowSpec | None
    input: Node  # what the operator reads: for a window TVF, the rows before windows were assigned


def aggregated(binder: Binder, select: exp.Select) -> bool:
    return (
        bool(select.args.get("group"))
        or bool(select.args.get("having"))
        or any(aggregates_in(item, binder.udafs) for item in select.expressions)
        or bool(select.args.get("distinct"))
    )


def aggregate(binder: Binder, select: exp.Select, relation: Relation) -> Relation:
    compiler = binder.compiler(relation.scope)
    where = select.args.get("where")
    predicate = compiler.condition(where.this) if where is not None else None
    groups = _groups(binder, select, relation, compiler)
    aggs, canonical_aggs = _calls(binder, select, compiler, relation.node.changelog)
    window = groups.window
    if window is not None and window.unassigned_session:
        for agg in aggs:
            if agg.distinct or agg.udaf is not None or agg.function in aggregate_functions.NOT_IN_SESSIONS:
                raise error_at(select, f"{agg.sql} is not supported in SESSION windows yet", UnsupportedError)
    post = binder.compiler(Scope(_group_schema(groups, aggs, compiler)))
    key_sql = {sql_text: name for name, _, sql_text in groups.keys}
    rewrite = _rewriter(binder, canonical_aggs, key_sql, window)
    projections = _select_list(select, post, rewrite, {**canonical_aggs, **key_sql})
    having_expr = _having(select, post, rewrite, {**canonical_aggs, **key_sql})
    schema = {name: post.dtype(expr) for name, expr in projections}
    child = _filtered(binder, groups.input, predicate, where)
    if window is not None:
        schema[WATERMARK_COLUMN] = types.timestamp(3)
    else:
        schema[OP_COLUMN] = pl.String()
    state_id = hints.hint(select, "STATE_ID") or state_id_of(binder, select, groups.keys, aggs, window)
    node = Aggregate(
        binder.ids.node("agg"),
        [child],
        schema,
        changelog.aggregate(window is not None),
        keys=[(name, expr.alias(name)) for name, expr, _ in groups.keys],
        aggs=aggs,
        projections=projections,
        having=having_expr,
        window=window,
        ttl=None if window is not None else hints.ttl(select, binder.options),
        state_id=state_id,
        sql=select.sql(dialect=Flink)[:200],
    )
    return windows.windowed(Relation(node), window, select)


def _groups(binder: Binder, select: exp.Select, relation: Relation, compiler: ExprCompiler) -> _Groups:
    """GROUP BY's keys and window. A window TVF's window_start and window_end are not keys: grouping by both
    makes this a window aggregation."""
    group_items = _group_items(binder, select)
    window = None
    window_input = relation.node
    keys: list[Key] = []
    has_start = has_end = False
    start_end = [c.lower() for c in windows.window_columns(relation.window)] if relation.window else []
    for item in group_items:
        if isinstance(item, WindowCall):
            if window is not None or relation.window is not None:
                raise error_at(item, "only one window per GROUP BY")
            window = windows.legacy_window(item, relation)
            continue
        if isinstance(item, exp.Column) and relation.window is not None and item.name.lower() in start_end:
            has_start |= item.name.lower() == start_end[0]
            has_end |= item.name.lower() == start_end[1]
            continue
        if isinstance(item, exp.Column) and item.name.lower() == "window_time" and relation.window is not None:
            continue
        relations.refuse_nested(item)
        expr, _ = compiler.typed(item)
        name = item.name if isinstance(item, exp.Column) else f"EXPR$k{len(keys)}"
        keys.append((name, expr, item.sql(dialect=Flink)))
    if relation.window is not None and (has_start or has_end):
        if not (has_start and has_end):
            raise error_at(
                select.args["group"],
                "a window aggregation groups by both window_start and window_end: add the missing one to GROUP BY",
            )
        window = relation.window
        assert relation.window_input is not None
        window_input = relation.window_input
    elif relation.window is not None and relation.window.unassigned_session:
        raise error_at(select, "SESSION windows need GROUP BY window_start, window_end", UnsupportedError)
    if window is not None and window.partition_by:
        keys = [(c, pl.col(c), c) for c in window.partition_by if c not in {k[0] for k in keys}] + keys
    if window is not None and changelog.updating(relation.node):
        raise error_at(
            select,
            "a window aggregation needs an append-only input, but its input has updates and deletes"
            + changelog.origin(relation.node),
            UnsupportedError,
        )
    return _Groups(keys, window, window_input)


def _group_items(binder: Binder, select: exp.Select) -> list[exp.Expr]:
    """GROUP BY's items; SELECT DISTINCT groups by the whole SELECT list."""
    group_items = list(select.args["group"].expressions) if select.args.get("group") else []
    for item in group_items:
        if isinstance(item, exp.GroupingSets | exp.Rollup | exp.Cube):
            kind = {exp.GroupingSets: "GROUPING SETS", exp.Rollup: "ROLLUP", exp.Cube: "CUBE"}[type(item)]
            raise error_at(
                item,
                f"{kind} is not supported yet: write one GROUP BY per grouping and UNION ALL them",
                UnsupportedError,
            )
    if select.args.get("distinct"):
        if group_items or any(aggregates_in(i, binder.udafs) for i in select.expressions):
            raise error_at(select, "SELECT DISTINCT with GROUP BY or aggregates is not supported", UnsupportedError)
        group_items = [i.this if isinstance(i, exp.Alias) else i for i in select.expressions]
    return group_items


def _calls(
    binder: Binder, select: exp.Select, compiler: ExprCompiler, mode: str
) -> tuple[list[AggCall], dict[str, str]]:
    """Aggregate calls, numbered in order of appearance in SELECT then HAVING; one per distinct SQL text."""
    aggs: list[AggCall] = []
    canonical_aggs: dict[str, str] = {}
    having = select.args.get("having")
    for node in [*select.expressions, *([having.this] if having else [])]:
        for call in aggregate_calls(node, binder.udafs):
            key = call.sql(dialect=Flink)
            if key not in canonical_aggs:
                output = f"__agg{len(aggs)}"
                canonical_aggs[key] = output
                aggs.append(agg_call(binder, call, compiler, output, mode))
    return aggs, canonical_aggs


def _group_schema(groups: _Groups, aggs: list[AggCall], compiler: ExprCompiler) -> dict[str, pl.DataType]:
    """What the SELECT list and HAVING see: keys, window columns, aggregate results."""
    schema: dict[str, pl.DataType] = {}
    for name, expr, _ in groups.keys:
        schema[name] = compiler.dtype(expr)
    if groups.window is not None:
        schema.update({c: types.timestamp(3) for c in windows.WINDOW_COLUMNS})
    for agg in aggs:
        schema[agg.output] = agg.dtype
    return schema


def _rewriter(
    binder: Binder, canonical_aggs: dict[str, str], key_sql: dict[str, str], window: WindowSpec | None
) -> Callable[[exp.Expr], exp.Expr]:
    """Replaces aggregate calls and key expressions by the group's columns holding them."""

    def replace(sub: exp.Expr) -> exp.Expr:
        sql_text = sub.sql(dialect=Flink) if isinstance(sub, exp.Expr) else ""
        if sql_text in canonical_aggs and is_aggregate(sub, binder.udafs):
            return exp.column(canonical_aggs[sql_text], quoted=True)
        if sql_text in key_sql and not isinstance(sub, exp.Alias):
            return exp.column(key_sql[sql_text], quoted=True)
        if (
            window is not None
            and window.attached
            and isinstance(sub, exp.Column)
            and sub.name.lower() in (window.start_col.lower(), window.end_col.lower())
        ):  # the input's (renamed) window columns are the groups' window_start and window_end
            role = "window_start" if sub.name.lower() == window.start_col.lower() else "window_end"
            return exp.column(role, quoted=True)
        legacy = windows.legacy_window_column(sub)
        if legacy is not None:
            if window is None:
                raise error_at(sub, f"{sub.sql(dialect=Flink)} needs a group window in GROUP BY")
            return exp.column(legacy, quoted=True)
        return sub

    return lambda node: node.copy().transform(replace)


def _select_list(
    select: exp.Select, post: ExprCompiler, rewrite: Callable[[exp.Expr], exp.Expr], names: dict[str, str]
) -> list[tuple[str, pl.Expr]]:
    projections: list[tuple[str, pl.Expr]] = []
    used: set[str] = set()
    for index, item in enumerate(select.expressions):
        if isinstance(item, exp.Star):
            raise error_at(item, "SELECT * is not allowed with GROUP BY")
        name = item.alias_or_name if isinstance(item, exp.Alias | exp.Column) else f"EXPR${index}"
        if isinstance(item, exp.Alias) is False and windows.legacy_window_column(item) is not None:
            name = f"EXPR${index}"
        body = item.this if isinstance(item, exp.Alias) else item
        try:
            expr = post.typed(rewrite(body))[0]
        except SqlError as err:
            if "unknown column" in err.message:
                raise error_at(
                    body, f"'{body.sql(dialect=Flink)}' must appear in GROUP BY or inside an aggregate function"
                ) from None
            raise relocated(err, body, names) from None
        unique = name
        while unique.lower() in used:
            unique += "$"
        used.add(unique.lower())
        projections.append((unique, expr.alias(unique)))
    return projections


def _having(
    select: exp.Select, post: ExprCompiler, rewrite: Callable[[exp.Expr], exp.Expr], names: dict[str, str]
) -> pl.Expr | None:
    having = select.args.get("having")
    if having is None:
        return None
    try:
        return post.condition(rewrite(having.this))
    except SqlError as err:
        if "unknown column" in err.message:
            raise error_at(having, "HAVING may only use GROUP BY columns and aggregates") from None
        raise relocated(err, having.this, names) from None


def _filtered(binder: Binder, child: Node, predicate: pl.Expr | None, where: exp.Expr | None) -> Node:
    """WHERE as its own Calc below the aggregation, passing every column through (window TVFs included)."""
    if predicate is None or where is None:
        return child
    passthrough = [(c, pl.col(c)) for c in child.schema]
    return Calc(
        binder.ids.node("calc"),
        [child],
        dict(child.schema),
        changelog.passthrough(child),
        projections=passthrough,
        predicate=predicate,
        sql="WHERE " + where.this.sql(dialect=Flink),
    )


def state_id_of(
    binder: Binder, select: exp.Select, keys: list[Key], aggs: list[AggCall], window: WindowSpec | None
) -> str:
    """A stable id from the operator's role: what it groups by, over which window and input tables."""
    tables = sorted(t.name.lower() for t in select.find_all(exp.Table))
    role = "|".join([window.describe() if window else "group", *(k[2] for k in keys), *(a.sql for a in aggs), *tables])
    # Unique within the INSERT too: two identical subqueries (Nexmark q5) are two operators with two states.
    return binder.ids.state("window-agg" if window else "group-agg", role)


def agg_call(binder: Binder, call: exp.Expr, compiler: ExprCompiler, output: str, mode: str) -> AggCall:
    """One aggregate call, typed; a UDAF call carries the UDAF itself, so the plan needs no registry to run."""
    original_sql = call.sql(dialect=Flink)
    filter_expr = None
    if isinstance(call, exp.Filter):
        filter_expr = compiler.condition(call.expression.this)
        call = call.this
    registered = isinstance(call, exp.Anonymous) and call.name.upper() in binder.udafs  # a UDAF named COLLECT
    bound = None if registered else aggregate_functions.bind(call, compiler, mode, output, filter_expr, original_sql)
    if bound is not None:
        return bound
    distinct = isinstance(call.this, exp.Distinct) if isinstance(call, exp.AggFunc) else False
    if isinstance(call, exp.Anonymous):
        function = call.name.upper()
        arg_nodes = list(call.expressions)
    else:
        function = call.sql_name().upper()
        inner = call.this.expressions if distinct else ([call.this] if call.this is not None else [])
        arg_nodes = [a for a in inner if not isinstance(a, exp.Star)]
    args = [compiler.typed(a) for a in arg_nodes]
    arg_types = tuple(t for _, t in args)
    dtype = _result_type(binder, call, function, arg_types, mode)
    if distinct and (function != "COUNT" or len(args) != 1):
        raise error_at(call, "DISTINCT is supported in COUNT(DISTINCT x) only", UnsupportedError)
    udaf = binder.udafs.get(function)
    return AggCall(
        function, tuple(e for e, _ in args), arg_types, output, dtype, distinct, filter_expr, original_sql, udaf
    )


def _result_type(
    binder: Binder, call: exp.Expr, function: str, arg_types: tuple[pl.DataType, ...], mode: str
) -> pl.DataType:
    if function == "COUNT":
        return pl.Int64()
    if len(arg_types) != 1 and function in ("SUM", "AVG", "MIN", "MAX"):
        raise error_at(call, f"{function} takes one argument, not {len(arg_types)}")
    if function in ("SUM", "AVG"):
        (t,) = arg_types
        if not t.is_numeric():
            raise error_at(call, f"{function} needs a number, got {types.sql_name(t)}")
        return types.sum_type(t) if function == "SUM" else types.avg_type(t)
    if function in ("MIN", "MAX"):
        return arg_types[0]
    if function in binder.udafs:
        if mode != changelog.APPEND:
            raise error_at(call, f"{function} over an updating input is not supported", UnsupportedError)
        return binder.udafs[function].result_type
    raise error_at(call, f"aggregate function {function} is not supported", UnsupportedError)


def is_aggregate(node: exp.Expr, udafs: Mapping[str, AggregateUdf]) -> bool:
    if isinstance(node, exp.Filter):
        return is_aggregate(node.this, udafs)
    if isinstance(node, exp.AggFunc) or aggregate_functions.is_function(node):
        return True
    return isinstance(node, exp.Anonymous) and node.name.upper() in udafs


def aggregate_calls(node: exp.Expr, udafs: Mapping[str, AggregateUdf]) -> list[exp.Expr]:
    """Outermost aggregate calls (with their FILTER clause) inside `node`."""
    found: list[exp.Expr] = []

    def visit(sub: exp.Expr) -> None:
        if isinstance(sub, exp.Window):
            return  # an OVER aggregate is not a GROUP BY aggregate
        if is_aggregate(sub, udafs):
            found.append(sub)
            return
        for child in sub.iter_expressions():
            visit(child)

    visit(node.this if isinstance(node, exp.Alias) else node)
    return found


def aggregates_in(node: exp.Expr, udafs: Mapping[str, AggregateUdf]) -> bool:
    return bool(aggregate_calls(node, udafs))
