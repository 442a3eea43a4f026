"""Source connectors, chosen by the `'connector'` option of CREATE TABLE."""

from __future__ import annotations

from pathlib import Path

from engine.sources.base import ConnectorError, Source, SourceBatch
from engine.sources.datagen import DatagenSource
from engine.sources.delta import DeltaSource
from engine.sources.delta_changes import DeltaChangesSource, reads_changes
from engine.sources.filesystem import FileSource
from engine.sources.kafka import KafkaSource
from engine.sources.nexmark import NexmarkSource
from sql.catalog import TableDef

SOURCES: dict[str, type[Source]] = {
    "filesystem": FileSource,
    "datagen": DatagenSource,
    "delta": DeltaSource,
    "nexmark": NexmarkSource,
    "kafka": KafkaSource,
    "upsert-kafka": KafkaSource,
}


def make_source(table: TableDef, base_dir: Path) -> Source:
    kind = SOURCES.get(table.connector.lower())
    if kind is None:
        where = table.where("connector")
        raise ConnectorError(
            f"table '{table.name}'{where}: connector '{table.connector}' cannot be read; "
            f"sources are {', '.join(sorted(SOURCES))}"
        )
    if kind is DeltaSource and reads_changes(table.options):
        kind = DeltaChangesSource
    return kind(table, base_dir)


__all__ = ["ConnectorError", "Source", "SourceBatch", "make_source"]
