"""SQL types <-> Polars dtypes.

Every timestamp is stored with the UTC zone: a zone-less timestamp would force Delta's timestampNtz
feature (reader 3 / writer 7), which Arrow-based readers cannot open. TIMESTAMP(p) values are read as UTC.
"""

from __future__ import annotations

import polars as pl
from sqlglot import exp

from sql.errors import UnsupportedError, error_at

DT = exp.DataType.Type

_SIMPLE: dict[DT, pl.DataType] = {
    DT.BOOLEAN: pl.Boolean(),
    DT.TINYINT: pl.Int8(),
    DT.SMALLINT: pl.Int16(),
    DT.INT: pl.Int32(),
    DT.BIGINT: pl.Int64(),
    DT.FLOAT: pl.Float32(),
    DT.DOUBLE: pl.Float64(),
    DT.TEXT: pl.String(),
    DT.VARCHAR: pl.String(),
    DT.CHAR: pl.String(),
    DT.NVARCHAR: pl.String(),
    DT.NCHAR: pl.String(),
    DT.VARBINARY: pl.Binary(),
    DT.BINARY: pl.Binary(),
    DT.DATE: pl.Date(),
}
_TIMESTAMPS = {DT.TIMESTAMP, DT.TIMESTAMPTZ, DT.TIMESTAMPLTZ, DT.TIMESTAMP_MS, DT.DATETIME}


def timestamp(precision: int = 6) -> pl.Datetime:
    return pl.Datetime("ms" if precision <= 3 else "us", "UTC")


def to_polars(dtype: exp.DataType) -> pl.DataType:
    kind = dtype.this
    params = _params(dtype)
    if kind in (DT.VARCHAR, DT.CHAR) and params and params[0] < 1:
        raise error_at(dtype, f"{kind.value}({params[0]}): the length must be at least 1")
    if kind in _SIMPLE:
        return _SIMPLE[kind]
    if kind in _TIMESTAMPS:
        if params and not 0 <= params[0] <= 9:
            raise error_at(dtype, f"TIMESTAMP precision must be between 0 and 9, not {params[0]}")
        return timestamp(params[0] if params else 6)
    if kind == DT.DECIMAL:
        # Flink: DECIMAL alone is DECIMAL(10, 0); timelapse keeps its historical DECIMAL(38, 0).
        precision, scale = ([*params, 38, 0])[:2] if params else (38, 0)
        if len(params) == 1:
            scale = 0
        if not 1 <= precision <= MAX_PRECISION:
            raise error_at(dtype, f"DECIMAL precision must be between 1 and {MAX_PRECISION}, not {precision}")
        if not 0 <= scale <= precision:
            raise error_at(dtype, f"DECIMAL scale must be between 0 and the precision ({precision}), not {scale}")
        return pl.Decimal(precision, scale)
    if kind == DT.ARRAY and dtype.expressions:
        return pl.List(to_polars(dtype.expressions[0]))
    if kind == DT.STRUCT and dtype.expressions:
        return row_type(dtype)
    if kind == DT.MAP and len(dtype.expressions) == 2:
        return map_type(to_polars(dtype.expressions[0]), to_polars(dtype.expressions[1]))
    raise error_at(dtype, f"type {dtype.sql()} is not supported", UnsupportedError)


def row_type(dtype: exp.DataType) -> pl.Struct:
    """`ROW<a INT, b STRING>` (parsed as sqlglot's STRUCT): a Polars Struct with the fields in order."""
    fields: dict[str, pl.DataType] = {}
    for field in dtype.expressions:
        if not isinstance(field, exp.ColumnDef) or field.args.get("kind") is None:
            raise error_at(dtype, f"{dtype.sql()}: every ROW field needs a name and a type")
        if field.name.lower() in {f.lower() for f in fields}:
            raise error_at(field, f"ROW field '{field.name}' is declared twice")
        fields[field.name] = to_polars(field.args["kind"])
    return pl.Struct(fields)


def map_type(key: pl.DataType, value: pl.DataType) -> pl.List:
    """`MAP<K, V>`: a list of key/value entries, the layout Arrow, Parquet, Delta and Polars give maps (Polars
    has no map type). Entries keep their order; a key given twice keeps its last value when read from a format."""
    return pl.List(pl.Struct({"key": key, "value": value}))


def is_map(dtype: pl.DataType) -> bool:
    """Whether `dtype` has a map's layout (a list of key/value entries); an ARRAY<ROW<key, value>> has it too."""
    return (
        isinstance(dtype, pl.List)
        and isinstance(dtype.inner, pl.Struct)
        and [f.name for f in dtype.inner.fields] == ["key", "value"]
    )


def _params(dtype: exp.DataType) -> list[int]:
    """The whole-number parameters of `DECIMAL(p, s)`, `TIMESTAMP(p)` or `VARCHAR(n)`."""
    params = []
    for param in dtype.expressions:
        if not isinstance(param, exp.DataTypeParam):
            continue
        if not (isinstance(param.this, exp.Literal) and not param.this.is_string and param.this.this.isdigit()):
            raise error_at(param, f"{dtype.sql()}: type parameters must be whole numbers")
        params.append(int(param.this.this))
    return params


def sql_name(dtype: pl.DataType) -> str:
    """The Flink spelling of a Polars dtype, for messages and `explain`."""
    names = {
        pl.Boolean: "BOOLEAN",
        pl.Int8: "TINYINT",
        pl.Int16: "SMALLINT",
        pl.Int32: "INT",
        pl.Int64: "BIGINT",
        pl.UInt32: "BIGINT",
        pl.UInt64: "BIGINT",
        pl.Float32: "FLOAT",
        pl.Float64: "DOUBLE",
        pl.String: "STRING",
        pl.Binary: "BYTES",
        pl.Date: "DATE",
        pl.Null: "NULL",
    }
    if isinstance(dtype, pl.Datetime):
        return f"TIMESTAMP_LTZ({3 if dtype.time_unit == 'ms' else 6})"
    if isinstance(dtype, pl.Decimal):
        return f"DECIMAL({dtype.precision}, {dtype.scale})"
    if is_map(dtype):
        key, value = (f.dtype for f in dtype.inner.fields)  # type: ignore[attr-defined]
        return f"MAP<{sql_name(key)}, {sql_name(value)}>"
    if isinstance(dtype, pl.List | pl.Array):
        return f"ARRAY<{sql_name(dtype.inner)}>"
    if isinstance(dtype, pl.Struct):
        return "ROW<" + ", ".join(f"`{f.name}` {sql_name(f.dtype)}" for f in dtype.fields) + ">"
    return names.get(type(dtype), str(dtype))


def is_numeric(dtype: pl.DataType) -> bool:
    return dtype.is_numeric()


def is_temporal(dtype: pl.DataType) -> bool:
    return isinstance(dtype, pl.Datetime | pl.Date)


MAX_PRECISION = 38  # DECIMAL's largest precision, as in Flink


def sum_type(dtype: pl.DataType) -> pl.DataType:
    """The type SUM keeps and returns: DECIMAL(38, s) for DECIMAL(p, s) (as Flink), BIGINT for integers and DOUBLE
    for floating point (timelapse's historical behaviour)."""
    if isinstance(dtype, pl.Decimal):
        return pl.Decimal(MAX_PRECISION, dtype.scale)
    return pl.Int64() if dtype.is_integer() else pl.Float64()


def avg_type(dtype: pl.DataType) -> pl.DataType:
    """AVG of DECIMAL(p, s) is DECIMAL(38, max(6, s)) (Flink's division rules); of any other number, DOUBLE."""
    if isinstance(dtype, pl.Decimal):
        return pl.Decimal(MAX_PRECISION, max(6, dtype.scale))
    return pl.Float64()
