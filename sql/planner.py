"""SQL script -> Plan. Binds names and types against the catalog as it goes, so errors carry positions."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field

import polars as pl
import sqlglot
from sqlglot import exp
from sqlglot.errors import ParseError, TokenError

from sql import types
from sql.catalog import Column, TableDef, Watermark
from sql.dialect import Flink, WindowCall
from sql.errors import SqlError, UnsupportedError, did_you_mean, error_at, position
from sql.expressions import PROCTIME_COLUMN, ExprCompiler, Scope
from sql.plan import Calc, Node, Plan, Scan, Sink, UnionAll
from sql.udf import REGISTRY, ScalarUdf


def parse(text: str) -> list[exp.Expr]:
    try:
        return [s for s in sqlglot.parse(text, read=Flink) if s is not None]
    except ParseError as err:
        first = err.errors[0] if err.errors else {}
        message = first.get("description") or str(err)
        if "SENTINEL" in message:
            message = "the statement ends too early"
        highlight = first.get("highlight")
        near = f" near '{highlight}'" if highlight else ""
        raise SqlError(f"syntax error{near}: {message}", first.get("line"), first.get("col")) from None
    except TokenError as err:
        raise SqlError(f"syntax error: {err}") from None


def plan_script(text: str, udfs: Mapping[str, ScalarUdf] | None = None) -> Plan:
    """Plan every statement of a script: DDL fills the catalog, each INSERT adds a sink to one pipeline."""
    return _Planner({**REGISTRY, **(udfs or {})}).plan(parse(text))


@dataclass
class _Relation:
    node: Node
    qualifiers: frozenset[str] = field(default_factory=frozenset)

    @property
    def scope(self) -> Scope:
        return Scope(self.node.schema, self.qualifiers)


class _Planner:
    def __init__(self, udfs: Mapping[str, ScalarUdf]) -> None:
        self.udfs = udfs
        self.tables: dict[str, TableDef] = {}
        self.views: dict[str, exp.Query] = {}
        self.options: dict[str, str] = {}
        self.scans: dict[str, Scan] = {}
        self.sinks: list[Sink] = []
        self._ids: dict[str, int] = {}

    def _next_id(self, kind: str) -> str:
        self._ids[kind] = self._ids.get(kind, 0) + 1
        return f"{kind}-{self._ids[kind]}"

    # -- statements ----------------------------------------------------------------------------
    def plan(self, statements: list[exp.Expr]) -> Plan:
        canonical: list[str] = []
        for statement in statements:
            canonical.append(statement.sql(dialect=Flink))
            if isinstance(statement, exp.Create):
                self._create(statement)
            elif isinstance(statement, exp.Insert):
                self._insert(statement)
            elif isinstance(statement, exp.Set):
                self._set(statement)
            else:
                kind = type(statement).__name__.upper()
                raise error_at(statement, f"{kind} statements are not supported in a pipeline", UnsupportedError)
        if not self.sinks:
            raise SqlError("the script has no INSERT INTO statement, so there is nothing to run")
        fingerprint = hashlib.sha256("\n".join(canonical).encode()).hexdigest()[:16]
        return Plan(dict(self.tables), self.sinks, dict(self.options), fingerprint)

    def _set(self, statement: exp.Set) -> None:
        for item in statement.expressions:
            eq = item.this
            if not isinstance(eq, exp.EQ):
                raise error_at(item, "SET 'key' = 'value' expected")
            self.options[str(eq.this.name)] = str(eq.expression.name)

    def _create(self, statement: exp.Create) -> None:
        kind = (statement.args.get("kind") or "").upper()
        if kind == "VIEW":
            name = statement.this.name if isinstance(statement.this, exp.Table) else statement.this.this.name
            self._check_new_name(name, statement)
            self.views[name.lower()] = statement.expression
            return
        if kind != "TABLE":
            raise error_at(statement, f"CREATE {kind} is not supported", UnsupportedError)
        if statement.expression is not None:
            raise error_at(statement, "CREATE TABLE ... AS SELECT is not supported; use INSERT INTO", UnsupportedError)
        table = _table_def(statement, self.udfs)
        self._check_new_name(table.name, statement)
        self.tables[table.name.lower()] = table

    def _check_new_name(self, name: str, node: exp.Expr) -> None:
        if name.lower() in self.tables or name.lower() in self.views:
            raise error_at(node, f"'{name}' is already defined")

    def _insert(self, statement: exp.Insert) -> None:
        target = statement.this
        columns: list[exp.Identifier] | None = None
        if isinstance(target, exp.Schema):
            columns = list(target.expressions)
            target = target.this
        table = self._table(target)
        query = statement.expression
        relation = self._query(query)
        produced = list(relation.node.schema.items())
        wanted = (
            [table.column(c.name) for c in columns] if columns else [c for c in table.columns if c.computed is None]
        )
        if columns:
            for ident, col in zip(columns, wanted, strict=True):
                if col is None:
                    raise error_at(ident, f"table '{table.name}' has no column '{ident.name}'")
        if len(produced) != len(wanted):
            raise error_at(
                query,
                f"INSERT INTO {table.name}: the query produces {len(produced)} column(s) but the table takes "
                f"{len(wanted)} ({', '.join(c.name for c in wanted if c)})",
            )
        compiler = ExprCompiler(relation.scope, self.udfs)
        projections: list[tuple[str, pl.Expr]] = []
        items = _select_items(query)
        for i, ((name, dtype), col) in enumerate(zip(produced, wanted, strict=True)):
            assert col is not None
            node_for_error = items[i] if i < len(items) else query
            if _incompatible(dtype, col.dtype):
                raise error_at(
                    node_for_error,
                    f"INSERT INTO {table.name}: column '{col.name}' is {types.sql_name(col.dtype)} but the query gives "
                    f"{types.sql_name(dtype)}; add a CAST",
                )
            projections.append((col.name, compiler.cast(pl.col(name), col.dtype).alias(col.name)))
        by_name = dict(projections)
        ordered = [
            (c.name, by_name.get(c.name, pl.lit(None, dtype=c.dtype))) for c in table.columns if c.computed is None
        ]
        schema = {c.name: c.dtype for c in table.columns if c.computed is None}
        calc = Calc(self._next_id("cast"), [relation.node], schema, projections=ordered, sql=f"cast to {table.name}")
        self.sinks.append(Sink(f"sink:{table.name}", [calc], schema, table=table))

    # -- queries -------------------------------------------------------------------------------
    def _table(self, node: exp.Expr) -> TableDef:
        name = node.name
        table = self.tables.get(name.lower())
        if table is None:
            known = [t.name for t in self.tables.values()] + list(self.views)
            raise error_at(node, f"unknown table '{name}'{did_you_mean(name, known)}")
        return table

    def _query(self, query: exp.Expr) -> _Relation:
        if isinstance(query, exp.Subquery):
            return self._query(query.this)
        if isinstance(query, exp.Union):
            if query.args.get("distinct"):
                raise error_at(
                    query, "UNION without ALL needs state and is not supported yet; use UNION ALL", UnsupportedError
                )
            return self._union(query)
        if isinstance(query, exp.Intersect | exp.Except):
            raise error_at(query, f"{type(query).__name__.upper()} is not supported", UnsupportedError)
        if isinstance(query, exp.Select):
            return self._select(query)
        raise error_at(query, f"{type(query).__name__.upper()} is not supported as a query", UnsupportedError)

    def _union(self, query: exp.Union) -> _Relation:
        left = self._query(query.this)
        right = self._query(query.expression)
        lschema, rschema = list(left.node.schema.items()), list(right.node.schema.items())
        if len(lschema) != len(rschema):
            raise error_at(query, f"UNION ALL inputs have {len(lschema)} and {len(rschema)} columns")
        inputs: list[Node] = []
        schema: dict[str, pl.DataType] = {}
        for (lname, ltype), (_, rtype) in zip(lschema, rschema, strict=True):
            try:
                schema[lname] = (
                    pl.select(pl.lit(None, ltype), pl.lit(None, rtype).alias("r"))
                    .select(pl.concat_list(pl.all()))
                    .dtypes[0]
                    .inner
                )  # type: ignore[attr-defined]
            except pl.exceptions.PolarsError:
                raise error_at(
                    query,
                    f"UNION ALL column '{lname}': {types.sql_name(ltype)} and "
                    f"{types.sql_name(rtype)} have no common type",
                ) from None
        for side in (left, right):
            side_names = list(side.node.schema)
            cols = [
                (name, pl.col(src).cast(dtype).alias(name))
                for (name, dtype), src in zip(schema.items(), side_names, strict=True)
            ]
            inputs.append(Calc(self._next_id("calc"), [side.node], schema, projections=cols, sql="align union input"))
        return _Relation(UnionAll(self._next_id("union"), inputs, schema))

    def _from(self, select: exp.Select) -> _Relation:
        source = select.args.get("from_") or select.args.get("from")
        if source is None:
            raise error_at(select, "SELECT without FROM is not supported in a streaming query", UnsupportedError)
        if select.args.get("joins"):
            raise error_at(select.args["joins"][0], "joins are not supported yet", UnsupportedError)
        item = source.this
        alias = item.alias_or_name if item.alias else None
        if isinstance(item, exp.Subquery):
            inner = self._query(item.this)
            return _Relation(inner.node, frozenset({alias.lower()} if alias else set()))
        if isinstance(item, exp.Table) and isinstance(item.this, exp.Anonymous | WindowCall):
            raise error_at(
                item, "window table functions (TUMBLE, HOP, CUMULATE, SESSION) are not supported yet", UnsupportedError
            )
        if isinstance(item, exp.Table):
            name = item.name
            qualifiers = {name.lower()} | ({alias.lower()} if alias else set())
            if name.lower() in self.views:
                inner = self._query(self.views[name.lower()])
                return _Relation(inner.node, frozenset(qualifiers))
            return _Relation(self._scan(self._table(item)), frozenset(qualifiers))
        raise error_at(item, f"FROM {item.sql()} is not supported", UnsupportedError)

    def _scan(self, table: TableDef) -> Scan:
        key = table.name.lower()
        if key not in self.scans:
            self.scans[key] = Scan(f"scan:{table.name}", [], table.schema, table=table)
        return self.scans[key]

    def _select(self, select: exp.Select) -> _Relation:
        for arg, what in (
            ("group", "GROUP BY"),
            ("having", "HAVING"),
            ("order", "ORDER BY"),
            ("limit", "LIMIT"),
            ("distinct", "SELECT DISTINCT"),
            ("qualify", "QUALIFY"),
        ):
            if select.args.get(arg):
                raise error_at(select.args[arg], f"{what} is not supported yet", UnsupportedError)
        relation = self._from(select)
        compiler = ExprCompiler(relation.scope, self.udfs)
        predicate = None
        where = select.args.get("where")
        if where is not None:
            _refuse_nested(where.this)
            predicate = compiler.condition(where.this)
        projections: list[tuple[str, pl.Expr]] = []
        used: set[str] = set()
        for index, item in enumerate(select.expressions):
            _refuse_nested(item)
            for name, expr in self._projection(item, index, relation, compiler):
                unique = name
                suffix = 1
                while unique.lower() in used:
                    unique = f"{name}${suffix}"
                    suffix += 1
                used.add(unique.lower())
                projections.append((unique, expr.alias(unique)))
        schema = {name: compiler.dtype(expr) for name, expr in projections}
        sql_text = select.sql(dialect=Flink)
        calc = Calc(
            self._next_id("calc"),
            [relation.node],
            schema,
            projections=projections,
            predicate=predicate,
            sql=sql_text if len(sql_text) < 120 else sql_text[:117] + "...",
        )
        return _Relation(calc)

    def _projection(
        self, item: exp.Expr, position: int, relation: _Relation, compiler: ExprCompiler
    ) -> list[tuple[str, pl.Expr]]:
        if isinstance(item, exp.Star) or (isinstance(item, exp.Column) and isinstance(item.this, exp.Star)):
            qualifier = item.table if isinstance(item, exp.Column) else ""
            if qualifier and qualifier.lower() not in relation.qualifiers:
                raise error_at(item, f"unknown table or alias '{qualifier}'")
            return [(name, pl.col(name)) for name in relation.node.schema if not name.startswith("__")]
        name = item.alias_or_name if isinstance(item, exp.Alias | exp.Column) else f"EXPR${position}"
        node = item.this if isinstance(item, exp.Alias) else item
        expr = compiler.compile(node)
        compiler.dtype(expr, node)
        return [(name, expr)]


def _select_items(query: exp.Expr) -> list[exp.Expr]:
    while isinstance(query, exp.Union | exp.Subquery):
        query = query.this
    return list(query.expressions) if isinstance(query, exp.Select) else []


def _refuse_nested(node: exp.Expr) -> None:
    for inner in node.find_all(exp.Window, exp.AggFunc, exp.Subquery, exp.Exists):
        if isinstance(inner, exp.Window):
            raise error_at(inner, "OVER windows are not supported yet", UnsupportedError)
        if isinstance(inner, exp.AggFunc):
            raise error_at(
                inner,
                f"aggregate {inner.sql(dialect=Flink)} needs GROUP BY, which is not supported yet",
                UnsupportedError,
            )
        raise error_at(inner, "subqueries in expressions are not supported", UnsupportedError)


def _incompatible(source: pl.DataType, target: pl.DataType) -> bool:
    if isinstance(source, pl.Null):
        return False
    text = (isinstance(source, pl.String), isinstance(target, pl.String))
    if text[0] != text[1]:
        return True
    if types.is_temporal(source) != types.is_temporal(target):
        return True
    return isinstance(source, pl.Boolean) != isinstance(target, pl.Boolean)


def _table_def(statement: exp.Create, udfs: Mapping[str, ScalarUdf]) -> TableDef:
    schema = statement.this
    if not isinstance(schema, exp.Schema):
        raise error_at(statement, "CREATE TABLE needs a column list")
    name = schema.this.name
    options: dict[str, str] = {}
    for prop in (statement.args.get("properties") or exp.Properties(expressions=[])).expressions:
        if isinstance(prop, exp.Property):
            options[str(prop.this.name)] = str(prop.args["value"].name)
        else:
            raise error_at(
                prop,
                f"table property {prop.sql(dialect=Flink)} is not supported; use WITH ('k' = 'v')",
                UnsupportedError,
            )
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
    table = TableDef(name, tuple(columns), options, None, primary_key, _line(statement))
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
        table = TableDef(name, tuple(columns), options, Watermark(column.name, expr, sql_text), primary_key, table.line)
    return table


def _line(node: exp.Expr) -> int | None:
    return position(node)[0]
