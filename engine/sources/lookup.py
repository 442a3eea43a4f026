"""The dimension of a lookup join: a bounded table read whole through its source connector, again when it changes.

A dimension is read by the same connectors as the sources (`filesystem`, `delta`), so its values are converted by
the same rules and a value that does not convert is a dead letter (in `<state>/dead_letters/<table>`), never a
silent NULL. Each epoch logs the version it joins against, before reading it:

- a Delta table: its version number (a replay reads that version again);
- files: the filesystem source's registration of them (each file's byte range, record count and fingerprint),
  taken again only when a file's size or time changes. A replay reads exactly those bytes, or stops with the
  source's error when a file changed since (`'source.missing-files'` as for a source).

A version's dead letters are recorded once, by the first epoch that joins against it: an epoch whose logged
version differs from the previous epoch's (`dead_letters_due`). Replays and restarts decide the same way, from the
offset log, so the dead-letter table is the same whatever the epoch size or the crashes.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import polars as pl

from engine import delta_tables, paths
from engine.delta_tables import open_table
from engine.offset_log import OffsetLog
from engine.sources.base import SourceBatch
from engine.sources.delta import DeltaSource
from engine.sources.file_registry import walk
from engine.sources.filesystem import FileSource
from engine.storage import Location, options_from
from sql.catalog import TableDef
from sql.plan import Join, Plan


class LookupTable:
    """One dimension table: `latest` gives the version an epoch logs, `read` its rows and dead letters."""

    def __init__(self, table: TableDef, base_dir: Path) -> None:
        self.table = table
        self.base_dir = base_dir
        self.path: Location = paths.connector_path(
            table.name, "path", table.options.get("path", ""), base_dir, options_from(table.options)
        )
        self.connector = table.connector.lower()
        # A dimension is complete as it stands: files default to Parquet, and a last line needs no newline.
        options = {**table.options, "format": table.options.get("format", "parquet")}
        self.files_table = dataclasses.replace(table, options=options)
        self._cache: tuple[Any, SourceBatch] | None = None
        self._checked: int | None = None  # the Delta version whose files were last checked against the roots
        self._listing: list[list[Any]] | None = None  # (name, size, mtime) of the files when last registered
        #: the last registration, and the source holding its bytes until they are read
        self._planned: tuple[dict[str, Any], FileSource | None] | None = None

    @property
    def name(self) -> str:
        return self.table.name

    # -- planning ------------------------------------------------------------------------------
    def latest(self) -> Any:
        """The version to log for the next epoch. No dead-letter table here: a file leading out of the allowed
        roots stops the pipeline (PathNotAllowed)."""
        if self.connector == "delta":
            return self._latest_delta()
        with paths.reaching(self.name, self.path):
            found, outside, base = walk(self.path)  # on an object store: one LIST, no request per file
        for name in sorted(outside):
            paths.confined_file(self.name, base / name)  # raises, naming the link and where it leads
        listing = []
        for name, stat in sorted(found.items()):
            paths.confined_file(self.name, stat.path)
            listing.append([name, *stat.observed])
        if self._planned is not None and listing == self._listing:
            return self._planned[0]
        source = self._file_source()
        # Read once: the bytes counted here are kept by the source for `read` of the same version.
        piece = source.plan(None) or {"files_added": [], "start": [0, 0], "end": [0, 0]}
        unchanged = self._cache is not None and self._cache[0] == piece  # touched, not changed: nothing to read
        self._listing, self._planned = listing, (piece, None if unchanged else source)
        return piece

    def _latest_delta(self) -> int | None:
        # Every epoch asks: the table and its log are checked each time (two lookups), the whole tree and the data
        # files the log names only when the version moves.
        paths.confined_file(self.name, self.path, "the Delta table")
        paths.confined_file(self.name, self.path / "_delta_log")
        with paths.reaching(self.name, self.path):
            table = open_table(self.path)
        if table is None:
            return None
        version = int(table.version())
        if version != self._checked:
            paths.confined_delta_table(self.name, self.path)
            paths.confined_files(self.name, table.file_uris())
            self._checked = version
        return version

    def _file_source(self) -> FileSource:
        source = FileSource(self.files_table, self.base_dir)
        source.end_of_input = True
        source.restore(None, [])
        return source

    # -- reading -------------------------------------------------------------------------------
    def read(self, version: Any) -> SourceBatch:
        """The dimension's rows at `version` (as logged), and the records that did not convert."""
        if self._cache is not None and self._cache[0] == version:
            return self._cache[1]
        if version is None:  # no table yet, or an epoch that reads nothing (a drain): the cache stays
            return SourceBatch(pl.DataFrame(schema=self.table.physical_schema))
        if self.connector == "delta":
            if version != self._checked and paths.allowed_roots():
                # A replayed epoch reads the version it logged: its files are checked like the latest's.
                paths.confined_files(self.name, delta_tables.delta(self.path, version=version).file_uris())
            batch = DeltaSource(self.table, self.base_dir).snapshot(version)
        else:
            if not isinstance(version, dict):  # logged by an older version (a list of files): registered anew
                self._planned = None
                version = self.latest()
            planned = self._planned
            source = planned[1] if planned is not None and planned[0] == version else None
            batch = (source or self._file_source()).read(version)
            if planned is not None and source is not None:
                self._planned = (planned[0], None)  # its bytes are read: not kept twice
        self._cache = (version, batch)
        return batch


def dead_letters_due(version: Any, previous: Any) -> bool:
    """Whether an epoch joining against `version` records its dead letters: the previous epoch used another."""
    return version is not None and version != previous


def last_versions(offsets: OffsetLog, epoch: int) -> dict[str, Any]:
    """The dimension versions the latest epoch up to `epoch` logged (a drain epoch logs none: it reads nothing)."""
    for logged in range(epoch, 0, -1):
        entry = offsets.read(logged)
        if entry is None:
            return {}
        if entry.get("dimensions"):
            return dict(entry["dimensions"])
    return {}


def lookup_tables(plan: Plan) -> list[str]:
    """The names of the tables lookup joins read: each has a dead-letter table, like a source."""
    return sorted({n.dimension.name for n in plan.nodes if isinstance(n, Join) and n.dimension is not None})


def with_dead_letters(batches: dict[str, SourceBatch], extra: dict[str, pl.DataFrame]) -> dict[str, SourceBatch]:
    """The epoch's source batches, with the dead letters lookup tables gave added under their names."""
    merged = dict(batches)
    for name, dead in extra.items():
        if name in merged:
            merged[name] = SourceBatch(merged[name].rows, pl.concat([merged[name].dead_letters, dead]))
        else:
            merged[name] = SourceBatch(pl.DataFrame(), dead)
    return merged
