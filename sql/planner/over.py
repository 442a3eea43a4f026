"""OVER aggregates: `agg(x) OVER (PARTITION BY p ORDER BY t ROWS|RANGE BETWEEN ... PRECEDING AND CURRENT ROW)`,
planned as a Calc computing the hidden partition, time and argument columns, the OverAggregate, and a Calc
computing the SELECT list with each OVER call replaced by its result column."""

from __future__ import annotations

import datetime as dt

import polars as pl
from sqlglot import exp

from sql import types
from sql.dialect import Flink
from sql.errors import SqlError, UnsupportedError, error_at, relocated
from sql.expressions import ExprCompiler
from sql.plan import WATERMARK_COLUMN, AggCall, OverAggregate
from sql.planner import aggregates, changelog, relations
from sql.planner.binder import Binder, Relation

OVER_FUNCTIONS = ("COUNT", "SUM", "AVG", "MIN", "MAX", "FIRST_VALUE", "LAST_VALUE")


def over(binder: Binder, select: exp.Select, relation: Relation) -> Relation:
    compiler = binder.compiler(relation.scope)
    where = select.args.get("where")
    predicate = compiler.condition(where.this) if where is not None else None
    windows = [w for item in select.expressions for w in item.find_all(exp.Window)]
    first, time_expr = _ordered_by_time(windows, compiler, relation)
    kind, rows_n, range_d = _frame(first.args.get("spec"))
    hidden = [(f"__p{i}", compiler.compile(p)) for i, p in enumerate(first.args.get("partition_by") or [])]
    hidden = hidden or [("__p0", pl.lit(0, pl.Int32))]
    hidden.append(("__o0", time_expr))
    calls, replacements = _calls(binder, windows, compiler, hidden)
    visible = [(n, pl.col(n)) for n in relation.node.schema if not n.startswith("__")]
    pre = relations.calc(binder, relation.node, visible + [(n, e.alias(n)) for n, e in hidden], predicate, select)
    schema = {n: t for n, t in pre.schema.items() if not n.startswith("__")}
    schema.update({c.output: c.dtype for c in calls})
    schema[WATERMARK_COLUMN] = types.timestamp(3)
    node = OverAggregate(
        binder.ids.node("over"),
        [pre],
        schema,
        changelog.over(),
        partition=[n for n, _ in hidden if n.startswith("__p")],
        time="__o0",
        aggs=calls,
        rows=rows_n,
        range=range_d,
        frame_kind=kind,
        state_id=binder.ids.state("over", select.sql(dialect=Flink)),
        sql=first.sql(dialect=Flink)[:150],
    )
    over_relation = Relation(node, relation.qualifiers, columns=relation.columns)
    projections = _select_list(binder, select, over_relation, replacements, calls)
    return Relation(relations.calc(binder, node, projections, None, select))


def _ordered_by_time(
    windows: list[exp.Window], compiler: ExprCompiler, relation: Relation
) -> tuple[exp.Window, pl.Expr]:
    """The one window all OVER calls share, and its time attribute: rows are emitted in time order as the
    watermark passes them, which needs an ascending time attribute over an append-only input."""
    first = windows[0]
    for window in windows[1:]:
        if _signature(window) != _signature(first):
            raise error_at(window, "all OVER windows of one SELECT must be the same", UnsupportedError)
    order = first.args["order"].expressions if first.args.get("order") else []
    if len(order) != 1 or order[0].args.get("desc"):
        raise error_at(first, "OVER needs ORDER BY one time attribute, ascending", UnsupportedError)
    time_expr, time_type = compiler.typed(order[0].this)
    if not isinstance(time_type, pl.Datetime) or WATERMARK_COLUMN not in relation.node.schema:
        raise error_at(
            order[0], "OVER must be ordered by a time attribute (a column with a WATERMARK)", UnsupportedError
        )
    if changelog.updating(relation.node):
        raise error_at(
            first,
            "OVER over an updating input is not supported yet" + changelog.origin(relation.node),
            UnsupportedError,
        )
    return first, time_expr


def _signature(window: exp.Window) -> tuple[object, object, object]:
    return (
        window.args.get("partition_by") and [p.sql() for p in window.args["partition_by"]],
        window.args.get("order") and window.args["order"].sql(),
        window.args.get("spec") and window.args["spec"].sql(),
    )


def _frame(spec: exp.Expr | None) -> tuple[str, int | None, dt.timedelta | None]:
    """(ROWS or RANGE, n preceding rows, preceding interval); neither bound means UNBOUNDED PRECEDING. Without
    a frame, Flink's default is RANGE UNBOUNDED PRECEDING."""
    if spec is None:
        return "RANGE", None, None
    kind = str(spec.args.get("kind") or "ROWS").upper()
    start = spec.args.get("start")
    end = spec.args.get("end")
    if str(end).upper() != "CURRENT ROW":
        raise error_at(spec, "OVER frames end at CURRENT ROW", UnsupportedError)
    if isinstance(start, str) and start.upper() == "UNBOUNDED":
        return kind, None, None
    if kind == "ROWS":
        return kind, int(_literal_int(start, spec)), None
    return kind, None, ExprCompiler.interval(start)


def _calls(
    binder: Binder, windows: list[exp.Window], compiler: ExprCompiler, hidden: list[tuple[str, pl.Expr]]
) -> tuple[list[AggCall], dict[int, str]]:
    """One AggCall per OVER call, reading its arguments from hidden columns (appended to `hidden`), and which
    result column replaces each call in the SELECT list."""
    calls: list[AggCall] = []
    replacements: dict[int, str] = {}
    for window in windows:
        call = window.this
        function = call.sql_name().upper()
        if function not in OVER_FUNCTIONS or isinstance(call.this, exp.Distinct):
            raise error_at(
                window,
                f"{call.sql(dialect=Flink)} OVER is not supported: OVER windows take COUNT, SUM, AVG, MIN, MAX,"
                " FIRST_VALUE and LAST_VALUE",
                UnsupportedError,
            )
        arg_nodes = [call.this] if call.this is not None and not isinstance(call.this, exp.Star) else []
        index = len(calls)
        args = []
        for j, node in enumerate(arg_nodes):
            expr, dtype = compiler.typed(node)
            hidden.append((f"__a{index}_{j}", expr))
            args.append((pl.col(f"__a{index}_{j}"), dtype))
        typed = aggregates.agg_call(binder, call, compiler, f"__over{index}", changelog.APPEND)
        calls.append(
            AggCall(
                typed.function,
                tuple(a for a, _ in args),
                tuple(t for _, t in args),
                typed.output,
                typed.dtype,
                sql=window.sql(dialect=Flink),
            )
        )
        replacements[id(window)] = typed.output
    return calls, replacements


def _select_list(
    binder: Binder, select: exp.Select, relation: Relation, replacements: dict[int, str], calls: list[AggCall]
) -> list[tuple[str, pl.Expr]]:
    post = binder.compiler(relation.scope)
    projections: list[tuple[str, pl.Expr]] = []
    for index, item in enumerate(select.expressions):
        body = item.this if isinstance(item, exp.Alias) else item
        if isinstance(body, exp.Star):
            projections += [(n, pl.col(n)) for n in relation.node.schema if not n.startswith("__")]
            continue
        rewritten = (
            body.transform(
                lambda sub: exp.column(replacements[id(sub)], quoted=True) if id(sub) in replacements else sub,
                copy=False,
            )
            if not isinstance(body, exp.Window)
            else exp.column(replacements[id(body)], quoted=True)
        )
        name = item.alias_or_name if isinstance(item, exp.Alias | exp.Column) else f"EXPR${index}"
        try:
            projections.append((name, post.compile(rewritten).alias(name)))
        except SqlError as err:
            raise relocated(err, body, {c.sql: c.output for c in calls}) from None
    return projections


def _literal_int(node: object, where: exp.Expr) -> int:
    if isinstance(node, exp.Literal) and not node.is_string and node.this.isdigit():
        return int(node.this)
    raise error_at(where, "ROWS needs a whole number of preceding rows")
