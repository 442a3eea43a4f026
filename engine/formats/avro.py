"""'format' = 'avro': plain Avro binary, one record per message, without a schema or a registry header (what
Flink's 'avro' format writes). The schema is derived from the DDL as Flink's AvroSchemaConverter derives it:
a record named "record", each column nullable as ["null", type] (default null); BOOLEAN boolean, TINYINT,
SMALLINT and INT int, BIGINT long, FLOAT float, DOUBLE double, STRING string, BYTES bytes, DATE int (date),
TIMESTAMP(p <= 3) long (timestamp-millis), TIMESTAMP(p > 3) long (timestamp-micros), DECIMAL(p, s) bytes
(decimal), ARRAY<T> array of nullable T, ROW<..> a record named after its path ("record_<column>", nested
ones "record_<column>_<field>") with nullable fields, MAP<STRING, V> map of nullable V (Avro's map keys are
strings: another key type is refused); a NOT NULL column (`not_null`: a PRIMARY KEY's) has no null branch.

fastavro reads one record at a time (its API has no batch reader); the loop does nothing else, and the values
are typed in one vectorised pass. Bytes that do not hold exactly one record are a dead letter.
"""

from __future__ import annotations

import functools
import io
from collections.abc import Iterable, Mapping
from typing import Any

import polars as pl

from engine.formats.base import Decoded, Format, FormatError, dead, merge, no_dead
from engine.sources.nested_values import is_nested, present
from sql.types import is_map, sql_name


def avro_type(name: str, dtype: pl.DataType, path: str = "record") -> Any:
    """The (non-null) Avro type of a column, as Flink's AvroSchemaConverter gives it (`path`: the enclosing
    record's name, which names a nested record: Avro wants every record name unique)."""
    simple = {
        pl.Boolean: "boolean",
        pl.Int8: "int",
        pl.Int16: "int",
        pl.Int32: "int",
        pl.Int64: "long",
        pl.Float32: "float",
        pl.Float64: "double",
        pl.String: "string",
        pl.Binary: "bytes",
    }
    for kind, avro in simple.items():
        if isinstance(dtype, kind):
            return avro
    if isinstance(dtype, pl.Date):
        return {"type": "int", "logicalType": "date"}
    if isinstance(dtype, pl.Datetime):
        return {"type": "long", "logicalType": "timestamp-millis" if dtype.time_unit == "ms" else "timestamp-micros"}
    if isinstance(dtype, pl.Decimal):
        return {"type": "bytes", "logicalType": "decimal", "precision": dtype.precision, "scale": dtype.scale}
    if is_map(dtype):
        key, value = (f.dtype for f in dtype.inner.fields)  # type: ignore[attr-defined]
        if not isinstance(key, pl.String):
            raise FormatError(
                f"format 'avro' cannot hold column '{name}' of type {sql_name(dtype)}: map keys are strings"
            )
        return {"type": "map", "values": ["null", avro_type(name, value, path)]}
    if isinstance(dtype, pl.List):
        return {"type": "array", "items": ["null", avro_type(name, dtype.inner, path)]}
    if isinstance(dtype, pl.Struct):
        inner = f"{path}_{name}"
        fields = [
            {"name": f.name, "type": ["null", avro_type(f.name, f.dtype, inner)], "default": None} for f in dtype.fields
        ]
        return {"type": "record", "name": inner, "fields": fields}
    raise FormatError(f"format 'avro' cannot hold column '{name}' of type {sql_name(dtype)}")


def avro_schema(columns: Mapping[str, pl.DataType], not_null: Iterable[str] = ()) -> dict[str, Any]:
    """The record schema of `columns`: nullable ones as ["null", type] with default null, NOT NULL ones plain."""
    required = set(not_null)
    fields = [
        {"name": n, "type": avro_type(n, t)}
        if n in required
        else {"name": n, "type": ["null", avro_type(n, t)], "default": None}
        for n, t in columns.items()
    ]
    return {"type": "record", "name": "record", "fields": fields}


#: what fastavro gives for each Avro type, before the cast to the declared type
def _read_type(dtype: pl.DataType) -> pl.DataType:
    if isinstance(dtype, pl.Int8 | pl.Int16):
        return pl.Int32()
    if isinstance(dtype, pl.Struct):
        return pl.Struct({f.name: _read_type(f.dtype) for f in dtype.fields})
    if isinstance(dtype, pl.List):
        return pl.List(_read_type(dtype.inner))
    return dtype


def _has_map(dtype: pl.DataType) -> bool:
    if is_map(dtype):
        return True
    if isinstance(dtype, pl.Struct):
        return any(_has_map(f.dtype) for f in dtype.fields)
    return isinstance(dtype, pl.List) and _has_map(dtype.inner)


def _entries(value: Any, dtype: pl.DataType) -> Any:
    """A value as fastavro reads it, with each map (a dict) as the list of key/value entries timelapse holds."""
    if value is None:
        return None
    if is_map(dtype):
        item = dtype.inner.fields[1].dtype  # type: ignore[attr-defined]
        return [{"key": k, "value": _entries(v, item)} for k, v in value.items()]
    if isinstance(dtype, pl.Struct):
        return {f.name: _entries(value.get(f.name), f.dtype) for f in dtype.fields}
    if isinstance(dtype, pl.List):
        return [_entries(v, dtype.inner) for v in value]
    return value


def _as_dicts(value: Any, dtype: pl.DataType) -> Any:
    """The reverse of `_entries`, for fastavro's writer: each map's entries as a dict."""
    if value is None:
        return None
    if is_map(dtype):
        item = dtype.inner.fields[1].dtype  # type: ignore[attr-defined]
        return {e["key"]: _as_dicts(e["value"], item) for e in value}
    if isinstance(dtype, pl.Struct):
        return {f.name: _as_dicts(value.get(f.name), f.dtype) for f in dtype.fields}
    if isinstance(dtype, pl.List):
        return [_as_dicts(v, dtype.inner) for v in value]
    return value


class AvroFormat(Format):
    def __init__(self, columns: Mapping[str, pl.DataType], options: Mapping[str, str]) -> None:
        super().__init__(columns, options)
        from fastavro import parse_schema

        encoding = self.options.get("encoding", "binary").strip().lower()
        if encoding != "binary":
            raise FormatError(f"'avro.encoding' = '{encoding}': only 'binary' is supported")
        parse_schema(avro_schema(self.columns))  # any column Avro cannot hold is refused now

    @functools.cached_property
    def maps(self) -> set[str]:
        """The columns holding a map somewhere: fastavro gives (and takes) maps as dicts."""
        return {n for n, t in self.columns.items() if _has_map(t)}

    @functools.cached_property
    def schema(self) -> dict[str, Any]:
        return avro_schema(self.columns, self.not_null)

    @functools.cached_property
    def parsed(self) -> Any:
        from fastavro import parse_schema

        return parse_schema(self.schema)

    def decode(self, values: pl.Series, required: tuple[str, ...] = ()) -> Decoded:
        from fastavro import schemaless_reader

        records: list[dict[str, Any]] = []
        kept: list[int] = []
        bad: list[int] = []
        reasons: list[str] = []
        for i, value in enumerate(values.cast(pl.Binary).to_list()):
            if value is None:
                bad.append(i)
                reasons.append("the message has no value (a tombstone)")
                continue
            stream = io.BytesIO(value)
            try:
                record = schemaless_reader(stream, self.parsed, None)
            except Exception as err:  # fastavro raises what the bytes lead it to (EOFError, ValueError, ...)
                bad.append(i)
                reasons.append(f"not an Avro record of the table's schema: {type(err).__name__}: {err}"[:300])
                continue
            if stream.tell() != len(value):
                bad.append(i)
                reasons.append(f"not one Avro record: {len(value) - stream.tell()} bytes follow the record")
                continue
            if self.maps:
                record = {n: _entries(v, self.columns[n]) if n in self.maps else v for n, v in record.items()}
            records.append(record)  # type: ignore[arg-type]
            kept.append(i)
        unreadable = dead(pl.Series(bad, dtype=pl.Int64), pl.Series(reasons, dtype=pl.String))
        return merge([self._typed(records, pl.Series("record", kept, pl.Int64), required)], [unreadable], self.columns)

    def _typed(self, records: list[dict[str, Any]], kept: pl.Series, required: tuple[str, ...]) -> Decoded:
        read = pl.DataFrame(records, schema={n: _read_type(t) for n, t in self.columns.items()}, orient="row")
        typed = read.select(pl.col(n).cast(t, strict=False) for n, t in self.columns.items())
        both = pl.concat([read.rename(lambda n: n + "\x00read"), typed], how="horizontal")
        problems = [
            pl.when(present(pl.col(n + "\x00read"), _read_type(t)) != present(pl.col(n), t)).then(
                pl.lit(f"column '{n}': a value inside does not fit {sql_name(t)}")
            )
            for n, t in self.columns.items()
            if is_nested(t) and _read_type(t) != t
        ]
        problems += [
            pl.when(pl.col(n + "\x00read").is_not_null() & pl.col(n).is_null()).then(
                pl.format(
                    "column '{}': the value {} does not fit {}",
                    pl.lit(n),
                    pl.col(n + "\x00read").cast(pl.String),
                    pl.lit(sql_name(t)),
                )
            )
            for n, t in self.columns.items()
            if _read_type(t) != t and not is_nested(t)
        ]
        problems += [
            pl.when(pl.col(n).is_null()).then(pl.lit(f"column '{n}' is NULL, and it is the event time"))
            for n in required
        ]
        if not problems:
            return Decoded(typed, kept, no_dead())
        reason = both.select(pl.concat_str(problems, separator="; ", ignore_nulls=True).alias("reason")).to_series()
        bad = reason.is_not_null() & (reason != "")
        return Decoded(typed.filter(~bad), kept.filter(~bad), dead(kept.filter(bad), reason.filter(bad)))

    def encode(self, rows: pl.DataFrame) -> pl.Series:
        from fastavro import schemaless_writer

        required = [n for n in self.columns if n in self.not_null]
        if required and rows.select(pl.any_horizontal(pl.col(required).is_null()).any()).item():
            raise FormatError(f"format 'avro': a NOT NULL column ({', '.join(required)}) holds NULL")
        out: list[bytes] = []
        for row in rows.select([n for n in self.columns]).iter_rows(named=True):
            if self.maps:
                row = {n: _as_dicts(v, self.columns[n]) if n in self.maps else v for n, v in row.items()}
            buffer = io.BytesIO()
            schemaless_writer(buffer, self.parsed, row)
            out.append(buffer.getvalue())
        return pl.Series("value", out, dtype=pl.Binary)
