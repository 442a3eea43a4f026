"""The Python UDF of Nexmark q14, vectorised: Series in, Series out."""

from __future__ import annotations

import polars as pl

from engine import udf


@udf(pl.Int64)
def count_char(text: pl.Series, char: pl.Series) -> pl.Series:
    """How many times `char` occurs in `text` (q14 counts 'c' in `extra`)."""
    return text.str.count_matches(char.first() or "", literal=True).cast(pl.Int64)
