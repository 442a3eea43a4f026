"""The planner's one id generator: node ids for `explain`, and state ids that name state directories."""

from __future__ import annotations

import hashlib

from sql.plan import Sink


class Ids:
    """Node ids are counters per kind (`calc-3`), readable in `explain`. State ids are recorded in state
    directories and compared on upgrade, so they come from the operator's role (a digest of what it computes),
    never from its position in the script; a suffix keeps two operators with the same role apart."""

    def __init__(self) -> None:
        self._counts: dict[str, int] = {}
        self._taken: set[str | None] = set()

    def node(self, kind: str) -> str:
        self._counts[kind] = self._counts.get(kind, 0) + 1
        return f"{kind}-{self._counts[kind]}"

    def state(self, base: str, role: str) -> str:
        digest = hashlib.sha256(role.encode()).hexdigest()[:10]
        candidate, suffix = f"{base}-{digest}", 1
        while candidate in self._taken:
            suffix += 1
            candidate = f"{base}-{digest}-{suffix}"
        self._taken.add(candidate)
        return candidate

    def planned(self, sink: Sink) -> None:
        """A finished INSERT: its state ids, named by a STATE_ID hint too, are taken for the ones after it."""
        self._taken |= {getattr(n, "state_id", None) for n in sink.walk() if n.stateful}
