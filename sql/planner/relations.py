"""Queries and FROM items: SELECT, UNION ALL, subqueries, views and source tables. A SELECT is routed to the
rule for its construct (Top-N, aggregation, OVER, or a plain filter and projection)."""

from __future__ import annotations

import polars as pl
from sqlglot import exp

from sql import types
from sql.dialect import Flink, WindowCall
from sql.errors import UnsupportedError, error_at
from sql.expressions import ExprCompiler
from sql.plan import OP_COLUMN, WATERMARK_COLUMN, Calc, Node, UnionAll
from sql.planner import aggregates, changelog, joins, over, top_n, unnest, windows
from sql.planner.binder import HIDDEN, Binder, Relation, Scope


def query(binder: Binder, node: exp.Expr) -> Relation:
    if isinstance(node, exp.Subquery):
        return query(binder, node.this)
    if isinstance(node, exp.Union):
        if node.args.get("distinct"):
            raise error_at(
                node, "UNION without ALL needs state and is not supported yet; use UNION ALL", UnsupportedError
            )
        return union(binder, node)
    if isinstance(node, exp.Intersect | exp.Except):
        raise error_at(node, f"{type(node).__name__.upper()} is not supported", UnsupportedError)
    if isinstance(node, exp.Select):
        return select(binder, node)
    raise error_at(node, f"{type(node).__name__.upper()} is not supported as a query", UnsupportedError)


def union(binder: Binder, node: exp.Union) -> Relation:
    """UNION ALL: each side cast to the common types (and given row kinds if the other side has them)."""
    left = query(binder, node.this)
    right = query(binder, node.expression)
    schema = _union_schema(node, left.node, right.node)
    mode = changelog.union(left.node, right.node)
    with_wm = WATERMARK_COLUMN in left.node.schema and WATERMARK_COLUMN in right.node.schema
    if with_wm:
        schema[WATERMARK_COLUMN] = types.timestamp(3)
    if mode == changelog.RETRACT:
        schema[OP_COLUMN] = pl.String()
    inputs: list[Node] = []
    for side in (left, right):
        side_names = [n for n in side.node.schema if n not in HIDDEN]
        cols = [
            (name, pl.col(src).cast(dtype).alias(name))
            for (name, dtype), src in zip(schema.items(), side_names, strict=False)
        ]
        if with_wm:
            cols.append((WATERMARK_COLUMN, pl.col(WATERMARK_COLUMN).cast(types.timestamp(3))))
        if mode == changelog.RETRACT:
            op = pl.col(OP_COLUMN) if changelog.updating(side.node) else pl.lit("+I").alias(OP_COLUMN)
            cols.append((OP_COLUMN, op))
        inputs.append(
            Calc(binder.ids.node("calc"), [side.node], schema, mode, projections=cols, sql="align union input")
        )
    return Relation(UnionAll(binder.ids.node("union"), inputs, schema, mode))


def _union_schema(node: exp.Union, left: Node, right: Node) -> dict[str, pl.DataType]:
    """The left side's names with the supertype of each column pair, as Polars finds it for concat."""
    lschema = [(n, t) for n, t in left.schema.items() if n not in HIDDEN]
    rschema = [(n, t) for n, t in right.schema.items() if n not in HIDDEN]
    if len(lschema) != len(rschema):
        raise error_at(node, f"UNION ALL inputs have {len(lschema)} and {len(rschema)} columns")
    schema: dict[str, pl.DataType] = {}
    for (lname, ltype), (_, rtype) in zip(lschema, rschema, strict=True):
        try:
            schema[lname] = (
                pl.select(pl.lit(None, ltype), pl.lit(None, rtype).alias("r"))
                .select(pl.concat_list(pl.all()))
                .dtypes[0]
                .inner
            )  # type: ignore[attr-defined]
        except pl.exceptions.PolarsError:
            raise error_at(
                node,
                f"UNION ALL column '{lname}': {types.sql_name(ltype)} and {types.sql_name(rtype)} have no common type",
            ) from None
    return schema


def from_(binder: Binder, select: exp.Select) -> Relation:
    source = select.args.get("from_") or select.args.get("from")
    if source is None:
        raise error_at(select, "SELECT without FROM is not supported in a streaming query", UnsupportedError)
    relation = from_item(binder, source.this)
    found = select.args.get("joins") or []
    where = select.args.get("where")
    for join in found:
        if isinstance(join.this, exp.Unnest):  # a per-row expansion, not a join of two inputs
            relation = unnest.unnest(binder, relation, join)
            continue
        if (join.kind or "").upper() == "CROSS" and join.args.get("on") is None and where and len(found) == 1:
            # `FROM a, b WHERE a.k = b.k AND ...` is an inner join on the WHERE clause (which still filters
            # the joined rows afterwards, to the same effect).
            join = join.copy()
            join.set("kind", None)
            join.set("on", where.this.copy())
        relation = joins.join(binder, relation, join, select)
    return relation


def from_item(binder: Binder, item: exp.Expr) -> Relation:
    alias = item.alias_or_name if item.alias else None
    aliases = frozenset({alias.lower()} if alias else set())
    if isinstance(item, exp.Subquery):
        inner = query(binder, item.this)
        renamed = column_aliases(binder, inner.node, item.args.get("alias"))
        if renamed is not None:  # `(...) AS v (a, b)`: the columns under new names
            return Relation(renamed, aliases)
        return Relation(inner.node, aliases, inner.window, inner.window_input)
    if isinstance(item, exp.Table) and isinstance(item.this, exp.Anonymous) and item.this.name.upper() == "TABLE":
        calls = item.this.expressions
        if len(calls) != 1 or not isinstance(calls[0], WindowCall):
            raise error_at(
                item,
                "only window table functions (TUMBLE, HOP, CUMULATE, SESSION) are supported in TABLE(...)",
                UnsupportedError,
            )
        return windows.window_tvf(binder, calls[0], aliases)
    if isinstance(item, exp.Table) and isinstance(item.this, WindowCall):
        # RisingWave style: FROM TUMBLE(t, ts, INTERVAL ...)
        return windows.window_tvf(binder, item.this, aliases)
    if isinstance(item, exp.Table):
        name = item.name
        qualifiers = {name.lower()} | set(aliases)
        if name.lower() in binder.views:
            inner = query(binder, binder.views[name.lower()])
            return Relation(inner.node, frozenset(qualifiers), inner.window, inner.window_input)
        return Relation(binder.scan(binder.table(item)), frozenset(qualifiers))
    raise error_at(item, f"FROM {item.sql(dialect=Flink)} is not supported", UnsupportedError)


def column_aliases(binder: Binder, child: Node, alias: exp.Expr | None) -> Node | None:
    """A Calc renaming `child`'s columns to those an alias lists (`AS v (a, b)`, a view's column list), or None
    when it lists none or the same names. The list must name every column, as in Flink."""
    names = [c.name for c in alias.columns] if isinstance(alias, exp.TableAlias) else []
    visible = [n for n in child.schema if n not in HIDDEN]
    if not names or names == visible:
        return None
    assert alias is not None
    if len(names) != len(visible):
        raise error_at(alias, f"{len(names)} column names for {len(visible)} columns ({', '.join(visible)})")
    lowered = [n.lower() for n in names]
    for i, name in enumerate(lowered):
        if name in lowered[:i]:
            raise error_at(alias, f"column name '{names[i]}' is given twice")
    return calc(
        binder, child, [(new, pl.col(old).alias(new)) for old, new in zip(visible, names, strict=True)], None, alias
    )


def select(binder: Binder, node: exp.Select) -> Relation:
    for arg, what in (("order", "ORDER BY"), ("limit", "LIMIT"), ("qualify", "QUALIFY")):
        if node.args.get(arg):
            raise error_at(node.args[arg], f"{what} is not supported yet", UnsupportedError)
    if node.args.get("match") is not None:
        from sql.planner.match_recognize import match_recognize  # imports relations: resolved at call time

        return match_recognize(binder, node)
    ranked = top_n.top_n(binder, node)
    if ranked is not None:
        relation, where = ranked
        compiler = binder.compiler(relation.scope)
        predicate = compiler.condition(where) if where is not None else None
        return Relation(calc(binder, relation.node, projections(binder, node, relation, compiler), predicate, node))
    relation = from_(binder, node)
    if aggregates.aggregated(binder, node):
        return aggregates.aggregate(binder, node, relation)
    if relation.window is not None and relation.window.unassigned_session:
        raise error_at(node, "SESSION windows need GROUP BY window_start, window_end", UnsupportedError)
    if any(isinstance(w.this, exp.AggFunc) for item in node.expressions for w in item.find_all(exp.Window)):
        return over.over(binder, node, relation)
    compiler = binder.compiler(relation.scope)
    predicate = None
    where = node.args.get("where")
    if where is not None:
        refuse_nested(where.this)
        predicate = compiler.condition(where.this)
    result = calc(binder, relation.node, projections(binder, node, relation, compiler), predicate, node)
    return windows.windowed(Relation(result), relation.window, node)


def projections(
    binder: Binder, node: exp.Select, relation: Relation, compiler: ExprCompiler
) -> list[tuple[str, pl.Expr]]:
    """The SELECT list, with `$1`, `$2` appended to repeated names."""
    found: list[tuple[str, pl.Expr]] = []
    used: set[str] = set()
    for index, item in enumerate(node.expressions):
        refuse_nested(item)
        for name, expr in projection(item, index, relation, compiler):
            unique = name
            suffix = 1
            while unique.lower() in used:
                unique = f"{name}${suffix}"
                suffix += 1
            used.add(unique.lower())
            found.append((unique, expr.alias(unique)))
    return found


def calc(
    binder: Binder, child: Node, columns: list[tuple[str, pl.Expr]], predicate: pl.Expr | None, node: exp.Expr
) -> Calc:
    """A Calc that also carries the hidden columns (watermark, row kind) of its input."""
    compiler = binder.compiler(Scope(child.schema))
    schema = {name: compiler.dtype(expr) for name, expr in columns}
    hidden = [(h, pl.col(h)) for h in HIDDEN if h in child.schema]
    schema.update({h: child.schema[h] for h, _ in hidden})
    sql_text = node.sql(dialect=Flink)
    return Calc(
        binder.ids.node("calc"),
        [child],
        schema,
        changelog.passthrough(child),
        projections=columns + hidden,
        predicate=predicate,
        sql=sql_text if len(sql_text) < 120 else sql_text[:117] + "...",
    )


def projection(item: exp.Expr, position: int, relation: Relation, compiler: ExprCompiler) -> list[tuple[str, pl.Expr]]:
    """One SELECT item: `*` and `t.*` expand to the visible columns; an unnamed expression is `EXPR$n`."""
    if isinstance(item, exp.Star) or (isinstance(item, exp.Column) and isinstance(item.this, exp.Star)):
        qualifier = item.table if isinstance(item, exp.Column) else ""
        if qualifier and qualifier.lower() not in relation.qualifiers:
            raise error_at(item, f"unknown table or alias '{qualifier}'")
        return [(name, pl.col(name)) for name in relation.node.schema if not name.startswith("__")]
    name = item.alias_or_name if isinstance(item, exp.Alias | exp.Column) else f"EXPR${position}"
    node = item.this if isinstance(item, exp.Alias) else item
    expr = compiler.compile(node)
    compiler.dtype(expr, node)
    return [(name, expr)]


def select_items(node: exp.Expr) -> list[exp.Expr]:
    while isinstance(node, exp.Union | exp.Subquery):
        node = node.this
    return list(node.expressions) if isinstance(node, exp.Select) else []


def conjuncts(node: exp.Expr) -> list[exp.Expr]:
    if isinstance(node, exp.Paren):
        return conjuncts(node.this)
    if isinstance(node, exp.And):
        return conjuncts(node.this) + conjuncts(node.expression)
    return [node]


def refuse_nested(node: exp.Expr) -> None:
    """Aggregates, OVER and subqueries where a plain expression is expected."""
    for inner in node.find_all(exp.Window, exp.AggFunc, exp.Subquery, exp.Exists):
        if isinstance(inner, exp.Window):
            raise error_at(inner, "OVER windows are not supported yet", UnsupportedError)
        if isinstance(inner, exp.AggFunc):
            raise error_at(
                inner, f"aggregate {inner.sql(dialect=Flink)} is not allowed here (use HAVING to filter on aggregates)"
            )
        raise error_at(inner, "subqueries in expressions are not supported", UnsupportedError)
