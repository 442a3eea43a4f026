"""Upgrades with kept state: what a changed SQL script keeps of the state its predecessor wrote.

The manifest records, for every stateful operator, what its state means (`sql.state_descriptors.state_descriptor`) and
where it lives. A new plan's operators are matched to those by state id:

- kept: the same id, and the state means the same (a changed filter or projection elsewhere is fine);
- new: no recorded state; it starts empty;
- dropped: recorded state that no operator of the new plan reads;
- incompatible: the same operator, changed so that its state cannot be reused. Either the id is the same and
  the descriptor differs, or an operator of the same kind feeding the same sink replaced the old one (a
  changed grouping key, window or aggregate list gives a new id), or the same SQL now keeps its state in
  another physical layout (the kind's `LAYOUT_VERSION`; a manifest recording none wrote version 1). The
  reason names what changed.

Dropped and incompatible state is refused unless the user allows non-restored state, as in Flink.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

from engine.errors import UserError
from engine.operators import stateful_operators
from sql.plan import Plan

COMPARED = ("kind", "key", "key_types", "join", "window", "state", "layout")
#: what a manifest written before layout versions were recorded holds
FIRST_LAYOUT = 1


class UpgradeRefused(UserError, ValueError):
    """The new plan would lose state; the message is the report."""


@dataclass(frozen=True)
class Change:
    state_id: str
    status: str  # kept | new | dropped | incompatible
    kind: str
    reason: str = ""
    replaces: str | None = None


def compare(recorded: dict[str, dict[str, Any]], plan: Plan) -> list[Change]:
    """Per-operator report of what `plan` keeps of `recorded` (the manifest's operators)."""
    current = stateful_operators(plan)
    changes: list[Change] = []
    unmatched_old = {sid: d for sid, d in recorded.items() if sid not in current}
    for sid, new in current.items():
        old = recorded.get(sid)
        if old is not None:
            differences = _differences(old, new)
            status = "incompatible" if differences else "kept"
            changes.append(Change(sid, status, str(new["kind"]), "; ".join(differences)))
            continue
        replaced = next(
            (
                old_id
                for old_id, old in unmatched_old.items()
                if old["kind"] == new["kind"] and set(old.get("sinks", [])) & set(new.get("sinks", []))  # type: ignore[arg-type]
            ),
            None,
        )
        if replaced is None:
            changes.append(Change(sid, "new", str(new["kind"]), "starts with empty state"))
        else:
            old = unmatched_old.pop(replaced)
            reason = "; ".join(_differences(old, new)) or "operator changed"
            changes.append(Change(sid, "incompatible", str(new["kind"]), reason, replaces=replaced))
    for sid, old in unmatched_old.items():
        changes.append(Change(sid, "dropped", str(old["kind"]), "no operator of the new SQL reads this state"))
    return changes


def layouts_differ(recorded: dict[str, dict[str, Any]], plan: Plan) -> bool:
    """Whether an operator the manifest records keeps its state in another layout version than this code's
    (the same SQL can need an upgrade check after the engine changed)."""
    current = stateful_operators(plan)
    return any(
        (old.get("layout") or FIRST_LAYOUT) != current[sid]["layout"] for sid, old in recorded.items() if sid in current
    )


def _differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    found = []
    for field in COMPARED:
        before, after = old.get(field), new.get(field)
        if field == "layout":
            before, after = before or FIRST_LAYOUT, after or FIRST_LAYOUT
        if before == after:
            continue
        label = {
            "key": "grouping key" if "aggregate" in str(new["kind"]) else "key",
            "key_types": "key types",
            "state": "kept values",
            "join": "join type",
            "layout": "state layout version",
        }.get(field, field)
        found.append(f"{label} changed: {_show(before)} -> {_show(after)}")
    return found


def _show(value: Any) -> str:
    if isinstance(value, list):
        return "(" + ", ".join(map(str, value)) + ")"
    if isinstance(value, dict):
        return json.dumps(value)
    return str(value)


def refusal(changes: list[Change]) -> str | None:
    """The reason to refuse the upgrade, or None when no state would be lost."""
    lost = [c for c in changes if c.status in ("dropped", "incompatible")]
    if not lost:
        return None
    names = ", ".join(f"{c.state_id} ({c.status})" for c in lost)
    return (
        f"the new SQL cannot restore the state of {names}:\n{render(changes)}\n"
        "pass --allow-non-restored-state to start those operators empty"
    )


def render(changes: list[Change]) -> str:
    if not changes:
        return "no stateful operators"
    width = max(len(c.state_id) for c in changes)
    lines = []
    for c in changes:
        note = f" (replaces {c.replaces})" if c.replaces else ""
        reason = f": {c.reason}" if c.reason else ""
        lines.append(f"  {c.status:<12} {c.state_id:<{width}}  {c.kind}{note}{reason}")
    return "\n".join(lines)


def as_json(changes: list[Change]) -> list[dict[str, Any]]:
    return [asdict(c) for c in changes]
