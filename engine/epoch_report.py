"""What a run reports: one `EpochReport` per epoch (counts per source or sink), summed into a `Summary`."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any


@dataclass
class EpochReport:
    """One epoch's counts, per source or sink. `rows_in` counts the good rows the pipeline processed and
    `dead_letters` the records set aside as unreadable; `records_read` is both (what was read from the source)."""

    epoch: int
    rows_in: dict[str, int]
    rows_out: dict[str, int]
    dead_letters: dict[str, int]
    late_rows: dict[str, int]
    watermark: dt.datetime | None
    duration_s: float
    commit_s: float
    replayed: bool
    records_read: dict[str, int] = field(default_factory=dict)
    drain: bool = False


@dataclass
class Summary:
    state: str
    epochs: int = 0
    last_epoch: int | None = None
    rows_in: dict[str, int] = field(default_factory=dict)
    records_read: dict[str, int] = field(default_factory=dict)
    rows_out: dict[str, int] = field(default_factory=dict)
    dead_letters: dict[str, int] = field(default_factory=dict)
    late_rows: dict[str, int] = field(default_factory=dict)
    watermark: dt.datetime | None = None
    elapsed_s: float = 0.0
    stopped: str = "finished"
    drained: int | None = None  # the drain epoch, when this run drained

    def add(self, report: EpochReport) -> None:
        self.epochs += 1
        self.last_epoch = report.epoch
        if report.drain:
            self.drained = report.epoch
        self.watermark = report.watermark
        for target, counts in (
            (self.rows_in, report.rows_in),
            (self.records_read, report.records_read),
            (self.rows_out, report.rows_out),
            (self.dead_letters, report.dead_letters),
            (self.late_rows, report.late_rows),
        ):
            for key, value in counts.items():
                target[key] = target.get(key, 0) + value

    def as_dict(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "epochs": self.epochs,
            "last_epoch": self.last_epoch,
            "rows_in": self.rows_in,
            "records_read": self.records_read,
            "rows_out": self.rows_out,
            "dead_letters": self.dead_letters,
            "late_rows": self.late_rows,
            "watermark": self.watermark.isoformat() if self.watermark else None,
            "elapsed_s": round(self.elapsed_s, 3),
            "stopped": self.stopped,
            **({"drained": self.drained} if self.drained is not None else {}),
        }
