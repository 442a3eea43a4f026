"""Late rows: kept, never dropped silently. Each stateful operator that judges lateness owns one table:

    <the input row's visible columns>  _watermark (the watermark the row arrived behind)  _reason  _epoch

Rows are collected while the epoch runs and appended when the operator commits (a restart first discards
what a crashed run appended after its last checkpoint, so nothing is appended twice). Without a path the
table lives in memory (`memory`: the committed rows), for operators run in tests.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path

import polars as pl

from engine.delta_tables import AppendTable, ensure_table, open_table
from sql.plan import WATERMARK_COLUMN


class LateRows:
    def __init__(self, path: Path | None, app_id: str, columns: list[str]) -> None:
        self.path = path
        self.app_id = app_id
        self.columns = columns
        # The table exists once its first commit does: a run killed between creating the folder and that commit
        # leaves a folder without a log, and the table is then created afresh, with its columns, when rows come.
        existing = open_table(path) if path is not None else None
        self.table: AppendTable | None = AppendTable(existing, "state.commit") if existing is not None else None
        self.memory: list[pl.DataFrame] = []
        self.pending: list[pl.DataFrame] = []  # appended to by parallel workers: list.append is atomic

    def add(self, rows: pl.DataFrame, reason: pl.Expr | str) -> None:
        """Record `rows` (with their `__wm` column) as late, for `reason`."""
        if rows.height == 0:
            return
        frame = rows.select(
            *self.columns,
            pl.col(WATERMARK_COLUMN).cast(pl.Datetime("us", "UTC")).alias("_watermark"),
            (pl.lit(reason) if isinstance(reason, str) else reason).cast(pl.String).alias("_reason"),
        )
        self.pending.append(frame)

    def split(self, rows: pl.DataFrame, late: pl.Expr, reason: pl.Expr | str) -> pl.DataFrame:
        """Record the rows for which `late` holds (NULL counts as on time); return the others."""
        mask = rows.select(late.fill_null(False)).to_series()
        if not mask.any():  # the usual case: nothing is late
            return rows
        self.add(rows.filter(mask), reason)
        return rows.filter(~mask)

    @property
    def count(self) -> int:
        return sum(frame.height for frame in self.pending)

    def commit(self, epoch: int) -> None:
        self.detach(epoch)()

    def detach(self, epoch: int) -> Callable[[], None]:
        """Take the late rows held now; the returned call appends them as epoch `epoch` (`commit`)."""
        pending, self.pending = self.pending, []
        return functools.partial(self._append, epoch, pending)

    def _append(self, epoch: int, pending: list[pl.DataFrame]) -> None:
        if not sum(frame.height for frame in pending):
            return
        rows = pl.concat(pending).with_columns(pl.lit(epoch, pl.Int64).alias("_epoch"))
        if self.path is None:
            self.memory.append(rows)
            return
        if self.table is None:
            self.table = AppendTable(ensure_table(self.path, dict(rows.schema)), "state.commit")
        self.table.append(rows, self.app_id, epoch)

    def entry(self, name: str) -> dict[str, tuple[str, Path, int, str | None]]:
        """The manifest entry of the table, once it exists."""
        return {} if self.table is None else {name: ("late", self.path, self.table.version(), None)}
