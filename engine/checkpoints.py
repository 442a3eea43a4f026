"""A checkpoint in two halves: taken at an epoch boundary, written then or while the next epochs run.

`take` runs between two epochs and takes everything the checkpoint holds: each operator's staged changes and
live row counts (`StatefulOperator.detach`), each sink's rows held back (`SinkConnector.detach_flush`), the
dead-letter tables' versions (they are written as each epoch runs), the sources' positions, the watermark and
the metrics. `write` then commits the sinks and the state tables side by side (engine/commits.py) and appends
the manifest row, the commit point.

`write` reads nothing the next epochs change: they stage into new lists, hold their sink rows in new buffers
(a Delta sink's flush of later epochs waits for the detached one, so epochs reach a table in order), and only
the checkpoint writes state tables. So the runner may run it in a thread while the next epochs run, as Flink
writes a snapshot asynchronously: at most one checkpoint is in flight, and the next one, the end of a run, a
savepoint or a rollback waits for it. A crash before its manifest row replays from the checkpoint before, as
a crash at that instant of a checkpoint written inline would: the sinks' markers leave out the epochs they
hold, and a restart discards state commits no manifest row names.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from engine import commits
from engine.epoch_report import add_checkpoint, carried_totals
from engine.manifest import DEAD_LETTERS, SINK, STATE, Checkpoint, TableEntry

if TYPE_CHECKING:
    from engine.runner import Runner

#: the manifest row's metrics key holding sinks' own positions (`SinkConnector.position`), e.g. a Kafka topic's
#: end offsets at the checkpoint
SINK_POSITIONS = "sink_positions"

# One thread: one checkpoint in flight at most; its commits run in engine.commits' threads.
_WRITER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="timelapse-checkpoint")


@dataclass
class Taken:
    """A checkpoint as taken between two epochs, to be written (`write`)."""

    checkpoint: Checkpoint  # its `tables` gain the sinks' and operators' versions once written
    sinks: dict[str, Callable[[], tuple[int | None, Any]]]
    operators: list[Callable[[], None]]
    totals: dict[str, Any]
    reports: list[Callable[[], None]] = field(default_factory=list)  # the sources', once committed
    started: float = field(default_factory=time.perf_counter)


@dataclass
class Written:
    seconds: float
    reports: list[Callable[[], None]]


def take(runner: Runner, metrics: dict[str, Any]) -> Taken:
    """Everything the checkpoint of the epochs run so far holds, taken now (the runner's thread)."""
    # The sinks last: a detached Delta flush holds its table until written, so nothing may fail after it.
    operators, state_rows, state_bytes = runner._detach_operators()
    metrics = {**metrics, "state_rows": state_rows, "state_bytes": state_bytes}
    checkpoint = Checkpoint(
        epoch=runner.last_epoch,
        source_offsets=runner._positions(),
        watermark=runner.watermarks.pipeline(),
        tables=[
            TableEntry(name, DEAD_LETTERS, str(runner.dir.dead_letters(name)), t.version())
            for name, t in runner.dead_letters.tables.items()
        ],
        plan_fingerprint=runner.plan.fingerprint,
        metrics=metrics,
        operators=dict(runner.operator_records),
    )
    reports = [source.on_checkpoint() for source in runner.sources.values()]
    totals = carried_totals(runner.totals)
    sinks = {name: sink.detach_flush() for name, sink in runner.sinks.items()}
    return Taken(checkpoint, sinks, operators, totals, reports)


def write(runner: Runner, taken: Taken, lease_guard: threading.Lock) -> Written:
    """Commit the sinks and the state tables side by side, then the manifest row naming their versions."""
    names = list(taken.sinks)
    flushes = commits.start(taken.sinks.values())
    try:
        commits.side_by_side(taken.operators)
    finally:
        written = dict(zip(names, commits.finish(flushes), strict=True))
    checkpoint = taken.checkpoint
    tables = [
        TableEntry(name, SINK, str(runner.sinks[name].path), version, _sink_keys(runner.sinks[name]))
        for name, (version, _) in written.items()
        if version is not None
    ]
    tables += checkpoint.tables  # the dead-letter tables
    for operator in runner.operators.values():
        ttl = getattr(operator.node, "ttl", None)
        shown = f"{ttl.duration.total_seconds():g} s {ttl.time} time" if ttl is not None else None
        for name, (role, path, version, schema) in operator.tables().items():
            tables.append(TableEntry(name, role, str(path), version, schema, shown if role == STATE else None))
    checkpoint.tables = tables
    if positions := {name: position for name, (_, position) in written.items() if position is not None}:
        checkpoint.metrics[SINK_POSITIONS] = positions
    seconds = time.perf_counter() - taken.started
    add_checkpoint(taken.totals, seconds)
    checkpoint.metrics.update(checkpoint_ms=round(seconds * 1000, 3), totals=taken.totals)
    # Again just before the commit point: state commits take long on an object store, and a run paused among
    # them past its lease must not commit what a run that took over may be redoing.
    with lease_guard:
        runner._lock.check()
    runner.manifest.commit(checkpoint, lease_token=runner._lock.token)
    return Written(seconds, taken.reports)


def start(runner: Runner, taken: Taken, lease_guard: threading.Lock) -> Future[Written]:
    """`write` in the checkpoint thread."""
    return _WRITER.submit(write, runner, taken, lease_guard)


def _sink_keys(sink: Any) -> str:
    """A sink's declared PRIMARY KEY as `{"keys": [...]}` (the form state tables' entries use), so readers such as
    `engine.compare` can match its rows by key; `[]` when it declares none (no entry: written before keys were
    recorded)."""
    return json.dumps({"keys": list(getattr(sink.table, "primary_key", None) or [])})
