"""The pure rules of a scaled-out epoch: which worker owns a key group, the stages of a plan, and how the
workers' shares of a source keep the single-process row watermarks.

Key groups: every state row and every input row of a stateful operator has one of KEY_GROUPS key groups (a hash of
its key, `StatefulOperator.input_key_group`); with N workers, worker i owns the contiguous range
[i * KEY_GROUPS / N, (i + 1) * KEY_GROUPS / N). The ranges follow from N alone, so a restart with another N
reassigns them and each worker loads the rows of its range from the same state tables: nothing is rewritten.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

import polars as pl

from sql.plan import KEY_GROUPS, Node

Marks = dict[str, dt.datetime | None]


def owner(key_groups: pl.Expr, workers: int) -> pl.Expr:
    """The worker owning each key group."""
    return (key_groups.cast(pl.Int64) * workers // KEY_GROUPS).cast(pl.Int32)


def owned_range(index: int, workers: int) -> tuple[int, int]:
    """The key groups [lo, hi) worker `index` of `workers` owns (the inverse of `owner`)."""
    lo = next(g for g in range(KEY_GROUPS + 1) if g == KEY_GROUPS or g * workers // KEY_GROUPS >= index)
    hi = next(g for g in range(KEY_GROUPS + 1) if g == KEY_GROUPS or g * workers // KEY_GROUPS >= index + 1)
    return lo, hi


def stages(outputs: Iterable[Node]) -> list[list[Node]]:
    """The stateful nodes by stage: stage k holds those with k - 1 stateful nodes on their longest path from a
    source, so every input of a stage-k node can be computed once stages before k have run. Index 0 is empty
    (the read and the stateless work before the first shuffle)."""
    depth: dict[int, int] = {}
    order: list[Node] = []

    def visit(node: Node) -> int:
        if id(node) not in depth:
            below = max((visit(child) for child in node.inputs), default=0)
            depth[id(node)] = below + (1 if node.stateful else 0)
            if node.stateful:
                order.append(node)
        return depth[id(node)]

    for output in outputs:
        visit(output)
    result: list[list[Node]] = [[] for _ in range(max((depth[id(n)] for n in order), default=0) + 1)]
    for node in order:
        result[depth[id(node)]].append(node)
    return result


def watermark_offsets(highest: list[Marks], per_split: list[dict[str, Marks]]) -> list[tuple[Marks, dict[str, Marks]]]:
    """For each worker, what the shares before it add to its rows' watermarks.

    A row's watermark (`__wm`, engine/operators/scan.py) is the maximum of the WATERMARK expression over the rows
    of its source (or partition) before it. Worker i's share follows the shares of workers 0..i-1 in the
    source's order, so its rows' watermarks are the ones it computed over its own share, raised to the maximum
    over those earlier shares: per source, and per partition for a partitioned source."""
    offsets: list[tuple[Marks, dict[str, Marks]]] = []
    running: Marks = {}
    running_splits: dict[str, Marks] = {}
    for own, own_splits in zip(highest, per_split, strict=True):
        offsets.append((dict(running), {name: dict(marks) for name, marks in running_splits.items()}))
        for name, mark in own.items():
            running[name] = _later(running.get(name), mark)
        for name, marks in own_splits.items():
            target = running_splits.setdefault(name, {})
            for split, mark in marks.items():
                target[split] = _later(target.get(split), mark)
    return offsets


def combined(highest: list[Marks], per_split: list[dict[str, Marks]]) -> tuple[Marks, dict[str, Marks]]:
    """The maxima over all workers' shares (what the whole epoch's rows give: `Watermarks.advance_to`)."""
    total: Marks = {}
    splits: dict[str, Marks] = {}
    for own in highest:
        for name, mark in own.items():
            total[name] = _later(total.get(name), mark)
    for own_splits in per_split:
        for name, marks in own_splits.items():
            target = splits.setdefault(name, {})
            for split, mark in marks.items():
                target[split] = _later(target.get(split), mark)
    return total, splits


def _later(a: dt.datetime | None, b: dt.datetime | None) -> dt.datetime | None:
    if a is None:
        return b
    return a if b is None or a >= b else b
