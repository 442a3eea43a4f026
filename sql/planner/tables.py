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
from sql.dialect import Flink
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
    physical: dict[str, pl.DataType] = {}
    columns: list[Column] = []
    watermark_node: exp.WatermarkColumnConstraint | None = None
    primary_key: tuple[str, ...] = ()
    for element in schema.expressions:
        if isinstance(element, exp.ColumnDef):
            col_name = element.name
            if any(c.name.lower() == col_name.lower() for c in columns):
                raise error_at(element, f"column '{col_name}' is declared twice")
            computed = next(
                (c.kind for c in element.constraints if isinstance(c.kind, exp.ComputedColumnConstraint)), None
            )
            if computed is not None:
                if computed.this is None:
                    raise error_at(element, f"computed column '{col_name}' needs an expression after AS")
                scope = Scope({**{c.name: c.dtype for c in columns}, PROCTIME_COLUMN: types.timestamp(3)})
                compiler = ExprCompiler(scope, udfs)
                expr, dtype = compiler.typed(computed.this)
                if isinstance(dtype, pl.Datetime) and dtype.time_zone is None:
                    expr, dtype = expr.dt.replace_time_zone("UTC"), pl.Datetime(dtype.time_unit, "UTC")
                columns.append(Column(col_name, dtype, expr.alias(col_name), computed.this.sql(dialect=Flink)))
                continue
            kind = element.args.get("kind")
            if kind is None:
                raise error_at(element, f"column '{col_name}' needs a type")
            dtype = types.to_polars(kind)
            physical[col_name] = dtype
            columns.append(Column(col_name, dtype))
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
    if watermark_node is not None:
        column = table.column(watermark_node.this.name)
        if column is None:
            raise error_at(watermark_node.this, f"WATERMARK FOR unknown column '{watermark_node.this.name}'")
        if not isinstance(column.dtype, pl.Datetime):
            raise error_at(
                watermark_node.this,
                f"WATERMARK FOR '{column.name}' needs a TIMESTAMP column, not {types.sql_name(column.dtype)}",
            )
        compiler = ExprCompiler(Scope(table.schema), udfs)
        expr, dtype = compiler.typed(watermark_node.expression)
        if not isinstance(dtype, pl.Datetime):
            raise error_at(watermark_node.expression, "the watermark expression must give a TIMESTAMP")
        sql_text = watermark_node.expression.sql(dialect=Flink)
        table = dataclasses.replace(table, watermark=Watermark(column.name, expr, sql_text))
    option_rules.check_table(table, keys, values, position(statement))
    return table
