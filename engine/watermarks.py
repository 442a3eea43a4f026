"""Source watermarks: each source's, the pipeline's (their minimum), and which sources are idle.

A source's watermark is the maximum of its WATERMARK expression over the rows read so far; it only moves
forward, and a drain moves it to the end of time. A source silent for longer than its
'scan.watermark.idle-timeout' is idle: it stops holding the pipeline's watermark back (unless all are idle).
Checkpoints record each source's watermark and when it last had rows (`positions`), so a restart resumes them.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import polars as pl

from engine.operators.context import END_OF_TIME
from sql import durations
from sql.plan import Scan


class Watermarks:
    def __init__(self, scans: dict[str, Scan], started_at: float) -> None:
        self.watermarked = {name: scan for name, scan in scans.items() if scan.table.watermark is not None}
        self.marks: dict[str, dt.datetime | None] = {}
        self.last_active: dict[str, float] = {}  # processing time (epoch seconds) of each source's last rows
        self.idle: set[str] = set()
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

    def position(self, name: str) -> dict[str, Any]:
        wm = self.marks.get(name)
        return {"watermark": wm.isoformat() if wm else None, "last_active": self.last_active.get(name)}

    def active(self, names: list[str] | dict[str, Any], now: float) -> None:
        """The sources that have rows this epoch (planned at `now`)."""
        for name in names:
            self.last_active[name] = now

    def advance(self, scanned: dict[str, pl.DataFrame], drain: bool = False) -> None:
        """Take this epoch's scanned rows into account; watermarks only move forward, a drain ends time."""
        for name, scan in self.watermarked.items():
            assert scan.table.watermark is not None
            mark = scanned[name].select(scan.table.watermark.expr.max().alias("wm"))
            candidate = END_OF_TIME if drain else (mark.item() if mark.height else None)
            previous = self.marks.get(name)
            if candidate is not None and (previous is None or candidate > previous):
                self.marks[name] = candidate

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
