"""MATCH_RECOGNIZE -> `MatchRecognize` (sql/plan.py), then the SELECT list over its output.

Checks what Flink checks (ORDER BY a time attribute, ascending; an append-only input; pattern variables known)
and refuses what neither Flink nor timelapse runs (ALL ROWS PER MATCH, MATCH_PROCTIME, patterns that can match no
rows). Every navigation a DEFINE or MEASURES expression makes (`A.x`, `FIRST/LAST(A.x, n)`, `PREV(x, n)`,
`SUM/AVG/MIN/MAX/COUNT(A.x)`, `MATCH_ROWTIME()`) becomes a `Navigation` read into a column `__navN`, and the rest of
the expression is compiled as usual against those columns, so the operator evaluates it with Polars.
"""

from __future__ import annotations

import polars as pl
from sqlglot import exp

from sql import types
from sql.dialect import Flink
from sql.errors import UnsupportedError, error_at
from sql.expressions import ExprCompiler
from sql.match_pattern import nullable, variables
from sql.plan import WATERMARK_COLUMN, MatchRecognize, Navigation
from sql.planner import changelog, hints, relations
from sql.planner.binder import Binder, Relation, Scope

AGGREGATES = {exp.Count: "COUNT", exp.Sum: "SUM", exp.Avg: "AVG", exp.Min: "MIN", exp.Max: "MAX"}
NAVIGATIONS = ("FIRST", "LAST", "PREV")
SKIPS = ("PAST LAST ROW", "TO NEXT ROW")


def match_recognize(binder: Binder, select: exp.Select) -> Relation:
    clause = select.args["match"]
    if select.args.get("joins"):
        raise error_at(select.args["joins"][0], "MATCH_RECOGNIZE over a join is not supported yet", UnsupportedError)
    source = relations.from_(binder, select)
    child = source.node
    if changelog.updating(child):
        raise error_at(
            clause,
            "MATCH_RECOGNIZE needs an append-only input (as in Flink)" + changelog.origin(child),
            UnsupportedError,
        )
    scope = source.scope
    rows = clause.args.get("rows")
    if rows is not None and rows.name.startswith("ALL"):
        raise error_at(
            rows,
            "ALL ROWS PER MATCH is not supported (Flink does not support it either); use ONE ROW PER MATCH",
            UnsupportedError,
        )
    pattern = clause.args.get("pattern_tree")
    if pattern is None:
        raise error_at(clause, "MATCH_RECOGNIZE needs a PATTERN")
    if nullable(pattern):
        raise error_at(
            clause.args["pattern"],
            "a PATTERN that can match no rows is not supported (Flink refuses it too)",
            UnsupportedError,
        )
    names = variables(pattern)
    partition = [_column_name(scope, p, "PARTITION BY") for p in clause.args.get("partition_by") or []]
    time = _time_attribute(binder, clause, scope, child.schema)
    after = _after(clause, names)
    within = None
    if clause.args.get("within") is not None:
        within = ExprCompiler.interval(clause.args["within"])
    navigations: list[Navigation] = []
    defines: dict[str, pl.Expr] = {}
    for item in clause.args.get("define") or []:
        var = item.alias.upper()
        if var not in names:
            raise error_at(item.args["alias"], f"DEFINE names '{item.alias}', which is not in the PATTERN")
        rewritten = _navigate(item.this, names, scope, child.schema, navigations, var)
        defines[var] = _compiled(binder, rewritten, navigations, condition=True)
    measures: list[tuple[str, pl.Expr]] = []
    for measure in clause.args.get("measures") or []:
        body = measure.this
        if not isinstance(body, exp.Alias):
            raise error_at(body, "a measure needs a name: MEASURES <expression> AS <name>")
        if measure.args.get("window_frame") == "RUNNING":
            raise error_at(body, "RUNNING measures need ALL ROWS PER MATCH, which is not supported", UnsupportedError)
        rewritten = _navigate(body.this, names, scope, child.schema, navigations, None)
        measures.append((body.alias, _compiled(binder, rewritten, navigations, condition=False).alias(body.alias)))
    out_schema: dict[str, pl.DataType] = {p: child.schema[p] for p in partition}
    nav_scope = Scope(_nav_schema(navigations))
    compiler = binder.compiler(nav_scope)
    for name, expr in measures:
        if name in out_schema:
            raise error_at(clause, f"measure '{name}' has the name of a PARTITION BY column")
        out_schema[name] = compiler.dtype(expr)
    out_schema[WATERMARK_COLUMN] = types.timestamp(3)
    node = MatchRecognize(
        binder.ids.node("match"),
        [child],
        out_schema,
        changelog.APPEND,
        partition=partition,
        time=time,
        pattern=pattern,
        navigations=navigations,
        defines=defines,
        measures=measures,
        after=after,
        within=within,
        state_id=hints.hint(select, "STATE_ID") or binder.ids.state("match", clause.sql(dialect=Flink)),
        sql=clause.sql(dialect=Flink)[:150],
    )
    alias = clause.args.get("alias")
    qualifiers = frozenset({alias.name.lower()} if alias is not None else set())
    relation = Relation(node, qualifiers)
    compiler = binder.compiler(relation.scope)
    where = select.args.get("where")
    predicate = None
    if where is not None:
        relations.refuse_nested(where.this)
        predicate = compiler.condition(where.this)
    if select.args.get("group"):
        raise error_at(select.args["group"], "GROUP BY over MATCH_RECOGNIZE is not supported yet", UnsupportedError)
    projections = relations.projections(binder, select, relation, compiler)
    return Relation(relations.calc(binder, node, projections, predicate, select))


def _column_name(scope: Scope, node: exp.Expr, what: str) -> str:
    if not isinstance(node, exp.Column):
        raise error_at(node, f"{what} in MATCH_RECOGNIZE takes columns", UnsupportedError)
    return scope.resolve(node)


def _time_attribute(binder: Binder, clause: exp.Expr, scope: Scope, schema: dict[str, pl.DataType]) -> str:
    """Flink: the first ORDER BY key must be an ascending time attribute; rows are matched in its order."""
    order = clause.args.get("order")
    keys = order.expressions if order is not None else []
    if not keys:
        raise error_at(clause, "MATCH_RECOGNIZE needs ORDER BY a time attribute (a column with a WATERMARK)")
    if len(keys) > 1:
        raise error_at(keys[1], "MATCH_RECOGNIZE orders by the time attribute alone (for now)", UnsupportedError)
    key = keys[0]
    if key.args.get("desc"):
        raise error_at(key, "MATCH_RECOGNIZE must be ordered by a time attribute ascending (as Flink requires)")
    name = _column_name(scope, key.this, "ORDER BY")
    if key.this.name.upper() == "PROCTIME":  # the usual name of a PROCTIME() column, and the function
        raise error_at(
            key,
            f"MATCH_RECOGNIZE ORDER BY {key.this.name}: processing time is not supported, rows are matched in "
            "event-time order (ORDER BY a column with a WATERMARK)",
            UnsupportedError,
        )
    if not isinstance(schema.get(name), pl.Datetime):
        raise error_at(key, "MATCH_RECOGNIZE must be ordered by a time attribute (a column with a WATERMARK)")
    if WATERMARK_COLUMN not in schema:
        raise error_at(
            key,
            f"'{key.this.name}' is not an event-time attribute: MATCH_RECOGNIZE needs a table with a WATERMARK "
            "(processing time is not supported)",
            UnsupportedError,
        )
    return name


def _after(clause: exp.Expr, names: list[str]) -> str:
    after = clause.args.get("after")
    if after is None:
        return "PAST LAST ROW"  # Flink's default
    text = after.name
    if text in SKIPS:
        return text
    var = text.split()[-1]
    if var not in names:
        raise error_at(after, f"AFTER MATCH SKIP {text}: '{var}' is not a pattern variable")
    return text


def _navigate(
    node: exp.Expr,
    names: list[str],
    scope: Scope,
    schema: dict[str, pl.DataType],
    navigations: list[Navigation],
    defining: str | None,
) -> exp.Expr:
    """`node` with every navigation replaced by a `__navN` column (appending to `navigations`)."""

    def column(ref: exp.Expr, where: exp.Expr) -> tuple[str | None, str]:
        if not isinstance(ref, exp.Column):
            raise error_at(
                where, f"{where.sql(dialect=Flink)}: navigation takes a column, as A.price or price", UnsupportedError
            )
        var = ref.table.upper() if ref.table else None
        if var is not None and var not in names:
            raise error_at(ref, f"unknown pattern variable '{ref.table}'")
        return var, scope.resolve(exp.column(ref.name))

    def add(kind: str, var: str | None, col: str | None, offset: int, dtype: pl.DataType) -> exp.Expr:
        navigation = Navigation(kind, var, col, offset, dtype)
        if navigation not in navigations:
            navigations.append(navigation)
        return exp.column(f"__nav{navigations.index(navigation)}", quoted=True)

    def offset_of(args: list[exp.Expr], where: exp.Expr) -> int:
        if len(args) < 2:
            return 0
        value = args[1]
        if isinstance(value, exp.Literal) and not value.is_string and value.this.isdigit():
            return int(value.this)
        raise error_at(value, f"the offset of {where.sql(dialect=Flink)} must be a whole number")

    def replace(sub: exp.Expr) -> exp.Expr:
        if isinstance(sub, exp.Anonymous):
            function = sub.name.upper()
            if function in ("MATCH_PROCTIME", "PROCTIME"):
                raise error_at(sub, "MATCH_PROCTIME() is not supported: matching runs on event time", UnsupportedError)
            if function == "MATCH_ROWTIME":
                if defining is not None:
                    raise error_at(sub, "MATCH_ROWTIME() is allowed in MEASURES only")
                return add("MATCH_ROWTIME", None, None, 0, types.timestamp(3))
            if function in ("CLASSIFIER", "MATCH_NUMBER", "RUNNING", "FINAL"):
                raise error_at(sub, f"{function} is not supported (Flink does not support it)", UnsupportedError)
            if function in NAVIGATIONS:
                args = list(sub.expressions)
                if not args or len(args) > 2:
                    raise error_at(sub, f"{function} takes a column and an optional offset")
                var, col = column(args[0], sub)
                offset = offset_of(args, sub) if len(args) == 2 else (1 if function == "PREV" else 0)
                return add(function, var, col, offset, schema[col])
            if function == "NEXT":
                raise error_at(sub, "NEXT is not supported: matching cannot look ahead (as in Flink)", UnsupportedError)
        if type(sub) in AGGREGATES:
            function = AGGREGATES[type(sub)]
            arg = sub.this
            if isinstance(arg, exp.Distinct) or sub.args.get("expressions"):
                raise error_at(sub, f"{sub.sql(dialect=Flink)} is not supported in MATCH_RECOGNIZE", UnsupportedError)
            if isinstance(arg, exp.Star) and function == "COUNT":
                return add("COUNT", None, None, 0, pl.Int64())
            if isinstance(arg, exp.Column) and isinstance(arg.this, exp.Star) and function == "COUNT":
                var = arg.table.upper() if arg.table else None
                if var is not None and var not in names:
                    raise error_at(arg, f"unknown pattern variable '{arg.table}'")
                return add("COUNT", var, None, 0, pl.Int64())
            var, col = column(arg, sub)
            dtype = schema[col]
            if function in ("SUM", "AVG") and not dtype.is_numeric():
                raise error_at(sub, f"{function} needs a number, got {types.sql_name(dtype)}")
            result = {
                "COUNT": pl.Int64(),
                "SUM": types.sum_type(dtype),
                "AVG": types.avg_type(dtype),
            }.get(function, dtype)
            return add(function, var, col, 0, result)
        if isinstance(sub, exp.Column) and not isinstance(sub.this, exp.Star):
            var, col = column(sub, sub)
            return add("LAST", var, col, 0, schema[col])
        if isinstance(sub, exp.Window | exp.Subquery):
            raise error_at(sub, f"{type(sub).__name__.upper()} is not allowed in MATCH_RECOGNIZE", UnsupportedError)
        return sub

    return node.copy().transform(replace, copy=False)


def _nav_schema(navigations: list[Navigation]) -> dict[str, pl.DataType]:
    return {f"__nav{i}": n.dtype for i, n in enumerate(navigations)}


def _compiled(binder: Binder, node: exp.Expr, navigations: list[Navigation], condition: bool) -> pl.Expr:
    compiler = binder.compiler(Scope(_nav_schema(navigations)))
    if condition:
        return compiler.condition(node)
    expr = compiler.compile(node)
    compiler.dtype(expr, node)
    return expr
