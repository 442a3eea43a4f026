"""Calc: filter, then project. Stateless."""

from __future__ import annotations

import polars as pl

from engine.operators.context import EpochContext
from sql.plan import Calc


def run(node: Calc, inputs: list[pl.LazyFrame], ctx: EpochContext) -> pl.LazyFrame:
    frame = inputs[0]
    if node.predicate is not None:
        frame = frame.filter(node.predicate)
    return frame.select([expr for _, expr in node.projections])
