"""What every format shares: `Format`, `Decoded`, and the conversions between typed columns and their text.

Text formats (json, csv, the changelog JSON formats) first cut each record into one text value per declared
column, then `typed` converts those texts to the declared types under one set of rules (the file sources'
rules, engine.sources.base), so a value reads the same whatever format or batch it arrives in.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass

import polars as pl

from engine.sources.base import _from_text
from sql.types import sql_name

#: the dead-letter frame a decoder returns: the index of each bad record in the input, and why
DEAD_SCHEMA: dict[str, pl.DataType] = {"record": pl.Int64(), "reason": pl.String()}
TRUE = ("true",)


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
    # The options each format takes are listed once, in sql.kafka_options.FORMAT_OPTIONS (checked when planning).
    #: columns declared NOT NULL (a PRIMARY KEY's, as Flink makes them): Avro writes them without a null branch
    not_null: frozenset[str] = frozenset()

    def __init__(self, columns: Mapping[str, pl.DataType], options: Mapping[str, str]) -> None:
        # dtype classes (pl.Int64) become instances (pl.Int64()): the type tests below look at instances
        self.columns = {n: t() if isinstance(t, type) else t for n, t in columns.items()}
        self.options = dict(options)

    def flag(self, name: str) -> bool:
        return self.options.get(name, "false").strip().lower() in TRUE

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


def index(n: int) -> pl.Series:
    return pl.int_range(0, n, eager=True, dtype=pl.Int64).alias("record")


def no_dead() -> pl.DataFrame:
    return pl.DataFrame(schema=DEAD_SCHEMA)


def dead(records: pl.Series, reason: str | pl.Series) -> pl.DataFrame:
    return pl.DataFrame({"record": records.cast(pl.Int64), "reason": reason}, schema=DEAD_SCHEMA)


def readable(values: pl.Series) -> tuple[pl.Series, pl.Series, pl.DataFrame]:
    """Split a batch of messages into text: (text of the readable ones, their record index, dead letters for
    tombstones and invalid UTF-8)."""
    text = utf8(values)
    records = index(len(values))
    tombstone = values.is_null()
    invalid = text.is_null() & ~tombstone
    reasons = pl.concat(
        [
            dead(records.filter(tombstone), "the message has no value (a tombstone)"),
            dead(records.filter(invalid), "the record is not valid UTF-8"),
        ]
    )
    ok = text.is_not_null()
    return text.filter(ok), records.filter(ok), reasons


def typed(
    text: pl.DataFrame,
    record: pl.Series,
    columns: Mapping[str, pl.DataType],
    required: tuple[str, ...] = (),
    ignore_errors: bool = False,
    bytes_encoding: str = "base64",
    keep: tuple[str, ...] = (),
) -> Decoded:
    """Text columns (one row per record, aligned with `record`) to the declared types.

    A value that does not convert makes its record a dead letter naming the column and value. With
    `ignore_errors` ('<format>.ignore-parse-errors' = 'true', where Flink sets the field to NULL and goes on)
    the row is kept with NULL there, and the dead letter is still written, saying so: nothing is lost
    silently. A NULL `required` column (the event time) always makes a dead letter and no row.
    `keep`: extra columns of `text` carried to the rows as they are (`__op`)."""
    names = list(columns)
    converted = []
    problems = []
    for name, dtype in columns.items():
        source = pl.col(name) if name in text.columns else pl.lit(None, dtype=pl.String)
        if isinstance(dtype, pl.Binary) and bytes_encoding == "base64":
            value = source.str.decode("base64", strict=False)
            shown = "BYTES (base64)"
        else:
            value = _from_text(source, dtype)
            shown = sql_name(dtype) + (" (years 1-9999)" if isinstance(dtype, pl.Datetime) else "")
        converted.append(value.alias(name))
        problems.append(
            pl.when(source.is_not_null() & value.is_null()).then(
                pl.format("column '{}': cannot read '{}' as {}", pl.lit(name), source.str.slice(0, 80), pl.lit(shown))
            )
        )
    missing = [
        pl.when(pl.col(name).is_null()).then(pl.lit(f"column '{name}' is NULL or missing, and it is the event time"))
        for name in required
    ]
    frame = text.with_columns(pl.concat_str(problems, separator="; ", ignore_nulls=True).alias("\x00bad")).select(
        *converted, *[pl.col(k) for k in keep], "\x00bad"
    )
    frame = frame.with_columns(
        pl.concat_str(missing, separator="; ", ignore_nulls=True).alias("\x00missing")
        if missing
        else pl.lit("").alias("\x00missing"),
        record.alias("\x00record"),
    )
    bad = pl.col("\x00bad").fill_null("") != ""
    lost = pl.col("\x00missing").fill_null("") != ""
    if ignore_errors:
        # the failed fields are NULL already; only an event time that is NULL (now or before) loses the row
        frame = frame.with_columns(
            pl.when(bad)
            .then(pl.format("{} (set to NULL: 'ignore-parse-errors' is 'true')", pl.col("\x00bad")))
            .alias("\x00bad")
        )
        dropped = lost
    else:
        dropped = bad | lost
    reason = pl.concat_str([pl.col("\x00bad"), pl.col("\x00missing")], separator="; ", ignore_nulls=True)
    reasons = (
        frame.filter(bad | lost)
        .select(pl.col("\x00record").alias("record"), reason.str.strip_chars("; ").alias("reason"))
        .cast(DEAD_SCHEMA)  # type: ignore[arg-type]
    )
    kept = frame.filter(~dropped)
    return Decoded(kept.select(*names, *keep), kept.get_column("\x00record").alias("record"), reasons)


def merge(parts: list[Decoded], dead_letters: list[pl.DataFrame], schema: Mapping[str, pl.DataType]) -> Decoded:
    """Parts decoded separately, in record order (rows by record, stable; dead letters by record)."""
    rows = [p.rows for p in parts]
    frame = pl.concat(rows, how="vertical_relaxed") if rows else pl.DataFrame(schema=dict(schema))
    records = pl.concat([p.record for p in parts]) if parts else pl.Series("record", [], pl.Int64)
    order = records.arg_sort()  # stable: the rows of one record keep their order
    all_dead = pl.concat([*(p.dead for p in parts), *dead_letters, no_dead()]).sort("record", maintain_order=True)
    return Decoded(frame[order], records[order].alias("record"), all_dead)


# -- encoding ----------------------------------------------------------------------------------------------------
TIMESTAMP_FORMATS = {"SQL": " ", "ISO-8601": "T"}


def timestamp_standard(options: Mapping[str, str]) -> str:
    standard = options.get("timestamp-format.standard", "SQL").strip().upper()
    if standard not in TIMESTAMP_FORMATS:
        raise FormatError(f"'timestamp-format.standard' must be 'SQL' or 'ISO-8601', not '{standard}'")
    return standard


def as_text(name: str, dtype: pl.DataType, standard: str = "SQL") -> pl.Expr:
    """A typed column as the text Flink's JSON and CSV formats write (NULL stays NULL): TIMESTAMP as
    'yyyy-MM-dd HH:mm:ss.SSS' (ISO-8601: a 'T' between date and time), DATE 'yyyy-MM-dd', BYTES in base64,
    DECIMAL and DOUBLE in plain digits, NaN and infinities as NaN, Infinity, -Infinity (as Jackson writes them)."""
    column = pl.col(name)
    if isinstance(dtype, pl.Datetime):
        fraction = "%.3f" if dtype.time_unit == "ms" else "%.6f" if dtype.time_unit == "us" else "%.9f"
        return column.dt.strftime(f"%Y-%m-%d{TIMESTAMP_FORMATS[standard]}%H:%M:%S{fraction}")
    if isinstance(dtype, pl.Date):
        return column.dt.strftime("%Y-%m-%d")
    if isinstance(dtype, pl.Binary):
        return column.bin.encode("base64").cast(pl.String)
    if isinstance(dtype, pl.Float32 | pl.Float64):
        return (
            pl.when(column.is_nan())
            .then(pl.lit("NaN"))
            .when(column == float("inf"))
            .then(pl.lit("Infinity"))
            .when(column == float("-inf"))
            .then(pl.lit("-Infinity"))
            .otherwise(column.cast(pl.String))
        )
    if isinstance(dtype, pl.Boolean):
        return pl.when(column).then(pl.lit("true")).when(~column).then(pl.lit("false"))
    return column.cast(pl.String)
