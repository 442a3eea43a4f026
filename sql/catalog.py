"""Tables declared with CREATE TABLE, as the planner and the runtime see them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import polars as pl


@dataclass(frozen=True)
class Column:
    name: str
    dtype: pl.DataType
    computed: pl.Expr | None = None  # `name AS expr`: evaluated when rows are read
    computed_sql: str | None = None
    #: `METADATA [FROM 'key'] [VIRTUAL]`: the connector fills the column from the record's metadata (a Kafka
    #: message's partition, offset, timestamp, headers or key); a VIRTUAL one is read but never written
    metadata: str | None = None
    virtual: bool = False


@dataclass(frozen=True)
class Watermark:
    column: str
    expr: pl.Expr  # evaluated per row; the watermark is the maximum seen so far
    sql: str


@dataclass(frozen=True)
class TableDef:
    name: str
    columns: tuple[Column, ...]
    options: dict[str, str] = field(default_factory=dict)
    watermark: Watermark | None = None
    primary_key: tuple[str, ...] = ()
    line: int | None = None
    col: int | None = None
    # (line, column) of each option's value in the SQL, for messages about an option met at run time
    option_at: Mapping[str, tuple[int | None, int | None]] = field(default_factory=dict, compare=False, repr=False)

    @property
    def connector(self) -> str:
        return self.options.get("connector", "")

    @property
    def schema(self) -> dict[str, pl.DataType]:
        return {c.name: c.dtype for c in self.columns}

    @property
    def physical_schema(self) -> dict[str, pl.DataType]:
        """The columns a connector reads or writes: computed columns are derived, never stored."""
        return {c.name: c.dtype for c in self.columns if c.computed is None}

    @property
    def computed(self) -> list[Column]:
        return [c for c in self.columns if c.computed is not None]

    def where(self, option: str | None = None) -> str:
        """' (line N, column M)' of `option`'s value, or of the CREATE TABLE; '' if unknown (a table built in code)."""
        line, col = self.option_at.get(option, (None, None)) if option else (None, None)
        if line is None:
            line, col = self.line, self.col
        if line is None:
            return ""
        return f" (line {line}, column {col})" if col is not None else f" (line {line})"

    def column(self, name: str) -> Column | None:
        lowered = name.lower()
        return next((c for c in self.columns if c.name.lower() == lowered), None)
