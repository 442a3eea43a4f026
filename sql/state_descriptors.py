"""What each stateful operator's state means, in terms a person can compare (recorded in the manifest's
`operators` column; `engine/upgrade.py` matches a changed plan's operators against it)."""

from __future__ import annotations

import polars as pl

from sql import types
from sql.match_pattern import text as pattern_text
from sql.plan import (
    Aggregate,
    ChangelogNormalize,
    Join,
    MatchRecognize,
    Node,
    OverAggregate,
    TemporalJoin,
    TopN,
)


def _types(columns: dict[str, pl.DataType]) -> dict[str, str]:
    return {name: types.sql_name(dtype) for name, dtype in columns.items() if not name.startswith("__")}


def state_descriptor(node: Node) -> dict[str, object]:
    """What a stateful operator's state holds, in terms a person can compare: its kind, the key its state is
    partitioned by, what it keeps per key, and the SQL it came from. Two plans can share an operator's state
    only if these agree."""
    if isinstance(node, Aggregate):
        key_types = {name: types.sql_name(node.inputs[0].schema.get(name, pl.Null())) for name, _ in node.keys}
        return {
            "kind": "window aggregate" if node.window else "group aggregate",
            "key": [name for name, _ in node.keys],
            "key_types": {k: v for k, v in key_types.items() if v != "NULL"},
            "window": node.window.describe() if node.window else None,
            "state": [f"{a.sql}: {types.sql_name(a.dtype)}" for a in node.aggs],
            "sql": node.sql,
        }
    if isinstance(node, Join):
        flavour = (
            "lookup" if node.lookup else "interval" if node.bounds else "window" if node.window_ends else "regular"
        )
        return {
            "kind": f"{flavour} join",
            "key": node.sql,
            "join": node.kind,
            "window": None,
            "state": {
                "left": _types(node.inputs[0].schema),
                "right": _types(node.inputs[1].schema if len(node.inputs) > 1 else node.dimension.schema),  # type: ignore[union-attr]
            },
            "sql": node.sql,
        }
    if isinstance(node, TemporalJoin):
        return {
            "kind": "temporal join",
            "key": node.sql,
            "join": node.kind,
            "window": None,
            "state": {"probe": _types(node.inputs[0].schema), "versions": _types(node.inputs[1].schema)},
            "sql": node.sql,
        }
    if isinstance(node, TopN):
        return {
            "kind": ("window " if node.window_end else "") + ("deduplicate" if node.first_by_time else "top-n"),
            "key": node.partition,
            "window": "window_start, window_end" if node.window_end else None,
            "state": {"order": node.sql, "limit": node.limit, "rows": _types(node.inputs[0].schema)},
            "sql": node.sql,
        }
    if isinstance(node, OverAggregate):
        return {
            "kind": "over aggregate",
            "key": node.partition,
            "window": f"{node.frame_kind} rows={node.rows} range={node.range}",
            "state": [f"{a.sql}: {types.sql_name(a.dtype)}" for a in node.aggs],
            "sql": node.sql,
        }
    if isinstance(node, MatchRecognize):
        return {
            "kind": "match recognize",
            "key": node.partition,
            "window": f"WITHIN {node.within}" if node.within else None,
            "state": {"pattern": pattern_text(node.pattern), "rows": _types(node.inputs[0].schema)},
            "sql": node.sql,
        }
    if isinstance(node, ChangelogNormalize):
        return {
            "kind": "changelog normalize",
            "key": node.keys,
            "window": None,
            "state": _types(node.inputs[0].schema),
            "sql": f"PRIMARY KEY ({', '.join(node.keys)})",
        }
    raise TypeError(f"{type(node).__name__} keeps no state")
