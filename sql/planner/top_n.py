"""Top-N and deduplication: `SELECT ... FROM (SELECT ..., ROW_NUMBER() OVER (...) AS rn FROM t) WHERE rn <= n`,
as in Flink. Keeping the first row by time (n = 1, ascending time attribute) is deduplication, append-only.
Partitioned by window_start and window_end of a windowed input (a window TVF, or a window aggregation's result
passing them on), it is window Top-N (window deduplication for n = 1): final per window, append-only."""

from __future__ import annotations

import polars as pl
from sqlglot import exp

from sql.dialect import Flink
from sql.errors import UnsupportedError, error_at
from sql.plan import OP_COLUMN, WATERMARK_COLUMN, Calc, TopN
from sql.planner import changelog, hints, relations, windows
from sql.planner.binder import Binder, Relation


def top_n(binder: Binder, select: exp.Select) -> tuple[Relation, exp.Expr | None] | None:
    """The Top-N node and the outer WHERE's other conditions, or None when `select` is not a Top-N."""
    inner, rank = _ranked(select)
    if inner is None or rank is None:
        return None
    rank_name = rank.alias
    limit, rest = _limit(select, rank, rank_name)
    for item in inner.expressions:
        if item is not rank:
            relations.refuse_nested(item)
    window = rank.this
    relation, calc, partition, order = _ranked_input(binder, inner, rank)
    window_end = _window_end(relation, window, calc)
    first_by_time = window_end is None and limit == 1 and _first_by_time(calc, order)
    out_schema = {n: t for n, t in calc.schema.items() if n != WATERMARK_COLUMN and not n.startswith("__")}
    out_schema[rank_name] = pl.Int64()
    mode = changelog.top_n(first_by_time or window_end is not None)
    if mode == changelog.RETRACT:
        out_schema[OP_COLUMN] = pl.String()
    node = TopN(
        binder.ids.node("topn"),
        [calc],
        out_schema,
        mode,
        partition=partition,
        order=order,
        limit=limit,
        rank_column=rank_name,
        first_by_time=first_by_time,
        window_end=window_end,
        # STATE_TTL on the ranking SELECT or the one filtering it, else 'state.ttl'; a window's state purges itself
        ttl=None if window_end is not None else hints.ttl(inner, {}) or hints.ttl(select, binder.options),
        state_id=binder.ids.state("topn", inner.sql(dialect=Flink)),
        sql=window.args["order"].sql(dialect=Flink),
    )
    rest_expr = None
    for conjunct in rest:
        rest_expr = conjunct if rest_expr is None else exp.And(this=rest_expr, expression=conjunct)
    return Relation(node, relation.qualifiers), rest_expr


def _ranked_input(
    binder: Binder, inner: exp.Select, rank: exp.Alias
) -> tuple[Relation, Calc, list[str], list[tuple[str, bool]]]:
    """The inner SELECT without its rank, plus hidden partition (`__p*`) and order (`__o*`) columns: the
    operator ranks by columns, whatever expressions PARTITION BY and ORDER BY hold."""
    window = rank.this
    relation = relations.from_(binder, inner)
    compiler = binder.compiler(relation.scope)
    inner_where = inner.args.get("where")
    predicate = compiler.condition(inner_where.this) if inner_where is not None else None
    projections: list[tuple[str, pl.Expr]] = []
    for index, item in enumerate(inner.expressions):
        if item is not rank:
            projections += relations.projection(item, index, relation, compiler)
    partition_nodes = list(window.args.get("partition_by") or [])
    order_nodes = list(window.args["order"].expressions) if window.args.get("order") else []
    if not order_nodes:
        raise error_at(window, "ROW_NUMBER() needs ORDER BY", UnsupportedError)
    # Without PARTITION BY, the whole stream is one partition.
    hidden = [(f"__p{i}", compiler.compile(n)) for i, n in enumerate(partition_nodes)] or [
        ("__p0", pl.lit(0, pl.Int32))
    ]
    hidden += [(f"__o{i}", compiler.compile(o.this)) for i, o in enumerate(order_nodes)]
    calc = relations.calc(binder, relation.node, [(n, e.alias(n)) for n, e in projections + hidden], predicate, inner)
    order = [(f"__o{i}", bool(o.args.get("desc"))) for i, o in enumerate(order_nodes)]
    return relation, calc, [n for n, _ in hidden if n.startswith("__p")], order


def _window_end(relation: Relation, window: exp.Window, calc: Calc) -> str | None:
    """The hidden partition column holding window_end, when PARTITION BY names both window_start and window_end
    of a windowed, append-only input in event time: then each window's ranking is final at its end."""
    spec = relation.window
    if spec is None:
        return None
    if spec.unassigned_session:
        raise error_at(
            window,
            "ROW_NUMBER() over a SESSION window TVF is not supported: aggregate the sessions first "
            "(GROUP BY window_start, window_end) and rank the result",
            UnsupportedError,
        )
    if spec.proctime or changelog.updating(calc) or WATERMARK_COLUMN not in calc.schema:
        return None
    start, end = (c.lower() for c in windows.window_columns(spec))
    found: dict[str, str] = {}
    for index, node in enumerate(window.args.get("partition_by") or []):
        if isinstance(node, exp.Column):
            name = relation.scope.resolve(node).lower()
            if name in (start, end):
                found.setdefault(name, f"__p{index}")
    return found[end] if start in found and end in found else None


def _ranked(select: exp.Select) -> tuple[exp.Select | None, exp.Alias | None]:
    """The inner SELECT and its `ROW_NUMBER() OVER (...) AS rn` item, when FROM is one such subquery."""
    source = select.args.get("from_") or select.args.get("from")
    if source is None or select.args.get("joins") or not isinstance(source.this, exp.Subquery):
        return None, None
    inner = source.this.this
    if not isinstance(inner, exp.Select):
        return None, None
    ranks = [
        i
        for i in inner.expressions
        if isinstance(i, exp.Alias) and isinstance(i.this, exp.Window) and isinstance(i.this.this, exp.RowNumber)
    ]
    return inner, (ranks[0] if ranks else None)


def _limit(select: exp.Select, rank: exp.Alias, rank_name: str) -> tuple[int, list[exp.Expr]]:
    """The outer WHERE's bound on the rank (the first one found), and its other conditions."""
    where = select.args.get("where")
    limit, rest = None, []
    for conjunct in relations.conjuncts(where.this) if where is not None else []:
        bound = _rank_bound(conjunct, rank_name)
        if bound is not None and limit is None:
            limit = bound
        else:
            rest.append(conjunct)
    if limit is None:
        raise error_at(
            rank,
            f"ROW_NUMBER() needs a filter on '{rank_name}' in the outer query (WHERE "
            f"{rank_name} <= N), as in Flink's Top-N",
            UnsupportedError,
        )
    return limit, rest


def _first_by_time(calc: Calc, order: list[tuple[str, bool]]) -> bool:
    """Ordered ascending by one time attribute over an append-only input: a row is final once the watermark
    passes it, so keeping the first is deduplication with append-only output."""
    return (
        len(order) == 1
        and not order[0][1]
        and WATERMARK_COLUMN in calc.schema
        and isinstance(calc.schema[order[0][0]], pl.Datetime)
        and not changelog.updating(calc)
    )


def _rank_bound(node: exp.Expr, rank: str) -> int | None:
    """`rn <= 3`, `rn < 4`, `rn = 1`, `3 >= rn` -> the largest rank kept."""
    flips = {exp.GTE: exp.LTE, exp.GT: exp.LT, exp.LTE: exp.GTE, exp.LT: exp.GT, exp.EQ: exp.EQ}
    if type(node) not in flips:
        return None
    left, right = node.this, node.expression
    kind = type(node)
    if isinstance(right, exp.Column) and right.name.lower() == rank.lower():
        left, right, kind = right, left, flips[kind]
    if not (isinstance(left, exp.Column) and left.name.lower() == rank.lower() and isinstance(right, exp.Literal)):
        return None
    if right.is_string or not right.this.isdigit():
        raise error_at(right, f"{rank} must be compared with a whole number, not {right.sql()}")
    value = int(right.this)
    return {exp.LTE: value, exp.LT: value - 1, exp.EQ: value if value == 1 else None}.get(kind)
