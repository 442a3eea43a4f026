"""Optimizer hints on a SELECT (`/*+ STATE_TTL(...) */`, `/*+ STATE_ID(...) */`) and the pipeline options
they fall back to."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping

from sqlglot import exp

from sql import durations
from sql import options as option_rules
from sql.errors import error_at
from sql.plan import StateTtl


def hint(select: exp.Select, name: str) -> str | None:
    """The first argument of hint `name` on `select`, if given."""
    found = select.args.get("hint")
    for item in found.expressions if found is not None else []:
        if isinstance(item, exp.Anonymous) and item.name.upper() == name and item.expressions:
            return str(item.expressions[0].name)
    return None


def ttl(select: exp.Select, options: Mapping[str, str]) -> StateTtl | None:
    """`/*+ STATE_TTL('1 h' [, 'event']) */` on the SELECT, else `SET 'state.ttl' = '1 h'` for the pipeline."""
    found = select.args.get("hint")
    args: list[str] = []
    for item in found.expressions if found is not None else []:
        if isinstance(item, exp.Anonymous) and item.name.upper() == "STATE_TTL":
            args = [str(a.name) for a in item.expressions]
            node: exp.Expr = select.expressions[0]  # positions inside a hint count from its comment
            break
    else:
        node = select
        if "state.ttl" in options:
            args = [options["state.ttl"], options.get("state.ttl.time", "processing")]
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
