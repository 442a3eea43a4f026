"""Flink's scalar built-in functions, as vectorised Polars expressions, by family.

`sql.expressions.ExprCompiler` handles the core (operators, CASE, CAST, the first few functions) and asks this
registry for the rest: `build` returns the compiled call, or None when the node is not one of these functions.
A family module exports `BY_NODE` (sqlglot node type -> builder: calls sqlglot parses into a node of its own)
and `BY_NAME` (upper-case name -> builder: calls it keeps as `exp.Anonymous`). A scalar UDF of the same name
wins over a built-in, as a temporary system function does in Flink.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import polars as pl
from sqlglot import exp

from sql.functions import collections, conditional, json_functions, numeric, strings, temporal
from sql.functions.common import Builder
from sql.functions.json_functions import is_json
from sql.functions.temporal import BARE_WORDS, floor_ceil

if TYPE_CHECKING:
    from sql.expressions import ExprCompiler

__all__ = ["BARE_WORDS", "build", "floor_ceil", "is_json"]

_FAMILIES = (collections, conditional, json_functions, numeric, strings, temporal)
BY_NODE: dict[type, Builder] = {k: v for family in _FAMILIES for k, v in family.BY_NODE.items()}
BY_NAME: dict[str, Builder] = {k: v for family in _FAMILIES for k, v in family.BY_NAME.items()}


def build(c: ExprCompiler, node: exp.Expr) -> pl.Expr | None:
    if isinstance(node, exp.Anonymous):
        name = node.name.upper()
        if name in c.udfs:
            return None
        builder = BY_NAME.get(name)
    else:
        builder = BY_NODE.get(type(node))
        if builder is not None and isinstance(node, exp.Func) and node.sql_name().upper() in c.udfs:
            return None
    if builder is None:
        return None
    built = builder(c, node)
    c.dtype(built, node)  # a type Polars cannot resolve is a planning error with a position, not a failed epoch
    return built
