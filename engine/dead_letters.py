"""Dead-letter tables: the records a source could not read, with their reason, one Delta table per source.

A table's columns are those of its source's dead letters: a file source's (file, position, raw, reason,
raw_bytes: DEAD_LETTER_SCHEMA) or a Kafka source's (topic, partition, offset, key, timestamp, raw, raw_bytes,
reason), each after `epoch`. A source that declares encrypted columns ('encrypt.columns') has its dead
letters' raw text, raw bytes and key encrypted (engine.encryption). Each epoch appends its dead letters once (marker
`<pipeline>/dead_letters/<source>`, epoch), so a replayed epoch never writes them twice; the manifest records
each table's version with the checkpoint.
"""

from __future__ import annotations

import polars as pl

from engine import encryption
from engine.delta_tables import AppendTable, ensure_table
from engine.sources.base import DEAD_LETTER_SCHEMA
from engine.state_dir import StateDir

DEAD_LETTER_TABLE_SCHEMA: dict[str, pl.DataType] = {"epoch": pl.Int64(), **DEAD_LETTER_SCHEMA}


class DeadLetters:
    def __init__(self, directory: StateDir, pipeline_id: str, sources: list[str]) -> None:
        self.dir = directory
        self.pipeline_id = pipeline_id
        self.tables: dict[str, AppendTable] = {}
        for name in sources:  # tables earlier runs created
            if directory.dead_letters(name).exists():
                self._open(name)

    def _open(self, name: str, schema: dict[str, pl.DataType] | None = None) -> AppendTable:
        """The table of `name`'s dead letters, created with `schema` (its source's dead-letter columns)."""
        columns = {"epoch": pl.Int64(), **schema} if schema is not None else DEAD_LETTER_TABLE_SCHEMA
        # A record that could not be read still holds the source's sensitive values: seal it whole.
        key = encryption.dead_letter_key(name)
        sealed = {c: key for c in encryption.DEAD_LETTER_COLUMNS if c in columns} if key is not None else None
        table = ensure_table(self.dir.dead_letters(name), columns, encrypt=sealed)
        self.tables[name] = AppendTable(table, "dead-letters.commit")
        return self.tables[name]

    def marker(self, name: str) -> str:
        return marker(self.pipeline_id, name)

    def write(self, epoch: int, frames: dict[str, pl.DataFrame]) -> dict[str, int]:
        """Append each table's dead letters of `epoch` (once); returns their counts."""
        counts: dict[str, int] = {}
        for name, dead in frames.items():
            if dead.height == 0:
                continue
            counts[name] = dead.height
            table = self.tables.get(name) or self._open(name, dict(dead.schema))
            rows = dead.with_columns(pl.lit(epoch, dtype=pl.Int64).alias("epoch")).select("epoch", *dead.columns)
            table.append_once(rows, self.marker(name), epoch)
        return counts


def marker(pipeline_id: str, name: str) -> str:
    """The transaction app id of a dead-letter table's per-epoch marker."""
    return f"{pipeline_id}/dead_letters/{name}"
