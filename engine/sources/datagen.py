"""`'connector' = 'datagen'`: deterministic generated rows, as Flink's datagen but reproducible.

Every value is a pure function of (seed, field, row number), so any epoch split yields the same rows.
Timestamps advance with the row number at `rows-per-second` from `start-time`, as event time should.

Options: `number-of-rows` (unbounded if absent), `rows-per-second` (10000), `seed` (0),
`start-time` ('2026-01-01 00:00:00'), and per field `fields.<f>.kind` (random | sequence),
`.min`, `.max`, `.start`, `.end` (a sequence with an end bounds the source), `.length`,
`.values` (comma-separated choices), `.null-rate`.
An unbounded source makes rows available at `rows-per-second` of wall-clock time since the pipeline started.
"""

from __future__ import annotations

import hashlib
import string
import time
from pathlib import Path
from typing import Any

import polars as pl

from engine.sources.base import ConnectorError, Source, SourceBatch, row_ranges
from sql.values import parse_timestamp

_ALPHABET = string.ascii_lowercase + string.digits
#: rows generated at once for small slices (and the largest slice served from such a block, half of it)
BLOCK_ROWS = 4096
_PRIME = 2_147_483_647  # 2^31 - 1: products of two residues stay below 2^62, so Int64 never overflows


def uniform(rows: pl.Expr, key: int) -> pl.Expr:
    """A counter-based hash of the row number into [0, 1): row n's value never depends on the epoch split.

    Squaring modulo a prime makes the rounds non-linear, so consecutive rows do not form a progression.
    """
    h = (rows + key) % _PRIME
    for constant in (1_234_567, 7_654_321, 2_718_281, 3_141_592):
        h = (h * h + constant + (rows % 65_521) * 40_503) % _PRIME
    return h.cast(pl.Float64) / _PRIME


class DatagenSource(Source):
    def __init__(self, table: Any, base_dir: Path) -> None:
        super().__init__(table, base_dir)
        total = table.options.get("number-of-rows")
        self.total = int(total) if total is not None else self._sequence_length(table.options)
        self.rate = float(self.option("rows-per-second", "10000"))
        self.seed = int(self.option("seed", "0"))
        start = pl.select(parse_timestamp(pl.lit(self.option("start-time", "2026-01-01 00:00:00")))).item()
        if start is None:
            raise ConnectorError(f"table '{table.name}': 'start-time' is not a timestamp")
        self.start_us = int(start.timestamp() * 1_000_000)
        self.row = 0
        self.started_at: float | None = None
        self._block: tuple[int, pl.DataFrame] = (0, pl.DataFrame())  # generated rows from a row number on
        for name, dtype in self.schema.items():
            if isinstance(dtype, pl.List | pl.Struct):
                raise ConnectorError(f"table '{table.name}': datagen does not generate nested values (column '{name}')")
        self._columns = [self._column(name, dtype).alias(name) for name, dtype in self.schema.items()]
        for name in self.schema:
            kind = self.field(name, "kind", "random")
            if kind not in ("random", "sequence"):
                raise ConnectorError(f"table '{table.name}': fields.{name}.kind must be 'random' or 'sequence'")

    @staticmethod
    def _sequence_length(options: dict[str, str]) -> int | None:
        """As in Flink, a sequence field with an `end` bounds the source to end - start + 1 rows."""
        lengths = [
            int(options[key]) - int(options.get(key[: -len(".end")] + ".start", "0")) + 1
            for key in options
            if key.startswith("fields.") and key.endswith(".end")
        ]
        return min(lengths) if lengths else None

    def field(self, name: str, key: str, default: str | None = None) -> str | None:
        return self.table.options.get(f"fields.{name}.{key}", default)

    def restore(self, position: Any, history: list[dict[str, Any]]) -> None:
        self.row = int(position["row"]) if position else 0
        if position and position.get("started_at"):
            self.started_at = float(position["started_at"])
        elif history:
            self.started_at = float(history[0].get("started_at", time.time()))

    @property
    def position(self) -> Any:
        return {"row": self.row, "started_at": self.started_at}

    def advance(self, piece: dict[str, Any]) -> None:
        self.row = int(piece["end"])
        self.started_at = float(piece["started_at"])

    def plan(self, max_rows: int | None) -> dict[str, Any] | None:
        if self.started_at is None:
            self.started_at = time.time()  # logged with the first slice, so a restart keeps the same clock
        started = self.started_at
        available = self.total if self.total is not None else int((time.time() - started) * self.rate)
        end = available if max_rows is None else min(available, self.row + max_rows)
        if end <= self.row:
            return None
        return {"start": self.row, "end": end, "started_at": started}

    def split(self, piece: dict[str, Any], shares: int) -> list[dict[str, Any] | None]:
        """By row range: a value is a function of its row number alone."""
        ranges = row_ranges(int(piece["start"]), int(piece["end"]), shares)
        return [{**piece, "start": a, "end": b} if b > a else None for a, b in ranges]  # an empty range reads nothing

    def read(self, piece: dict[str, Any]) -> SourceBatch:
        start, end = int(piece["start"]), int(piece["end"])
        if end - start > BLOCK_ROWS // 2:
            return SourceBatch(self._generate(start, end))
        # Small slices (epochs of a few rows) come from a block generated once: a row's values are a function
        # of its number alone, so a block is the same whichever slice asked for it, and building the generating
        # query costs far more than a few thousand rows do.
        lo, block = self._block
        if not (lo <= start and end <= lo + block.height):
            lo = start - start % BLOCK_ROWS if end <= start - start % BLOCK_ROWS + BLOCK_ROWS else start
            high = lo + BLOCK_ROWS if self.total is None else min(lo + BLOCK_ROWS, max(self.total, end))
            self._block = lo, block = lo, self._generate(lo, high)
        return SourceBatch(block.slice(start - lo, end - start))

    def _generate(self, start: int, end: int) -> pl.DataFrame:
        rows = pl.int_range(start, end, dtype=pl.Int64, eager=True).alias("__row")
        return rows.to_frame().select(self._columns)

    def _column(self, name: str, dtype: pl.DataType) -> pl.Expr:
        key = int.from_bytes(hashlib.blake2b(name.encode(), digest_size=4).digest(), "little") + self.seed * 7919
        rows = pl.col("__row")
        u = uniform(rows, key)
        kind = self.field(name, "kind", "random")
        values = self.field(name, "values")
        if isinstance(dtype, pl.Datetime):
            micros = (rows.cast(pl.Float64) * (1_000_000 / self.rate)).cast(pl.Int64) + self.start_us
            column = micros.cast(pl.Datetime("us")).dt.replace_time_zone("UTC").cast(dtype)
        elif values is not None:
            choices = pl.Series([v.strip() for v in values.split(",")], dtype=pl.String)
            index = (u * len(choices)).cast(pl.Int64) if kind == "random" else rows % len(choices)
            column = pl.lit(choices.implode()).list.get(index).cast(dtype, strict=False)
        elif kind == "sequence":
            column = (rows + int(self.field(name, "start", "0") or 0)).cast(dtype, strict=False)
        elif isinstance(dtype, pl.String):
            length = int(self.field(name, "length", "10") or 10)
            letters = [
                pl.lit(_ALPHABET).str.slice((uniform(rows * 64 + j, key + 17) * len(_ALPHABET)).cast(pl.Int64), 1)
                for j in range(length)
            ]
            column = pl.concat_str(letters)
        elif isinstance(dtype, pl.Boolean):
            column = u < 0.5
        else:
            low = float(self.field(name, "min", "0") or 0)
            high = float(self.field(name, "max", "100") or 100)
            if dtype.is_integer():
                column = (low + u * (high - low + 1)).floor().cast(dtype)
            else:
                column = (low + u * (high - low)).cast(dtype)
        null_rate = float(self.field(name, "null-rate", "0") or 0)
        if null_rate > 0:
            column = pl.when(uniform(rows, key + 31) < null_rate).then(None).otherwise(column)
        return column
