"""The manifest: one Delta row per committed epoch. Appending that row is the commit point of the epoch.

Readers open every other table at the version its latest row names, so they always see a consistent cut
(delta-facts, "Multi-table consistency").

This module owns the manifest's model: a row is a `Checkpoint`, each table it names a `TableEntry`, and the
questions asked of the rows (which epochs retention kept, which savepoints are live, the row of an epoch) are
answered here. Other modules read rows through `entries(row)` and these queries, never through the columns.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import polars as pl
from deltalake import CommitProperties, Transaction

from engine import delta_tables, faults
from engine.delta_tables import NO_CLEANUP, ensure_table, to_arrow
from engine.errors import VersioningError
from engine.lease import LeaseLost
from engine.state_dir import StateDir
from engine.storage import location

# role: sink | state | late | dead_letters; schema: the column types of a state table (JSON), so a changed
# plan can be checked against the state it would restore; ttl: the state TTL of its operator, if any.
TABLE_ENTRY = pl.Struct(
    {
        "name": pl.String,
        "role": pl.String,
        "path": pl.String,
        "version": pl.Int64,
        "schema": pl.String,
        "ttl": pl.String,
    }
)

SCHEMA: dict[str, pl.DataType] = {
    "epoch": pl.Int64(),
    "kind": pl.String(),
    "committed_at": pl.Datetime("us", "UTC"),
    "plan_fingerprint": pl.String(),
    "watermark": pl.Datetime("us", "UTC"),
    "source_offsets": pl.String(),  # JSON: {source: {"position": ..., "watermark": ...}}
    "tables": pl.List(TABLE_ENTRY),  # Delta version of every sink, state and dead-letter table
    "metrics": pl.String(),  # JSON: rows in/out, dead letters, timings
    # JSON: {state id: what the operator's state means (sql.state_descriptors.state_descriptor) + its directory}
    "operators": pl.String(),
}

COMPACT_EVERY = 100
LEASE_APP = "timelapse/lease"

# Row kinds. `epoch` commits an epoch; `rollback` makes an earlier epoch's cut current again (keeping the latest
# epoch number, so re-run epochs get new numbers and new markers); `savepoint` names an epoch's cut;
# `savepoint_deleted` frees the name.
RESUMABLE = ("epoch", "rollback")
SAVEPOINT_KINDS = ("savepoint", "savepoint_deleted")

#: table roles (TableEntry.role)
SINK, STATE, LATE, DEAD_LETTERS = "sink", "state", "late", "dead_letters"


@dataclass(frozen=True)
class TableEntry:
    """One table a checkpoint names, at the Delta version that belongs to its cut (a TABLE_ENTRY struct)."""

    name: str
    role: str  # SINK | STATE | LATE | DEAD_LETTERS
    path: str  # a real path; stored relative to the state directory where it can be (StateDir.record)
    version: int
    schema: str | None = None  # state tables: their column types (JSON), checked against a changed plan
    ttl: str | None = None  # state tables of an operator with a state TTL: the TTL, as shown by `timelapse log`

    @classmethod
    def from_dict(cls, entry: Mapping[str, Any]) -> TableEntry:
        return cls(
            name=entry["name"],
            role=entry["role"],
            path=str(entry["path"]),
            version=int(entry["version"]),
            schema=entry.get("schema"),
            ttl=entry.get("ttl"),
        )

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def entries(row: Mapping[str, Any] | None) -> list[TableEntry]:
    """The tables a manifest row (as read from the manifest's Delta table) names."""
    return [TableEntry.from_dict(t) for t in (row or {}).get("tables") or []]


@dataclass
class Checkpoint:
    epoch: int
    source_offsets: dict[str, Any]
    watermark: dt.datetime | None
    tables: list[TableEntry] = field(default_factory=list)
    plan_fingerprint: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)
    kind: str = "epoch"
    committed_at: dt.datetime | None = None
    operators: dict[str, Any] = field(default_factory=dict)


class Manifest:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.dir = StateDir(path.parent)
        self.table = ensure_table(path, SCHEMA)
        self._commits = 0
        # The lease token the manifest carried when this writer opened it: a higher one appearing later is a
        # writer that took over. (One already there is not: a lease file removed by hand restarts the count.)
        self._lease_seen = int(delta_tables.held_epoch(self.table, LEASE_APP) or 0)

    def latest(self) -> Checkpoint | None:
        """The state a run resumes from: the last epoch committed, or the last rollback, whichever is newer."""
        frame = read_checkpoints(self.path).filter(pl.col("kind").is_in(list(RESUMABLE)))
        return None if frame.is_empty() else checkpoint_from_row(frame.row(-1, named=True))

    def commit(self, checkpoint: Checkpoint, lease_token: int | None = None) -> None:
        """Append the row. With the writer's `lease_token`, the commit carries the marker (timelapse/lease,
        token): two writers racing to commit with it conflict in Delta and one fails (fencing)."""
        row = {
            "epoch": checkpoint.epoch,
            "kind": checkpoint.kind,
            "committed_at": checkpoint.committed_at or dt.datetime.now(dt.UTC),
            "plan_fingerprint": checkpoint.plan_fingerprint,
            "watermark": checkpoint.watermark,
            "source_offsets": json.dumps(checkpoint.source_offsets, sort_keys=True),
            # Paths are stored relative to the state directory (StateDir.record), so it can move.
            "tables": [{**t.as_dict(), "path": self.dir.record(t.path)} for t in checkpoint.tables],
            "metrics": json.dumps(checkpoint.metrics, sort_keys=True),
            "operators": json.dumps(
                {
                    sid: {**record, "directory": self.dir.record(record["directory"])}
                    if record.get("directory")
                    else record
                    for sid, record in checkpoint.operators.items()
                },
                sort_keys=True,
            ),
        }
        faults.commit("manifest.commit", self.path)
        self.table.update_incremental()  # retention may have committed to the manifest (a property change)
        newer = int(delta_tables.held_epoch(self.table, LEASE_APP) or 0) if lease_token is not None else 0
        if lease_token is not None and newer > lease_token and newer != self._lease_seen:
            # A writer that took the directory over has committed: this one lost it, whatever its lease check said.
            raise LeaseLost(f"{self.path} was committed to by a newer writer (token {newer} > {lease_token})")
        delta_tables.write(
            self.table,
            to_arrow(pl.DataFrame([row], schema=SCHEMA)),
            mode="append",
            commit_properties=CommitProperties(app_transactions=[Transaction(app_id=LEASE_APP, version=lease_token)])
            if lease_token is not None
            else None,
            post_commithook_properties=NO_CLEANUP,
        )
        if lease_token is not None:
            delta_tables.note_epoch(self.table, LEASE_APP, lease_token)
        faults.point("manifest.commit.after")
        self._lease_seen = lease_token if lease_token is not None else self._lease_seen
        self._commits += 1
        if self._commits % COMPACT_EVERY == 0:
            # One small file per epoch makes every later commit and read slower (delta-facts §8), and so does
            # an aging handle (see AppendTable).
            self.table.optimize.compact(post_commithook_properties=NO_CLEANUP)
            self.table.create_checkpoint()
            self.table = delta_tables.delta(self.path)


def checkpoint_from_row(row: dict[str, Any]) -> Checkpoint:
    return Checkpoint(
        epoch=row["epoch"],
        source_offsets=json.loads(row["source_offsets"] or "{}"),
        watermark=row["watermark"],
        tables=entries(row),
        plan_fingerprint=row["plan_fingerprint"],
        metrics=json.loads(row["metrics"] or "{}"),
        kind=row["kind"],
        committed_at=row["committed_at"],
        operators=json.loads(row.get("operators") or "{}"),
    )


def read_checkpoints(path: Path) -> pl.DataFrame:
    """All manifest rows in commit order: what notebooks, rollbacks and `timelapse log` build on.

    Every table path and operator directory comes back as a real path at the state directory's current
    location (`StateDir.locate`), so every reader and writer of the rows works wherever the directory now is.

    A manifest whose folder exists but holds no commit yet (a first run is creating it) has no rows: readers
    beside that run are told "no committed epoch yet", not that the table cannot be read."""
    log = path / "_delta_log"
    if not log.is_dir() or not any(p.suffix in (".json", ".parquet") for p in log.iterdir()):
        return pl.DataFrame(schema=SCHEMA)
    return read_at(path, None)


def read_at(path: Path, version: int | None) -> pl.DataFrame:
    """The manifest's rows as of a log version (None: the latest), in commit order, with real paths. Raises when
    that version cannot be read: the damage checks rely on it."""
    rows = delta_tables.scan(path, version=version).sort("committed_at", "epoch").collect()
    return located(rows, StateDir(path.parent))


def located(frame: pl.DataFrame, directory: StateDir) -> pl.DataFrame:
    """Manifest rows with their stored paths turned into real ones. A manifest names a handful of distinct
    paths however many rows it has, so each distinct path and operators record is resolved once."""
    if frame.is_empty():
        return frame
    entries, records = _stored(frame)
    origins = StateDir.original_roots(_pairs(entries, records))
    paths = {p: str(directory.locate(p, origins)) for p in entries.get_column("path").unique().to_list()}
    operators = {
        text: json.dumps(
            {
                sid: {**record, "directory": str(directory.locate(record["directory"], origins))}
                if record.get("directory")
                else record
                for sid, record in ops.items()
            },
            sort_keys=True,
        )
        for text, ops in records.items()
    }
    return frame.with_columns(
        pl.col("tables").list.eval(pl.element().struct.with_fields(pl.field("path").replace(paths))),
        pl.col("operators").replace(operators),
    )


def original_roots(path: Path) -> list[Path]:
    """Where the state directory whose manifest is at `path` lived when it stored absolute paths (if it did)."""
    return StateDir.original_roots(_pairs(*_stored(delta_tables.scan(path).select("tables", "operators").collect())))


def _stored(frame: pl.DataFrame) -> tuple[pl.DataFrame, dict[str, dict[str, Any]]]:
    """The distinct (role, path) table entries of manifest rows, and their distinct operators records."""
    entries = frame.select(pl.col("tables").explode().struct.unnest()).select("role", "path").drop_nulls().unique()
    records = {text: json.loads(text) for text in frame.get_column("operators").unique().drop_nulls().to_list()}
    return entries, records


def _pairs(entries: pl.DataFrame, records: dict[str, dict[str, Any]]) -> list[tuple[str, str]]:
    directories = [r["directory"] for ops in records.values() for r in ops.values() if r.get("directory")]
    return [*entries.iter_rows(), *(("directory", d) for d in directories)]


# -- queries over the rows (`read_checkpoints`) --------------------------------------------------------------


def rows_of(directory: StateDir) -> pl.DataFrame:
    """A state directory's manifest rows; VersioningError when it has no manifest."""
    if not directory.manifest.exists():
        raise VersioningError(f"{directory.root} is not a timelapse state directory")
    return read_checkpoints(directory.manifest)


def epoch_row(rows: pl.DataFrame, epoch: int) -> dict[str, Any]:
    """The row that committed `epoch`; VersioningError when there is none or retention freed its tables."""
    found = rows.filter((pl.col("kind") == "epoch") & (pl.col("epoch") == epoch))
    if epoch < 1 and found.is_empty():  # epoch 0: only a bootstrapped state directory's (engine.state_bootstrap)
        raise VersioningError(f"there is no epoch {epoch}: epochs are numbered from 1")
    if found.is_empty() and expired(rows, epoch):
        raise VersioningError(expired_message(rows, epoch))
    if found.is_empty():
        raise VersioningError(_not_committed(rows, epoch))
    row = found.row(-1, named=True)
    if not readable(rows, row):
        raise VersioningError(expired_message(rows, epoch))
    return row


def _not_committed(rows: pl.DataFrame, epoch: int) -> str:
    """Why an epoch has no row: it is past the last checkpoint, or it ran but was not a checkpoint
    (`checkpoint.interval`); then the checkpoints around it, so the user can pick one."""
    epochs = rows.filter(pl.col("kind") == "epoch").get_column("epoch")
    if epochs.is_empty():
        return f"epoch {epoch} is not a committed epoch (none has been committed yet)"
    before, after = epochs.filter(epochs < epoch), epochs.filter(epochs > epoch)
    if after.is_empty():
        return f"epoch {epoch} is not a committed epoch (the last checkpoint is epoch {epochs.max()})"
    around = f"epochs {before.max()} and {after.min()}" if not before.is_empty() else f"epoch {after.min()}"
    return (
        f"epoch {epoch} is not a checkpoint (state is kept at checkpoints only, 'checkpoint.interval'); "
        f"the nearest: {around}"
    )


def savepoint_rows(rows: pl.DataFrame) -> dict[str, dict[str, Any]]:
    """The manifest row of each live savepoint, by name. Its `tables` are the savepoint's own: those of its epoch's
    row, or, for a savepoint made by editing state (engine.state_edit), versions no epoch row names."""
    live: dict[str, dict[str, Any]] = {}
    for row in rows.filter(pl.col("kind").is_in(list(SAVEPOINT_KINDS))).iter_rows(named=True):
        name = json.loads(row["metrics"] or "{}")["savepoint"]
        if row["kind"] == "savepoint":
            live[name] = row
        else:
            live.pop(name, None)
    return live


def cut_row(rows: pl.DataFrame, epoch: int, savepoint: str | None = None) -> dict[str, Any]:
    """The cut to restore, branch from or read: the row of `epoch` (its offsets, watermark, sink positions), with
    the tables of the savepoint `savepoint` when one is named (an edited savepoint's differ from its epoch's)."""
    row = epoch_row(rows, epoch)
    own = savepoint_rows(rows).get(savepoint) if savepoint is not None else None
    return row if own is None else {**row, "tables": own["tables"]}


def readable(rows: pl.DataFrame, row: dict[str, Any]) -> bool:
    """Whether retention has kept an epoch row's tables: it is recent enough, or a live savepoint names it."""
    passes = rows.filter(pl.col("kind") == "retention")
    if passes.is_empty():
        return True
    floor = json.loads(passes.row(-1, named=True)["metrics"])["oldest_epoch"]
    if row["epoch"] >= floor:
        return True
    live = live_savepoints(rows)
    return any(sp["epoch"] == row["epoch"] for sp in live.values())


def expired(rows: pl.DataFrame, epoch: int) -> bool:
    """Whether retention freed `epoch` (its manifest row may be gone too)."""
    passes = rows.filter(pl.col("kind") == "retention")
    return not passes.is_empty() and epoch < json.loads(passes.row(-1, named=True)["metrics"])["oldest_epoch"]


def expired_message(rows: pl.DataFrame, epoch: int) -> str:
    info = json.loads(rows.filter(pl.col("kind") == "retention").row(-1, named=True)["metrics"])
    return (
        f"epoch {epoch} was removed by retention ({info['policy']}); the oldest readable epoch is "
        f"{info['oldest_epoch']}, besides savepoints"
    )


def checkpoint_line(rows: pl.DataFrame, cut: dict[str, Any]) -> dict[int, list[int]]:
    """The checkpoints on the line leading to `cut` (epoch -> the epochs it covers, oldest first): what blame
    and compare count, leaving out the epochs a rollback abandoned.

    Walking the manifest in commit order: a checkpoint descends from the resumable row current when it was
    committed, and covers the epochs numbered after that row's (a rollback row carries the latest epoch number,
    so the epochs after it are numbered past every abandoned one)."""
    parent: dict[int, int | None] = {}
    covers: dict[int, list[int]] = {}
    current: int | None = None  # the checkpoint the current state is
    number = 0  # the epoch number of the current resumable row
    for row in rows.iter_rows(named=True):
        if row["kind"] == "epoch":
            epoch = int(row["epoch"])
            if epoch in parent:
                continue  # a row repeated: its first commit decides
            # A branch's first row copies its parent's checkpoint: the epochs before it ran in the parent.
            branched = "branch" in json.loads(row["metrics"] or "{}")
            parent[epoch], covers[epoch] = current, [epoch] if branched else list(range(number + 1, epoch + 1))
            current, number = epoch, epoch
        elif row["kind"] == "rollback":
            current = int(json.loads(row["metrics"] or "{}").get("rollback", {}).get("to_epoch", row["epoch"]))
            number = int(row["epoch"])
    start: int | None = cut_epoch(cut)
    line: dict[int, list[int]] = {}
    while start is not None and start in covers and start not in line:
        line[start] = covers[start]
        start = parent[start]
    return dict(sorted(line.items()))


def cut_epoch(cut: dict[str, Any]) -> int:
    """The checkpoint whose state a cut is: its epoch, or for a rollback row the epoch it returned to."""
    if cut["kind"] == "epoch":
        return int(cut["epoch"])
    return int(json.loads(cut["metrics"] or "{}").get("rollback", {}).get("to_epoch", cut["epoch"]))


def live_savepoints(rows: pl.DataFrame) -> dict[str, dict[str, Any]]:
    """The savepoints created and not deleted, by name: name, epoch, created_at, user, reason."""
    live: dict[str, dict[str, Any]] = {}
    for row in rows.filter(pl.col("kind").is_in(list(SAVEPOINT_KINDS))).iter_rows(named=True):
        info = json.loads(row["metrics"] or "{}")
        if row["kind"] == "savepoint":
            live[info["savepoint"]] = {
                "name": info["savepoint"],
                "epoch": row["epoch"],
                "created_at": row["committed_at"],
                "user": info.get("user"),
                "reason": info.get("reason"),
            }
        else:
            live.pop(info["savepoint"], None)
    return live


def savepoints(state: str | Path) -> pl.DataFrame:
    """The live savepoints: name, epoch, when, by whom and why."""
    live = live_savepoints(rows_of(StateDir(location(state))))
    schema = {
        "name": pl.String,
        "epoch": pl.Int64,
        "created_at": pl.Datetime("us", "UTC"),
        "user": pl.String,
        "reason": pl.String,
    }
    return pl.DataFrame(list(live.values()), schema=schema)
