"""Flink's versioned views: the build side of an event-time temporal join may be a view that keeps the latest row
per key of an append-only table,

    CREATE VIEW versioned_rates AS
    SELECT currency, rate, update_time FROM (
      SELECT *, ROW_NUMBER() OVER (PARTITION BY currency ORDER BY update_time DESC) AS rownum
      FROM currency_rates)
    WHERE rownum = 1;

and Flink reads it as a versioned table keyed by the PARTITION BY columns and ordered by the time attribute. That
is what a temporal join over the table itself with PRIMARY KEY (currency) already means here (each appended row is
a version of its key, valid from its time), so the view is planned as exactly that. Any other view is refused.
"""

from __future__ import annotations

import dataclasses

from sqlglot import exp

from sql.catalog import TableDef
from sql.errors import SqlError, UnsupportedError, error_at
from sql.planner import changelog
from sql.planner.binder import Binder

SHAPE = (
    "a temporal join over a view needs Flink's versioned view: SELECT <every column of the table> FROM (SELECT *, "
    "ROW_NUMBER() OVER (PARTITION BY <key> ORDER BY <time attribute> DESC) AS rownum FROM <table>) WHERE rownum = 1"
)


def table(binder: Binder, item: exp.Table) -> TableDef:
    """The versioned table the view `item` names: its source table, keyed by the view's PARTITION BY columns."""
    view = binder.views[item.name.lower()]

    def refuse(why: str) -> SqlError:
        return error_at(item, f"view '{item.name}' is not a versioned view ({why}): {SHAPE}", UnsupportedError)

    source = view.args.get("from_") or view.args.get("from")
    if not isinstance(view, exp.Select) or source is None or not isinstance(source.this, exp.Subquery):
        raise refuse("not a SELECT over a ranking subquery")
    if view.args.get("joins") or view.args.get("group") or view.args.get("distinct"):
        raise refuse("a join, GROUP BY or DISTINCT")
    inner = source.this.this
    inner_from = inner.args.get("from_") or inner.args.get("from") if isinstance(inner, exp.Select) else None
    if inner_from is None or not isinstance(inner_from.this, exp.Table) or inner.args.get("joins"):
        raise refuse("the ranking must read one table")
    if inner.args.get("where") or inner.args.get("group"):
        raise refuse("the ranking subquery filters or groups")
    ranked = [e for e in inner.expressions if not isinstance(e, exp.Star)]
    if len(ranked) != 1 or len(inner.expressions) != 2 or not isinstance(ranked[0], exp.Alias):
        raise refuse("the ranking subquery must select *, ROW_NUMBER() OVER (...) AS rownum")
    window, rank = ranked[0].this, ranked[0].alias
    if not isinstance(window, exp.Window) or not isinstance(window.this, exp.RowNumber):
        raise refuse("no ROW_NUMBER() OVER (...)")
    if not _first_row_only(view.args.get("where"), rank):
        raise refuse(f"the view must keep {rank} = 1")
    keys = window.args.get("partition_by") or []
    order = window.args.get("order")
    ordered = order.expressions if order is not None else []
    if not keys or not all(isinstance(k, exp.Column) for k in keys) or len(ordered) != 1:
        raise refuse("PARTITION BY key columns and ORDER BY the time attribute alone")
    if not ordered[0].args.get("desc"):
        raise refuse("ORDER BY ... ASC keeps each key's first row, which is not a version history: use DESC")
    underlying = binder.table(inner_from.this)
    if changelog.source(underlying) != changelog.APPEND:
        raise refuse(f"'{underlying.name}' is a changelog: join it directly, it is a versioned table already")
    time = ordered[0].this
    if underlying.watermark is None or not (
        isinstance(time, exp.Column) and time.name.lower() == underlying.watermark.column.lower()
    ):
        raise refuse(f"ORDER BY must be the time attribute of '{underlying.name}' (its WATERMARK column)")
    columns = [c.name for c in underlying.columns]
    selected = [e.name if isinstance(e, exp.Column) else None for e in view.expressions]
    if [s.lower() if s else s for s in selected] != [c.lower() for c in columns]:
        raise refuse(f"the view must select the table's columns as they are: {', '.join(columns)}")
    key = tuple(underlying.column(k.name).name for k in keys if underlying.column(k.name) is not None)
    if len(key) != len(keys):
        raise refuse("PARTITION BY names a column the table does not have")
    return dataclasses.replace(underlying, primary_key=key)


def _first_row_only(where: exp.Expr | None, rank: str) -> bool:
    """`rownum = 1`, `rownum <= 1` or `rownum < 2` (the deduplication forms Flink recognises)."""
    condition = where.this if isinstance(where, exp.Where) else None
    if not isinstance(condition, exp.EQ | exp.LTE | exp.LT):
        return False
    column, bound = condition.this, condition.expression
    if not (isinstance(column, exp.Column) and column.name.lower() == rank.lower()):
        return False
    if not (isinstance(bound, exp.Literal) and not bound.is_string):
        return False
    return bound.this == ("2" if isinstance(condition, exp.LT) else "1")
