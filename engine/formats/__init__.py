"""Record formats: bytes to typed rows and back, for connectors whose records are byte strings (Kafka messages).

One `Format` per Flink format name, one module each: json, csv, raw, avro, debezium-json and canal-json
(changelog_json). A format is built for a set of columns (a table's value columns, or its key columns) with its
own options (prefix removed: 'json.ignore-parse-errors' reaches the json format as 'ignore-parse-errors'), and

- `decode(values)` turns a Binary series (one record each; NULL for a Kafka tombstone) into typed rows. A record
  that cannot be read becomes a dead letter with its reason: never an exception, never a silently dropped row.
  A changelog format may turn one record into several rows (an update is -U then +U); `Decoded.record` maps
  each row to its record, so that connectors can add the record's metadata (partition, offset, ...);
- `encode(rows)` turns rows (with `__op` for a changelog format) into one Binary value per row.

Decoding follows the same rules whatever records share a batch, so results never depend on epoch or fetch size.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import polars as pl

from engine.formats.avro import AvroFormat
from engine.formats.base import DEAD_SCHEMA, Decoded, Format, FormatError, utf8
from engine.formats.changelog_json import CanalJson, DebeziumJson
from engine.formats.csv import CsvFormat
from engine.formats.json import JsonFormat
from engine.formats.raw import RawFormat

FORMATS: dict[str, type[Format]] = {
    "json": JsonFormat,
    "csv": CsvFormat,
    "raw": RawFormat,
    "avro": AvroFormat,
    "debezium-json": DebeziumJson,
    "canal-json": CanalJson,
}
CHANGELOG_FORMATS = tuple(name for name, kind in FORMATS.items() if kind.changelog)


def make_format(
    name: str, columns: Mapping[str, pl.DataType], options: Mapping[str, str], not_null: Iterable[str] = ()
) -> Format:
    """The format `name` for `columns`, given the table's options: those under '<name>.' reach it unprefixed.
    `not_null`: the columns that cannot be NULL (the PRIMARY KEY's, as in Flink; it shapes the Avro schema)."""
    kind = FORMATS.get(name.lower())
    if kind is None:
        raise FormatError(f"format '{name}' is not supported here; formats are {', '.join(sorted(FORMATS))}")
    own = {k[len(name) + 1 :]: v for k, v in options.items() if k.startswith(name + ".")}
    fmt = kind(columns, own)
    fmt.not_null = frozenset(not_null)
    return fmt


__all__ = [
    "CHANGELOG_FORMATS",
    "DEAD_SCHEMA",
    "FORMATS",
    "AvroFormat",
    "CanalJson",
    "CsvFormat",
    "DebeziumJson",
    "Decoded",
    "Format",
    "FormatError",
    "JsonFormat",
    "RawFormat",
    "make_format",
    "utf8",
]
