"""Filters pushed below an INNER join: a condition on one side's columns only (in ON, or in the WHERE of a SELECT
whose joins are all INNER) filters that input before the join, so its rows never enter the join's state.

Nexmark q20 (`bid B JOIN auction A ON B.auction = A.id WHERE A.category = 10`) then keeps only category-10
auctions and emits only their pairs, instead of joining every auction and filtering the result. The WHERE clause
still filters the joined rows too (to the same effect), and so does a pushed ON condition: the join's residual
keeps it, so state an earlier engine kept unfiltered cannot join on an upgrade. Not pushed: conditions over an
updating input (a filter on a changelog is not a filter on its rows), a windowed FROM item, and conditions whose
value may depend on when they are evaluated (functions that are not built in, the current time) or that hold
subqueries or aggregates.
"""

from __future__ import annotations

import polars as pl
from sqlglot import exp

from sql.errors import SqlError
from sql.planner import changelog, relations
from sql.planner.binder import HIDDEN, Binder, Relation

_UNSAFE = (exp.Anonymous, exp.Subquery, exp.Window, exp.AggFunc, exp.CurrentTimestamp, exp.CurrentDate)
_UNSAFE += (exp.CurrentTime, exp.Rand)


def push_down(
    binder: Binder, select: exp.Select, on: exp.Expr, kind: str, left: Relation, right: Relation
) -> tuple[Relation, Relation, list[exp.Expr]]:
    """The join's inputs with the conditions on one of them applied first, and the ON conjuncts so pushed."""
    if kind != "INNER":
        return left, right, []
    pushed_on: list[exp.Expr] = []
    taken: dict[str, list[exp.Expr]] = {"left": [], "right": []}
    seen: set[str] = set()
    where = select.args.get("where")
    candidates = [(c, True) for c in relations.conjuncts(on)]
    if where is not None and all_inner(select):
        candidates += [(c, False) for c in relations.conjuncts(where.this)]
    for conjunct, in_on in candidates:
        side = _one_side(conjunct, left, right)
        if side is None or conjunct.find(*_UNSAFE) is not None:
            continue
        target = left if side == "left" else right
        if target.window is not None or changelog.updating(target.node):
            continue
        if in_on:
            pushed_on.append(conjunct)
        text = conjunct.sql()
        if text not in seen:  # `FROM a, b WHERE ...` has the WHERE as its ON too
            seen.add(text)
            taken[side].append(conjunct)
    return _filtered(binder, left, taken["left"]), _filtered(binder, right, taken["right"]), pushed_on


def all_inner(select: exp.Select) -> bool:
    """Whether every join of the SELECT is INNER (or a comma join): then a WHERE condition on one table may
    filter it before any join (an outer join would pad, and the WHERE could drop the padded row)."""
    for item in select.args.get("joins") or []:
        if item.side or (item.kind or "INNER").upper() not in ("INNER", "CROSS"):
            return False
        if isinstance(item.this, exp.Table) and item.this.args.get("version") is not None:
            return False  # a lookup join reads its dimension as of each row: leave it as it is
    return True


def _one_side(node: exp.Expr, left: Relation, right: Relation) -> str | None:
    """'left' or 'right' when every column of `node` is that side's (and not the other's), else None."""
    found: set[str] = set()
    columns = list(node.find_all(exp.Column))
    if not columns:
        return None
    for column in columns:
        sides = set()
        for label, relation in (("left", left), ("right", right)):
            try:
                relation.scope.resolve(column)
                sides.add(label)
            except SqlError:
                pass
        if len(sides) != 1:
            return None
        found |= sides
    return found.pop() if len(found) == 1 else None


def _filtered(binder: Binder, relation: Relation, conjuncts: list[exp.Expr]) -> Relation:
    if not conjuncts:
        return relation
    combined = conjuncts[0]
    for extra in conjuncts[1:]:
        combined = exp.And(this=combined, expression=extra)
    predicate = binder.compiler(relation.scope).condition(combined)
    columns = [(name, pl.col(name)) for name in relation.node.schema if name not in HIDDEN]
    node = relations.calc(binder, relation.node, columns, predicate, combined)
    return Relation(node, relation.qualifiers, relation.window, relation.window_input, relation.columns)
