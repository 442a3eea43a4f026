"""CREATE TABLE -> TableDef: columns, computed columns, WATERMARK FOR, PRIMARY KEY, and the WITH options
(checked by sql/options.py)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import polars as pl
from sqlglot import exp

from sql import options as option_rules
from sql import types
from sql.catalog import Column, TableDef, Watermark
from sql.dialect import Flink, MetadataColumnConstraint
from sql.errors import UnsupportedError, error_at, position
from sql.expressions import PROCTIME_COLUMN, ExprCompiler
from sql.planner.binder import Scope
from sql.udf import ScalarUdf


def table_def(statement: exp.Create, udfs: Mapping[str, ScalarUdf]) -> TableDef:
    schema = statement.this
    if not isinstance(schema, exp.Schema):
        raise error_at(statement, "CREATE TABLE needs a column list")
    name = schema.this.name
    options, keys, values = option_rules.read_with(statement)
    columns: list[Column] = []
    watermark_node: exp.WatermarkColumnConstraint | None = None
    primary_key: tuple[str, ...] = ()
    for element in schema.expressions:
        if isinstance(element, exp.ColumnDef):
            columns.append(_column(element, columns, udfs))
        elif isinstance(element, exp.WatermarkColumnConstraint):
            watermark_node = element
        elif isinstance(element, exp.PrimaryKey):
            primary_key = tuple(e.name for e in element.expressions)
        else:
            raise error_at(element, f"{element.sql(dialect=Flink)} is not supported in CREATE TABLE", UnsupportedError)
    table = TableDef(name, tuple(columns), options, None, primary_key, *position(statement), values)
    for key in primary_key:
        if table.column(key) is None:
            raise error_at(schema, f"PRIMARY KEY column '{key}' is not a column of '{name}'")
    metadata = [c for c in columns if c.metadata is not None]
    if metadata and table.connector.strip().lower() not in ("kafka", "upsert-kafka"):
        defs = [e for e in schema.expressions if isinstance(e, exp.ColumnDef) and e.name == metadata[0].name]
        raise error_at(
            defs[0] if defs else schema,  # at the column's declaration, where the fix goes
            f"column '{metadata[0].name}' is a METADATA column, which only Kafka tables have "
            f"(connector '{table.connector}' has no record metadata)",
        )
    if watermark_node is not None:
        table = dataclasses.replace(table, watermark=_watermark(table, watermark_node, udfs))
    option_rules.check_table(table, keys, values, position(statement))
    return table


def _column(element: exp.ColumnDef, before: list[Column], udfs: Mapping[str, ScalarUdf]) -> Column:
    """A physical column, or a computed one (`c AS expr`) over the columns declared before it and PROCTIME()."""
    col_name = element.name
    if any(c.name.lower() == col_name.lower() for c in before):
        raise error_at(element, f"column '{col_name}' is declared twice")
    computed = next((c.kind for c in element.constraints if isinstance(c.kind, exp.ComputedColumnConstraint)), None)
    if computed is not None:
        if computed.this is None:
            raise error_at(element, f"computed column '{col_name}' needs an expression after AS")
        scope = Scope({**{c.name: c.dtype for c in before}, PROCTIME_COLUMN: types.timestamp(3)})
        expr, dtype = ExprCompiler(scope, udfs).typed(computed.this)
        if isinstance(dtype, pl.Datetime) and dtype.time_zone is None:  # times are UTC inside the engine
            expr, dtype = expr.dt.replace_time_zone("UTC"), pl.Datetime(dtype.time_unit, "UTC")
        return Column(col_name, dtype, expr.alias(col_name), computed.this.sql(dialect=Flink))
    kind = element.args.get("kind")
    if kind is None:
        raise error_at(element, f"column '{col_name}' needs a type")
    metadata = next((c.kind for c in element.constraints if isinstance(c.kind, MetadataColumnConstraint)), None)
    if metadata is not None:
        key = metadata.this.name if metadata.this is not None else col_name
        return Column(col_name, _metadata_type(kind), metadata=key, virtual=bool(metadata.args.get("virtual")))
    return Column(col_name, types.to_polars(kind))


#: a Kafka message's headers (`MAP<STRING, BYTES> METADATA`): the Arrow layout of a map, entries in message order
HEADERS_TYPE = pl.List(pl.Struct({"key": pl.String(), "value": pl.Binary()}))


def _metadata_type(kind: exp.DataType) -> pl.DataType:
    """A metadata column's type; `MAP<STRING, BYTES>` (Kafka headers) is the one MAP the engine reads."""
    if kind.this == exp.DataType.Type.MAP:
        inner = [e.this for e in kind.expressions if isinstance(e, exp.DataType)]
        text = (exp.DataType.Type.TEXT, exp.DataType.Type.VARCHAR)
        binary = (exp.DataType.Type.VARBINARY, exp.DataType.Type.BINARY)
        if len(inner) == 2 and inner[0] in text and inner[1] in binary:
            return HEADERS_TYPE
        raise error_at(kind, "a MAP metadata column must be MAP<STRING, BYTES> (Kafka headers)", UnsupportedError)
    return types.to_polars(kind)


def _watermark(table: TableDef, node: exp.WatermarkColumnConstraint, udfs: Mapping[str, ScalarUdf]) -> Watermark:
    """`WATERMARK FOR ts AS expr`: a TIMESTAMP column, and an expression over the row giving a TIMESTAMP."""
    column = table.column(node.this.name)
    if column is None:
        raise error_at(node.this, f"WATERMARK FOR unknown column '{node.this.name}'")
    if not isinstance(column.dtype, pl.Datetime):
        raise error_at(
            node.this, f"WATERMARK FOR '{column.name}' needs a TIMESTAMP column, not {types.sql_name(column.dtype)}"
        )
    expr, dtype = ExprCompiler(Scope(table.schema), udfs).typed(node.expression)
    if not isinstance(dtype, pl.Datetime):
        raise error_at(node.expression, "the watermark expression must give a TIMESTAMP")
    return Watermark(column.name, expr, node.expression.sql(dialect=Flink))
