"""`'connector' = 'delta'` as a sink: appends each epoch's rows exactly once.

Each commit carries the marker `Transaction(<pipeline>/<table>, epoch)`; before writing, the sink reads the
marker back and skips an epoch that the table already holds (delta-rs does not enforce markers itself).
"""

from __future__ import annotations

from pathlib import Path

import polars as pl
from deltalake import DeltaTable

from engine.delta_tables import append_once, ensure_table
from engine.sinks.base import SinkConnector
from sql.catalog import TableDef


class DeltaSink(SinkConnector):
    def __init__(self, table: TableDef, base_dir: Path, app_id: str) -> None:
        super().__init__(table, base_dir, app_id)
        options = table.options
        if "path" not in options:
            raise ValueError(f"table '{table.name}': option 'path' is required")
        self._path = self.resolve(options["path"])
        partition = options.get("partition-by") or options.get("sink.partition-by")
        self.partition_by = [p.strip() for p in partition.split(",")] if partition else None
        self._table: DeltaTable | None = None

    @property
    def path(self) -> Path:
        return self._path

    def open(self) -> None:
        self._table = ensure_table(self._path, self.table.physical_schema, self.partition_by)

    def write(self, epoch: int, rows: pl.DataFrame) -> None:
        assert self._table is not None
        if rows.height:
            append_once(self._table, rows, self.app_id, epoch)

    def version(self) -> int | None:
        assert self._table is not None
        return int(self._table.version())
