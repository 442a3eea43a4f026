"""Binding: which table, view and column a name means. Owns `Scope` (what an expression can see) and the
`Relation` each FROM item and query binds to; every name error is raised here, with its position."""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass, field

import polars as pl
from sqlglot import exp

from sql import types
from sql.catalog import TableDef
from sql.errors import SqlError, did_you_mean, error_at
from sql.expressions import ExprCompiler
from sql.plan import OP_COLUMN, WATERMARK_COLUMN, ChangelogNormalize, Node, Scan, WindowSpec
from sql.planner import changelog
from sql.planner.ids import Ids
from sql.python_functions import FunctionLoader
from sql.udf import AggregateUdf, ScalarUdf

#: hidden columns a relation carries past projections: the watermark and the row kind
HIDDEN = (WATERMARK_COLUMN, OP_COLUMN)


@dataclass(frozen=True)
class Scope:
    """The columns an expression can see: name -> dtype, plus the table aliases that qualify them.

    After a join, `columns` maps (qualifier, column name), both lower-case, to the column's name in the
    joined rows, where clashing names were renamed (`id`, `id0`).
    """

    schema: Mapping[str, pl.DataType]
    qualifiers: frozenset[str] = frozenset()
    columns: Mapping[tuple[str, str], str] | None = None

    def resolve(self, column: exp.Column) -> str:
        table = column.table
        lowered = column.name.lower()
        if table and table.lower() not in self.qualifiers:
            raise error_at(column, f"unknown table or alias '{table}'{did_you_mean(table, self.qualifiers)}")
        if self.columns is not None:
            if table:
                found = self.columns.get((table.lower(), lowered))
                if found is not None:
                    return found
                names = [n for (q, n) in self.columns if q == table.lower()]
                raise error_at(column, f"'{table}' has no column '{column.name}'{did_you_mean(lowered, names)}")
            matches = {internal for (_, n), internal in self.columns.items() if n == lowered}
            if len(matches) > 1:
                raise error_at(column, f"column '{column.name}' is ambiguous; qualify it with a table alias")
            if matches:
                return matches.pop()
        for name in self.schema:
            if name.lower() == lowered:
                return name
        raise error_at(column, f"unknown column '{column.name}'{did_you_mean(column.name, self.schema)}")

    def resolve_path(self, column: exp.Column) -> tuple[str, list[str]]:
        """A column and the ROW fields after it: `t.r.a.b` is column r of table t, fields a, b (a table qualifier
        first when the first name is one, as Flink reads it), `r.a` column r, field a."""
        parts = [p.name for p in column.parts]
        if len(parts) <= 2 and (len(parts) == 1 or parts[0].lower() in self.qualifiers):
            try:
                return self.resolve(column), []
            except SqlError:
                if len(parts) == 1:
                    raise
        # a path into a column only when that column is a ROW (else `s.k` could mean a column `s` elsewhere)
        if len(parts) >= 3 and parts[0].lower() in self.qualifiers:
            try:
                name = self.resolve(exp.column(parts[1], parts[0]))
                if isinstance(self.schema.get(name), pl.Struct):
                    return name, parts[2:]
            except SqlError:
                pass
        try:
            name = self.resolve(exp.column(parts[0]))
            if isinstance(self.schema.get(name), pl.Struct):
                return name, parts[1:]
        except SqlError:
            pass
        return self.resolve(column), []  # (raises the error naming the whole column)


@dataclass
class Relation:
    """A bound FROM item or query: the node producing its rows and the names that qualify its columns."""

    node: Node
    qualifiers: frozenset[str] = field(default_factory=frozenset)
    # A window TVF in FROM: the spec and the relation it windows. `node` then assigns windows row by row
    # (TUMBLE, HOP, CUMULATE) or is a placeholder schema (SESSION, which only runs inside an aggregation).
    window: WindowSpec | None = None
    window_input: Node | None = None
    # After a join: (qualifier, column) -> output column name.
    columns: dict[tuple[str, str], str] | None = None

    @property
    def scope(self) -> Scope:
        return Scope(self.node.schema, self.qualifiers, self.columns)

    def column_map(self) -> dict[tuple[str, str], str]:
        if self.columns is not None:
            return dict(self.columns)
        visible = [n for n in self.node.schema if not n.startswith("__")]
        return {(q, n.lower()): n for q in self.qualifiers for n in visible}

    def sides(self, node: exp.Expr, right: Relation) -> str:
        """Which side of a join (`self` left, `right`) the columns of `node` come from: left, right, both, none."""
        found: set[str] = set()
        for column in node.find_all(exp.Column):
            for label, side in (("left", self), ("right", right)):
                try:
                    side.scope.resolve_path(column)
                    found.add(label)
                except SqlError:
                    pass
        if not found:
            return "none"
        return found.pop() if len(found) == 1 else "both"


class Binder:
    """The script's names as planning goes: tables and views declared so far, the pipeline options, the
    functions, and one Scan per source table (so every INSERT reading it shares the read)."""

    def __init__(
        self,
        udfs: MutableMapping[str, ScalarUdf],
        udafs: MutableMapping[str, AggregateUdf],
        function_loader: FunctionLoader | None = None,
    ) -> None:
        self.udfs = udfs
        self.udafs = udafs
        # CREATE FUNCTION: how the engine imports 'module.fn', and the names the script created
        self.function_loader = function_loader
        self.created_functions: set[str] = set()
        self.tables: dict[str, TableDef] = {}
        self.views: dict[str, exp.Query] = {}
        self.options: dict[str, str] = {}
        self.scans: dict[str, Node] = {}
        self.ids = Ids()

    def compiler(self, scope: Scope) -> ExprCompiler:
        return ExprCompiler(scope, self.udfs)

    def table(self, node: exp.Expr) -> TableDef:
        name = node.name
        table = self.tables.get(name.lower())
        if table is None and name.lower() in self.views:
            # a view is a query: it has no connector to write to, no versions to join at a time
            raise error_at(node, f"'{name}' is a view, and only a table (CREATE TABLE) can be used here")
        if table is None:
            known = [t.name for t in self.tables.values()] + list(self.views)
            raise error_at(node, f"unknown table '{name}'{did_you_mean(name, known)}")
        return table

    def check_new_name(self, name: str, node: exp.Expr) -> None:
        if name.lower() in self.tables or name.lower() in self.views:
            raise error_at(node, f"'{name}' is already defined")

    def scan(self, table: TableDef) -> Node:
        """The node reading `table`: its Scan, behind a ChangelogNormalize for an upsert source."""
        key = table.name.lower()
        if key not in self.scans:
            schema = dict(table.schema)
            if table.watermark is not None:
                schema[WATERMARK_COLUMN] = types.timestamp(3)
            mode = changelog.source(table)
            if mode != changelog.APPEND:
                schema[OP_COLUMN] = pl.String()
            self.scans[key] = Scan(f"scan:{table.name}", [], schema, mode, table=table)
            if mode == changelog.UPSERT:
                # The watermark column stays behind: what reads a normalized changelog never judges lateness.
                out = {n: t for n, t in schema.items() if n != WATERMARK_COLUMN}
                self.scans[key] = ChangelogNormalize(
                    self.ids.node("normalize"),
                    [self.scans[key]],
                    out,
                    changelog.RETRACT,
                    keys=list(table.primary_key),
                    state_id=self.ids.state("normalize", f"{table.name}:{','.join(table.primary_key)}"),
                )
        return self.scans[key]
