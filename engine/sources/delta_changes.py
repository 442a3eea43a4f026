"""`'connector' = 'delta'` with `'read.change-data-feed' = 'true'`: streams a Delta table's change data feed.

Where the plain Delta source streams the rows each version appended (an append-only table), this one streams
what each version changed: inserts, updates (the row before, then after) and deletes, with their row kind in
`__op`, so the table is a changelog like a debezium-json stream: a GROUP BY over it retracts, and with a PRIMARY
KEY and a watermark it is a versioned table for an event-time temporal join. The table must have been written
with `delta.enableChangeDataFeed = true` (Delta records update and delete images only then).

A position is (version, row) as in the plain source, counted in the version's change rows. A version's rows are
ordered before and then after images (`-U` and `-D` before `+I` and `+U`; a Delta version changes a row at most
once), each group by its values (all columns, as stored). delta-rs reads a version's files concurrently, so the
order it gives differs from one read to the next: a position must name the same rows when a later run (or a
replayed epoch) reads the version again, and rows equal in every column are interchangeable.

Stored values are converted as every typed source converts them (a value that does not fit the declared type is a
dead letter naming the version and its row there, never a silent NULL).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa

from engine import paths
from engine.delta_tables import open_table
from engine.sources.base import ConnectorError
from engine.sources.delta import DeltaSource
from sql.plan import DELETE, INSERT, OP_COLUMN, UPDATE_AFTER, UPDATE_BEFORE

#: Delta's change types, as row kinds, in the order a version's rows are streamed
CHANGE_KINDS = {"update_preimage": UPDATE_BEFORE, "delete": DELETE, "insert": INSERT, "update_postimage": UPDATE_AFTER}
OPTION = "read.change-data-feed"
#: what delta-rs adds to a change row besides the table's columns
CDF_COLUMNS = frozenset(("_change_type", "_commit_version", "_commit_timestamp"))


def reads_changes(options: dict[str, str]) -> bool:
    return options.get(OPTION, "false").strip().lower() == "true"


class DeltaChangesSource(DeltaSource):
    def __init__(self, table: Any, base_dir: Path) -> None:
        super().__init__(table, base_dir)
        self._counts: dict[int, int] = {}
        self._frames: dict[int, pl.DataFrame] = {}  # the last versions read: planning counts, reading reuses

    def empty(self) -> pl.DataFrame:
        return super().empty().with_columns(pl.lit(None, pl.String).alias(OP_COLUMN))

    def _rows_in(self, version: int) -> int:
        if version not in self._counts:
            self._counts[version] = self._changes(version).height
        return self._counts[version]

    def _changes(self, version: int) -> pl.DataFrame:
        if version in self._frames:
            return self._frames[version]
        self._version_adds(version)  # every file the version's log names stays inside the roots
        with paths.reaching(self.table.name, self.path):
            handle = open_table(self.path)
            try:
                reader = handle.load_cdf(starting_version=version, ending_version=version)  # type: ignore[union-attr]
                frame = pl.from_arrow(pa.table(reader.read_all()))  # delta-rs hands over an arro3 table
            except Exception as err:  # delta-rs: no change data for this version, or the feed is off
                text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
                raise ConnectorError(
                    f"table '{self.table.name}': cannot read the change data feed of {self.path} at version "
                    f"{version} (written with 'delta.enableChangeDataFeed' = 'true'?): {text}"
                ) from None
        assert isinstance(frame, pl.DataFrame)
        rank = pl.col("_change_type").replace_strict(
            {kind: i for i, kind in enumerate(CHANGE_KINDS)}, default=len(CHANGE_KINDS), return_dtype=pl.Int8
        )
        ops = pl.col("_change_type").replace_strict(CHANGE_KINDS, default=None, return_dtype=pl.String)
        stored = [n for n in frame.columns if n not in CDF_COLUMNS]
        frame = frame.sort([rank, *stored], nulls_last=True).select(
            *[pl.col(n) if n in frame.columns else pl.lit(None, dtype=t).alias(n) for n, t in self.schema.items()],
            ops.alias(OP_COLUMN),
        )
        if len(self._frames) >= 4:
            self._frames.pop(min(self._frames))
        self._frames[version] = frame
        return frame

    @property
    def _typed(self) -> dict[str, pl.DataType]:
        return {**self.schema, OP_COLUMN: pl.String()}

    def _version_rows(self, version: int) -> pl.DataFrame | None:
        return self._changes(version)
