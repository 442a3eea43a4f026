"""Operators: one module each. Each turns a plan node and its inputs' rows into its output rows.

Stateless operators work on Polars LazyFrames, so a whole chain fuses into one Polars query per epoch.
Stateful operators (aggregate.py) are objects that live across epochs, own Delta state tables, and receive
their input materialised.
"""

from __future__ import annotations

from collections.abc import Callable

import polars as pl

from engine import faults
from engine.operators import calc, scan, union, windows
from engine.operators.context import EpochContext
from sql.plan import Calc, Node, Scan, Sink, UnionAll, WindowAssign

Operator = Callable[[Node, list[pl.LazyFrame], EpochContext], pl.LazyFrame]

OPERATORS: dict[type[Node], Operator] = {
    Scan: scan.run,  # type: ignore[dict-item]
    Calc: calc.run,  # type: ignore[dict-item]
    UnionAll: union.run,
    WindowAssign: windows.run,  # type: ignore[dict-item]
    Sink: lambda node, inputs, ctx: inputs[0],  # the sink connector writes what its input produced
}


def evaluate(outputs: list[Node], ctx: EpochContext) -> list[pl.LazyFrame]:
    """Build the lazy query of every output node over this epoch's input; shared nodes are built once."""
    built: dict[int, pl.LazyFrame] = {}
    for output in outputs:
        for node in output.walk():
            if id(node) not in built:
                inputs = [built[id(child)] for child in node.inputs]
                if node.stateful:
                    frames = pl.collect_all(inputs)
                    own = ctx.for_operator(node.upstream_watermarks)
                    built[id(node)] = ctx.operators[node.id].process(frames, own).lazy()
                    faults.point("operator.mid")
                else:
                    built[id(node)] = OPERATORS[type(node)](node, inputs, ctx)
    return [built[id(o)] for o in outputs]
