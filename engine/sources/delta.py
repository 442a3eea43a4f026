"""`'connector' = 'delta'` as a source: streams the rows that each table version appended.

A position is (version, row): every row of earlier versions, and `row` rows of `version`, have been read.
Rows of a version come from its data-changing `add` actions in path order. Versions that only remove or
rewrite files (compaction, deletes) add nothing to the stream: the source is for append-only tables (a table's
updates and deletes are streamed by `engine/sources/delta_changes.py`, `'read.change-data-feed' = 'true'`).
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow.parquet as pq

from engine import delta_tables, paths
from engine.delta_tables import open_table
from engine.sources.base import Source, SourceBatch, typed_from_frame
from engine.storage import Location, ObjectPath, is_uri, location


class DeltaSource(Source):
    def __init__(self, table: Any, base_dir: Path) -> None:
        super().__init__(table, base_dir)
        self.path: Location = self.resolve(self.option("path"))
        self.cursor = (int(self.option("starting-version", "0")), 0)
        self._adds: dict[int, list[tuple[str, int, dict[str, str | None]]]] = {}
        self._confined = False

    def restore(self, position: Any, history: list[dict[str, Any]]) -> None:
        if position:
            self.cursor = tuple(position["cursor"])  # type: ignore[assignment]

    @property
    def position(self) -> Any:
        return {"cursor": list(self.cursor)}

    def advance(self, piece: dict[str, Any]) -> None:
        self.cursor = tuple(piece["end"])  # type: ignore[assignment]

    def _latest(self) -> int:
        if not self._confined:
            # Once, before delta-rs first reads the log: no symlink under the table may lead out of the roots.
            paths.confined_delta_table(self.table.name, self.path)
        else:  # then the log directory each time (one lookup); new log and data files as they are read
            paths.confined_file(self.table.name, self.path / "_delta_log")
        with paths.reaching(self.table.name, self.path):
            table = open_table(self.path)
        self._confined = table is not None
        return -1 if table is None else int(table.version())

    def _version_adds(self, version: int) -> list[tuple[str, int, dict[str, str | None]]]:
        if version not in self._adds:
            log = paths.confined_file(self.table.name, self.path / "_delta_log" / f"{version:020d}.json")
            adds = []
            for line in log.read_text().splitlines():
                action = json.loads(line).get("add") if line.strip() else None
                if not action or not action.get("dataChange", True):
                    continue
                # A log may name any file, by absolute path or through `..`: each must stay inside the roots.
                data_file = paths.confined_file(self.table.name, self._data_file(action["path"]), "data file")
                stats = json.loads(action.get("stats") or "{}")
                records = stats.get("numRecords")
                if records is None:
                    records = pq.ParquetFile(_readable(data_file)).metadata.num_rows
                adds.append((action["path"], int(records), action.get("partitionValues") or {}))
            self._adds[version] = sorted(adds)
        return self._adds[version]

    def plan(self, max_rows: int | None) -> dict[str, Any] | None:
        latest = self._latest()
        version, row = self.cursor
        budget = max_rows if max_rows is not None else float("inf")
        while version <= latest and budget > 0:
            rows = self._rows_in(version)
            take = int(min(rows - row, budget))
            row += take
            budget -= take
            if row >= rows:
                version, row = version + 1, 0
        end = (version, row)
        if end == tuple(self.cursor):
            return None
        return {"start": list(self.cursor), "end": list(end)}

    def _rows_in(self, version: int) -> int:
        """How many rows `version` streams (positions count them)."""
        return sum(r for _, r, _ in self._version_adds(version))

    def read(self, piece: dict[str, Any]) -> SourceBatch:
        (v0, r0), (v1, r1) = piece["start"], piece["end"]
        frames = []
        for version in range(v0, v1 + 1):
            lo = r0 if version == v0 else 0
            hi = r1 if version == v1 else None
            if hi == 0:
                continue
            version_rows = self._version_rows(version)
            if version_rows is None:
                continue
            rows = version_rows.slice(lo, None if hi is None else hi - lo)
            # Stored values are converted as every typed source converts them (a value that does not fit the
            # declared type, a nested one included, is a dead letter naming its row of the version).
            frames.append(
                typed_from_frame(rows, self._typed, lambda rows=rows, v=version, lo=lo: self._context(rows, v, lo))
            )
        if not frames:
            return SourceBatch(self.empty())
        return SourceBatch(
            pl.concat([f.rows for f in frames], how="vertical_relaxed"),
            pl.concat([f.dead_letters for f in frames]),
        )

    @property
    def _typed(self) -> dict[str, pl.DataType]:
        """The columns a version's rows are converted to."""
        return self.schema

    def _version_rows(self, version: int) -> pl.DataFrame | None:
        """The rows `version` streams, as stored (None when it streams none)."""
        parts = [self._read_add(path, partitions) for path, _, partitions in self._version_adds(version)]
        return pl.concat(parts, how="diagonal_relaxed") if parts else None

    def _context(self, rows: pl.DataFrame, version: int, first: int) -> pl.DataFrame:
        """Where each row of a version's slice comes from, for its dead letter: the table at the version, the
        row's index in it, and the row as JSON."""
        try:
            raw = rows.select(pl.struct(pl.all()).struct.json_encode()).to_series()
        except pl.exceptions.PolarsError:
            raw = pl.Series([None] * rows.height, dtype=pl.String)
        where = f"{self.path}@v{version}"
        return pl.DataFrame({"file": [where] * rows.height, "position": range(first, first + rows.height), "raw": raw})

    def snapshot(self, version: int | None) -> SourceBatch:
        """The whole table at `version` (a bounded read: a lookup join's dimension), its values converted by the
        rules of every source: a value that does not convert is a dead letter naming its row of the version."""
        if version is None:
            return SourceBatch(self.empty())
        frame = delta_tables.read(self.path, version=version)

        def context() -> pl.DataFrame:
            try:  # the row as JSON, so that a dead letter shows what it held
                raw = frame.select(pl.struct(pl.all()).struct.json_encode()).to_series()
            except pl.exceptions.PolarsError:
                raw = pl.Series([None] * frame.height, dtype=pl.String)
            where = f"{self.path}@v{version}"
            return pl.DataFrame({"file": [where] * frame.height, "position": range(frame.height), "raw": raw})

        watermark = self.table.watermark
        required = (watermark.column,) if watermark is not None and watermark.column in self.schema else ()
        return typed_from_frame(frame, self.schema, context, required)

    def _data_file(self, name: str) -> Location:
        """A data file the log names: relative to the table, or (rarely) by an absolute URI."""
        return location(name) if is_uri(name) else self.path / name

    def _read_add(self, path: str, partitions: dict[str, str | None]) -> pl.DataFrame:
        """A data file's declared columns as stored (converted by `read`), its partition values cast from text."""
        frame = pl.read_parquet(_readable(self._data_file(path)))
        frame = frame.with_columns(
            pl.lit(v).cast(self.schema.get(k, pl.String()), strict=False).alias(k) for k, v in partitions.items()
        )
        return frame.select(
            pl.col(n) if n in frame.columns else pl.lit(None, dtype=t).alias(n) for n, t in self.schema.items()
        )


def _readable(path: Location) -> Path | io.BytesIO:
    """What Parquet readers open: a local path, or an object's bytes (one GET; data files are written whole)."""
    return io.BytesIO(path.read_bytes()) if isinstance(path, ObjectPath) else path
