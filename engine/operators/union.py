"""UNION ALL: the inputs' rows, concatenated. Stateless."""

from __future__ import annotations

import polars as pl

from engine.operators.context import EpochContext
from sql.plan import Node


def run(node: Node, inputs: list[pl.LazyFrame], ctx: EpochContext) -> pl.LazyFrame:
    return pl.concat(inputs, how="vertical")
