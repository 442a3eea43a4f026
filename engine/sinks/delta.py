"""`'connector' = 'delta'` as a sink: appends each epoch's rows exactly once, or upserts by primary key.

Each commit carries the marker `Transaction(<pipeline>/<table>, epoch)`; before writing, the sink reads the
marker back and skips an epoch that the table already holds (delta-rs does not enforce markers itself).

A table declared with `PRIMARY KEY (...) NOT ENFORCED` that receives an updating result is kept as the
materialised result: each epoch's changelog is reduced to the last change per key and applied in one MERGE
(insert or update for +I/+U, delete for -D). Applying the same epoch twice gives the same table.

The sink commits at each checkpoint (`flush`), not at each epoch: the epochs since the last checkpoint go in one
commit carrying the marker of the last of them, so that a checkpoint every N epochs costs one sink commit, not N
(a Delta commit costs 10-40 ms whatever its size). Exactly-once is unchanged: a checkpoint's manifest row is
committed after the flush, and a replay writes only the epochs past the table's marker. The rows of epochs not
yet flushed are what a crash loses and the replay of the logged slices rebuilds. A sink holding more than
FLUSH_BYTES flushes early, which is equally safe.
"""

from __future__ import annotations

import errno
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import polars as pl
from deltalake import CommitProperties, DeltaTable, Transaction

from engine import delta_tables, encryption, faults, paths
from engine.delta_tables import NO_CLEANUP, AppendTable, ensure_table, to_arrow
from engine.errors import EngineError
from engine.sinks.base import SinkConnector
from engine.sources.base import ConnectorError
from engine.storage import Location
from sql.catalog import TableDef
from sql.plan import DELETE, OP_COLUMN, UPDATE_BEFORE

DELETE_FLAG = "__delete"
#: rows held back for the next checkpoint beyond this size are committed at once (bounded memory, same result)
FLUSH_BYTES = 128 * 1024 * 1024


class DeltaSink(SinkConnector):
    def __init__(self, table: TableDef, base_dir: Path, app_id: str) -> None:
        super().__init__(table, base_dir, app_id)
        options = table.options
        if "path" not in options:
            raise ValueError(f"table '{table.name}': option 'path' is required")
        self._path = self.resolve(options["path"])
        partition = options.get("partition-by") or options.get("sink.partition-by")
        self.partition_by = [p.strip() for p in partition.split(",")] if partition else None
        self._appends: AppendTable | None = None
        self._pending: list[tuple[int, pl.DataFrame]] = []  # epochs taken since the last flush, in order
        self._pending_bytes = 0
        self._writing = threading.Lock()

    @property
    def path(self) -> Location:
        return self._path

    def open(self) -> None:
        # Before anything is written: a symlinked `_delta_log` or partition directory would take the writes out.
        paths.confined_delta_table(self.table.name, self._path)
        try:
            with paths.reaching(self.table.name, self._path):  # a missing bucket: one line, nothing written
                table = ensure_table(self._path, self.table.physical_schema, self.partition_by)
        except OSError as err:
            if err.errno == errno.ENOSPC or isinstance(err, EngineError):  # a full disk, a failing store: as such
                raise
            # A path that cannot be created (under a file, no permission) is the SQL's to fix: say which table.
            where = self.table.where("path")
            raise ConnectorError(
                f"table '{self.table.name}'{where}: cannot create the Delta table at {self._path}: "
                f"{err.strerror or err}"
            ) from None
        paths.confined_files(self.table.name, table.file_uris())  # a MERGE reads the files it rewrites
        existing = [field.name for field in table.schema().fields]
        declared = list(self.table.physical_schema)
        if existing != declared:
            where = self.table.where()
            raise ConnectorError(
                f"table '{self.table.name}'{where}: the Delta table at {self._path} has columns "
                f"({', '.join(existing)}) but CREATE TABLE declares ({', '.join(declared)}); "
                "point 'path' at a new location or declare the same columns"
            )
        self._appends = AppendTable(table, fault="sink.commit")

    @property
    def _table(self) -> DeltaTable | None:
        return self._appends.table if self._appends is not None else None

    def write(self, epoch: int, rows: pl.DataFrame) -> None:
        assert self._table is not None
        if not rows.height:
            return
        self._pending.append((epoch, rows))
        self._pending_bytes += int(rows.estimated_size())
        if self._pending_bytes >= FLUSH_BYTES:
            self.flush()

    def flush(self) -> None:
        pending, self._pending, self._pending_bytes = self._pending, [], 0
        with self._writing:  # after a detached flush still being written: epochs reach the table in order
            self._write(pending)

    def detach_flush(self) -> Callable[[], tuple[int | None, Any]]:
        pending, self._pending, self._pending_bytes = self._pending, [], 0
        # Held from now until written, so that a `flush` of later epochs (a full buffer) waits for these.
        self._writing.acquire()

        def write() -> tuple[int | None, Any]:
            try:
                self._write(pending)
                return self.version(), None  # the version of this write, before any later flush
            finally:
                self._writing.release()

        return write

    def _write(self, pending: list[tuple[int, pl.DataFrame]]) -> None:
        if not pending:
            return
        if OP_COLUMN in pending[0][1].columns:
            self._upsert(pending)
        else:
            assert self._appends is not None
            self._appends.append_epochs(pending, self.app_id)

    def _upsert(self, pending: list[tuple[int, pl.DataFrame]]) -> None:
        """One MERGE of the epochs' changes: the last change per key over them all, in epoch order, gives the
        table that a MERGE per epoch would."""
        assert self._table is not None
        table = self._table
        table.update_incremental()
        done = delta_tables.held_epoch(table, self.app_id)
        fresh = [(epoch, rows) for epoch, rows in pending if done is None or epoch > done]
        if not fresh:
            return
        epoch = fresh[-1][0]
        rows = fresh[0][1] if len(fresh) == 1 else pl.concat([r for _, r in fresh], how="vertical_relaxed")
        keys = list(self.table.primary_key)
        columns = [c for c in rows.columns if c != OP_COLUMN]
        last = rows.with_row_index("__seq").sort("__seq").group_by(keys, maintain_order=True).last()
        changes = last.select(*columns, pl.col(OP_COLUMN).is_in([DELETE, UPDATE_BEFORE]).alias(DELETE_FLAG))
        matched = " AND ".join(f'(t."{k}" IS NOT DISTINCT FROM s."{k}")' for k in keys)
        assignments = {f'"{c}"': f's."{c}"' for c in columns}
        faults.commit("sink.commit", table.table_uri)
        (
            table.merge(
                encryption.seal_for(table.schema(), to_arrow(changes), refuse=keys),  # encrypted columns stay so
                predicate=matched,
                source_alias="s",
                target_alias="t",
                commit_properties=CommitProperties(
                    app_transactions=[Transaction(app_id=self.app_id, version=epoch)],
                    custom_metadata={"timelapse.epoch": str(epoch)},
                ),
                post_commithook_properties=NO_CLEANUP,
            )
            .when_matched_delete(predicate=f's."{DELETE_FLAG}"')
            .when_matched_update(updates=assignments, predicate=f'NOT s."{DELETE_FLAG}"')
            .when_not_matched_insert(updates=assignments, predicate=f'NOT s."{DELETE_FLAG}"')
            .execute()
        )
        table.update_incremental()
        delta_tables.note_epoch(table, self.app_id, epoch)
        faults.point("sink.commit.after")
        assert self._appends is not None
        self._appends.committed()

    def version(self) -> int | None:
        assert self._table is not None
        return int(self._table.version())
