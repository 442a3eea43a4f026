"""Named fault-injection points across the epoch protocol, for crash and storage-fault tests.

Disarmed (the normal case) a point costs one comparison. A test arms one point, from the environment so
that it can crash a real `timelapse` process:

    TIMELAPSE_CRASH_AT=state.commit.after      SIGKILL the process the first time the point is reached
    TIMELAPSE_CRASH_AT=state.commit.after:3    ... the third time
    TIMELAPSE_FAIL_AT=sink.commit.before:2     raise OSError(ENOSPC) there instead (a full disk)

or in-process with `arm(point, hits, action)`.

A `*.during` point stands for a kill inside a Delta commit, after the data files are written and before the
log entry is: it leaves exactly the debris such a kill leaves (an orphan Parquet file, a half-written temporary
commit file) in the table, then kills.
"""

from __future__ import annotations

import errno
import os
import signal
import uuid
from collections.abc import Callable

from engine.storage import Location, location

POINTS: dict[str, str] = {
    "epoch.offsets-logged": "the epoch's slice is in the offset log; no input read yet",
    "operator.mid": "a stateful operator has folded the epoch into its memory; nothing written",
    "sink.commit.before": "before a Delta sink's commit at a checkpoint (the epochs since the last one)",
    "sink.commit.during": "inside a sink's Delta commit: data files written, no log entry",
    "sink.commit.after": "after a Delta sink's commit at a checkpoint, before the next table",
    "dead-letters.commit.after": "after a source's dead letters are appended",
    "state.commit.before": "before a state table's change-log append",
    "state.commit.during": "inside a state table's Delta commit: data files written, no log entry",
    "state.commit.after": "after a state table's append, before the next table or the manifest",
    "compaction.before": "before a state table's compaction overwrite",
    "compaction.during": "inside the compaction's Delta commit",
    "compaction.after": "after a compaction, before the manifest",
    "manifest.commit.before": "every table written; the manifest row not yet",
    "manifest.commit.during": "inside the manifest's Delta commit",
    "manifest.commit.after": "the epoch is committed; before the runner moves on",
    "retention.vacuum.before": "retention decided; nothing freed yet",
    "retention.vacuum.during": "some tables vacuumed and their logs pruned, others not",
    "retention.before-manifest": "everything freed; the retention row not yet written",
    "rollback.intent-written": "the rollback intent is durable; no table restored",
    "rollback.mid-restore": "some tables restored to the target version, others not",
    "rollback.before-manifest": "every table restored; the rollback row not yet written",
    "savepoint.commit.before": "a savepoint's manifest row about to be written",
    "savepoint.commit.during": "inside the savepoint's manifest commit",
}

#: points reached only where a Kafka sink is written; apart from POINTS, which the crash tests of every pipeline
#: (tests/test_fault_injection.py) must all reach
KAFKA_POINTS: dict[str, str] = {
    "kafka.sink.produced": "an epoch's messages are produced and flushed in its open Kafka transaction",
    "kafka.sink.committed": "the epoch's Kafka transaction is committed, before the next sink",
    "kafka.rollback.compensated": "a rollback's compensating upserts are committed; the rollback row not yet",
}

#: points reached only inside a Ray worker (engine/scaleout/worker.py), armed there by the coordinator from
#: `TIMELAPSE_WORKER_CRASH_AT=<point>[:<n>]` (and `TIMELAPSE_WORKER_CRASH_INDEX=<i>`: that worker only)
WORKER_POINTS: dict[str, str] = {
    "worker.read": "a worker has read and scanned its share of the epoch; nothing sent",
    "worker.shuffled": "a worker has sent its rows to their key groups' owners",
    "worker.processed": "a worker's stateful operators have folded their rows in; outputs not yet sent",
    "worker.staged": "a worker is handing its staged state changes to the coordinator's checkpoint",
}

#: points reached only under a memory budget (engine/operators/spilled.py)
BUDGET_POINTS: dict[str, str] = {
    "spill.written": "a part of an operator's state was written to the spill directory mid-epoch",
}

#: points reached only when a savepoint export is written or a pipeline starts from one (engine/savepoint_export.py)
EXPORT_POINTS: dict[str, str] = {
    "export.copied": "a savepoint export's tables and manifest are written; export.json not yet",
    "from-savepoint.copied": "an export's tables are copied into a new state directory; its manifest row not yet",
}

Action = Callable[[str, Location | None], None]
Where = Location | str | None  # a table's path or URI


def kill(point: str, table: Location | None) -> None:
    if point.endswith(".during") and table is not None:
        leave_commit_debris(table)
    os.kill(os.getpid(), signal.SIGKILL)


def disk_full(point: str, table: Location | None) -> None:
    raise OSError(errno.ENOSPC, f"No space left on device (injected at {point})")


_armed: str | None = None
_hits = 0
_action: Action = kill


def arm(point: str, hits: int = 1, action: Action = kill) -> None:
    if not any(point in points for points in (POINTS, KAFKA_POINTS, WORKER_POINTS, BUDGET_POINTS, EXPORT_POINTS)):
        known = ", ".join([*POINTS, *KAFKA_POINTS, *WORKER_POINTS, *BUDGET_POINTS, *EXPORT_POINTS])
        raise ValueError(f"unknown fault point '{point}'; known: {known}")
    global _armed, _hits, _action
    _armed, _hits, _action = point, hits, action


def disarm() -> None:
    global _armed
    _armed = None


def point(name: str, table: Where = None) -> None:
    """Mark the point `name`; `table` is the Delta table being committed, for `*.during` points."""
    if _armed is None or _armed != name:
        return
    global _hits
    _hits -= 1
    if _hits <= 0:
        action = _action
        disarm()
        action(name, location(str(table)) if table is not None else None)


def commit(name: str, table: Where = None) -> None:
    """The `before` and `during` points of a Delta commit of `table` (call just before writing)."""
    if _armed is None:
        return
    point(f"{name}.before", table)
    point(f"{name}.during", table)


def leave_commit_debris(table: Location) -> None:
    """What a kill inside a delta-rs commit leaves: a data file no log entry names, a temporary commit file
    (in an object store too, where delta-rs stages a commit the same way)."""
    token = uuid.uuid4()
    (table / f"part-00000-{token}-c000.snappy.parquet").write_bytes(b"PAR1 torn write")
    log = table / "_delta_log"
    if log.is_dir():
        (log / f"_commit_{token}.json.tmp").write_text('{"add":{"path":"part-00000-')


def _from_environment() -> None:
    for variable, action in (("TIMELAPSE_CRASH_AT", kill), ("TIMELAPSE_FAIL_AT", disk_full)):
        spec = os.environ.get(variable)
        if spec:
            name, _, hits = spec.partition(":")
            arm(name, int(hits or 1), action)


_from_environment()
