"""'format' = 'raw': the record's bytes as the table's single column (BYTES, or STRING in UTF-8)."""

from __future__ import annotations

from collections.abc import Mapping

import polars as pl

from engine.formats.base import DEAD_SCHEMA, Decoded, Format, FormatError


class RawFormat(Format):
    def __init__(self, columns: Mapping[str, pl.DataType], options: Mapping[str, str]) -> None:
        super().__init__(columns, options)
        if len(self.columns) != 1:
            raise FormatError(f"format 'raw' reads one column, but {len(self.columns)} are declared")
        self.name, self.dtype = next(iter(self.columns.items()))
        if not isinstance(self.dtype, pl.String | pl.Binary):
            raise FormatError("format 'raw' reads a STRING or BYTES column")
        charset = self.options.get("charset", "UTF-8").strip().upper().replace("_", "-")
        if charset not in ("UTF-8", "UTF8"):
            raise FormatError(f"'raw.charset' = '{self.options['charset']}': only UTF-8 is supported")

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
