"""Source watermarks: each source's, the pipeline's (their minimum), and which sources are idle.

A source's watermark is the maximum of its WATERMARK expression over the rows read so far; it only moves
forward, and a drain moves it to the end of time. A source with partitions (Kafka: its rows carry SPLIT_COLUMN,
its pieces list `splits` and `idle_splits`) follows Flink's rule instead: each partition has its own watermark
(the maximum over its rows), and the source's is the minimum over its partitions that are not idle, so a
partition without rows yet holds it back until its 'scan.watermark.idle-timeout'; it too only moves forward.
Partition watermarks live in `marks` beside the sources' own, under `split_key(source, split)`.

A source silent for longer than its 'scan.watermark.idle-timeout' is idle: it stops holding the pipeline's
watermark back (unless all are idle). Checkpoints record each source's watermark, its partitions' and when it
last had rows (`position`), so a restart resumes them.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import polars as pl

from engine.operators.context import END_OF_TIME
from engine.sources.base import SPLIT_COLUMN, split_key
from sql import durations
from sql.plan import Scan


class Watermarks:
    def __init__(self, scans: dict[str, Scan], started_at: float) -> None:
        self.watermarked = {name: scan for name, scan in scans.items() if scan.table.watermark is not None}
        self.marks: dict[str, dt.datetime | None] = {}
        self.last_active: dict[str, float] = {}  # processing time (epoch seconds) of each source's last rows
        self.idle: set[str] = set()
        #: the partitions (splits) of each partitioned source, and those idle, as its last piece listed them
        self.splits: dict[str, list[str]] = {}
        self.idle_splits: dict[str, set[str]] = {}
        self.started_at = started_at
        self.idle_timeouts = {
            name: durations.parse_duration(scan.table.options["scan.watermark.idle-timeout"])
            for name, scan in scans.items()
            if "scan.watermark.idle-timeout" in scan.table.options
        }

    def restore(self, name: str, saved: dict[str, Any]) -> None:
        """A source's watermark and last activity as its checkpoint recorded them (see `position`)."""
        wm = saved.get("watermark")
        self.marks[name] = dt.datetime.fromisoformat(wm) if wm else None
        if saved.get("last_active") is not None:
            self.last_active[name] = float(saved["last_active"])
        for split, mark in (saved.get("splits") or {}).items():
            self.marks[split_key(name, split)] = dt.datetime.fromisoformat(mark) if mark else None

    def position(self, name: str) -> dict[str, Any]:
        wm = self.marks.get(name)
        found = {"watermark": wm.isoformat() if wm else None, "last_active": self.last_active.get(name)}
        prefix = split_key(name, "")
        splits = {key[len(prefix) :]: m.isoformat() for key, m in self.marks.items() if key.startswith(prefix) and m}
        if splits:
            found["splits"] = dict(sorted(splits.items()))
        return found

    def active(self, names: list[str] | dict[str, Any], now: float) -> None:
        """The sources that have rows this epoch (planned at `now`); a partitioned source's piece also says which
        partitions it has and which of them are idle (decided when planned, so a replay decides the same)."""
        for name in names:
            self.last_active[name] = now
            piece = names[name] if isinstance(names, dict) else None
            if isinstance(piece, dict) and "splits" in piece:
                self.splits[name] = list(piece["splits"])
                self.idle_splits[name] = set(piece.get("idle_splits", []))

    def advance(self, scanned: dict[str, pl.DataFrame], drain: bool = False) -> None:
        """Take this epoch's scanned rows into account; watermarks only move forward, a drain ends time."""
        self.advance_to(*maxima(self.watermarked, scanned), drain=drain)

    def advance_to(
        self,
        highest: dict[str, dt.datetime | None],
        per_split: dict[str, dict[str, dt.datetime | None]],
        drain: bool = False,
    ) -> None:
        """Advance by the maxima of the WATERMARK expressions over the epoch's rows (`maxima`), per source and,
        for a partitioned source, per partition: all a watermark needs, so workers that each read a share of
        the epoch report theirs and the maxima of their maxima advance the pipeline's watermarks."""
        for name in self.watermarked:
            if name in self.splits or name in per_split:
                candidate = self._advance_splits(name, per_split.get(name, {}), drain)
            else:
                candidate = END_OF_TIME if drain else highest.get(name)
            previous = self.marks.get(name)
            if candidate is not None and (previous is None or candidate > previous):
                self.marks[name] = candidate

    def _advance_splits(self, name: str, per_split: dict[str, dt.datetime | None], drain: bool) -> dt.datetime | None:
        """Advance each partition's watermark by its rows; the source's candidate is their minimum over the
        partitions that are not idle (all of them if all are), None while one of those has none."""
        splits = self.splits.get(name, [])
        if drain:
            for split in splits:
                self.marks[split_key(name, split)] = END_OF_TIME
            return END_OF_TIME
        for split, mark in per_split.items():
            key = split_key(name, split)
            if mark is not None and (self.marks.get(key) is None or mark > self.marks[key]):  # type: ignore[operator]
                self.marks[key] = mark
        if not splits:
            return None
        idle = self.idle_splits.get(name, set())
        active = [split for split in splits if split not in idle] or splits
        marks = [self.marks.get(split_key(name, split)) for split in active]
        return None if any(m is None for m in marks) else min(m for m in marks if m is not None)

    def idle_sources(self, pieces: dict[str, Any], now: float) -> set[str]:
        """Sources silent for longer than their 'scan.watermark.idle-timeout': they stop holding the watermark."""
        return {
            name
            for name, timeout in self.idle_timeouts.items()
            if name not in pieces and now - self.last_active.get(name, self.started_at) >= timeout
        }

    def pipeline(self, idle: set[str] | None = None) -> dt.datetime | None:
        """The minimum over the sources' watermarks, leaving out idle ones (unless all are idle)."""
        idle = self.idle if idle is None else idle
        sources = list(self.watermarked)
        active = [name for name in sources if name not in idle] or sources
        marks = [self.marks.get(name) for name in active]
        if not marks or any(m is None for m in marks):
            return None
        return min(m for m in marks if m is not None)

    def at_end_of_time(self) -> bool | None:
        """Whether every watermarked source has reached the end of time; None without event time."""
        if not self.watermarked:
            return None
        return all((m := self.marks.get(n)) is not None and m >= END_OF_TIME for n in self.watermarked)


def maxima(
    watermarked: dict[str, Scan], scanned: dict[str, pl.DataFrame]
) -> tuple[dict[str, dt.datetime | None], dict[str, dict[str, dt.datetime | None]]]:
    """The maximum of each watermarked source's WATERMARK expression over its scanned rows (None without rows),
    and per partition for a source whose rows carry SPLIT_COLUMN."""
    highest: dict[str, dt.datetime | None] = {}
    per_split: dict[str, dict[str, dt.datetime | None]] = {}
    for name, scan in watermarked.items():
        assert scan.table.watermark is not None
        rows, expr = scanned[name], scan.table.watermark.expr
        if SPLIT_COLUMN in rows.columns:
            found = rows.group_by(SPLIT_COLUMN).agg(expr.max().alias("wm")) if rows.height else None
            per_split[name] = dict(found.iter_rows()) if found is not None else {}
        else:
            mark = rows.select(expr.max().alias("wm"))
            highest[name] = mark.item() if mark.height else None
    return highest, per_split
