"""Operators: one module each. Each turns a plan node and its inputs' rows into its output rows.

Stateless operators work on Polars LazyFrames, so a whole chain fuses into one Polars query per epoch.
Stateful operators are objects that live across epochs, own Delta state tables, and receive their input
materialised; they follow the contract in base.py and are registered here by plan node type (`STATEFUL`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Protocol

import polars as pl

from engine import faults
from engine.operators import calc, scan, union, unnest, windows
from engine.operators.aggregate import AggregateOperator
from engine.operators.base import OperatorSettings, StatefulOperator
from engine.operators.context import EpochContext
from engine.operators.join import JoinOperator
from engine.operators.match_recognize import MatchRecognizeOperator
from engine.operators.normalize import ChangelogNormalizeOperator
from engine.operators.over import OverOperator
from engine.operators.spilled import MemoryBudget, SpilledOperator
from engine.operators.temporal_join import TemporalJoinOperator
from engine.operators.top_n import TopNOperator
from sql.plan import (
    Aggregate,
    Calc,
    ChangelogNormalize,
    Join,
    MatchRecognize,
    Node,
    OverAggregate,
    Plan,
    Scan,
    Sink,
    TemporalJoin,
    TopN,
    UnionAll,
    Unnest,
    WindowAssign,
)

Operator = Callable[[Node, list[pl.LazyFrame], EpochContext], pl.LazyFrame]

OPERATORS: dict[type[Node], Operator] = {
    Scan: scan.run,  # type: ignore[dict-item]
    Calc: calc.run,  # type: ignore[dict-item]
    UnionAll: union.run,
    WindowAssign: windows.run,  # type: ignore[dict-item]
    Unnest: unnest.run,  # type: ignore[dict-item]
    Sink: lambda node, inputs, ctx: inputs[0],  # the sink connector writes what its input produced
}


STATEFUL: dict[type[Node], type[StatefulOperator]] = {
    Aggregate: AggregateOperator,
    Join: JoinOperator,
    TopN: TopNOperator,
    OverAggregate: OverOperator,
    ChangelogNormalize: ChangelogNormalizeOperator,
    TemporalJoin: TemporalJoinOperator,
    MatchRecognize: MatchRecognizeOperator,
}


def stateful(node: Node, settings: OperatorSettings | None = None) -> StatefulOperator:
    """The operator that runs a stateful plan node (not yet opened: see StatefulOperator.open)."""
    return STATEFUL[type(node)].create(node, settings)


def budgeted(node: Node, settings: OperatorSettings, budget: MemoryBudget | None) -> StatefulOperator:
    """The operator of a stateful node under a memory budget (None: unbounded): its key groups in parts that
    go to disk when they do not fit (engine/operators/spilled.py). A lookup join keeps no state."""
    if budget is None or (isinstance(node, Join) and node.lookup):
        return stateful(node, settings)
    return SpilledOperator(STATEFUL[type(node)], node, settings, budget)


def stateful_operators(plan: Plan) -> dict[str, dict[str, object]]:
    """What the manifest records of each stateful operator: what its state means (`Plan.stateful_operators`)
    and the layout version of its kind's state tables, compared on upgrade."""
    layouts = {n.state_id: STATEFUL[type(n)].layout_version(n) for n in plan.nodes if n.stateful}  # type: ignore[attr-defined]
    return {sid: {**d, "layout": layouts[sid]} for sid, d in plan.stateful_operators().items()}


def evaluate(outputs: list[Node], ctx: EpochContext, operators: dict[str, StatefulOperator]) -> list[pl.LazyFrame]:
    """Build the lazy query of every output node over this epoch's input; shared nodes are built once.
    `operators` are the stateful operators by node id (those this worker runs)."""
    built: dict[int, pl.LazyFrame] = {}
    for output in outputs:
        for node in output.walk():
            if id(node) not in built:
                inputs = [built[id(child)] for child in node.inputs]
                if node.stateful:
                    frames = pl.collect_all(inputs)
                    own = ctx.for_operator(node.upstream_watermarks)
                    built[id(node)] = operators[node.id].process(frames, own).lazy()
                    faults.point("operator.mid")
                else:
                    built[id(node)] = OPERATORS[type(node)](node, inputs, ctx)
    return [built[id(o)] for o in outputs]


class SourceWatermarks(Protocol):
    """What evaluation needs of the sources' watermarks (engine.watermarks.Watermarks)."""

    marks: dict[str, dt.datetime | None]

    def advance(self, scanned: dict[str, pl.DataFrame], drain: bool = False) -> None: ...

    def pipeline(self, idle: set[str] | None = None) -> dt.datetime | None: ...


def evaluate_epoch(
    scans: dict[str, Scan],
    outputs: list[Node],
    ctx: EpochContext,
    operators: dict[str, StatefulOperator],
    watermarks: SourceWatermarks,
) -> list[pl.DataFrame]:
    """An epoch's rows of every output node. Sources first, materialised once: their rows fix the new
    watermarks, which decide what stateful operators fire; then one Polars query per stateful boundary."""
    scanned = pl.collect_all([scan.run(node, [], ctx) for node in scans.values()])
    ctx.scanned = dict(zip(scans, scanned, strict=True))
    watermarks.advance(ctx.scanned, ctx.drain)
    ctx.source_watermarks = dict(watermarks.marks)
    ctx.watermark = watermarks.pipeline(set(ctx.idle))
    return pl.collect_all(evaluate(outputs, ctx, operators))
