"""The timelapse front end: SQL text in, a plan of operators with Polars expressions out.

Pure: no I/O, and nothing here imports the runtime (`engine`).
"""

from sql.catalog import Column, TableDef, Watermark
from sql.errors import SqlError, UnsupportedError
from sql.plan import Aggregate, Calc, Node, Plan, Scan, Sink, UnionAll, WindowAssign, WindowSpec
from sql.planner import parse, plan_script
from sql.udf import AggregateUdf, ScalarUdf, udaf, udf

__all__ = [
    "Aggregate",
    "AggregateUdf",
    "Calc",
    "Column",
    "Node",
    "Plan",
    "ScalarUdf",
    "Scan",
    "Sink",
    "SqlError",
    "TableDef",
    "UnionAll",
    "UnsupportedError",
    "Watermark",
    "WindowAssign",
    "WindowSpec",
    "parse",
    "plan_script",
    "udaf",
    "udf",
]
