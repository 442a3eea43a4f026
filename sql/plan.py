"""The plan: a DAG of operators from sources to sinks, with Polars expressions inside.

The planner builds it; the engine executes it. Nodes are plain data: the engine maps each node type to the
operator module that runs it. `changelog` says what rows a node emits: `append` (inserts only) today;
`retract` and `upsert` arrive with stateful operators.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import polars as pl

from sql import types
from sql.catalog import TableDef


@dataclass(eq=False)
class Node:
    id: str
    inputs: list[Node]
    schema: dict[str, pl.DataType]
    changelog: str = "append"
    stateful = False

    def describe(self) -> str:
        return self.id

    def walk(self) -> list[Node]:
        """This node and everything upstream of it, inputs first, each once."""
        seen: dict[int, Node] = {}

        def visit(node: Node) -> None:
            if id(node) in seen:
                return
            for child in node.inputs:
                visit(child)
            seen[id(node)] = node

        visit(self)
        return list(seen.values())


@dataclass(eq=False)
class Scan(Node):
    """Rows of one source table, with computed columns applied."""

    table: TableDef = field(kw_only=True)

    def describe(self) -> str:
        wm = f", watermark {self.table.watermark.sql}" if self.table.watermark else ""
        return f"Scan {self.table.name} [{self.table.connector}{wm}]"


@dataclass(eq=False)
class Calc(Node):
    """Filter then project: the stateless operator every SELECT compiles to."""

    projections: list[tuple[str, pl.Expr]] = field(kw_only=True)
    predicate: pl.Expr | None = field(default=None, kw_only=True)
    sql: str = field(default="", kw_only=True)

    def describe(self) -> str:
        return f"Calc {self.sql}" if self.sql else "Calc"


@dataclass(eq=False)
class UnionAll(Node):
    def describe(self) -> str:
        return f"UnionAll ({len(self.inputs)} inputs)"


@dataclass(eq=False)
class Sink(Node):
    table: TableDef = field(kw_only=True)

    def describe(self) -> str:
        cols = ", ".join(f"{n} {types.sql_name(t)}" for n, t in self.schema.items())
        return f"Sink {self.table.name} [{self.table.connector}] ({cols})"


@dataclass
class Plan:
    tables: dict[str, TableDef]
    sinks: list[Sink]
    options: dict[str, str]
    fingerprint: str

    @property
    def nodes(self) -> list[Node]:
        seen: dict[int, Node] = {}
        for sink in self.sinks:
            for node in sink.walk():
                seen.setdefault(id(node), node)
        return list(seen.values())

    @property
    def sources(self) -> dict[str, TableDef]:
        return {n.table.name: n.table for n in self.nodes if isinstance(n, Scan)}

    def explain(self) -> str:
        lines: list[str] = []

        def render(node: Node, prefix: str, last: bool, root: bool) -> None:
            kind = "stateful" if node.stateful else "stateless"
            connector = "" if root else ("└─ " if last else "├─ ")
            lines.append(f"{prefix}{connector}{node.describe()}  ({kind}, {node.changelog})")
            child_prefix = prefix + ("" if root else ("   " if last else "│  "))
            for i, child in enumerate(node.inputs):
                render(child, child_prefix, i == len(node.inputs) - 1, False)

        for sink in self.sinks:
            render(sink, "", True, True)
        return "\n".join(lines)
