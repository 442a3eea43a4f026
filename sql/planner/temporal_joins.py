"""Event-time temporal joins (Flink's join with a versioned table):

    SELECT ... FROM orders AS o [LEFT] JOIN rates FOR SYSTEM_TIME AS OF o.ts AS r ON o.currency = r.currency

`o.ts` is the probe side's event-time attribute, and `rates` a versioned table: a source with a PRIMARY KEY and a
WATERMARK whose rows are versions of its keys (a changelog, an upsert source, or an append-only table read as
upserts by its key). Each probe row joins the version of its key in force at its time; the result is final once
the watermark passes that time, so it is append-only.

`FOR SYSTEM_TIME AS OF` stays a lookup join (sql/planner/joins.py) when its column is a PROCTIME() attribute or the
table is a plain dimension (no WATERMARK, not a changelog): `versioned` tells the two apart.
"""

from __future__ import annotations

import polars as pl
from sqlglot import exp

from sql.catalog import TableDef
from sql.dialect import Flink
from sql.errors import SqlError, UnsupportedError, error_at
from sql.plan import WATERMARK_COLUMN, ChangelogNormalize, Node, TemporalJoin
from sql.planner import changelog, hints, relations, versioned_views, windows
from sql.planner.binder import Binder, Relation, Scope


def versioned(binder: Binder, left: Relation, item: exp.Table) -> bool:
    """Whether `JOIN item FOR SYSTEM_TIME AS OF ...` is an event-time temporal join: the AS OF column is not a
    PROCTIME() attribute, and the table has a WATERMARK or is a changelog (a lookup join cannot read either)."""
    time = item.args["version"].expression
    if isinstance(time, exp.Column):
        try:
            name = left.scope.resolve(time)
        except SqlError:
            name = None
        if name is not None and windows.is_proctime(left.node, name):
            return False
    if item.name.lower() in binder.views:
        versioned_views.table(binder, item)  # Flink's versioned view, or refused
        return True
    table = binder.table(item)
    return table.watermark is not None or changelog.source(table) != changelog.APPEND


def join(binder: Binder, left: Relation, node: exp.Join, select: exp.Select, kind: str) -> Relation:
    item = node.this
    on = node.args.get("on")
    if kind not in ("INNER", "LEFT"):
        raise error_at(node, "an event-time temporal join is INNER or LEFT", UnsupportedError)
    view = item.name.lower() in binder.views
    table = versioned_views.table(binder, item) if view else binder.table(item)
    _check_versioned(item, table)
    if on is None:
        raise error_at(node, "a temporal join needs ON with an equality on the versioned table's PRIMARY KEY")
    left_time = _probe_time(left, item)
    if changelog.updating(left.node):
        raise error_at(
            node,
            "an event-time temporal join needs an append-only probe side" + changelog.origin(left.node),
            UnsupportedError,
        )
    right = Relation(_versions(binder, table), frozenset({item.alias_or_name.lower(), item.name.lower()}))
    from sql.planner import joins  # joins imports this module: the output names are its rule, shared

    left_names, right_names, columns, schema = joins._output_names(left, right)
    left_keys, residual = _keys(binder, on, left, right, table)
    out_scope = Scope(schema, left.qualifiers | right.qualifiers, columns)
    condition = None
    if residual:
        combined = residual[0]
        for extra in residual[1:]:
            combined = exp.And(this=combined, expression=extra)
        condition = binder.compiler(out_scope).condition(combined)
    sql_text = on.sql(dialect=Flink)
    assert table.watermark is not None
    result = TemporalJoin(
        binder.ids.node("temporal-join"),
        [left.node, right.node],
        schema,
        changelog.APPEND,
        kind=kind,
        left_keys=left_keys,
        right_keys=list(table.primary_key),
        left_names=left_names,
        right_names=right_names,
        left_time=left_time,
        right_time=table.watermark.column,
        residual=condition,
        ttl=hints.ttl(select, binder.options),
        versioned=table.name,
        state_id=binder.ids.state(
            "temporal-join", f"{kind}|{sql_text}|{left_time}|{sorted(left.qualifiers)}|{table.name.lower()}"
        ),
        sql=sql_text[:150],
    )
    return Relation(result, left.qualifiers | right.qualifiers, columns=columns)


def _check_versioned(item: exp.Table, table: TableDef) -> None:
    """Flink's rules for a versioned table: its versions are told apart by the PRIMARY KEY and ordered by the
    WATERMARK's time attribute; without either, which row is in force at a time is undefined."""
    if not table.primary_key:
        raise error_at(
            item,
            f"an event-time temporal join needs a versioned table, but '{table.name}' has no PRIMARY KEY "
            "(declare PRIMARY KEY (...) NOT ENFORCED: versions are the rows of one key)",
            UnsupportedError,
        )
    if table.watermark is None:
        raise error_at(
            item,
            f"an event-time temporal join needs a versioned table, but '{table.name}' has no WATERMARK "
            "(its time attribute orders the versions and says when they are complete)",
            UnsupportedError,
        )


def _probe_time(left: Relation, item: exp.Table) -> str:
    """The probe side's column named by AS OF: a time attribute of a watermarked, append-only input."""
    time = item.args["version"].expression
    if not isinstance(time, exp.Column):
        raise error_at(
            item.args["version"],
            "FOR SYSTEM_TIME AS OF takes a time attribute of the left side (o.ts), not an expression",
            UnsupportedError,
        )
    try:
        name = left.scope.resolve(time)
    except SqlError:
        raise error_at(
            time, f"FOR SYSTEM_TIME AS OF {time.sql(dialect=Flink)}: not a column of the left side of the join"
        ) from None
    if WATERMARK_COLUMN not in left.node.schema or not isinstance(left.node.schema[name], pl.Datetime):
        raise error_at(
            time,
            f"FOR SYSTEM_TIME AS OF {time.sql(dialect=Flink)} needs an event-time attribute: a TIMESTAMP of a "
            "probe side with a WATERMARK (or a PROCTIME() column, for a lookup join)",
            UnsupportedError,
        )
    return name


def _versions(binder: Binder, table: TableDef) -> Node:
    """The versioned table's rows as they come, with their watermark: an upsert source's Scan before its
    ChangelogNormalize (each upsert is a version of its key, each delete ends one)."""
    scan = binder.scan(table)
    return scan.inputs[0] if isinstance(scan, ChangelogNormalize) else scan


def _keys(
    binder: Binder, on: exp.Expr, left: Relation, right: Relation, table: TableDef
) -> tuple[list[pl.Expr], list[exp.Expr]]:
    """The probe-side expression equal to each PRIMARY KEY column, and the other conditions. Versions are kept
    per key: a join on anything less than the whole key could match several rows' versions at once, so Flink
    refuses it, and so does this."""
    compiler = binder.compiler(left.scope)
    found: dict[str, exp.Expr] = {}
    residual: list[exp.Expr] = []
    key = {k.lower(): k for k in table.primary_key}
    for conjunct in relations.conjuncts(on):
        if isinstance(conjunct, exp.EQ):
            pair = _key_pair(conjunct, left, right)
            if pair is not None and pair[1].lower() in key and key[pair[1].lower()] not in found:
                found[key[pair[1].lower()]] = pair[0]
                continue
        residual.append(conjunct)
    missing = [k for k in table.primary_key if k not in found]
    if missing:
        raise error_at(
            on,
            f"an event-time temporal join needs an equality on each column of '{table.name}' PRIMARY KEY "
            f"({', '.join(table.primary_key)}) with the probe side; missing: {', '.join(missing)}",
            UnsupportedError,
        )
    return [compiler.compile(found[k]) for k in table.primary_key], residual


def _key_pair(conjunct: exp.EQ, left: Relation, right: Relation) -> tuple[exp.Expr, str] | None:
    """(probe-side expression, versioned column) of `probe_expr = versioned.column`, either way round."""
    for probe, other in ((conjunct.this, conjunct.expression), (conjunct.expression, conjunct.this)):
        if isinstance(other, exp.Column) and left.sides(probe, right) == "left":
            try:
                if left.sides(other, right) != "right":
                    continue
                return probe, right.scope.resolve(other)
            except SqlError:
                continue
    return None
