"""Sink connectors, chosen by the `'connector'` option of CREATE TABLE."""

from __future__ import annotations

from pathlib import Path

from engine.sinks.base import SinkConnector
from engine.sinks.console import BlackholeSink, PrintSink
from engine.sinks.delta import DeltaSink
from engine.sinks.kafka import KafkaSink, UpsertKafkaSink
from engine.sources.base import ConnectorError
from sql.catalog import TableDef

SINKS: dict[str, type[SinkConnector]] = {
    "delta": DeltaSink,
    "print": PrintSink,
    "blackhole": BlackholeSink,
    "kafka": KafkaSink,
    "upsert-kafka": UpsertKafkaSink,
}


def make_sink(table: TableDef, base_dir: Path, app_id: str) -> SinkConnector:
    kind = SINKS.get(table.connector.lower())
    if kind is None:
        where = table.where("connector")
        raise ConnectorError(
            f"table '{table.name}'{where}: connector '{table.connector}' cannot be written; "
            f"sinks are {', '.join(sorted(SINKS))}"
        )
    try:
        return kind(table, base_dir, app_id)
    except ValueError as err:
        raise ConnectorError(str(err)) from None


__all__ = ["SinkConnector", "make_sink"]
