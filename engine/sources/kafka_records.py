"""Kafka messages to a table's rows: the value format, the key format (key.fields), the metadata columns, and
upsert-kafka's tombstones; unreadable messages become dead letters with their Kafka coordinates.

The fetched messages arrive as one frame (`MESSAGE_SCHEMA`), in (partition, offset) order; every step below is
vectorised over it, and a message's rows keep its place, so a slice decodes to the same rows whatever the fetch.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import polars as pl

from engine.formats import Decoded, FormatError, make_format
from engine.sources.base import SPLIT_COLUMN, ConnectorError, SourceBatch
from sql.catalog import TableDef
from sql.plan import DELETE, OP_COLUMN, UPDATE_AFTER

MESSAGE_SCHEMA: dict[str, pl.DataType] = {
    "topic": pl.String(),
    "partition": pl.Int32(),
    "offset": pl.Int64(),
    "key": pl.Binary(),
    "value": pl.Binary(),
    "timestamp": pl.Int64(),  # milliseconds since 1970, NULL when the message has none
    "timestamp_type": pl.Int8(),
    "headers": pl.List(pl.Struct({"key": pl.String(), "value": pl.Binary()})),
    "leader_epoch": pl.Int32(),
}
#: a Kafka source's dead-letter table (after `epoch`): where the message is, its key and bytes, and why
KAFKA_DEAD_LETTER_SCHEMA: dict[str, pl.DataType] = {
    "topic": pl.String(),
    "partition": pl.Int32(),
    "offset": pl.Int64(),
    "key": pl.Binary(),
    "timestamp": pl.Datetime("ms", "UTC"),
    "raw": pl.String(),
    "raw_bytes": pl.Binary(),
    "reason": pl.String(),
}
_TIMESTAMP_TYPES = {0: "NoTimestampType", 1: "CreateTime", 2: "LogAppendTime"}
_RECORD = "\x00record"


def split_id(topic: pl.Expr, partition: pl.Expr) -> pl.Expr:
    """A topic-partition's name as a watermark split: 'topic:partition' (Kafka topic names have no ':')."""
    return pl.concat_str([topic, pl.lit(":"), partition.cast(pl.String)])


def format_options(options: Mapping[str, str], side: str) -> dict[str, str]:
    """A format's options for the key or the value: Flink accepts 'value.json.x' and, for the value, 'json.x'."""
    own = {k[len(side) + 1 :]: v for k, v in options.items() if k.startswith(side + ".")}
    if side == "value":
        return {**{k: v for k, v in options.items() if not k.startswith(("key.", "value."))}, **own}
    return own


class Decoder:
    """Decodes fetched messages into the table's physical columns (plus `__op` for a changelog)."""

    def __init__(self, table: TableDef, upsert: bool) -> None:
        self.table = table
        self.upsert = upsert
        options = {k: v.strip() if k.endswith("format") else v for k, v in table.options.items()}
        self.physical = table.physical_schema
        self.metadata = {c.name: c.metadata for c in table.columns if c.metadata is not None and c.computed is None}
        self.prefix = options.get("key.fields-prefix", "")
        if upsert:
            self.key_fields = list(table.primary_key)
        else:
            self.key_fields = [n.strip() for n in options.get("key.fields", "").split(";") if n.strip()]
        self.key_fields = [self._column_name(n) for n in self.key_fields]
        except_key = options.get("value.fields-include", "ALL").strip().upper() == "EXCEPT_KEY"
        self.value_columns = {
            n: t
            for n, t in self.physical.items()
            if n not in self.metadata and not (except_key and n in self.key_fields)
        }
        value_name = (options.get("value.format") or options.get("format") or "").lower()
        self.value_format = self._format(value_name, self.value_columns, format_options(options, "value"), "value")
        self.changelog = self.value_format.changelog or upsert
        # The key is decoded when it supplies columns the value lacks (EXCEPT_KEY), or a tombstone's key.
        self.key_format = None
        if self.key_fields and (except_key or upsert):
            key_columns = {n.removeprefix(self.prefix): self.physical[n] for n in self.key_fields}
            key_name = options.get("key.format", "").lower()
            self.key_format = self._format(key_name, key_columns, format_options(options, "key"), "key")
        watermark = table.watermark
        time_column = watermark.column if watermark is not None else None
        self.value_required = (time_column,) if time_column in self.value_columns else ()
        self.key_required = (
            (time_column.removeprefix(self.prefix),)
            if time_column in self.key_fields and time_column not in self.value_columns
            else ()
        )

    def _column_name(self, name: str) -> str:
        column = self.table.column(name)
        return column.name if column is not None else name

    def _format(self, name: str, columns: dict[str, pl.DataType], options: dict[str, str], side: str) -> Any:
        try:
            return make_format(name, columns, options)
        except FormatError as err:
            option = (
                "key.format"
                if side == "key"
                else ("value.format" if "value.format" in self.table.options else "format")
            )
            raise ConnectorError(f"table '{self.table.name}'{self.table.where(option)}: {side} format: {err}") from None

    @property
    def schema(self) -> dict[str, pl.DataType]:
        return {**self.physical, **({OP_COLUMN: pl.String()} if self.changelog else {})}

    def decode(self, messages: pl.DataFrame) -> SourceBatch:
        index = pl.int_range(0, messages.height, eager=True, dtype=pl.Int64)
        values = messages.get_column("value")
        tombstone = values.is_null() if self.upsert else pl.Series([False] * messages.height, dtype=pl.Boolean)
        live = index.filter(~tombstone)
        decoded = self.value_format.decode(values.filter(~tombstone), self.value_required)
        rows = decoded.rows.with_columns(live.gather(decoded.record).alias(_RECORD))
        dead = [decoded.dead.select(live.gather(decoded.dead.get_column("record")).alias(_RECORD), "reason")]
        if self.upsert:
            rows = rows.with_columns(pl.lit(UPDATE_AFTER).alias(OP_COLUMN))
        if self.key_format is not None:
            keys = self._keys(messages.get_column("key"))
            dead.append(keys.dead.select(pl.col("record").alias(_RECORD), "reason"))
            key_rows = keys.rows.rename({n.removeprefix(self.prefix): n for n in self.key_fields}).with_columns(
                keys.record.alias(_RECORD)
            )
            from_key = [n for n in self.key_fields if n not in rows.columns]
            rows = rows.join(key_rows.select(_RECORD, *from_key), on=_RECORD, how="inner", maintain_order="left")
            if self.upsert:  # a tombstone deletes its key: the key columns set, the others NULL
                deletes = key_rows.filter(pl.col(_RECORD).is_in(index.filter(tombstone).implode()))
                deletes = deletes.with_columns(pl.lit(DELETE).alias(OP_COLUMN))
                rows = pl.concat([rows, deletes], how="diagonal_relaxed")
        rows = rows.sort(_RECORD, maintain_order=True)
        record = rows.get_column(_RECORD)
        meta = messages.select(self._metadata_columns()).select(pl.all().gather(record)) if self.metadata else None
        columns = [
            (pl.col(n) if n in rows.columns else pl.lit(None)).cast(t).alias(n)
            for n, t in self.schema.items()
            if n not in self.metadata
        ]
        out = rows.select(columns)
        if meta is not None:
            out = pl.concat([out, meta], how="horizontal")
        split = messages.select(split_id(pl.col("topic"), pl.col("partition")).gather(record).alias(SPLIT_COLUMN))
        out = pl.concat([out.select(list(self.schema)), split], how="horizontal")
        return SourceBatch(out, self._dead_letters(messages, pl.concat(dead)))

    def _keys(self, keys: pl.Series) -> Decoded:
        assert self.key_format is not None
        decoded = self.key_format.decode(keys, self.key_required)
        reasons = decoded.dead.with_columns(("key: " + pl.col("reason")).alias("reason"))
        return Decoded(decoded.rows, decoded.record, reasons)

    def _metadata_columns(self) -> list[pl.Expr]:
        exprs = []
        for name, key in self.metadata.items():
            dtype = self.physical[name]
            if key == "timestamp":
                source = pl.col("timestamp").cast(pl.Datetime("ms")).dt.replace_time_zone("UTC")
            elif key == "timestamp-type":
                source = pl.col("timestamp_type").replace_strict(_TIMESTAMP_TYPES, return_dtype=pl.String)
            elif key == "leader-epoch":
                source = pl.col("leader_epoch")
            else:  # topic, partition, offset, key, headers: the message's own
                source = pl.col(key)
            exprs.append(source.cast(dtype, strict=False).alias(name))
        return exprs

    def _dead_letters(self, messages: pl.DataFrame, dead: pl.DataFrame) -> pl.DataFrame:
        if dead.height == 0:
            return pl.DataFrame(schema=KAFKA_DEAD_LETTER_SCHEMA)
        reasons = dead.group_by(_RECORD, maintain_order=True).agg(pl.col("reason").str.join("; ")).sort(_RECORD)
        picked = messages.select(pl.all().gather(reasons.get_column(_RECORD)))
        raw = [None if v is None else v.decode("utf-8", errors="replace") for v in picked.get_column("value")]
        return picked.select(
            "topic",
            "partition",
            "offset",
            "key",
            pl.col("timestamp").cast(pl.Datetime("ms")).dt.replace_time_zone("UTC"),
            pl.Series("raw", raw, dtype=pl.String),
            pl.col("value").alias("raw_bytes"),
            reasons.get_column("reason"),
        ).cast(KAFKA_DEAD_LETTER_SCHEMA)  # type: ignore[arg-type]
