"""Changelog-mode inference, one function per node kind: which rows a node emits, `append` (inserts only) or
`retract` (rows carry +I/-U/+U/-D in `__op`). The planner asks here when it builds the node; a sink that
is not keyed refuses `retract` (see statements.insert)."""

from __future__ import annotations

from sql.plan import Node

APPEND, RETRACT = "append", "retract"


def updating(*inputs: Node) -> bool:
    return any(node.changelog != APPEND for node in inputs)


def passthrough(child: Node) -> str:
    """Calc, WindowAssign, a sink's cast: row by row, so the input's mode."""
    return child.changelog


def union(left: Node, right: Node) -> str:
    return RETRACT if updating(left, right) else APPEND


def join(kind: str, lookup: bool, interval: bool, left: Node, right: Node) -> str:
    """A lookup join follows its stream side (the dimension is read as of each row). An interval join, or an
    inner join of two append-only inputs, only ever adds matches; any outer side may later retract its padding."""
    if lookup:
        return left.changelog
    if interval or (kind == "INNER" and not updating(left, right)):
        return APPEND
    return RETRACT


def aggregate(windowed: bool) -> str:
    """A window's result is final once the watermark passes its end; an unbounded group's result changes."""
    return APPEND if windowed else RETRACT


def top_n(first_by_time: bool) -> str:
    """Keeping the first row by time is final once the watermark passes it; any other ranking can change."""
    return APPEND if first_by_time else RETRACT


def over() -> str:
    """Each row is emitted once, when the watermark passes its time, with the aggregates up to it."""
    return APPEND
