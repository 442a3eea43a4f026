"""Errors the front end raises: every one carries a position in the SQL text."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

from sqlglot import exp
from sqlglot.errors import ParseError


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
    """The first position found in `node` or its children (sqlglot keeps it on identifiers and literals); for a
    node without any (a type such as MAP<STRING, INT>), the position of the nearest token before it."""
    if node is None:
        return None, None
    for candidate in node.walk(bfs=False):
        if _own(candidate)[0] is not None and not _in_hint(candidate):
            return _own(candidate)
    before: tuple[int | None, int | None] = (None, None)
    for candidate in node.root().walk(bfs=False):
        if candidate is node:
            break
        if _own(candidate)[0] is not None and not _in_hint(candidate):
            before = _own(candidate)
    return before


def _in_hint(node: exp.Expr) -> bool:
    """Whether `node` is inside a `/*+ ... */` hint: its text is parsed on its own, so its positions count from the
    hint's start, not the statement's."""
    return node.find_ancestor(exp.Hint) is not None


def _own(node: exp.Expr) -> tuple[int | None, int | None]:
    meta = getattr(node, "_meta", None) or {}
    if "line" not in meta:
        return None, None
    return meta["line"], max(meta.get("col", 0) - (meta.get("end", 0) - meta.get("start", 0)), 1)


def error_at(node: exp.Expr | None, message: str, cls: type[SqlError] = SqlError) -> SqlError:
    line, col = position(node)
    return cls(message, line, col)


def relocated(err: SqlError, node: exp.Expr, names: dict[str, str]) -> SqlError:
    """`err`, raised on a rewritten copy of `node` (aggregates and keys replaced by internal columns): in the
    user's words again, at `node`'s position when the copy had none. `names` maps SQL text to internal names."""
    message = err.message
    for text, name in names.items():
        message = message.replace(f'"{name}"', text)
    line, col = (err.line, err.col) if err.line is not None else position(node)
    return type(err)(message, line, col)


def did_you_mean(name: str, candidates: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def syntax_error(err: ParseError) -> SqlError:
    """sqlglot's first parse error, in the user's words: no parser class names."""
    first = err.errors[0] if err.errors else {}
    message = str(first.get("description") or str(err).splitlines()[0])
    if "SENTINEL" in message:
        message = "the statement ends too early"
    elif message.startswith("Required keyword"):
        message = "something is missing after it"
    elif message.startswith("Invalid expression / Unexpected token"):
        message = "unexpected here"
    highlight = first.get("highlight")
    near = f" near '{highlight}'" if highlight else ""
    col = first.get("col")
    if col is not None and highlight and "\n" not in highlight:
        col = max(col - len(highlight) + 1, 1)  # sqlglot gives the token's last column; point at its first
    return SqlError(f"syntax error{near}: {message}", first.get("line"), col)


def token_error(text: str, err: Exception) -> SqlError:
    """A tokenizer failure, placed: an unterminated string, quoted name or comment starts where it opens."""
    opened = _unclosed(text)
    if opened is not None:
        offset, what = opened
        line = text.count("\n", 0, offset) + 1
        col = offset - (text.rfind("\n", 0, offset) + 1) + 1
        return SqlError(f"syntax error: {what} is not closed", line, col)
    return SqlError(f"syntax error: {str(err).splitlines()[0]}", 1, 1)


def _unclosed(text: str) -> tuple[int, str] | None:
    """Offset and kind of the quote or comment left open at the end of `text` (quotes double to escape)."""
    closers = {"'": ("'", "a string"), '"': ('"', "a quoted name"), "`": ("`", "a quoted name")}
    closers["/*"] = ("*/", "a comment")
    i = 0
    while i < len(text):
        if text.startswith("--", i):
            end = text.find("\n", i)
            i = len(text) if end < 0 else end + 1
            continue
        opener = "/*" if text.startswith("/*", i) else text[i] if text[i] in "'\"`" else None
        if opener is None:
            i += 1
            continue
        closer, what = closers[opener]
        j = i + len(opener)
        while True:
            end = text.find(closer, j)
            if end < 0:
                return i, what
            if len(closer) == 1 and text.startswith(closer * 2, end):
                j = end + 2  # a doubled quote is the quote itself
                continue
            break
        i = end + len(closer)
    return None
