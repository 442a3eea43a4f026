"""SQL script -> Plan, in passes over each statement, one module per construct.

- `statements`: SET (options), CREATE TABLE / VIEW (the catalog, `tables` builds each TableDef), INSERT INTO
  (a sink, with the query cast to the sink's types) and the plan fingerprint.
- `binder`: names. Owns `Scope` and `Relation`; tables, views and columns are resolved here, with positions.
- `relations`: queries and FROM items; routes a SELECT to its construct's rule.
- `windows`, `joins`, `aggregates`, `over`, `top_n`: one rule per construct, each choosing its physical node.
- `changelog`: which rows each node kind emits (append or retract).
- `hints`: STATE_TTL and STATE_ID hints; `ids`: node ids and state ids.
"""

from __future__ import annotations

from collections.abc import Mapping

import sqlglot
from sqlglot import exp
from sqlglot.errors import ParseError, TokenError

from sql.dialect import Flink
from sql.errors import syntax_error, token_error
from sql.plan import Plan
from sql.planner import statements
from sql.planner.binder import Binder
from sql.python_functions import FunctionLoader
from sql.udf import AGGREGATES, REGISTRY, ScalarUdf


def parse(text: str) -> list[exp.Expr]:
    try:
        return [s for s in sqlglot.parse(text, read=Flink) if s is not None and not isinstance(s, exp.Semicolon)]
    except ParseError as err:
        raise syntax_error(err) from None
    except TokenError as err:
        raise token_error(text, err) from None


def plan_script(
    text: str, udfs: Mapping[str, ScalarUdf] | None = None, functions: FunctionLoader | None = None
) -> Plan:
    """Plan every statement of a script: DDL fills the catalog, each INSERT adds a sink to one pipeline. The
    UDAFs registered now are bound into the plan's aggregate calls. `functions` imports what `CREATE FUNCTION
    ... AS 'module.fn'` names (the engine's loader; without it such a statement is refused)."""
    return statements.plan(Binder({**REGISTRY, **(udfs or {})}, dict(AGGREGATES), functions), parse(text))


__all__ = ["parse", "plan_script"]
