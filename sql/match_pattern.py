"""MATCH_RECOGNIZE's PATTERN as data: a small regular expression over pattern variables.

Concatenation (`Seq`), alternation (`Alt`), grouping and quantifiers (`Repeat`: `*`, `+`, `?`, `{n}`, `{n,}`,
`{n,m}`, `{,m}`, each greedy or reluctant with a trailing `?`). The parser is `sql/match_recognize_syntax.py`;
the matcher that walks these nodes is `engine/operators/match_nfa.py`. Pure data, shared by both layers.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Var:
    name: str  # upper-case, as every reference to it is compared


@dataclass(frozen=True)
class Seq:
    items: tuple[Pattern, ...]


@dataclass(frozen=True)
class Alt:
    options: tuple[Pattern, ...]


@dataclass(frozen=True)
class Repeat:
    item: Pattern
    low: int
    high: int | None  # None: unbounded
    greedy: bool = True


Pattern = Var | Seq | Alt | Repeat


def variables(pattern: Pattern) -> list[str]:
    """The pattern variables, each once, in order of first appearance."""
    found: list[str] = []

    def visit(node: Pattern) -> None:
        if isinstance(node, Var):
            if node.name not in found:
                found.append(node.name)
        elif isinstance(node, Seq):
            for item in node.items:
                visit(item)
        elif isinstance(node, Alt):
            for option in node.options:
                visit(option)
        else:
            visit(node.item)

    visit(pattern)
    return found


def nullable(pattern: Pattern) -> bool:
    """Whether the pattern can match no rows at all."""
    if isinstance(pattern, Var):
        return False
    if isinstance(pattern, Seq):
        return all(nullable(item) for item in pattern.items)
    if isinstance(pattern, Alt):
        return any(nullable(option) for option in pattern.options)
    return pattern.low == 0 or nullable(pattern.item)


def text(pattern: Pattern) -> str:
    """The pattern in SQL, normalised (for plans and state descriptors)."""
    if isinstance(pattern, Var):
        return pattern.name
    if isinstance(pattern, Seq):
        return " ".join(text(item) for item in pattern.items)
    if isinstance(pattern, Alt):
        return " | ".join(text(option) for option in pattern.options)
    inner = text(pattern.item)
    if not isinstance(pattern.item, Var):
        inner = f"({inner})"
    low, high = pattern.low, pattern.high
    quantifier = {(0, None): "*", (1, None): "+", (0, 1): "?"}.get((low, high))
    if quantifier is None:
        quantifier = f"{{{low}}}" if low == high else f"{{{low},{'' if high is None else high}}}"
    return inner + quantifier + ("" if pattern.greedy else "?")
