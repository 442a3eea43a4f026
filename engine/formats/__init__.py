"""Record formats: bytes to typed rows and back, for connectors whose records are byte strings (Kafka messages).

One `Format` per Flink format name ('json', 'csv', 'raw', 'avro', 'debezium-json', 'canal-json'). A format is
built for a set of columns (a table's value columns, or its key columns) with its own options (prefix removed:
'json.ignore-parse-errors' reaches the json format as 'ignore-parse-errors'), and

- `decode(values)` turns a Binary series (one record each; NULL for a Kafka tombstone) into typed rows. A record
  that cannot be read becomes a dead letter with its reason: never an exception, never a silently dropped row.
  A changelog format may turn one record into several rows (an update is -U then +U); `Decoded.record` maps
  each row to its record, so that connectors can add the record's metadata (partition, offset, ...);
- `encode(rows)` turns rows (with `__op` for a changelog format) into one Binary value per row.

Decoding follows the same rules whatever records share a batch, so results never depend on epoch or fetch size.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass

import polars as pl

from engine.sources.base import typed_from_text
from engine.sources.json_lines import parse_json

#: the dead-letter frame a decoder returns: the index of each bad record in the input, and why
DEAD_SCHEMA: dict[str, pl.DataType] = {"record": pl.Int64(), "reason": pl.String()}


@dataclass
class Decoded:
    #: the declared columns, typed (plus `__op` for a changelog format)
    rows: pl.DataFrame
    #: for each row, the index (Int64) of the input record it came from
    record: pl.Series
    #: the records that could not be read: record (Int64 index), reason
    dead: pl.DataFrame


class FormatError(ValueError):
    """A format cannot be built for these columns or options (a user error: the message says which)."""


class Format(ABC):
    #: whether decoded rows carry `__op` (+I, -U, +U, -D) rather than being inserts
    changelog: bool = False

    def __init__(self, columns: Mapping[str, pl.DataType], options: Mapping[str, str]) -> None:
        self.columns = dict(columns)
        self.options = dict(options)

    @abstractmethod
    def decode(self, values: pl.Series, required: tuple[str, ...] = ()) -> Decoded:
        """Rows from a Binary series; a record whose `required` column (the event time) is NULL is a dead letter."""

    @abstractmethod
    def encode(self, rows: pl.DataFrame) -> pl.Series:
        """One Binary value per row of `rows`."""


def utf8(values: pl.Series) -> pl.Series:
    """`values` (Binary) as text; NULL where a value is not valid UTF-8 (or is NULL)."""
    values = values.cast(pl.Binary)
    try:
        return values.cast(pl.String)  # one vectorised check for the usual batch, all valid
    except pl.exceptions.PolarsError:
        # the batch holds invalid bytes: find them record by record (rare, and only for this batch)
        return pl.Series(values.name, [_decoded(v) for v in values.to_list()], dtype=pl.String)


def _decoded(value: bytes | None) -> str | None:
    try:
        return None if value is None else value.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _context(values: pl.Series) -> pl.DataFrame:
    """The frame the text readers report dead letters in: file, position (the record's index), raw, raw_bytes."""
    text = utf8(values)
    return pl.DataFrame(
        {
            "file": pl.Series([""] * len(values), dtype=pl.String),
            "position": pl.int_range(0, len(values), eager=True, dtype=pl.Int64),
            "raw": text.fill_null(""),
            "raw_bytes": values.cast(pl.Binary),
        }
    )


def _from_text_batch(
    rows: pl.DataFrame, ok: pl.Series, parse_dead: pl.DataFrame, context: pl.DataFrame, columns, required
) -> Decoded:
    batch = typed_from_text(rows, columns, context.filter(ok), required)
    good_index = context.filter(ok).get_column("position")
    dead_typed = batch.dead_letters.select(pl.col("position").alias("record"), "reason")
    dead = pl.concat([parse_dead.select(pl.col("position").alias("record"), "reason"), dead_typed]).cast(
        DEAD_SCHEMA  # type: ignore[arg-type]
    )
    keep = ~good_index.is_in(dead_typed.get_column("record").implode())
    return Decoded(batch.rows, good_index.filter(keep).alias("record"), dead.sort("record"))


class JsonFormat(Format):
    """One JSON object per record, under the JSON rules of engine.sources.json_lines."""

    def decode(self, values: pl.Series, required: tuple[str, ...] = ()) -> Decoded:
        context = _context(values)
        valid = context.get_column("raw_bytes").is_null() | utf8(values).is_not_null()
        bad = context.filter(~valid | values.is_null())
        reasons = bad.select(
            "position",
            pl.when(pl.col("raw_bytes").is_null())
            .then(pl.lit("the message has no value (a tombstone)"))
            .otherwise(pl.lit("the record is not valid UTF-8"))
            .alias("reason"),
        )
        readable = context.filter(valid & values.is_not_null())
        parsed = parse_json(readable, self.columns)
        parse_dead = pl.concat([reasons, parsed.dead.select("position", "reason")])
        return _from_text_batch(parsed.rows, parsed.ok, parse_dead, readable, self.columns, required)

    def encode(self, rows: pl.DataFrame) -> pl.Series:
        names = [c for c in self.columns if c in rows.columns]
        return rows.select(pl.struct(names).struct.json_encode().cast(pl.Binary).alias("value")).to_series()


class RawFormat(Format):
    """The record's bytes as the table's single column (BYTES, or STRING in UTF-8)."""

    def __init__(self, columns: Mapping[str, pl.DataType], options: Mapping[str, str]) -> None:
        super().__init__(columns, options)
        if len(self.columns) != 1:
            raise FormatError(f"format 'raw' reads one column, but {len(self.columns)} are declared")
        self.name, self.dtype = next(iter(self.columns.items()))
        if not isinstance(self.dtype, pl.String | pl.Binary):
            raise FormatError("format 'raw' reads a STRING or BYTES column")

    def decode(self, values: pl.Series, required: tuple[str, ...] = ()) -> Decoded:
        index = pl.int_range(0, len(values), eager=True, dtype=pl.Int64).alias("record")
        if isinstance(self.dtype, pl.Binary):
            return Decoded(pl.DataFrame({self.name: values.cast(pl.Binary)}), index, pl.DataFrame(schema=DEAD_SCHEMA))
        text = values.cast(pl.Binary).cast(pl.String, strict=False)
        bad = text.is_null() & values.is_not_null()
        dead = pl.DataFrame(
            {"record": index.filter(bad), "reason": "the record is not valid UTF-8"}, schema=DEAD_SCHEMA
        )
        return Decoded(pl.DataFrame({self.name: text.filter(~bad)}), index.filter(~bad), dead)

    def encode(self, rows: pl.DataFrame) -> pl.Series:
        return rows.get_column(self.name).cast(pl.Binary).alias("value")


FORMATS: dict[str, type[Format]] = {"json": JsonFormat, "raw": RawFormat}


def make_format(name: str, columns: Mapping[str, pl.DataType], options: Mapping[str, str]) -> Format:
    """The format `name` for `columns`, given the table's options: those under '<name>.' reach it unprefixed."""
    kind = FORMATS.get(name.lower())
    if kind is None:
        raise FormatError(f"format '{name}' is not supported here; formats are {', '.join(sorted(FORMATS))}")
    own = {k[len(name) + 1 :]: v for k, v in options.items() if k.startswith(name + ".")}
    return kind(columns, own)
