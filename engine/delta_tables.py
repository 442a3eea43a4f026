"""Delta Lake helpers shared by the manifest, the sinks and the dead-letter tables.

Every table the engine creates turns off Delta's own clean-up clocks (delta-facts §4): history is the
product, so only the engine decides what may be deleted.
"""

from __future__ import annotations

from typing import Any

import polars as pl
import pyarrow as pa
from deltalake import CommitProperties, DeltaTable, PostCommitHookProperties, Transaction, write_deltalake
from deltalake.exceptions import TableNotFoundError

from engine import encryption, faults
from engine.storage import Location, location, storage_options, table_uri

KEEP_HISTORY = {
    "delta.logRetentionDuration": "interval 36500 days",
    "delta.deletedFileRetentionDuration": "interval 36500 days",
}


# Commit operations that change neither rows nor files: the engine's own maintenance (retention's vacuum and its
# tombstone-horizon property). Whoever reasons about "what changed since version v" skips them.
MAINTENANCE_OPERATIONS = frozenset({"VACUUM START", "VACUUM END", "SET TBLPROPERTIES"})

#: commits that remove no file (what "the version before each commit that removed files" skips)
APPEND_ONLY = MAINTENANCE_OPERATIONS | {"CREATE TABLE"}


def before_removals(commits: list[dict[str, Any]], oldest: int, newest: int) -> set[int]:
    """Of a table's commits (`DeltaTable.history()`), the version before each one in (oldest, newest] that may
    have removed files (an overwrite, a restore; appends and maintenance remove none). A file readable at some
    version in [oldest, newest] is live at `newest` or at one of these: with them, every row any of those
    versions held can still be read (retention keeps them, blame reads them)."""
    found: set[int] = set()
    for commit in commits:
        version = int(commit["version"])
        operation = str(commit.get("operation", ""))
        mode = str((commit.get("operationParameters") or {}).get("mode", "")).lower()
        appended = operation == "WRITE" and mode == "append"
        if oldest < version <= newest and not appended and operation not in APPEND_ONLY:
            found.add(version - 1)
    return found


def is_table(path: str | Location) -> bool:
    """Whether a Delta table is at `path` (its log folder exists)."""
    return (location(path) / "_delta_log").is_dir()


# Log clean-up after each commit only lists files to delete nothing (retention is the engine's job); skip it.
NO_CLEANUP = PostCommitHookProperties(create_checkpoint=True, cleanup_expired_logs=False)


def to_arrow(frame: pl.DataFrame) -> pa.Table:
    """Delta stores microseconds with a zone; normalise timestamps so every append matches the table schema."""
    casts = {
        name: pl.Datetime("us", dtype.time_zone or "UTC")
        for name, dtype in frame.schema.items()
        if isinstance(dtype, pl.Datetime) and (dtype.time_unit != "us" or dtype.time_zone is None)
    }
    if casts:
        frame = frame.with_columns(
            pl.col(n).dt.replace_time_zone("UTC").cast(t)
            if frame.schema[n].time_zone is None  # type: ignore[union-attr]
            else pl.col(n).cast(t)
            for n, t in casts.items()
        )
    return frame.to_arrow(compat_level=pl.CompatLevel.oldest())


# Every Delta table is opened, scanned and written through these four, so the storage options (object-store
# credentials, endpoints, encryption) that travel with a location reach delta-rs and Polars.
def delta(path: str | Location, version: int | None = None) -> DeltaTable:
    """The Delta table at `path` (local or object storage), at `version` or the latest."""
    return DeltaTable(table_uri(path), version=version, storage_options=storage_options(path))


def scan(path: str | Location, version: int | None = None) -> pl.LazyFrame:
    """The table's rows, lazily; a table with encrypted columns is read whole and decrypted when the key is at
    hand (engine.encryption), so that what is computed on (a state restore, a history query) is plaintext."""
    table = delta(path, version)
    sealed = encryption.sealed_columns(table.schema())
    if not sealed:
        return pl.scan_delta(table)
    return encryption.open_frame(pl.scan_delta(table).collect(), sealed).lazy()


def read(path: str | Location, version: int | None = None) -> pl.DataFrame:
    return scan(path, version).collect()


def write(path: str | Location | DeltaTable, data: Any, **options: Any) -> None:
    """`write_deltalake` with the location's storage options (a DeltaTable handle carries its own); declared
    sensitive columns are encrypted as the target table records them (or, for a new table, as declared)."""
    if isinstance(data, pl.DataFrame):
        data = to_arrow(data)
    if isinstance(path, DeltaTable):
        if isinstance(data, pa.Table):
            data = encryption.seal_for(path.schema(), data)
        write_deltalake(path, data, **options)
        return
    if isinstance(data, pa.Table):
        existing = open_table(path) if options.get("mode") in ("append", "overwrite") else None
        if existing is not None:
            data = encryption.seal_for(existing.schema(), data)
        else:
            data = encryption.seal_schema(data, encryption.declared(data.column_names))
    write_deltalake(table_uri(path), data, storage_options=storage_options(path), **options)


def reopen(table: DeltaTable) -> DeltaTable:
    """A fresh handle on the same table: an aging delta-rs handle slows commits down."""
    return delta(table.table_uri)


def open_table(path: Location) -> DeltaTable | None:
    try:
        return delta(path)
    except TableNotFoundError:
        return None


def ensure_table(
    path: Location,
    schema: dict[str, pl.DataType],
    partition_by: list[str] | None = None,
    encrypt: dict[str, encryption.Key] | None = None,
) -> DeltaTable:
    """The table at `path`, created with `schema` if absent: its declared sensitive columns (and those in
    `encrypt`) become encrypted binary columns, for good (engine.encryption)."""
    table = open_table(path)
    if table is not None:
        return table
    path.mkdir(parents=True, exist_ok=True)
    sealed = encryption.declared(schema) | (encrypt or {})
    if partition_by and (both := sorted(set(partition_by) & set(sealed))):
        raise encryption.KeyError_(f"{path}: encrypted column '{both[0]}' cannot be a partition column")
    empty = encryption.seal_schema(to_arrow(pl.DataFrame(schema=schema)), sealed)
    write_deltalake(
        table_uri(path),
        empty,
        storage_options=storage_options(path),
        mode="append",
        partition_by=partition_by or None,
        configuration=KEEP_HISTORY,
    )
    return delta(path)


def append_once(table: DeltaTable, frame: pl.DataFrame, app_id: str, epoch: int, fault: str = "append") -> bool:
    """Append `frame` as epoch `epoch` unless this table already holds that epoch.

    delta-rs records the marker but does not enforce it (delta-facts §1), so the check is ours.
    Returns whether a commit was made.
    """
    table.update_incremental()
    done = held_epoch(table, app_id)
    if done is not None and done >= epoch:
        return False
    _write(table, frame, app_id, epoch, fault)
    return True


# delta-rs answers `transaction_version` by replaying the log since the last Delta checkpoint, every call: up to
# a hundred GETs per call on an object store (and as many file reads on a disk) just before a checkpoint. A
# version of a table never changes, so the answer is kept per table version; the table's id (new for a table
# created again at the same path) is part of the key. Our own commits say what they wrote (`note_epoch`).
_HELD: dict[tuple[str, str, str], tuple[int, int | None]] = {}


def held_epoch(table: DeltaTable, app_id: str) -> int | None:
    """The last epoch the marker `app_id` committed to `table` as of the handle's version (None: never)."""
    key = (table.table_uri, str(table.metadata().id), app_id)
    version = int(table.version())
    known = _HELD.get(key)
    if known is not None and known[0] == version:
        return known[1]
    done = table.transaction_version(app_id)
    _HELD[key] = (version, done)
    return done


def note_epoch(table: DeltaTable, app_id: str, epoch: int) -> None:
    """Record that the handle's current version is our commit of `epoch` under `app_id`."""
    _HELD[(table.table_uri, str(table.metadata().id), app_id)] = (int(table.version()), epoch)


def append(table: DeltaTable, frame: pl.DataFrame, app_id: str, epoch: int, fault: str = "append") -> None:
    """Append `frame` with the marker (app_id, epoch), whatever the table holds already."""
    table.update_incremental()
    _write(table, frame, app_id, epoch, fault)


def _write(table: DeltaTable, frame: pl.DataFrame, app_id: str, epoch: int, fault: str) -> None:
    faults.commit(fault, table.table_uri)
    write_deltalake(
        table,
        encryption.seal_for(table.schema(), to_arrow(frame)),
        mode="append",
        commit_properties=CommitProperties(
            app_transactions=[Transaction(app_id=app_id, version=epoch)],
            custom_metadata={"timelapse.epoch": str(epoch)},
        ),
        post_commithook_properties=NO_CLEANUP,
    )
    # No refresh here: a write through a handle moves it to the version it committed (one LIST and one GET of
    # _last_checkpoint saved per commit on object stores).
    note_epoch(table, app_id, epoch)
    faults.point(f"{fault}.after")


COMPACT_EVERY = 100


class AppendTable:
    """A Delta table that grows by exactly-once appends, kept fast over thousands of commits.

    Every 100 commits its small files are compacted (delta-facts §8; only recent small files are rewritten,
    with dataChange=false, so the rows are unchanged at every version) and its handle is reopened: a
    long-lived delta-rs handle slows every commit down as it ages (measured: 14 ms to 76 ms per append over
    1,200 appends; 11-16 ms when reopened every 100).
    """

    def __init__(self, table: DeltaTable, fault: str = "append") -> None:
        self.table = table
        self.commits = 0
        self.fault = fault  # the name of its fault-injection points (engine.faults)

    def append_once(self, frame: pl.DataFrame, app_id: str, epoch: int) -> bool:
        written = append_once(self.table, frame, app_id, epoch, self.fault)
        if written:
            self.committed()
        return written

    def append(self, frame: pl.DataFrame, app_id: str, epoch: int) -> None:
        append(self.table, frame, app_id, epoch, self.fault)
        self.committed()

    def append_epochs(self, frames: list[tuple[int, pl.DataFrame]], app_id: str) -> bool:
        """Append the rows of several epochs, in order, as one commit with the marker of the last of them,
        leaving out the epochs the table holds already (a replay after a crash that followed an earlier such
        commit: its rows are those the table holds, since a replayed epoch reads its logged slice again).

        One commit for the epochs between two checkpoints; returns whether a commit was made."""
        self.table.update_incremental()
        done = held_epoch(self.table, app_id)
        fresh = [(epoch, frame) for epoch, frame in frames if done is None or epoch > done]
        if not fresh:
            return False
        rows = fresh[0][1] if len(fresh) == 1 else pl.concat([f for _, f in fresh], how="vertical_relaxed")
        _write(self.table, rows, app_id, fresh[-1][0], self.fault)
        self.committed()
        return True

    def committed(self) -> None:
        """Count a commit made through `self.table`; maintain the table every COMPACT_EVERY commits."""
        self.commits += 1
        if self.commits % COMPACT_EVERY == 0:
            self.table.optimize.compact(post_commithook_properties=NO_CLEANUP)
            self.table = reopen(self.table)

    def version(self) -> int:
        return int(self.table.version())
