"""SQL script -> Plan. Binds names and types against the catalog as it goes, so errors carry positions."""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field

import polars as pl
import sqlglot
from sqlglot import exp
from sqlglot.errors import ParseError, TokenError

from sql import durations, types
from sql import options as option_rules
from sql.catalog import Column, TableDef, Watermark
from sql.dialect import Descriptor, Flink, TableArgument, WindowCall
from sql.errors import (
    SqlError,
    UnsupportedError,
    did_you_mean,
    error_at,
    position,
    relocated,
    syntax_error,
    token_error,
)
from sql.expressions import PROCTIME_COLUMN, ExprCompiler, Scope
from sql.plan import (
    OP_COLUMN,
    WATERMARK_COLUMN,
    AggCall,
    Aggregate,
    Calc,
    Join,
    Node,
    OverAggregate,
    Plan,
    Scan,
    Sink,
    StateTtl,
    TimeBounds,
    TopN,
    UnionAll,
    WindowAssign,
    WindowSpec,
)
from sql.udf import AGGREGATES as UDAF_REGISTRY
from sql.udf import REGISTRY, ScalarUdf


def parse(text: str) -> list[exp.Expr]:
    try:
        return [s for s in sqlglot.parse(text, read=Flink) if s is not None and not isinstance(s, exp.Semicolon)]
    except ParseError as err:
        raise syntax_error(err) from None
    except TokenError as err:
        raise token_error(text, err) from None


def plan_script(text: str, udfs: Mapping[str, ScalarUdf] | None = None) -> Plan:
    """Plan every statement of a script: DDL fills the catalog, each INSERT adds a sink to one pipeline."""
    return _Planner({**REGISTRY, **(udfs or {})}).plan(parse(text))


WINDOW_COLUMNS = ("window_start", "window_end", "window_time")
HIDDEN = (WATERMARK_COLUMN, OP_COLUMN)
UPDATING_SINKS_WITHOUT_KEY = ("print", "blackhole")


@dataclass
class _Relation:
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


class _Planner:
    def __init__(self, udfs: Mapping[str, ScalarUdf]) -> None:
        self.udfs = udfs
        self.tables: dict[str, TableDef] = {}
        self.views: dict[str, exp.Query] = {}
        self.options: dict[str, str] = {}
        self.scans: dict[str, Scan] = {}
        self.sinks: list[Sink] = []
        self._ids: dict[str, int] = {}
        self._pending_ids: set[str | None] = set()

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
        plan = Plan(dict(self.tables), self.sinks, dict(self.options), fingerprint)
        option_rules.check_roles(plan)
        return plan

    def _set(self, statement: exp.Set) -> None:
        for item in statement.expressions:
            eq = item.this
            if not isinstance(eq, exp.EQ):
                raise error_at(item, "SET 'key' = 'value' expected")
            key, value = str(eq.this.name), str(eq.expression.name)
            problem = option_rules.pipeline_option_problem(key, value)
            if problem:
                raise error_at(eq.expression, problem)
            self.options[key] = value

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
        if query is None:
            raise error_at(statement, "INSERT INTO needs a query: INSERT INTO t SELECT ...")
        relation = self._query(query)
        if relation.window is not None and relation.window.unassigned_session:
            raise error_at(query, "SESSION windows need GROUP BY window_start, window_end", UnsupportedError)
        produced = [(n, t) for n, t in relation.node.schema.items() if n not in HIDDEN]
        updating = relation.node.changelog != "append"
        if updating and not table.primary_key and table.connector.lower() not in UPDATING_SINKS_WITHOUT_KEY:
            if _over_windows(relation.node):
                raise error_at(
                    query,
                    f"INSERT INTO {table.name}: the query gives an updating result, but '{table.name}' is "
                    "append-only. Its input is windowed: GROUP BY the input's window_start and window_end (passed on "
                    "under those names) to make it a window aggregation with final, append-only rows",
                )
            raise error_at(
                query,
                f"INSERT INTO {table.name}: the query gives an updating result (rows change as more input "
                f"arrives), but '{table.name}' is append-only. Declare PRIMARY KEY (...) NOT ENFORCED on "
                f"'{table.name}' to upsert by key, or aggregate over a window (TUMBLE, HOP, CUMULATE, SESSION) "
                "to get final, append-only rows",
            )
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
        if updating:
            ordered.append((OP_COLUMN, pl.col(OP_COLUMN)))
            schema[OP_COLUMN] = pl.String()
        calc = Calc(
            self._next_id("cast"),
            [relation.node],
            schema,
            relation.node.changelog,
            projections=ordered,
            sql=f"cast to {table.name}",
        )
        self.sinks.append(Sink(f"sink:{table.name}", [calc], schema, relation.node.changelog, table=table))

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
        lschema = [(n, t) for n, t in left.node.schema.items() if n not in HIDDEN]
        rschema = [(n, t) for n, t in right.node.schema.items() if n not in HIDDEN]
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
        changelog = "retract" if "retract" in (left.node.changelog, right.node.changelog) else "append"
        with_wm = WATERMARK_COLUMN in left.node.schema and WATERMARK_COLUMN in right.node.schema
        if with_wm:
            schema[WATERMARK_COLUMN] = types.timestamp(3)
        if changelog == "retract":
            schema[OP_COLUMN] = pl.String()
        for side in (left, right):
            side_names = [n for n in side.node.schema if n not in HIDDEN]
            cols = [
                (name, pl.col(src).cast(dtype).alias(name))
                for (name, dtype), src in zip(schema.items(), side_names, strict=False)
            ]
            if with_wm:
                cols.append((WATERMARK_COLUMN, pl.col(WATERMARK_COLUMN).cast(types.timestamp(3))))
            if changelog == "retract":
                op = pl.col(OP_COLUMN) if side.node.changelog == "retract" else pl.lit("+I").alias(OP_COLUMN)
                cols.append((OP_COLUMN, op))
            inputs.append(
                Calc(self._next_id("calc"), [side.node], schema, changelog, projections=cols, sql="align union input")
            )
        return _Relation(UnionAll(self._next_id("union"), inputs, schema, changelog))

    def _from(self, select: exp.Select) -> _Relation:
        source = select.args.get("from_") or select.args.get("from")
        if source is None:
            raise error_at(select, "SELECT without FROM is not supported in a streaming query", UnsupportedError)
        relation = self._from_item(source.this)
        joins = select.args.get("joins") or []
        where = select.args.get("where")
        for join in joins:
            if (join.kind or "").upper() == "CROSS" and join.args.get("on") is None and where and len(joins) == 1:
                # `FROM a, b WHERE a.k = b.k AND ...` is an inner join on the WHERE clause (which still filters
                # the joined rows afterwards, to the same effect).
                join = join.copy()
                join.set("kind", None)
                join.set("on", where.this.copy())
            relation = self._join(relation, join, select)
        return relation

    # -- joins ---------------------------------------------------------------------------------
    def _join(self, left: _Relation, join: exp.Join, select: exp.Select) -> _Relation:
        kind = (join.side or join.kind or "INNER").upper()
        if kind not in ("INNER", "LEFT", "RIGHT", "FULL"):
            raise error_at(join, f"{kind} JOIN is not supported", UnsupportedError)
        on = join.args.get("on")
        if on is None:
            raise error_at(join, "a join needs ON with at least one equality between the two sides", UnsupportedError)
        item = join.this
        lookup = isinstance(item, exp.Table) and item.args.get("version") is not None
        if lookup:
            if kind not in ("INNER", "LEFT"):
                raise error_at(join, "a lookup join is INNER or LEFT", UnsupportedError)
            table = self._table(item)
            alias = item.alias_or_name.lower()
            right_node = Node(f"dim:{table.name}", [], dict(table.schema))
            right = _Relation(right_node, frozenset({alias, table.name.lower()}))
        else:
            table = None
            right = self._from_item(item)
        for side in (left, right):
            if side.window is not None and side.window.unassigned_session:
                raise error_at(join, "SESSION windows need GROUP BY window_start, window_end", UnsupportedError)
        # Output names: the left side's as they are; a clashing right name gets a digit (id, id0).
        left_map, right_map = left.column_map(), right.column_map()
        left_cols = [n for n in left.node.schema if not n.startswith("__")]
        right_cols = [n for n in right.node.schema if not n.startswith("__")]
        used = {n.lower() for n in left_cols}
        right_names: dict[str, str] = {}
        for name in right_cols:
            out, suffix = name, 0
            while out.lower() in used:
                out, suffix = f"{name}{suffix}", suffix + 1
            used.add(out.lower())
            right_names[name] = out
        left_names = {n: n for n in left_cols}
        columns = {**left_map, **{k: right_names[v] for k, v in right_map.items()}}
        schema = {
            **{n: left.node.schema[n] for n in left_cols},
            **{right_names[n]: right.node.schema[n] for n in right_cols},
        }
        out_scope = Scope(schema, left.qualifiers | right.qualifiers, columns)
        left_compiler, right_compiler = ExprCompiler(left.scope, self.udfs), ExprCompiler(right.scope, self.udfs)

        left_keys: list[pl.Expr] = []
        right_keys: list[pl.Expr] = []
        bounds: list[tuple[str, str, str, dt.timedelta]] = []  # (left time, right time, op, constant)
        bound_conjuncts: list[exp.Expr] = []
        residual: list[exp.Expr] = []
        window_ends: tuple[str, str] | None = None
        for conjunct in _conjuncts(on):
            sides = self._sides(conjunct, left, right)
            if isinstance(conjunct, exp.EQ) and {
                self._sides(conjunct.this, left, right),
                self._sides(conjunct.expression, left, right),
            } == {"left", "right"}:
                l_node, r_node = (
                    (conjunct.this, conjunct.expression)
                    if self._sides(conjunct.this, left, right) == "left"
                    else (conjunct.expression, conjunct.this)
                )
                left_keys.append(left_compiler.compile(l_node))
                right_keys.append(right_compiler.compile(r_node))
                if all(
                    isinstance(n, exp.Column)
                    and n.name.lower() in {"window_end", _window_columns(side.window)[1].lower() if side.window else ""}
                    for n, side in ((l_node, left), (r_node, right))
                ):
                    window_ends = (left.scope.resolve(l_node), right.scope.resolve(r_node))
                continue
            found = self._time_bounds(conjunct, left, right) if sides == "both" else None
            if found:
                bounds.extend(found)
                bound_conjuncts.append(conjunct)
                continue
            residual.append(conjunct)
        if not left_keys:
            raise error_at(on, "a join needs at least one equality between the two sides", UnsupportedError)

        time_bounds = None
        if lookup:
            residual = bound_conjuncts + residual
        elif bounds:
            pairs = {(b[0], b[1]) for b in bounds}
            lowers = [b[3] for b in bounds if b[2] == ">="]
            uppers = [b[3] for b in bounds if b[2] == "<="]
            watermarked = WATERMARK_COLUMN in left.node.schema and WATERMARK_COLUMN in right.node.schema
            appends = left.node.changelog == "append" and right.node.changelog == "append"
            if len(pairs) == 1 and lowers and uppers and watermarked and appends:
                ((l_time, r_time),) = pairs
                time_bounds = TimeBounds(l_time, r_time, max(lowers), min(uppers))
            else:
                residual = bound_conjuncts + residual  # not an interval join: the bounds filter a regular join
        residual_expr = None
        if residual:
            if kind != "INNER" and not lookup:
                raise error_at(
                    residual[0],
                    f"{kind} JOIN conditions other than equalities (and interval bounds on "
                    "time attributes) are not supported yet",
                    UnsupportedError,
                )
            compiler = ExprCompiler(out_scope, self.udfs)
            combined = residual[0]
            for extra in residual[1:]:
                combined = exp.And(this=combined, expression=extra)
            residual_expr = compiler.condition(combined)

        updating = left.node.changelog != "append" or right.node.changelog != "append"
        if updating and (kind != "INNER" or time_bounds is not None):
            raise error_at(join, f"{kind} JOIN over an updating input is not supported yet", UnsupportedError)
        if lookup:
            changelog = left.node.changelog
        elif time_bounds is not None or (kind == "INNER" and not updating):
            changelog = "append"
        else:
            changelog = "retract"
        if changelog == "retract":
            schema[OP_COLUMN] = pl.String()
        sql_text = on.sql(dialect=Flink)
        state_id = self._unique_id("join", f"{kind}|{sql_text}|{sorted(left.qualifiers)}|{sorted(right.qualifiers)}")
        inputs = [left.node] if lookup else [left.node, right.node]
        node = Join(
            self._next_id("join"),
            inputs,
            schema,
            changelog,
            kind=kind,
            left_keys=left_keys,
            right_keys=right_keys,
            left_names=left_names,
            right_names=right_names,
            residual=residual_expr,
            bounds=time_bounds,
            lookup=lookup,
            dimension=table,
            ttl=None if (lookup or time_bounds is not None) else self._ttl(select),
            window_ends=window_ends
            if (
                changelog == "append"
                and not lookup
                and time_bounds is None
                and WATERMARK_COLUMN in left.node.schema
                and WATERMARK_COLUMN in right.node.schema
            )
            else None,
            state_id=state_id,
            sql=sql_text[:150],
        )
        return _Relation(node, left.qualifiers | right.qualifiers, columns=columns)

    def _ttl(self, select: exp.Select) -> StateTtl | None:
        """`/*+ STATE_TTL('1 h' [, 'event']) */` on the SELECT, else `SET 'state.ttl' = '1 h'` for the pipeline."""
        hint = select.args.get("hint")
        args: list[str] = []
        for item in hint.expressions if hint is not None else []:
            if isinstance(item, exp.Anonymous) and item.name.upper() == "STATE_TTL":
                args = [str(a.name) for a in item.expressions]
                node: exp.Expr = select.expressions[0]  # positions inside a hint count from its comment
                break
        else:
            node = select
            if "state.ttl" in self.options:
                args = [self.options["state.ttl"], self.options.get("state.ttl.time", "processing")]
        if not args:
            return None
        problem = option_rules.duration(args[0])
        if problem:
            raise error_at(node, f"STATE_TTL '{args[0]}' {problem}" if problem.startswith("must") else problem)
        seconds = durations.parse_duration(args[0])
        time = (args[1] if len(args) > 1 else "processing").lower()
        if time not in ("processing", "event"):
            raise error_at(node, "STATE_TTL time must be 'processing' or 'event'")
        return StateTtl(dt.timedelta(seconds=seconds), time)

    def _sides(self, node: exp.Expr, left: _Relation, right: _Relation) -> str:
        found: set[str] = set()
        for column in node.find_all(exp.Column):
            for label, side in (("left", left), ("right", right)):
                try:
                    side.scope.resolve(column)
                    found.add(label)
                except SqlError:
                    pass
        if not found:
            return "none"
        return found.pop() if len(found) == 1 else "both"

    def _time_bounds(
        self, node: exp.Expr, left: _Relation, right: _Relation
    ) -> list[tuple[str, str, str, dt.timedelta]] | None:
        """`l.t BETWEEN r.t - a AND r.t + b`, `l.t >= r.t - a`, ... as bounds on (right time - left time)."""
        if isinstance(node, exp.Between):
            low = self._time_bounds(exp.GTE(this=node.this, expression=node.args["low"]), left, right)
            high = self._time_bounds(exp.LTE(this=node.this, expression=node.args["high"]), left, right)
            return (low + high) if low and high else None
        ops = {exp.GTE: ">=", exp.GT: ">", exp.LTE: "<=", exp.LT: "<"}
        if type(node) not in ops:
            return None
        a, b = _time_term(node.this), _time_term(node.expression)
        if a is None or b is None:
            return None
        (a_col, a_shift), (b_col, b_shift) = a, b
        side_a, side_b = self._sides(a_col, left, right), self._sides(b_col, left, right)
        if {side_a, side_b} != {"left", "right"}:
            return None
        op = ops[type(node)]
        # a_col + a_shift OP b_col + b_shift
        if side_a == "left":  # l OP r + (b - a)  =>  r - l FLIP (a - b)
            l_col, r_col, constant = a_col, b_col, a_shift - b_shift
            op = {">=": "<=", ">": "<", "<=": ">=", "<": ">"}[op]
        else:  # r OP l + (b - a)  =>  r - l OP (b - a)
            l_col, r_col, constant = b_col, a_col, b_shift - a_shift
        if op == ">":
            op, constant = ">=", constant + dt.timedelta(milliseconds=1)
        elif op == "<":
            op, constant = "<=", constant - dt.timedelta(milliseconds=1)
        l_name, r_name = left.scope.resolve(l_col), right.scope.resolve(r_col)
        if not isinstance(left.node.schema[l_name], pl.Datetime) or not isinstance(
            right.node.schema[r_name], pl.Datetime
        ):
            return None
        return [(l_name, r_name, op, constant)]

    def _stateful_ids(self) -> set[str | None]:
        ids: set[str | None] = set()
        for sink in self.sinks:
            ids |= {getattr(n, "state_id", None) for n in sink.walk() if n.stateful}
        return ids

    def _unique_id(self, base: str, role: str) -> str:
        digest = hashlib.sha256(role.encode()).hexdigest()[:10]
        used = self._stateful_ids() | self._pending_ids
        candidate, suffix = f"{base}-{digest}", 1
        while candidate in used:
            suffix += 1
            candidate = f"{base}-{digest}-{suffix}"
        self._pending_ids.add(candidate)
        return candidate

    def _from_item(self, item: exp.Expr) -> _Relation:
        alias = item.alias_or_name if item.alias else None
        aliases = frozenset({alias.lower()} if alias else set())
        if isinstance(item, exp.Subquery):
            inner = self._query(item.this)
            return _Relation(inner.node, aliases, inner.window, inner.window_input)
        if isinstance(item, exp.Table) and isinstance(item.this, exp.Anonymous) and item.this.name.upper() == "TABLE":
            calls = item.this.expressions
            if len(calls) != 1 or not isinstance(calls[0], WindowCall):
                raise error_at(
                    item,
                    "only window table functions (TUMBLE, HOP, CUMULATE, SESSION) are supported in TABLE(...)",
                    UnsupportedError,
                )
            return self._window_tvf(calls[0], aliases)
        if isinstance(item, exp.Table) and isinstance(item.this, WindowCall):
            # RisingWave style: FROM TUMBLE(t, ts, INTERVAL ...)
            return self._window_tvf(item.this, aliases)
        if isinstance(item, exp.Table):
            name = item.name
            qualifiers = {name.lower()} | set(aliases)
            if name.lower() in self.views:
                inner = self._query(self.views[name.lower()])
                return _Relation(inner.node, frozenset(qualifiers), inner.window, inner.window_input)
            return _Relation(self._scan(self._table(item)), frozenset(qualifiers))
        raise error_at(item, f"FROM {item.sql(dialect=Flink)} is not supported", UnsupportedError)

    def _window_tvf(self, call: WindowCall, aliases: frozenset[str]) -> _Relation:
        named = {a.this.name.upper(): a.expression for a in call.expressions if isinstance(a, exp.Kwarg)}
        positional = [a for a in call.expressions if not isinstance(a, exp.Kwarg)]
        table_arg = named.get("DATA") or (positional.pop(0) if positional else None)
        if isinstance(table_arg, TableArgument):
            source = self._from_item(table_arg.this)
            partition = tuple(c.name for c in table_arg.args.get("partition_by") or [])
        elif isinstance(table_arg, exp.Column | exp.Table):  # TUMBLE(t, ts, ...) without TABLE
            source = self._from_item(exp.Table(this=exp.to_identifier(table_arg.name)))
            partition = ()
        else:
            raise error_at(call, f"{call.kind} needs a table as its first argument: TABLE t")
        time_arg = named.get("TIMECOL") or (positional.pop(0) if positional else None)
        if isinstance(time_arg, Descriptor):
            time_arg = time_arg.expressions[0]
        if not isinstance(time_arg, exp.Column):
            raise error_at(call, f"{call.kind} needs the time column: DESCRIPTOR(ts)")
        time_col = source.scope.resolve(time_arg)
        if not isinstance(source.node.schema[time_col], pl.Datetime):
            raise error_at(time_arg, f"window time column '{time_col}' must be a TIMESTAMP")
        order = {
            "TUMBLE": ["SIZE", "OFFSET"],
            "HOP": ["SLIDE", "SIZE", "OFFSET"],
            "CUMULATE": ["STEP", "SIZE", "OFFSET"],
            "SESSION": ["GAP"],
        }[call.kind]
        values: dict[str, exp.Expr] = {}
        for key in order:
            if key in named:
                values[key] = named[key]
            elif positional:
                values[key] = positional.pop(0)
        if positional:
            raise error_at(positional[0], f"too many arguments for {call.kind}")
        spec = _window_spec(call, call.kind, time_col, values, partition)
        if _is_proctime(source.node, time_col):
            spec = dataclasses.replace(spec, proctime=True)
        for column in partition:
            source.scope.resolve(exp.column(column))
        schema = {k: v for k, v in source.node.schema.items() if k not in WINDOW_COLUMNS}
        window_types = {
            "window_start": types.timestamp(3),
            "window_end": types.timestamp(3),
            "window_time": types.timestamp(3),
        }
        if spec.kind == "SESSION":
            placeholder = Node(self._next_id("session"), [source.node], {**schema, **window_types})
            return _Relation(placeholder, source.qualifiers | aliases, spec, source.node)
        assign = WindowAssign(
            self._next_id("window"), [source.node], {**schema, **window_types}, source.node.changelog, window=spec
        )
        return _Relation(assign, source.qualifiers | aliases, spec, source.node)

    def _scan(self, table: TableDef) -> Scan:
        key = table.name.lower()
        if key not in self.scans:
            schema = dict(table.schema)
            if table.watermark is not None:
                schema[WATERMARK_COLUMN] = types.timestamp(3)
            self.scans[key] = Scan(f"scan:{table.name}", [], schema, table=table)
        return self.scans[key]

    def _select(self, select: exp.Select) -> _Relation:
        for arg, what in (("order", "ORDER BY"), ("limit", "LIMIT"), ("qualify", "QUALIFY")):
            if select.args.get(arg):
                raise error_at(select.args[arg], f"{what} is not supported yet", UnsupportedError)
        ranked = self._top_n(select)
        if ranked is not None:
            relation, where = ranked
            compiler = ExprCompiler(relation.scope, self.udfs)
            predicate = compiler.condition(where) if where is not None else None
            return _Relation(
                self._calc(relation.node, self._projections(select, relation, compiler), predicate, select)
            )
        relation = self._from(select)
        aggregated = (
            bool(select.args.get("group"))
            or bool(select.args.get("having"))
            or any(_aggregates_in(item, self.udfs) for item in select.expressions)
            or bool(select.args.get("distinct"))
        )
        if aggregated:
            return self._aggregate(select, relation)
        if relation.window is not None and relation.window.unassigned_session:
            raise error_at(select, "SESSION windows need GROUP BY window_start, window_end", UnsupportedError)
        if any(isinstance(w.this, exp.AggFunc) for item in select.expressions for w in item.find_all(exp.Window)):
            return self._over(select, relation)
        compiler = ExprCompiler(relation.scope, self.udfs)
        predicate = None
        where = select.args.get("where")
        if where is not None:
            _refuse_nested(where.this)
            predicate = compiler.condition(where.this)
        projections = self._projections(select, relation, compiler)
        calc = self._calc(relation.node, projections, predicate, select)
        return self._windowed(_Relation(calc), relation.window, select)

    def _projections(
        self, select: exp.Select, relation: _Relation, compiler: ExprCompiler
    ) -> list[tuple[str, pl.Expr]]:
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
        return projections

    def _calc(
        self, child: Node, projections: list[tuple[str, pl.Expr]], predicate: pl.Expr | None, select: exp.Expr
    ) -> Calc:
        """A Calc that also carries the hidden columns (watermark, row kind) of its input."""
        compiler = ExprCompiler(Scope(child.schema), self.udfs)
        schema = {name: compiler.dtype(expr) for name, expr in projections}
        hidden = [(h, pl.col(h)) for h in HIDDEN if h in child.schema]
        schema.update({h: child.schema[h] for h, _ in hidden})
        sql_text = select.sql(dialect=Flink)
        return Calc(
            self._next_id("calc"),
            [child],
            schema,
            child.changelog,
            projections=projections + hidden,
            predicate=predicate,
            sql=sql_text if len(sql_text) < 120 else sql_text[:117] + "...",
        )

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

    # -- OVER aggregates -----------------------------------------------------------------------
    def _over(self, select: exp.Select, relation: _Relation) -> _Relation:
        compiler = ExprCompiler(relation.scope, self.udfs)
        where = select.args.get("where")
        predicate = compiler.condition(where.this) if where is not None else None
        windows = [w for item in select.expressions for w in item.find_all(exp.Window)]
        first = windows[0]
        signature = (
            first.args.get("partition_by") and [p.sql() for p in first.args["partition_by"]],
            first.args.get("order") and first.args["order"].sql(),
            first.args.get("spec") and first.args["spec"].sql(),
        )
        for window in windows[1:]:
            other = (
                window.args.get("partition_by") and [p.sql() for p in window.args["partition_by"]],
                window.args.get("order") and window.args["order"].sql(),
                window.args.get("spec") and window.args["spec"].sql(),
            )
            if other != signature:
                raise error_at(window, "all OVER windows of one SELECT must be the same", UnsupportedError)
        order = first.args["order"].expressions if first.args.get("order") else []
        if len(order) != 1 or order[0].args.get("desc"):
            raise error_at(first, "OVER needs ORDER BY one time attribute, ascending", UnsupportedError)
        time_expr, time_type = compiler.typed(order[0].this)
        if not isinstance(time_type, pl.Datetime) or WATERMARK_COLUMN not in relation.node.schema:
            raise error_at(
                order[0], "OVER must be ordered by a time attribute (a column with a WATERMARK)", UnsupportedError
            )
        if relation.node.changelog != "append":
            raise error_at(first, "OVER over an updating input is not supported yet", UnsupportedError)
        spec = first.args.get("spec")
        rows_n: int | None = None
        range_d: dt.timedelta | None = None
        kind = "ROWS"
        if spec is not None:
            kind = str(spec.args.get("kind") or "ROWS").upper()
            start = spec.args.get("start")
            end = spec.args.get("end")
            if str(end).upper() != "CURRENT ROW":
                raise error_at(spec, "OVER frames end at CURRENT ROW", UnsupportedError)
            if not (isinstance(start, str) and start.upper() == "UNBOUNDED"):
                if kind == "ROWS":
                    rows_n = int(_literal_int(start, spec))
                else:
                    range_d = ExprCompiler.interval(start)
        else:
            kind = "RANGE"
        hidden = [(f"__p{i}", compiler.compile(p)) for i, p in enumerate(first.args.get("partition_by") or [])]
        hidden = hidden or [("__p0", pl.lit(0, pl.Int32))]
        hidden.append(("__o0", time_expr))
        calls: list[AggCall] = []
        replacements: dict[int, str] = {}
        for window in windows:
            call = window.this
            function = call.sql_name().upper()
            if function not in ("COUNT", "SUM", "AVG", "MIN", "MAX") or isinstance(call.this, exp.Distinct):
                raise error_at(window, f"{call.sql(dialect=Flink)} OVER is not supported", UnsupportedError)
            arg_nodes = [call.this] if call.this is not None and not isinstance(call.this, exp.Star) else []
            index = len(calls)
            args = []
            for j, node in enumerate(arg_nodes):
                expr, dtype = compiler.typed(node)
                hidden.append((f"__a{index}_{j}", expr))
                args.append((pl.col(f"__a{index}_{j}"), dtype))
            fake = self._agg_call(call, compiler, f"__over{index}", "append")
            calls.append(
                AggCall(
                    fake.function,
                    tuple(a for a, _ in args),
                    tuple(t for _, t in args),
                    fake.output,
                    fake.dtype,
                    sql=window.sql(dialect=Flink),
                )
            )
            replacements[id(window)] = fake.output
        visible = [(n, pl.col(n)) for n in relation.node.schema if not n.startswith("__")]
        pre = self._calc(relation.node, visible + [(n, e.alias(n)) for n, e in hidden], predicate, select)
        schema = {n: t for n, t in pre.schema.items() if not n.startswith("__")}
        schema.update({c.output: c.dtype for c in calls})
        schema[WATERMARK_COLUMN] = types.timestamp(3)
        node = OverAggregate(
            self._next_id("over"),
            [pre],
            schema,
            "append",
            partition=[n for n, _ in hidden if n.startswith("__p")],
            time="__o0",
            aggs=calls,
            rows=rows_n,
            range=range_d,
            frame_kind=kind,
            state_id=self._unique_id("over", select.sql(dialect=Flink)),
            sql=first.sql(dialect=Flink)[:150],
        )
        over_relation = _Relation(node, relation.qualifiers, columns=relation.columns)
        post = ExprCompiler(over_relation.scope, self.udfs)
        projections: list[tuple[str, pl.Expr]] = []
        for index, item in enumerate(select.expressions):
            body = item.this if isinstance(item, exp.Alias) else item
            if isinstance(body, exp.Star):
                projections += [(n, pl.col(n)) for n in schema if not n.startswith("__")]
                continue
            rewritten = body.copy() if not isinstance(body, exp.Window) else body
            rewritten = (
                body.transform(
                    lambda sub: exp.column(replacements[id(sub)], quoted=True) if id(sub) in replacements else sub,
                    copy=False,
                )
                if not isinstance(body, exp.Window)
                else exp.column(replacements[id(body)], quoted=True)
            )
            name = item.alias_or_name if isinstance(item, exp.Alias | exp.Column) else f"EXPR${index}"
            try:
                projections.append((name, post.compile(rewritten).alias(name)))
            except SqlError as err:
                raise relocated(err, body, {c.sql: c.output for c in calls}) from None
        return _Relation(self._calc(node, projections, None, select))

    # -- Top-N and deduplication ---------------------------------------------------------------
    def _top_n(self, select: exp.Select) -> tuple[_Relation, exp.Expr | None] | None:
        """`SELECT ... FROM (SELECT ..., ROW_NUMBER() OVER (...) AS rn FROM t) WHERE rn <= n [AND ...]`."""
        source = select.args.get("from_") or select.args.get("from")
        if source is None or select.args.get("joins") or not isinstance(source.this, exp.Subquery):
            return None
        inner = source.this.this
        if not isinstance(inner, exp.Select):
            return None
        ranks = [
            i
            for i in inner.expressions
            if isinstance(i, exp.Alias) and isinstance(i.this, exp.Window) and isinstance(i.this.this, exp.RowNumber)
        ]
        if not ranks:
            return None
        rank = ranks[0]
        rank_name = rank.alias
        where = select.args.get("where")
        limit, rest = None, []
        for conjunct in _conjuncts(where.this) if where is not None else []:
            bound = _rank_bound(conjunct, rank_name)
            if bound is not None and limit is None:
                limit = bound
            else:
                rest.append(conjunct)
        if limit is None:
            raise error_at(
                rank,
                f"ROW_NUMBER() needs a filter on '{rank_name}' in the outer query (WHERE "
                f"{rank_name} <= N), as in Flink's Top-N",
                UnsupportedError,
            )
        for item in inner.expressions:
            if item is not rank:
                _refuse_nested(item)
        window = rank.this
        relation = self._from(inner)
        compiler = ExprCompiler(relation.scope, self.udfs)
        inner_where = inner.args.get("where")
        predicate = compiler.condition(inner_where.this) if inner_where is not None else None
        projections: list[tuple[str, pl.Expr]] = []
        for index, item in enumerate(inner.expressions):
            if item is rank:
                continue
            projections += self._projection(item, index, relation, compiler)
        partition_nodes = list(window.args.get("partition_by") or [])
        order_nodes = list(window.args["order"].expressions) if window.args.get("order") else []
        if not order_nodes:
            raise error_at(window, "ROW_NUMBER() needs ORDER BY", UnsupportedError)
        # Without PARTITION BY, the whole stream is one partition.
        hidden = [(f"__p{i}", compiler.compile(n)) for i, n in enumerate(partition_nodes)] or [
            ("__p0", pl.lit(0, pl.Int32))
        ]
        hidden += [(f"__o{i}", compiler.compile(o.this)) for i, o in enumerate(order_nodes)]
        calc = self._calc(relation.node, [(n, e.alias(n)) for n, e in projections + hidden], predicate, inner)
        order = [(f"__o{i}", bool(o.args.get("desc"))) for i, o in enumerate(order_nodes)]
        schema = {n: t for n, t in calc.schema.items() if n != WATERMARK_COLUMN}
        first_by_time = (
            limit == 1
            and len(order) == 1
            and not order[0][1]
            and WATERMARK_COLUMN in calc.schema
            and isinstance(calc.schema[order[0][0]], pl.Datetime)
            and calc.changelog == "append"
        )
        if calc.changelog != "append" and first_by_time:
            first_by_time = False
        out_schema = {n: t for n, t in schema.items() if not n.startswith("__")}
        out_schema[rank_name] = pl.Int64()
        changelog = "append" if first_by_time else "retract"
        if changelog == "retract":
            out_schema[OP_COLUMN] = pl.String()
        node = TopN(
            self._next_id("topn"),
            [calc],
            out_schema,
            changelog,
            partition=[n for n, _ in hidden if n.startswith("__p")],
            order=order,
            limit=limit,
            rank_column=rank_name,
            first_by_time=first_by_time,
            state_id=self._unique_id("topn", inner.sql(dialect=Flink)),
            sql=window.args["order"].sql(dialect=Flink),
        )
        rest_expr = None
        for conjunct in rest:
            rest_expr = conjunct if rest_expr is None else exp.And(this=rest_expr, expression=conjunct)
        return _Relation(node, relation.qualifiers), rest_expr

    # -- aggregation ---------------------------------------------------------------------------
    def _aggregate(self, select: exp.Select, relation: _Relation) -> _Relation:
        scope = relation.scope
        compiler = ExprCompiler(scope, self.udfs)
        where = select.args.get("where")
        predicate = compiler.condition(where.this) if where is not None else None
        group_items = list(select.args["group"].expressions) if select.args.get("group") else []
        if select.args.get("distinct"):
            if group_items or any(_aggregates_in(i, self.udfs) for i in select.expressions):
                raise error_at(select, "SELECT DISTINCT with GROUP BY or aggregates is not supported", UnsupportedError)
            group_items = [i.this if isinstance(i, exp.Alias) else i for i in select.expressions]

        window = None
        window_input = relation.node
        keys: list[tuple[str, pl.Expr, str]] = []  # (output name, expression, canonical SQL)
        has_start = has_end = False
        for item in group_items:
            if isinstance(item, WindowCall):
                if window is not None or relation.window is not None:
                    raise error_at(item, "only one window per GROUP BY")
                window = self._legacy_window(item, relation)
                continue
            if (
                isinstance(item, exp.Column)
                and relation.window is not None
                and item.name.lower() in [c.lower() for c in _window_columns(relation.window)]
            ):
                has_start |= item.name.lower() == _window_columns(relation.window)[0].lower()
                has_end |= item.name.lower() == _window_columns(relation.window)[1].lower()
                continue
            if isinstance(item, exp.Column) and item.name.lower() == "window_time" and relation.window is not None:
                continue
            _refuse_nested(item)
            expr, _ = compiler.typed(item)
            name = item.name if isinstance(item, exp.Column) else f"EXPR$k{len(keys)}"
            keys.append((name, expr, item.sql(dialect=Flink)))
        if relation.window is not None and (has_start or has_end):
            if not (has_start and has_end):
                raise error_at(
                    select.args["group"],
                    "a window aggregation groups by both window_start and window_end: add the missing one to GROUP BY",
                )
            window = relation.window
            assert relation.window_input is not None
            window_input = relation.window_input
        elif relation.window is not None and relation.window.unassigned_session:
            raise error_at(select, "SESSION windows need GROUP BY window_start, window_end", UnsupportedError)
        if window is not None and window.partition_by:
            keys = [(c, pl.col(c), c) for c in window.partition_by if c not in {k[0] for k in keys}] + keys
        if window is not None and relation.node.changelog != "append":
            raise error_at(select, "a window aggregation needs an append-only input", UnsupportedError)

        # Aggregate calls, numbered in order of appearance in SELECT then HAVING.
        aggs: list[AggCall] = []
        canonical_aggs: dict[str, str] = {}
        having = select.args.get("having")
        for node in [*select.expressions, *([having.this] if having else [])]:
            for call in _aggregate_calls(node, self.udfs):
                key = call.sql(dialect=Flink)
                if key not in canonical_aggs:
                    output = f"__agg{len(aggs)}"
                    canonical_aggs[key] = output
                    aggs.append(self._agg_call(call, compiler, output, relation.node.changelog))

        if window is not None and window.unassigned_session:
            for agg in aggs:
                if agg.distinct or agg.udaf is not None:
                    raise error_at(select, f"{agg.sql} is not supported in SESSION windows yet", UnsupportedError)
        post_schema: dict[str, pl.DataType] = {}
        for name, expr, _ in keys:
            post_schema[name] = compiler.dtype(expr)
        if window is not None:
            post_schema.update({c: types.timestamp(3) for c in WINDOW_COLUMNS})
        for agg in aggs:
            post_schema[agg.output] = agg.dtype
        post = ExprCompiler(Scope(post_schema), self.udfs)
        key_sql = {sql_text: name for name, _, sql_text in keys}

        def rewrite(node: exp.Expr) -> exp.Expr:
            def replace(sub: exp.Expr) -> exp.Expr:
                sql_text = sub.sql(dialect=Flink) if isinstance(sub, exp.Expr) else ""
                if sql_text in canonical_aggs and _is_aggregate(sub, self.udfs):
                    return exp.column(canonical_aggs[sql_text], quoted=True)
                if sql_text in key_sql and not isinstance(sub, exp.Alias):
                    return exp.column(key_sql[sql_text], quoted=True)
                if (
                    window is not None
                    and window.attached
                    and isinstance(sub, exp.Column)
                    and sub.name.lower() in (window.start_col.lower(), window.end_col.lower())
                ):  # the input's (renamed) window columns are the groups' window_start and window_end
                    role = "window_start" if sub.name.lower() == window.start_col.lower() else "window_end"
                    return exp.column(role, quoted=True)
                legacy = _legacy_window_column(sub)
                if legacy is not None:
                    if window is None:
                        raise error_at(sub, f"{sub.sql(dialect=Flink)} needs a group window in GROUP BY")
                    return exp.column(legacy, quoted=True)
                return sub

            return node.copy().transform(replace)

        projections: list[tuple[str, pl.Expr]] = []
        used: set[str] = set()
        for index, item in enumerate(select.expressions):
            if isinstance(item, exp.Star):
                raise error_at(item, "SELECT * is not allowed with GROUP BY")
            name = item.alias_or_name if isinstance(item, exp.Alias | exp.Column) else f"EXPR${index}"
            if isinstance(item, exp.Alias) is False and _legacy_window_column(item) is not None:
                name = f"EXPR${index}"
            body = item.this if isinstance(item, exp.Alias) else item
            try:
                expr = post.typed(rewrite(body))[0]
            except SqlError as err:
                if "unknown column" in err.message:
                    raise error_at(
                        body, f"'{body.sql(dialect=Flink)}' must appear in GROUP BY or inside an aggregate function"
                    ) from None
                raise relocated(err, body, {**canonical_aggs, **key_sql}) from None
            unique = name
            while unique.lower() in used:
                unique += "$"
            used.add(unique.lower())
            projections.append((unique, expr.alias(unique)))
        having_expr = None
        if having is not None:
            try:
                having_expr = post.condition(rewrite(having.this))
            except SqlError as err:
                if "unknown column" in err.message:
                    raise error_at(having, "HAVING may only use GROUP BY columns and aggregates") from None
                raise relocated(err, having.this, {**canonical_aggs, **key_sql}) from None
        schema = {name: post.dtype(expr) for name, expr in projections}

        child = window_input
        if predicate is not None:
            passthrough = [(c, pl.col(c)) for c in child.schema]
            child = Calc(
                self._next_id("calc"),
                [child],
                dict(child.schema),
                child.changelog,
                projections=passthrough,
                predicate=predicate,
                sql="WHERE " + where.this.sql(dialect=Flink),
            )
        if window is not None:
            schema[WATERMARK_COLUMN] = types.timestamp(3)
        else:
            schema[OP_COLUMN] = pl.String()
        state_id = _hint(select, "STATE_ID") or self._state_id(select, keys, aggs, window)
        node = Aggregate(
            self._next_id("agg"),
            [child],
            schema,
            "append" if window is not None else "retract",
            keys=[(name, expr.alias(name)) for name, expr, _ in keys],
            aggs=aggs,
            projections=projections,
            having=having_expr,
            window=window,
            ttl=None if window is not None else self._ttl(select),
            state_id=state_id,
            sql=select.sql(dialect=Flink)[:200],
        )
        return self._windowed(_Relation(node), window, select)

    @staticmethod
    def _windowed(relation: _Relation, window: WindowSpec | None, select: exp.Select) -> _Relation:
        """A result that passes window_start and window_end on unchanged carries its windows: grouping by them
        again is a cascaded window aggregation (final, append-only), as in Flink."""
        kept = _kept_window_columns(select, relation.node.schema, window) if window is not None else None
        if window is None or kept is None:
            return relation
        attached = dataclasses.replace(window, attached=True, partition_by=(), start_col=kept[0], end_col=kept[1])
        return _Relation(relation.node, relation.qualifiers, attached, relation.node, relation.columns)

    def _state_id(
        self, select: exp.Select, keys: list[tuple[str, pl.Expr, str]], aggs: list[AggCall], window: WindowSpec | None
    ) -> str:
        """A stable id from the operator's role: what it groups by, over which window and input tables."""
        tables = sorted(t.name.lower() for t in select.find_all(exp.Table))
        role = "|".join(
            [window.describe() if window else "group", *(k[2] for k in keys), *(a.sql for a in aggs), *tables]
        )
        # Unique within the INSERT too: two identical subqueries (Nexmark q5) are two operators with two states.
        return self._unique_id("window-agg" if window else "group-agg", role)

    @property
    def _stateful(self) -> list[Aggregate]:
        nodes: list[Aggregate] = []
        for sink in self.sinks:
            nodes += [n for n in sink.walk() if isinstance(n, Aggregate)]
        return nodes

    def _agg_call(self, call: exp.Expr, compiler: ExprCompiler, output: str, changelog: str) -> AggCall:
        original_sql = call.sql(dialect=Flink)
        filter_expr = None
        if isinstance(call, exp.Filter):
            filter_expr = compiler.condition(call.expression.this)
            call = call.this
        distinct = isinstance(call.this, exp.Distinct) if isinstance(call, exp.AggFunc) else False
        if isinstance(call, exp.Anonymous):
            function = call.name.upper()
            arg_nodes = list(call.expressions)
        else:
            function = call.sql_name().upper()
            inner = call.this.expressions if distinct else ([call.this] if call.this is not None else [])
            arg_nodes = [a for a in inner if not isinstance(a, exp.Star)]
        args = [compiler.typed(a) for a in arg_nodes]
        arg_types = tuple(t for _, t in args)
        if function == "COUNT":
            dtype: pl.DataType = pl.Int64()
        elif len(arg_types) != 1 and function in ("SUM", "AVG", "MIN", "MAX"):
            raise error_at(call, f"{function} takes one argument, not {len(arg_types)}")
        elif function in ("SUM",):
            (t,) = arg_types
            if not t.is_numeric():
                raise error_at(call, f"SUM needs a number, got {types.sql_name(t)}")
            dtype = types.sum_type(t)
        elif function == "AVG":
            (t,) = arg_types
            if not t.is_numeric():
                raise error_at(call, f"AVG needs a number, got {types.sql_name(t)}")
            dtype = types.avg_type(t)
        elif function in ("MIN", "MAX"):
            (t,) = arg_types
            dtype = t
        elif function in UDAF_REGISTRY:
            dtype = UDAF_REGISTRY[function].result_type
            if changelog != "append":
                raise error_at(call, f"{function} over an updating input is not supported", UnsupportedError)
        else:
            raise error_at(call, f"aggregate function {function} is not supported", UnsupportedError)
        if distinct and (function != "COUNT" or len(args) != 1):
            raise error_at(call, "DISTINCT is supported in COUNT(DISTINCT x) only", UnsupportedError)
        return AggCall(
            function,
            tuple(e for e, _ in args),
            arg_types,
            output,
            dtype,
            distinct,
            filter_expr,
            original_sql,
            UDAF_REGISTRY.get(function),
        )

    def _legacy_window(self, item: WindowCall, relation: _Relation) -> WindowSpec:
        args = list(item.expressions)
        if not args or not isinstance(args[0], exp.Column):
            raise error_at(item, f"{item.kind}(time_column, ...) expected in GROUP BY")
        time_col = relation.scope.resolve(args[0])
        if not isinstance(relation.node.schema[time_col], pl.Datetime):
            raise error_at(args[0], f"window time column '{time_col}' must be a TIMESTAMP")
        # Legacy HOP takes (ts, slide, size) as the TVF does; SESSION takes (ts, gap).
        order = {
            "TUMBLE": ["SIZE", "OFFSET"],
            "HOP": ["SLIDE", "SIZE"],
            "SESSION": ["GAP"],
            "CUMULATE": ["STEP", "SIZE"],
        }[item.kind]
        values = dict(zip(order, args[1:], strict=False))
        spec = _window_spec(item, item.kind, time_col, values, ())
        return dataclasses.replace(spec, proctime=True) if _is_proctime(relation.node, time_col) else spec


def _literal_int(node: object, where: exp.Expr) -> int:
    if isinstance(node, exp.Literal) and not node.is_string and node.this.isdigit():
        return int(node.this)
    raise error_at(where, "ROWS needs a whole number of preceding rows")


def _rank_bound(node: exp.Expr, rank: str) -> int | None:
    """`rn <= 3`, `rn < 4`, `rn = 1`, `3 >= rn` -> the largest rank kept."""
    flips = {exp.GTE: exp.LTE, exp.GT: exp.LT, exp.LTE: exp.GTE, exp.LT: exp.GT, exp.EQ: exp.EQ}
    if type(node) not in flips:
        return None
    left, right = node.this, node.expression
    kind = type(node)
    if isinstance(right, exp.Column) and right.name.lower() == rank.lower():
        left, right, kind = right, left, flips[kind]
    if not (isinstance(left, exp.Column) and left.name.lower() == rank.lower() and isinstance(right, exp.Literal)):
        return None
    if right.is_string or not right.this.isdigit():
        raise error_at(right, f"{rank} must be compared with a whole number, not {right.sql()}")
    value = int(right.this)
    return {exp.LTE: value, exp.LT: value - 1, exp.EQ: value if value == 1 else None}.get(kind)


def _is_proctime(node: Node, column: str) -> bool:
    """Whether `column` of `node` is a source's `PROCTIME()` column, passed through unchanged by name."""
    if isinstance(node, Scan):
        declared = node.table.column(column)
        return declared is not None and (declared.computed_sql or "").upper().replace(" ", "") == "PROCTIME()"
    return any(column in child.schema and _is_proctime(child, column) for child in node.inputs)


def _conjuncts(node: exp.Expr) -> list[exp.Expr]:
    if isinstance(node, exp.Paren):
        return _conjuncts(node.this)
    if isinstance(node, exp.And):
        return _conjuncts(node.this) + _conjuncts(node.expression)
    return [node]


def _time_term(node: exp.Expr) -> tuple[exp.Column, dt.timedelta] | None:
    """`col`, `col + INTERVAL ...` or `col - INTERVAL ...` as (column, shift)."""
    if isinstance(node, exp.Paren):
        return _time_term(node.this)
    if isinstance(node, exp.Column):
        return node, dt.timedelta(0)
    if (
        isinstance(node, exp.Add | exp.Sub)
        and isinstance(node.this, exp.Column)
        and isinstance(node.expression, exp.Interval)
    ):
        shift = ExprCompiler.interval(node.expression)
        return node.this, shift if isinstance(node, exp.Add) else -shift
    return None


def _window_spec(
    node: exp.Expr, kind: str, time_col: str, values: dict[str, exp.Expr], partition: tuple[str, ...]
) -> WindowSpec:
    def interval(key: str) -> dt.timedelta:
        if key not in values:
            raise error_at(node, f"{kind} needs {key.lower()}")
        length = ExprCompiler.interval(values[key])
        if length <= dt.timedelta(0):
            raise error_at(values[key], f"{kind} {key.lower()} must be positive")
        return length

    offset = ExprCompiler.interval(values["OFFSET"]) if "OFFSET" in values else dt.timedelta(0)
    if kind == "TUMBLE":
        return WindowSpec(kind, time_col, size=interval("SIZE"), offset=offset)
    if kind == "SESSION":
        return WindowSpec(kind, time_col, gap=interval("GAP"), partition_by=partition)
    step = interval("SLIDE" if kind == "HOP" else "STEP")
    size = interval("SIZE")
    if size % step:
        raise error_at(node, f"{kind} size must be a multiple of its {'slide' if kind == 'HOP' else 'step'}")
    return WindowSpec(kind, time_col, size=size, slide=step, offset=offset)


_AGG_NAMES = ("COUNT", "SUM", "AVG", "MIN", "MAX")


def _is_aggregate(node: exp.Expr, udfs: Mapping[str, ScalarUdf]) -> bool:
    if isinstance(node, exp.Filter):
        return _is_aggregate(node.this, udfs)
    if isinstance(node, exp.AggFunc):
        return True
    return isinstance(node, exp.Anonymous) and node.name.upper() in UDAF_REGISTRY


def _over_windows(node: Node) -> bool:
    """Whether an unbounded aggregation in `node` reads windowed rows (a window TVF or window aggregation)."""
    return any(
        isinstance(inner, Aggregate)
        and inner.window is None
        and any(isinstance(n, WindowAssign) or (isinstance(n, Aggregate) and n.window) for n in inner.walk())
        for inner in node.walk()
    )


def _window_columns(window: WindowSpec) -> tuple[str, str]:
    """The names under which a windowed relation carries window_start and window_end."""
    return (window.start_col, window.end_col) if window.attached else ("window_start", "window_end")


def _kept_window_columns(
    select: exp.Select, schema: Mapping[str, pl.DataType], window: WindowSpec
) -> tuple[str, str] | None:
    """The output names of the window's start and end when the SELECT list passes both on unchanged (under
    any alias, or by `*`), else None: then the result has no windows of its own."""
    if WATERMARK_COLUMN not in schema:
        return None
    start, end = _window_columns(window)
    found: dict[str, str] = {}
    for item in select.expressions:
        if isinstance(item, exp.Star) or (isinstance(item, exp.Column) and isinstance(item.this, exp.Star)):
            found.setdefault("window_start", start)
            found.setdefault("window_end", end)
            continue
        body = item.this if isinstance(item, exp.Alias) else item
        if isinstance(body, exp.Column) and body.name.lower() in (start.lower(), end.lower()):
            role = "window_start" if body.name.lower() == start.lower() else "window_end"
        else:
            role = _legacy_window_column(body) or ""
        if role in ("window_start", "window_end"):
            found.setdefault(role, item.alias_or_name if isinstance(item, exp.Alias) else body.name)
    if {"window_start", "window_end"} - set(found) or not {found["window_start"], found["window_end"]} <= set(schema):
        return None
    return found["window_start"], found["window_end"]


def _aggregate_calls(node: exp.Expr, udfs: Mapping[str, ScalarUdf]) -> list[exp.Expr]:
    """Outermost aggregate calls (with their FILTER clause) inside `node`."""
    found: list[exp.Expr] = []

    def visit(sub: exp.Expr) -> None:
        if isinstance(sub, exp.Window):
            return  # an OVER aggregate is not a GROUP BY aggregate
        if _is_aggregate(sub, udfs):
            found.append(sub)
            return
        for child in sub.iter_expressions():
            visit(child)

    visit(node.this if isinstance(node, exp.Alias) else node)
    return found


def _aggregates_in(node: exp.Expr, udfs: Mapping[str, ScalarUdf]) -> bool:
    return bool(_aggregate_calls(node, udfs))


_LEGACY_WINDOW_COLUMNS = {
    "TUMBLE_START": "window_start",
    "TUMBLE_END": "window_end",
    "TUMBLE_ROWTIME": "window_time",
    "HOP_START": "window_start",
    "HOP_END": "window_end",
    "HOP_ROWTIME": "window_time",
    "SESSION_START": "window_start",
    "SESSION_END": "window_end",
    "SESSION_ROWTIME": "window_time",
    "CUMULATE_START": "window_start",
    "CUMULATE_END": "window_end",
}


def _legacy_window_column(node: exp.Expr) -> str | None:
    if isinstance(node, exp.Anonymous):
        return _LEGACY_WINDOW_COLUMNS.get(node.name.upper())
    return None


def _hint(select: exp.Select, name: str) -> str | None:
    hint = select.args.get("hint")
    for item in hint.expressions if hint is not None else []:
        if isinstance(item, exp.Anonymous) and item.name.upper() == name and item.expressions:
            return str(item.expressions[0].name)
    return None


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
                inner, f"aggregate {inner.sql(dialect=Flink)} is not allowed here (use HAVING to filter on aggregates)"
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
