"""'format' = 'json': one JSON object per record, read under the rules of engine.sources.json_lines, written as
Flink's JSON format writes (see `encode_json`)."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping

import polars as pl

from engine.formats.base import Decoded, Format, as_text, dead, merge, readable, timestamp_standard, typed
from engine.sources.json_lines import parse_json
from sql.types import is_map

JSON_NUMBER = r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?"


class JsonFormat(Format):
    def __init__(self, columns: Mapping[str, pl.DataType], options: Mapping[str, str]) -> None:
        super().__init__(columns, options)
        self.standard = timestamp_standard(self.options)

    def decode(self, values: pl.Series, required: tuple[str, ...] = ()) -> Decoded:
        text, records, unreadable = readable(values)
        context = pl.DataFrame({"file": [""] * len(text), "position": records, "raw": text})
        parsed = parse_json(context, self.columns)
        ok = parsed.ok
        malformed = dead(parsed.dead.get_column("position"), parsed.dead.get_column("reason"))
        rows, kept = parsed.rows, records.filter(ok)
        missing = dead(pl.Series([], dtype=pl.Int64), pl.Series([], dtype=pl.String))
        if self.flag("fail-on-missing-field") and self.columns:
            # a key is present when `"name":` occurs in the record (a JSON string cannot hold it unescaped)
            lines = text.filter(ok)
            reasons = (
                pl.DataFrame({"line": lines})
                .select(
                    pl.concat_str(
                        [
                            pl.when(
                                ~pl.col("line").str.contains(re.escape(json.dumps(n, ensure_ascii=False)) + r"\s*:")
                            ).then(pl.lit(f"field '{n}' is missing ('json.fail-on-missing-field' is 'true')"))
                            for n in self.columns
                        ],
                        separator="; ",
                        ignore_nulls=True,
                    )
                )
                .to_series()
            )
            absent = reasons.is_not_null() & (reasons != "")
            missing = dead(kept.filter(absent), reasons.filter(absent))
            rows, kept = rows.filter(~absent), kept.filter(~absent)
        decoded = typed(rows, kept, self.columns, required, self.flag("ignore-parse-errors"))
        return merge([decoded], [unreadable, malformed, missing], self.columns)

    def encode(self, rows: pl.DataFrame) -> pl.Series:
        return encode_json(rows, self.columns, self.standard).alias("value")


def json_ready(columns: Mapping[str, pl.DataType], standard: str) -> tuple[list[pl.Expr], list[str]]:
    """Expressions giving each column in a form Polars writes as Flink does, and the columns written as text
    that must be unquoted afterwards (DECIMAL and DOUBLE: JSON numbers, with exact digits)."""
    exprs: list[pl.Expr] = []
    numbers: list[str] = []
    for name, dtype in columns.items():
        if isinstance(dtype, pl.Datetime | pl.Date | pl.Binary):
            exprs.append(as_text(name, dtype, standard).alias(name))
        elif isinstance(dtype, pl.Decimal | pl.Float32 | pl.Float64):
            exprs.append(as_text(name, dtype, standard).alias(name))
            numbers.append(name)
        else:
            exprs.append(pl.col(name))
    return exprs, numbers


def unquote_numbers(encoded: pl.Expr, numbers: list[str]) -> pl.Expr:
    """`"name":"1.25"` -> `"name":1.25` for the numeric columns (NaN and Infinity stay strings, as Jackson writes
    them). `"name":` cannot occur inside a JSON string, whose quotes are escaped."""
    for name in numbers:
        key = re.escape(json.dumps(name, ensure_ascii=False))  # Polars writes non-ASCII keys as they are
        encoded = encoded.str.replace_all(f'({key}:)"({JSON_NUMBER})"', "${1}${2}")
    return encoded


def _json_of(value: pl.Expr) -> pl.Expr:
    """One value as JSON text (Polars' own encoding, through a one-field object)."""
    return pl.struct(value.alias("v")).struct.json_encode().str.strip_prefix('{"v":').str.strip_suffix("}")


def _map_object(value: pl.Expr) -> pl.Expr:
    """A MAP (its list of key/value entries) as a JSON object; keys as text. NULL is written null."""
    entry = pl.element()
    member = pl.concat_str(
        [_json_of(entry.struct.field("key").cast(pl.String)), pl.lit(":"), _json_of(entry.struct.field("value"))]
    )
    body = pl.concat_str([pl.lit("{"), value.list.eval(member).list.join(","), pl.lit("}")])
    return pl.when(value.is_not_null()).then(body).otherwise(pl.lit("null"))


def encode_json(rows: pl.DataFrame, columns: Mapping[str, pl.DataType], standard: str = "SQL") -> pl.Series:
    """One JSON object per row with the declared columns, as Flink writes it: NULL as null, TIMESTAMP as
    text ('SQL' or 'ISO-8601'), DATE 'yyyy-MM-dd', DECIMAL and numbers as JSON numbers, BYTES in base64."""
    present = {n: t for n, t in columns.items() if n in rows.columns}
    exprs, numbers = json_ready(present, standard)
    if any(is_map(t) for t in present.values()):
        # a MAP column is written as a JSON object, as Flink writes it (Polars would write its list of entries)
        fragments = [
            pl.concat_str([pl.lit(json.dumps(n, ensure_ascii=False) + ":"), _map_object(pl.col(n))])
            if is_map(t)
            else pl.struct(e).struct.json_encode().str.strip_prefix("{").str.strip_suffix("}")
            for (n, t), e in zip(present.items(), exprs, strict=True)
        ]
        encoded = pl.concat_str([pl.lit("{"), pl.concat_str(fragments, separator=","), pl.lit("}")])
    else:
        encoded = pl.struct(exprs).struct.json_encode()
    return rows.select(unquote_numbers(encoded, numbers).cast(pl.Binary).alias("value")).to_series()
