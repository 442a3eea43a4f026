"""'format' = 'csv': one record per message, the declared columns in order, with Flink's CSV options.

Fields are read as the filesystem source reads CSV (engine/sources/filesystem.py): an empty field, or one equal
to 'csv.null-literal', is NULL; a record with another number of fields than the declared columns is a dead letter.
Records holding no quote, escape or line break are split in one vectorised pass; the others are read one by one
by Python's csv reader under the same rules, so a record reads the same whatever batch it is in.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping

import polars as pl

from engine.formats.base import Decoded, Format, FormatError, as_text, dead, merge, readable, typed


class CsvFormat(Format):
    def __init__(self, columns: Mapping[str, pl.DataType], options: Mapping[str, str]) -> None:
        super().__init__(columns, options)
        self.delimiter = _one_character(self.options, "field-delimiter", ",")
        self.quote = (
            None if self.flag("disable-quote-character") else _one_character(self.options, "quote-character", '"')
        )
        self.escape = _one_character(self.options, "escape-character", None)
        self.null_literal = self.options.get("null-literal")
        self.comments = self.flag("allow-comments")
        for name, dtype in self.columns.items():
            if isinstance(dtype, pl.List | pl.Struct):
                raise FormatError(f"format 'csv' cannot hold column '{name}' of a nested type")

    # -- decoding -------------------------------------------------------------------------------------------
    def decode(self, values: pl.Series, required: tuple[str, ...] = ()) -> Decoded:
        text, records, unreadable = readable(values)
        # a trailing line break ends the record; it is not part of the last field
        text = text.str.strip_suffix("\n").str.strip_suffix("\r")
        if self.comments:
            comment = text.str.starts_with("#")  # skipped, as Flink does when 'csv.allow-comments' is set
            text, records = text.filter(~comment), records.filter(~comment)
        special = [c for c in ("\n", "\r", self.quote, self.escape) if c]
        slow_mask = (
            pl.DataFrame({"t": text})
            .select(pl.any_horizontal([pl.col("t").str.contains(c, literal=True) for c in special]).fill_null(False))
            .to_series()
        )
        names = list(self.columns)
        parts = []
        deads = [unreadable]
        fast_text, fast_records = text.filter(~slow_mask), records.filter(~slow_mask)
        fields = fast_text.str.split(self.delimiter)
        count = fields.list.len()
        fits = count == len(names)
        wrong = pl.DataFrame({"n": count.filter(~fits)}).select(
            pl.format("expected {} fields, found {}", pl.lit(len(names)), pl.col("n"))
        )
        deads.append(dead(fast_records.filter(~fits), wrong.to_series()))
        good = fields.filter(fits)
        frame = pl.DataFrame({n: good.list.get(i, null_on_oob=True) for i, n in enumerate(names)}) if names else None
        parts.append(self._typed(frame, fast_records.filter(fits), required))
        slow_text, slow_records = text.filter(slow_mask), records.filter(slow_mask)
        if len(slow_text):
            rows, kept, problems, problem_records = [], [], [], []
            for record, line in zip(slow_records.to_list(), slow_text.to_list(), strict=True):
                try:
                    found = next(csv.reader([line], **self._dialect()), [])
                except csv.Error as err:
                    problems.append(f"malformed CSV: {str(err).split(' - ')[0]}")  # without Python's file advice
                    problem_records.append(record)
                    continue
                if len(found) != len(names):
                    problems.append(f"expected {len(names)} fields, found {len(found)}")
                    problem_records.append(record)
                    continue
                rows.append(found)
                kept.append(record)
            slow_frame = pl.DataFrame(rows, schema={n: pl.String for n in names}, orient="row")
            parts.append(self._typed(slow_frame, pl.Series("record", kept, pl.Int64), required))
            deads.append(dead(pl.Series(problem_records, dtype=pl.Int64), pl.Series(problems, dtype=pl.String)))
        return merge(parts, deads, self.columns)

    def _dialect(self) -> dict[str, object]:
        if self.quote is None:
            return {"delimiter": self.delimiter, "quoting": csv.QUOTE_NONE, "escapechar": self.escape, "strict": True}
        return {"delimiter": self.delimiter, "quotechar": self.quote, "escapechar": self.escape, "strict": True}

    def _typed(self, frame: pl.DataFrame | None, records: pl.Series, required: tuple[str, ...]) -> Decoded:
        if frame is None:
            frame = pl.DataFrame({"\x00": [None] * len(records)})
        nulls = [pl.col(n).replace("", None) for n in self.columns]
        if self.null_literal is not None:
            nulls = [e.replace(self.null_literal, None) for e in nulls]
        frame = frame.with_columns(nulls)
        return typed(frame, records, self.columns, required, self.flag("ignore-parse-errors"))

    # -- encoding -------------------------------------------------------------------------------------------
    def encode(self, rows: pl.DataFrame) -> pl.Series:
        fields = [self._field(as_text(n, t)) for n, t in self.columns.items() if n in rows.columns]
        return rows.select(pl.concat_str(fields, separator=self.delimiter).cast(pl.Binary).alias("value")).to_series()

    def _field(self, text: pl.Expr) -> pl.Expr:
        """A field as written: quoted (quotes doubled) when it holds the delimiter, a quote, an escape or a line
        break; NULL as the null literal (or empty)."""
        null = pl.lit(self.null_literal or "")
        special = [c for c in (self.delimiter, self.quote, self.escape, "\n", "\r") if c]
        needs = pl.any_horizontal([text.str.contains(c, literal=True) for c in special])
        if self.quote is not None:
            inner = text
            if self.escape is not None:  # the escape character itself, escaped, reads back as itself
                inner = inner.str.replace_all(self.escape, self.escape * 2, literal=True)
            inner = inner.str.replace_all(self.quote, self.quote * 2, literal=True)
            quoted = pl.concat_str([pl.lit(self.quote), inner, pl.lit(self.quote)])
        elif self.escape is not None:
            quoted = text
            for c in (self.escape, self.delimiter, "\n", "\r"):
                quoted = quoted.str.replace_all(c, self.escape + c, literal=True)
        else:
            quoted = text  # no quote and no escape: what Flink writes too (the reader cannot split it back)
        return pl.when(text.is_null()).then(null).when(needs).then(quoted).otherwise(text)


def _one_character(options: Mapping[str, str], key: str, default: str | None) -> str | None:
    value = options.get(key, default)
    if value is None:
        return None
    value = value.replace("\\t", "\t")
    if len(value) != 1:
        raise FormatError(f"'csv.{key}' must be one character, not '{value}'")
    return value
