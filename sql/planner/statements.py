"""Statements: SET fills the pipeline options, CREATE the catalog, each INSERT INTO adds a sink; the script's
canonical text gives the plan fingerprint."""

from __future__ import annotations

import hashlib

import polars as pl
from sqlglot import exp

from sql import kafka_options, types
from sql import options as option_rules
from sql.catalog import Column, TableDef
from sql.dialect import Flink, StatementSet
from sql.errors import SqlError, UnsupportedError, error_at
from sql.plan import OP_COLUMN, Calc, Plan, Sink
from sql.planner import changelog, functions, relations, windows
from sql.planner.binder import HIDDEN, Binder, Relation
from sql.planner.tables import table_def

#: connectors that show an updating result as it changes, so need no key to upsert by
UPDATING_SINKS_WITHOUT_KEY = ("print", "blackhole")


def plan(binder: Binder, statements: list[exp.Expr]) -> Plan:
    canonical: list[str] = []
    sinks: list[Sink] = []
    for statement in _flattened(statements):
        canonical.append(statement.sql(dialect=Flink))
        if isinstance(statement, exp.Create):
            create(binder, statement)
        elif isinstance(statement, exp.Drop):
            drop(binder, statement)
        elif isinstance(statement, exp.Insert):
            sinks.append(insert(binder, statement))
            binder.ids.planned(sinks[-1])
        elif isinstance(statement, exp.Set):
            set_options(binder, statement)
        else:
            kind = type(statement).__name__.upper()
            raise error_at(statement, f"{kind} statements are not supported in a pipeline", UnsupportedError)
    if not sinks:
        raise SqlError("the script has no INSERT INTO statement, so there is nothing to run")
    fingerprint = hashlib.sha256("\n".join(canonical).encode()).hexdigest()[:16]
    result = Plan(dict(binder.tables), sinks, dict(binder.options), fingerprint)
    option_rules.check_roles(result)
    return result


def _flattened(statements: list[exp.Expr]) -> list[exp.Expr]:
    """A statement set's INSERTs in place of the set: they plan exactly as if written one after another (one
    pipeline, each source read once), which every script already is, so the set adds nothing else (nor to the
    fingerprint)."""
    out: list[exp.Expr] = []
    for statement in statements:
        if not isinstance(statement, StatementSet):
            out.append(statement)
            continue
        if not statement.expressions:
            raise error_at(statement, "the statement set is empty: put at least one INSERT INTO between BEGIN and END")
        for inner in statement.expressions:
            if not isinstance(inner, exp.Insert):
                kind = type(inner).__name__.upper()
                raise error_at(
                    inner,
                    f"a statement set holds INSERT INTO statements only, not {kind}; put it before the set",
                    UnsupportedError,
                )
        out += statement.expressions
    return out


def set_options(binder: Binder, statement: exp.Set) -> None:
    for item in statement.expressions:
        eq = item.this
        if not isinstance(eq, exp.EQ):
            raise error_at(item, "SET 'key' = 'value' expected")
        key, value = str(eq.this.name), str(eq.expression.name)
        problem = option_rules.pipeline_option_problem(key, value)
        if problem:
            raise error_at(eq.expression, problem)
        binder.options[key] = value


def create(binder: Binder, statement: exp.Create) -> None:
    kind = (statement.args.get("kind") or "").upper()
    if kind == "VIEW":  # CREATE [TEMPORARY] VIEW [IF NOT EXISTS]: every view lives as long as the script
        name = statement.this.name if isinstance(statement.this, exp.Table) else statement.this.this.name
        if statement.args.get("exists") and name.lower() in binder.views:
            return
        binder.check_new_name(name, statement)
        query = statement.expression
        if isinstance(statement.this, exp.Schema) and statement.this.expressions:  # `CREATE VIEW v (a, b) AS ...`
            alias = exp.TableAlias(this=exp.to_identifier(name), columns=list(statement.this.expressions))
            alias.meta.update(statement.this.meta)
            query = exp.select("*").from_(exp.Subquery(this=query, alias=alias))
        binder.views[name.lower()] = query
        return
    if kind == "FUNCTION":
        functions.create(binder, statement)
        return
    if kind != "TABLE":
        raise error_at(statement, f"CREATE {kind} is not supported", UnsupportedError)
    if statement.expression is not None:
        raise error_at(statement, "CREATE TABLE ... AS SELECT is not supported; use INSERT INTO", UnsupportedError)
    for prop in statement.find_all(exp.TemporaryProperty):
        prop.pop()  # CREATE TEMPORARY TABLE: every table lives as long as the script, as a temporary one does
    table = table_def(statement, binder.udfs)
    binder.check_new_name(table.name, statement)
    binder.tables[table.name.lower()] = table


def drop(binder: Binder, statement: exp.Drop) -> None:
    """DROP [TEMPORARY] VIEW [IF EXISTS] v, DROP [TEMPORARY [SYSTEM]] FUNCTION [IF EXISTS] f: later statements
    no longer see it (what already used it keeps it)."""
    kind = (statement.args.get("kind") or "").upper()
    if kind == "FUNCTION":
        functions.drop(binder, statement)
        return
    if kind != "VIEW":
        why = ": its tables are its sources and sinks" if kind == "TABLE" else ""
        raise error_at(statement, f"DROP {kind} is not supported in a pipeline{why}", UnsupportedError)
    for table in statement.args.get("tables") or []:
        if table.name.lower() in binder.views:
            del binder.views[table.name.lower()]
        elif not statement.args.get("exists"):
            raise error_at(table, f"DROP VIEW: there is no view '{table.name}'")


def insert(binder: Binder, statement: exp.Insert) -> Sink:
    """The query, cast column by column to the sink's declared types."""
    target = statement.this
    columns: list[exp.Identifier] | None = None
    if isinstance(target, exp.Schema):
        columns = list(target.expressions)
        target = target.this
    table = binder.table(target)
    query = statement.expression
    if query is None:
        raise error_at(statement, "INSERT INTO needs a query: INSERT INTO t SELECT ...")
    relation = relations.query(binder, query)
    if relation.window is not None and relation.window.unassigned_session:
        raise error_at(query, "SESSION windows need GROUP BY window_start, window_end", UnsupportedError)
    _check_updating(relation, table, query)
    _check_sink_format(table)
    wanted = _target_columns(table, columns)
    projections = _casts(binder, relation, table, wanted, query)
    return _sink(binder, relation, table, projections)


def _check_updating(relation: Relation, table: TableDef, query: exp.Expr) -> None:
    """An updating result needs a sink that can take its changes: keyed, or one that only shows them."""
    if (problem := kafka_options.sink_problem(table, changelog.updating(relation.node))) is not None:
        message, option = problem
        where = table.option_at.get(option) if option else None
        if where is not None and where[0] is not None:
            raise SqlError(f"INSERT INTO {table.name}: {message}", *where)
        raise error_at(query, f"INSERT INTO {table.name}: {message}")
    if not changelog.updating(relation.node):
        return
    if table.primary_key or table.connector.lower() in UPDATING_SINKS_WITHOUT_KEY:
        return
    if changelog.source(table) == changelog.RETRACT:
        return  # a changelog format (debezium-json, canal-json) writes each change with its kind, as Flink does
    if windows.over_windows(relation.node):
        raise error_at(
            query,
            f"INSERT INTO {table.name}: the query gives an updating result, but '{table.name}' is "
            "append-only. Its input is windowed: GROUP BY the input's window_start and window_end (passed on "
            "under those names) to make it a window aggregation with final, append-only rows",
        )
    raise error_at(
        query,
        f"INSERT INTO {table.name}: the query gives an updating result (rows change as more input "
        f"arrives{changelog.origin(relation.node, '; ', '')}), but '{table.name}' is append-only. "
        f"Declare PRIMARY KEY (...) NOT ENFORCED on '{table.name}' to upsert by key, or aggregate over a "
        "window (TUMBLE, HOP, CUMULATE, SESSION) "
        "to get final, append-only rows",
    )


def _check_sink_format(table: TableDef) -> None:
    """What a format cannot write, refused as Flink refuses it when the sink is built."""
    key = "debezium-json.schema-include"
    if table.options.get(key, "").strip().lower() == "true":
        line, col = table.option_at.get(key, (table.line, table.col))
        raise UnsupportedError(
            f"INSERT INTO {table.name}: format 'debezium-json' writes no schema; "
            f"'{key}' = 'true' is for reading only (as in Flink)",
            line,
            col,
        )


def _target_columns(table: TableDef, columns: list[exp.Identifier] | None) -> list[Column | None]:
    """The sink columns the query fills: those named in INSERT INTO t (a, b), else every physical column."""
    if not columns:
        return [c for c in table.columns if c.computed is None]
    wanted = [table.column(c.name) for c in columns]
    for ident, col in zip(columns, wanted, strict=True):
        if col is None:
            raise error_at(ident, f"table '{table.name}' has no column '{ident.name}'")
    return wanted


def _casts(
    binder: Binder, relation: Relation, table: TableDef, wanted: list[Column | None], query: exp.Expr
) -> list[tuple[str, pl.Expr]]:
    produced = [(n, t) for n, t in relation.node.schema.items() if n not in HIDDEN]
    if len(produced) != len(wanted):
        raise error_at(
            query,
            f"INSERT INTO {table.name}: the query produces {len(produced)} column(s) but the table takes "
            f"{len(wanted)} ({', '.join(c.name for c in wanted if c)})",
        )
    compiler = binder.compiler(relation.scope)
    projections: list[tuple[str, pl.Expr]] = []
    items = relations.select_items(query)
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
    return projections


def _sink(binder: Binder, relation: Relation, table: TableDef, projections: list[tuple[str, pl.Expr]]) -> Sink:
    """Columns the INSERT leaves out are NULL; an updating result keeps its row kinds for the sink."""
    by_name = dict(projections)
    ordered = [(c.name, by_name.get(c.name, pl.lit(None, dtype=c.dtype))) for c in table.columns if c.computed is None]
    schema = {c.name: c.dtype for c in table.columns if c.computed is None}
    mode = changelog.passthrough(relation.node)
    if changelog.updating(relation.node):
        ordered.append((OP_COLUMN, pl.col(OP_COLUMN)))
        schema[OP_COLUMN] = pl.String()
    calc = Calc(
        binder.ids.node("cast"), [relation.node], schema, mode, projections=ordered, sql=f"cast to {table.name}"
    )
    return Sink(f"sink:{table.name}", [calc], schema, mode, table=table)


def _incompatible(source: pl.DataType, target: pl.DataType) -> bool:
    """Types a sink's implicit cast refuses: text and numbers, time and the rest, booleans and the rest."""
    if isinstance(source, pl.Null):
        return False
    text = (isinstance(source, pl.String), isinstance(target, pl.String))
    if text[0] != text[1]:
        return True
    if types.is_temporal(source) != types.is_temporal(target):
        return True
    return isinstance(source, pl.Boolean) != isinstance(target, pl.Boolean)
