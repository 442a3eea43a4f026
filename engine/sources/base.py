"""What every source connector provides to the epoch loop.

A source moves through positions. `plan` proposes the slice for the next epoch (JSON-serialisable, logged
before it is read), `read` returns exactly that slice's rows every time it is asked, and `advance` moves the
position to the slice's end once the epoch commits. Reading a logged slice twice yields the same rows: that
is what makes replay after a crash exact.
"""

from __future__ import annotations

import datetime as dt
import itertools
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from engine import paths
from engine.errors import UserError
from engine.storage import Location, options_from
from sql.catalog import TableDef
from sql.types import sql_name
from sql.values import parse_text, parse_timestamp

DEAD_LETTER_SCHEMA: dict[str, pl.DataType] = {
    "file": pl.String(),
    "position": pl.Int64(),
    "raw": pl.String(),
    "reason": pl.String(),
    # the record's exact bytes, when they are not valid UTF-8 (`raw` then shows them with U+FFFD in place)
    "raw_bytes": pl.Binary(),
}

#: a hidden column of a source's rows naming the partition (split) each row comes from, e.g. a Kafka topic-partition:
#: each split has its own watermark (engine.watermarks); a source without it is one split
SPLIT_COLUMN = "__split"


def split_key(source: str, split: str) -> str:
    """The key of a source partition's watermark beside the sources' own in a watermark dict (no SQL name holds
    a NUL character, so it never meets a source's name)."""
    return f"{source}\x00{split}"


#: TIMESTAMP values must fall in years 1-9999 (SQL's range): later arithmetic on the watermark would overflow
MIN_TIMESTAMP = dt.datetime(1, 1, 1, tzinfo=dt.UTC)
MAX_TIMESTAMP = dt.datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=dt.UTC)
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_MIN_MILLIS = (MIN_TIMESTAMP - _EPOCH) // dt.timedelta(milliseconds=1)
_MAX_MILLIS = (MAX_TIMESTAMP - _EPOCH) // dt.timedelta(milliseconds=1)
#: a record longer than this is a dead letter ('scan.max-record-bytes'), kept with its first bytes
MAX_RECORD_BYTES = 16 * 1024 * 1024
DEAD_LETTER_RAW_LIMIT = 64 * 1024


class ConnectorError(UserError, ValueError):
    """A connector is misconfigured; the message names the table and option."""


class SourceFileError(ConnectorError):
    """An input file the source registered is gone or changed before it was read; the message names it."""


@dataclass
class SourceBatch:
    rows: pl.DataFrame
    dead_letters: pl.DataFrame = field(default_factory=lambda: empty_dead_letters())


class Source(ABC):
    #: set by the runner when the run drains: the input present is all there is (a file's last line without its
    #: newline is then a complete record)
    end_of_input: bool = False
    #: set by the runner for `--once`: read what is there when the run starts, then stop (a source that keeps
    #: growing, such as a Kafka topic, bounds itself at the end offsets it observes first)
    once: bool = False
    #: set by the runner: the stored columns the plan reads (`Plan.read_columns`), None for all. A connector that
    #: reads columns separately (Parquet) may leave the others unread, as NULL, where that cannot change which
    #: rows are dead letters (`typed_from_frame`).
    read_columns: set[str] | None = None

    def __init__(self, table: TableDef, base_dir: Path) -> None:
        self.table = table
        self.base_dir = base_dir
        self.schema = table.physical_schema

    def option(self, key: str, default: str | None = None) -> str:
        value = self.table.options.get(key, default)
        if value is None:
            raise ConnectorError(f"table '{self.table.name}'{self.table.where()}: option '{key}' is required")
        return value

    def resolve(self, path: str) -> Location:
        """The table's 'path', with its 'storage.*' options for the object store it names (engine.paths)."""
        return paths.connector_path(self.table.name, "path", path, self.base_dir, options_from(self.table.options))

    @abstractmethod
    def restore(self, position: Any, history: list[dict[str, Any]]) -> None:
        """Resume at `position` (None: from the start). `history` holds this source's logged slices, oldest first."""

    @abstractmethod
    def plan(self, max_rows: int | None) -> dict[str, Any] | None:
        """The next slice, or None when nothing new is available."""

    @abstractmethod
    def read(self, piece: dict[str, Any]) -> SourceBatch: ...

    def split(self, piece: dict[str, Any], shares: int) -> list[dict[str, Any] | None]:
        """`piece` cut into `shares` pieces that `read` takes, for workers reading one epoch side by side (the
        Ray executor); None: that worker reads nothing. Their rows, concatenated in order, must be the rows of
        `piece` in its order, so that row watermarks and results do not depend on the number of workers.
        By default the first worker reads the whole piece."""
        return [piece, *[None] * (shares - 1)]

    @abstractmethod
    def advance(self, piece: dict[str, Any]) -> None:
        """Move to the end of `piece`, once its epoch has committed."""

    @property
    @abstractmethod
    def position(self) -> Any: ...

    def on_checkpoint(self) -> Callable[[], None]:
        """Taken with a checkpoint of the position the source holds now; called once that checkpoint has
        committed, which may be after the next epochs read (a checkpoint written in the background). Kafka
        reports its offsets to the consumer group then, for monitoring: the engine's own are in the manifest."""
        return lambda: None

    def close(self) -> None:
        """Release clients and connections when the run ends."""

    def empty(self) -> pl.DataFrame:
        return pl.DataFrame(schema=self.schema)


def typed_from_text(
    raw: pl.DataFrame, schema: dict[str, pl.DataType], context: pl.DataFrame, required: tuple[str, ...] = ()
) -> SourceBatch:
    """Convert all-text columns to `schema`; a row with any unconvertible value becomes a dead letter, and so
    does a row where a `required` column (the event time) is NULL or missing.

    `context` has the columns file, position and raw, aligned row by row with `raw`.
    """
    present = [name for name in schema if name in raw.columns]
    typed_names = {name: f"{name}\x00typed" for name in schema}
    conversions = [
        _from_text(pl.col(name) if name in present else pl.lit(None, dtype=pl.String), dtype).alias(typed_names[name])
        for name, dtype in schema.items()
    ]
    both = raw.with_row_index("\x00row").with_columns(conversions)
    reasons = [
        pl.when(pl.col(name).is_not_null() & pl.col(typed_names[name]).is_null()).then(
            pl.format(
                "column '{}': cannot read '{}' as {}",
                pl.lit(name),
                pl.col(name).str.slice(0, 80),
                pl.lit(sql_name(schema[name]) + (" (years 1-9999)" if isinstance(schema[name], pl.Datetime) else "")),
            )
        )
        for name in present
    ]
    reasons += [
        pl.when(
            pl.col(typed_names[name]).is_null() & (pl.col(name).is_null() if name in present else pl.lit(True))
        ).then(pl.lit(f"column '{name}' is NULL or missing, and it is the event time"))
        for name in required
    ]
    both = both.with_columns(
        pl.concat_str(reasons, separator="; ", ignore_nulls=True).alias("\x00reason")
        if reasons
        else pl.lit(None, dtype=pl.String).alias("\x00reason")
    )
    bad = pl.col("\x00reason").is_not_null() & (pl.col("\x00reason") != "")
    rows = both.filter(~bad).select(pl.col(typed_names[n]).alias(n) for n in schema)
    dead = context.with_columns(reason=both.get_column("\x00reason")).filter(
        pl.col("reason").is_not_null() & (pl.col("reason") != "")
    )
    return SourceBatch(rows, dead_letters(dead))


def typed_from_frame(
    frame: pl.DataFrame,
    schema: dict[str, pl.DataType],
    context: Callable[[], pl.DataFrame],
    required: tuple[str, ...] = (),
) -> SourceBatch:
    """Convert typed columns (Parquet, Delta) to `schema`: directly when no value can fail to convert, else
    through their text form under the rules of `typed_from_text` (`context()` then gives file, position, raw)."""
    if any(t.is_nested() for t in frame.schema.values()):
        from engine.sources import nested_values

        frame = nested_values.maps_as_entries(frame)
    if all(_lossless(frame.schema[n], dtype) for n, dtype in schema.items() if n in frame.columns):
        # Typed columns that convert without loss cannot fail: no detour through text, no dead letters,
        # unless an event time is NULL or a timestamp is out of range.
        typed = frame.select(
            _convert(pl.col(n), frame.schema[n], dtype).alias(n)
            if n in frame.columns
            else pl.lit(None, dtype=dtype).alias(n)
            for n, dtype in schema.items()
        )
        if _valid(typed, schema, required):
            return SourceBatch(typed)
    text = frame.select(
        [
            _as_text(pl.col(n), frame.schema[n]) if n in frame.columns else pl.lit(None, dtype=pl.String).alias(n)
            for n in schema
        ]
    )
    return typed_from_text(text, schema, context(), required)


def _as_text(value: pl.Expr, dtype: pl.DataType) -> pl.Expr:
    if isinstance(dtype, pl.List | pl.Struct | pl.Array):
        from engine.sources import nested_values

        return nested_values.as_json_text(value).alias(value.meta.output_name())
    return value.cast(pl.String)


def _valid(typed: pl.DataFrame, schema: dict[str, pl.DataType], required: tuple[str, ...]) -> bool:
    checks = [pl.col(n).is_not_null().all() for n in required]
    checks += [
        (in_range(pl.col(n)).is_not_null() | pl.col(n).is_null()).all()
        for n, dtype in schema.items()
        if isinstance(dtype, pl.Datetime)
    ]
    return not checks or all(typed.select(c.alias(f"check{i}") for i, c in enumerate(checks)).row(0))


def unread_columns(
    stored: dict[str, pl.DataType], schema: dict[str, pl.DataType], used: set[str] | None, required: tuple[str, ...]
) -> set[str]:
    """The declared columns a typed reader may leave unread: not used by the plan, not NOT NULL, and converting
    from their stored type without loss, so that reading them could never make a row a dead letter."""
    if used is None:
        return set()
    return {
        name
        for name, dtype in schema.items()
        if name in stored and name not in used and name not in required and _lossless(stored[name], dtype)
    }


def _lossless(stored: pl.DataType, declared: pl.DataType) -> bool:
    """Whether every value of a Parquet column of type `stored` converts to `declared` without a possible failure."""
    if stored == declared:
        return True
    if isinstance(stored, pl.Struct) and isinstance(declared, pl.Struct):
        names = [f.name for f in stored.fields] == [f.name for f in declared.fields]
        return names and all(_lossless(a.dtype, b.dtype) for a, b in zip(stored.fields, declared.fields, strict=True))
    if isinstance(stored, pl.List | pl.Array) and isinstance(declared, pl.List):
        return _lossless(stored.inner, declared.inner)
    if isinstance(stored, pl.Datetime) and isinstance(declared, pl.Datetime):
        return True  # a naive time is read as UTC, like timestamps in text
    if stored.is_integer() and declared.is_integer():
        return _wider(stored, declared)
    if stored.is_float() and declared.is_float():
        return declared == pl.Float64 or stored == pl.Float32
    return isinstance(stored, pl.String) and isinstance(declared, pl.String)


_WIDTHS = {pl.Int8: 8, pl.Int16: 16, pl.Int32: 32, pl.Int64: 64, pl.UInt8: 8, pl.UInt16: 16, pl.UInt32: 32}


def _wider(stored: pl.DataType, declared: pl.DataType) -> bool:
    signed = {pl.Int8, pl.Int16, pl.Int32, pl.Int64}
    if type(declared) not in signed:
        return False
    return _WIDTHS.get(type(stored), 64) < _WIDTHS[type(declared)] or type(stored) is type(declared)


def _convert(column: pl.Expr, stored: pl.DataType, declared: pl.DataType) -> pl.Expr:
    if isinstance(stored, pl.Datetime) and isinstance(declared, pl.Datetime) and stored.time_zone is None:
        column = column.dt.replace_time_zone("UTC")
    return column.cast(declared)


def dead_letters(frame: pl.DataFrame) -> pl.DataFrame:
    """`frame` (file, position, raw, reason and maybe raw_bytes) in the dead-letter schema."""
    if "raw_bytes" not in frame.columns:
        frame = frame.with_columns(pl.lit(None, dtype=pl.Binary).alias("raw_bytes"))
    return frame.select(list(DEAD_LETTER_SCHEMA)).cast(DEAD_LETTER_SCHEMA)  # type: ignore[arg-type]


def in_range(timestamps: pl.Expr) -> pl.Expr:
    """The timestamps of SQL's range (years 1-9999); NULL for the others."""
    return pl.when(timestamps.is_between(MIN_TIMESTAMP, MAX_TIMESTAMP)).then(timestamps)


def _from_text(text: pl.Expr, dtype: pl.DataType) -> pl.Expr:
    if isinstance(dtype, pl.List | pl.Struct | pl.Array):
        from engine.sources import nested_values  # (it reads JSON under json_lines' rules, which imports this)

        return nested_values.from_json_text(text, dtype, _from_text)
    if isinstance(dtype, pl.Datetime):
        # Event times often arrive as epoch milliseconds.
        millis = text.str.strip_chars().cast(pl.Int64, strict=False)
        millis = pl.when(millis.is_between(_MIN_MILLIS, _MAX_MILLIS)).then(millis)  # no overflow in the casts
        as_millis = millis.cast(pl.Datetime("ms")).dt.replace_time_zone("UTC").cast(dtype)
        parsed = pl.when(text.str.contains(r"^\s*-?\d+\s*$")).then(as_millis).otherwise(parse_timestamp(text, dtype))
        return in_range(parsed)
    return parse_text(text, dtype)


def empty_dead_letters() -> pl.DataFrame:
    return pl.DataFrame(schema=DEAD_LETTER_SCHEMA)


def row_ranges(start: int, end: int, shares: int) -> list[tuple[int, int]]:
    """[start, end) cut into `shares` contiguous ranges of nearly equal length, in order."""
    size = end - start
    cuts = [start + size * i // shares for i in range(shares + 1)]
    return list(itertools.pairwise(cuts))
