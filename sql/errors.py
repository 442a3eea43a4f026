"""Errors the front end raises: every one carries a position in the SQL text."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

from sqlglot import exp


class SqlError(Exception):
    """A problem in the user's SQL, with the 1-based line and column where it starts."""

    def __init__(self, message: str, line: int | None = None, col: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.line = line
        self.col = col

    def __str__(self) -> str:
        if self.line is None:
            return self.message
        return f"line {self.line}, column {self.col}: {self.message}"


class UnsupportedError(SqlError):
    """Valid SQL that timelapse does not run (yet)."""


def position(node: exp.Expr | None) -> tuple[int | None, int | None]:
    """The first position found in `node` or its children (sqlglot keeps it on identifiers)."""
    if node is None:
        return None, None
    for candidate in node.walk(bfs=False):
        meta = getattr(candidate, "_meta", None) or {}
        if "line" in meta:
            start_col = meta.get("col", 0) - (meta.get("end", 0) - meta.get("start", 0))
            return meta["line"], max(start_col, 1)
    return None, None


def error_at(node: exp.Expr | None, message: str, cls: type[SqlError] = SqlError) -> SqlError:
    line, col = position(node)
    return cls(message, line, col)


def did_you_mean(name: str, candidates: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""
