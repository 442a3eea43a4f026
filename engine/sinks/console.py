"""`'connector' = 'print'` (rows to stdout with their row kind, Flink style: +I[...], -U[...], +U[...], -D[...])
and `'connector' = 'blackhole'` (discard).

print is not transactional: an epoch replayed after a crash prints its rows again.
"""

from __future__ import annotations

import sys

import polars as pl

from engine.sinks.base import SinkConnector
from sql.plan import INSERT, OP_COLUMN


class PrintSink(SinkConnector):
    exactly_once = False

    def write(self, epoch: int, rows: pl.DataFrame) -> None:
        if not rows.height:
            return
        prefix = self.table.options.get("print-identifier")
        lead = f"{prefix}> " if prefix else ""
        columns = [c for c in rows.columns if c != OP_COLUMN]
        kind = pl.col(OP_COLUMN) if OP_COLUMN in rows.columns else pl.lit(INSERT)
        text = rows.select(
            pl.format(
                "{}[{}]",
                kind,
                pl.concat_str([pl.col(c).cast(pl.String).fill_null("NULL") for c in columns], separator=", "),
            )
        ).to_series()
        sys.stdout.write("".join(f"{lead}{line}\n" for line in text))
        sys.stdout.flush()


class BlackholeSink(SinkConnector):
    def write(self, epoch: int, rows: pl.DataFrame) -> None:
        return None
