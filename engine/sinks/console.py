"""`'connector' = 'print'` (rows to stdout, Flink style) and `'connector' = 'blackhole'` (discard).

print is not transactional: an epoch replayed after a crash prints its rows again.
"""

from __future__ import annotations

import sys

import polars as pl

from engine.sinks.base import SinkConnector


class PrintSink(SinkConnector):
    exactly_once = False

    def write(self, epoch: int, rows: pl.DataFrame) -> None:
        if not rows.height:
            return
        prefix = self.table.options.get("print-identifier")
        lead = f"{prefix}> " if prefix else ""
        text = rows.select(
            pl.concat_str([pl.col(c).cast(pl.String).fill_null("NULL") for c in rows.columns], separator=", ")
        ).to_series()
        sys.stdout.write("".join(f"{lead}+I[{line}]\n" for line in text))
        sys.stdout.flush()


class BlackholeSink(SinkConnector):
    def write(self, epoch: int, rows: pl.DataFrame) -> None:
        return None
