"""Matching one partition's rows against a MATCH_RECOGNIZE pattern: the sequential half of the operator.

The rows are those the watermark released, in event-time order (ties by arrival). Matching tries the start rows
in order; from a start row it explores the ways the pattern can bind the next rows in the pattern's preference
order (greedy quantifiers try one more iteration first, reluctant ones one fewer, alternatives left to right), so
the first complete binding found is the match. A binding that needs a row not released yet, and that a future row
could still extend (not past WITHIN of its first row by the watermark), makes the start *pending*: the decision
waits for more rows, so no result depends on how the input was cut into epochs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from sql.match_pattern import Alt, Pattern, Repeat, Seq, Var

#: (var, start, position, labels of start..position-1) -> does the row at `position` satisfy var's DEFINE
Condition = Callable[[str, int, int, tuple[str, ...]], bool]


@dataclass(frozen=True)
class Pending:
    """A binding alive at the end of the released rows: labels of rows start..end-1."""

    labels: tuple[str, ...]


@dataclass(frozen=True)
class Found:
    start: int
    labels: tuple[str, ...]  # the variable of each row of the match, from `start`

    @property
    def end(self) -> int:
        return self.start + len(self.labels)


class Matcher:
    def __init__(
        self,
        pattern: Pattern,
        condition: Condition,
        times: list[int],
        within_ms: int | None,
        watermark_ms: int,
        final: bool,
    ) -> None:
        self.pattern = pattern
        self.condition = condition
        self.times = times
        self.n = len(times)
        self.within_ms = within_ms
        self.watermark_ms = watermark_ms
        self.final = final

    def can_extend(self, start: int) -> bool:
        """Whether a row not released yet can still join a binding that started at `start` (future rows are not
        behind the watermark, and a binding lasts less than WITHIN from its first row, as in Flink)."""
        if self.final:
            return False
        return self.within_ms is None or self.watermark_ms - self.times[start] < self.within_ms

    def bindings(self, start: int) -> Iterator[tuple[int, tuple[str, ...]] | Pending]:
        """Every way the pattern binds rows from `start`, in preference order (and where more rows are needed)."""
        yield from self._walk(self.pattern, start, start, ())

    def _walk(self, node: Pattern, start: int, pos: int, labels: tuple[str, ...]) -> Iterator:  # type: ignore[type-arg]
        if isinstance(node, Var):
            if pos >= self.n:
                if self.can_extend(start):
                    yield Pending(labels)
                return
            if self.within_ms is not None and self.times[pos] - self.times[start] >= self.within_ms:
                return
            if self.condition(node.name, start, pos, labels):
                yield pos + 1, (*labels, node.name)
        elif isinstance(node, Seq):
            yield from self._seq(node.items, 0, start, pos, labels)
        elif isinstance(node, Alt):
            for option in node.options:
                yield from self._walk(option, start, pos, labels)
        else:
            yield from self._repeat(node, 0, start, pos, labels)

    def _seq(self, items: tuple[Pattern, ...], i: int, start: int, pos: int, labels: tuple[str, ...]) -> Iterator:  # type: ignore[type-arg]
        if i == len(items):
            yield pos, labels
            return
        for out in self._walk(items[i], start, pos, labels):
            if isinstance(out, Pending):
                yield out
            else:
                yield from self._seq(items, i + 1, start, *out)

    def _repeat(self, node: Repeat, count: int, start: int, pos: int, labels: tuple[str, ...]) -> Iterator:  # type: ignore[type-arg]
        done = count >= node.low
        if done and not node.greedy:
            yield pos, labels
        if node.high is None or count < node.high:
            for out in self._walk(node.item, start, pos, labels):
                if isinstance(out, Pending):
                    yield out
                elif out[0] > pos:  # an iteration binds at least one row
                    yield from self._repeat(node, count + 1, start, *out)
        if done and node.greedy:
            yield pos, labels

    def first(self, start: int) -> Found | Pending | None:
        """The match from `start`, `Pending` while a more preferred binding waits for rows, None: no match."""
        for out in self.bindings(start):
            if isinstance(out, Pending):
                return out
            return Found(start, out[1])
        return None

    def open_runs(self, start: int) -> list[tuple[str, ...]]:
        """The partial matches from `start` that wait for rows (each distinct binding once, in preference order)."""
        runs: list[tuple[str, ...]] = []
        for out in self.bindings(start):
            if isinstance(out, Pending) and out.labels and out.labels not in runs:
                runs.append(out.labels)
        return runs


def next_start(found: Found, after: str) -> int:
    """AFTER MATCH SKIP: where the next match may start. Skipping to the match's own first row (which Flink
    rejects at run time) or to a variable the match did not bind goes to the row after the match's first."""
    if after == "PAST LAST ROW":
        return found.end
    if after == "TO NEXT ROW":
        return found.start + 1
    _, which, var = after.split()
    positions = [found.start + i for i, label in enumerate(found.labels) if label == var]
    if not positions:
        return found.start + 1
    target = positions[0] if which == "FIRST" else positions[-1]
    return max(target, found.start + 1)


def resolve(matcher: Matcher, after: str) -> tuple[list[Found], int]:
    """The matches decided over the released rows, and the first start row still undecided (`matcher.n`: none)."""
    found: list[Found] = []
    start = 0
    while start < matcher.n:
        result = matcher.first(start)
        if isinstance(result, Pending):
            break
        if result is None:
            start += 1
            continue
        found.append(result)
        start = next_start(result, after)
    return found, start
