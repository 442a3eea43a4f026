"""`CROSS JOIN UNNEST(array | map) AS t (c, ...)` (and `LEFT JOIN UNNEST(...) ON TRUE`, `WITH ORDINALITY`):
a stateless per-row expansion, planned into an `Unnest` node.

As in Flink: an ARRAY of scalars gives one column, an ARRAY of ROWs one column per field, a MAP two (key,
value); an empty or NULL collection gives no row under CROSS JOIN and one row of NULLs under LEFT JOIN. The
alias names the new columns (without one: the ROW's field names, `key` and `value`, or `f0`).
"""

from __future__ import annotations

import polars as pl
from sqlglot import exp

from sql import types
from sql.dialect import Flink
from sql.errors import UnsupportedError, error_at
from sql.plan import Unnest
from sql.planner import changelog
from sql.planner.binder import Binder, Relation


def unnest(binder: Binder, relation: Relation, join: exp.Join) -> Relation:
    node = join.this
    assert isinstance(node, exp.Unnest)
    keep_empty = _keeps_empty(join)
    if len(node.expressions) != 1:
        raise error_at(
            node, "UNNEST of several collections at once is not supported; use one UNNEST each", UnsupportedError
        )
    compiler = binder.compiler(relation.scope)
    value, dtype = compiler.typed(node.expressions[0])
    if not isinstance(dtype, pl.List):
        raise error_at(node, f"UNNEST needs an ARRAY or a MAP, not {types.sql_name(dtype)}")
    element = dtype.inner
    alias = node.args.get("alias")
    alias_name = alias.name if isinstance(alias, exp.TableAlias) and alias.name else None
    given = [c.name for c in alias.columns] if isinstance(alias, exp.TableAlias) else []
    offset = node.args.get("offset")
    ordinality = None
    if offset:
        ordinality = offset.name if isinstance(offset, exp.Expr) else "ordinality"
    fields = [f.name for f in element.fields] if isinstance(element, pl.Struct) else None
    produced = {f.name: f.dtype for f in element.fields} if isinstance(element, pl.Struct) else {"f0": element}
    if given and len(given) != len(produced):
        what = (
            "a MAP gives 2 (key, value)" if types.is_map(dtype) else f"{types.sql_name(element)} gives {len(produced)}"
        )
        raise error_at(
            alias, f"UNNEST AS {alias_name or ''}({', '.join(given)}): {len(given)} column name(s), but {what}"
        )
    names = given or list(produced)
    visible = relation.column_map()
    taken = {n.lower() for n in relation.node.schema}
    internal: list[str] = []
    for name in [*names, *([ordinality] if ordinality else [])]:
        unique, suffix = name, 0
        while unique.lower() in taken:  # a clash with an input column: renamed, as a join renames (id, id0)
            unique, suffix = f"{name}{suffix}", suffix + 1
        taken.add(unique.lower())
        internal.append(unique)
    schema = dict(relation.node.schema)
    schema.update(dict(zip(internal, [*produced.values(), *([pl.Int32()] if ordinality else [])], strict=True)))
    qualifiers = set(relation.qualifiers)
    if alias_name:
        qualifiers.add(alias_name.lower())
    for shown, name in zip([*names, *([ordinality] if ordinality else [])], internal, strict=True):
        for qualifier in [alias_name.lower()] if alias_name else []:
            visible[(qualifier, shown.lower())] = name
        if not alias_name:
            visible[("", shown.lower())] = name
    sql = f"UNNEST({node.expressions[0].sql(dialect=Flink)})" + (" WITH ORDINALITY" if ordinality else "")
    sql += f" AS {alias_name or ''}({', '.join([*names, *([ordinality] if ordinality else [])])})"
    result = Unnest(
        binder.ids.node("unnest"),
        [relation.node],
        schema,
        changelog.passthrough(relation.node),
        value=value,
        names=internal[: len(names)],
        fields=fields,
        ordinality=internal[-1] if ordinality else None,
        keep_empty=keep_empty,
        sql=sql if len(sql) < 120 else sql[:117] + "...",
    )
    return Relation(result, frozenset(qualifiers), relation.window, relation.window_input, visible)


def _keeps_empty(join: exp.Join) -> bool:
    """CROSS JOIN (or a comma, or JOIN ... ON TRUE): no row for an empty collection; LEFT JOIN ... ON TRUE: one."""
    side = (join.side or "").upper()
    kind = (join.kind or "").upper()
    on = join.args.get("on")
    if join.args.get("using") or (on is not None and not (isinstance(on, exp.Boolean) and on.this)):
        raise error_at(
            join, "a join with UNNEST takes no condition but ON TRUE (filter in WHERE instead)", UnsupportedError
        )
    if side in ("RIGHT", "FULL"):
        raise error_at(
            join, f"{side} JOIN UNNEST is not supported (use CROSS JOIN or LEFT JOIN ... ON TRUE)", UnsupportedError
        )
    if side == "LEFT" and on is None:
        raise error_at(join, "LEFT JOIN UNNEST needs ON TRUE")
    if kind not in ("", "CROSS", "INNER"):
        raise error_at(join, f"{kind} JOIN UNNEST is not supported", UnsupportedError)
    return side == "LEFT"
