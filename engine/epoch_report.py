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


#: upper bounds (seconds) of the duration histograms in `totals` (Prometheus-style cumulative buckets; the
#: implicit +Inf bucket is `count`)
DURATION_BUCKETS: tuple[float, ...] = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

#: the per-name counters of `totals`, as an epoch report counts them
COUNTERS = ("rows_in", "rows_out", "dead_letters", "late_rows")


def observe(histogram: dict[str, Any] | None, seconds: float) -> dict[str, Any]:
    """A histogram (`{buckets, sum, count}`) with one more observation; the input is not changed."""
    buckets = list((histogram or {}).get("buckets") or [])
    buckets = (buckets + [0] * len(DURATION_BUCKETS))[: len(DURATION_BUCKETS)]  # written with other bounds: pad
    for i, bound in enumerate(DURATION_BUCKETS):
        if seconds <= bound:
            buckets[i] += 1
    return {
        "buckets": buckets,
        "sum": round(float((histogram or {}).get("sum", 0.0)) + seconds, 6),
        "count": int((histogram or {}).get("count", 0)) + 1,
    }


def empty_totals() -> dict[str, Any]:
    return {
        "epochs": 0,
        "checkpoints": 0,
        **{key: {} for key in COUNTERS},
        "epoch_seconds": {"buckets": [0] * len(DURATION_BUCKETS), "sum": 0.0, "count": 0},
        "checkpoint_seconds": {"buckets": [0] * len(DURATION_BUCKETS), "sum": 0.0, "count": 0},
    }


def carried_totals(recorded: dict[str, Any] | None) -> dict[str, Any]:
    """The totals a run continues from: those of the row it resumes from (a copy), completed with any key an
    older row lacks."""
    totals = empty_totals()
    for key, value in (recorded or {}).items():
        totals[key] = {**value} if isinstance(value, dict) else value
    return totals


def add_epoch(totals: dict[str, Any], counts: dict[str, dict[str, int]], seconds: float) -> None:
    """Count one epoch into `totals` (every epoch, also those between checkpoints)."""
    totals["epochs"] += 1
    for key in COUNTERS:
        bucket = totals.setdefault(key, {})
        for name, n in counts.get(key, {}).items():
            bucket[name] = bucket.get(name, 0) + n
    totals["epoch_seconds"] = observe(totals.get("epoch_seconds"), seconds)


def add_checkpoint(totals: dict[str, Any], seconds: float) -> None:
    totals["checkpoints"] += 1
    totals["checkpoint_seconds"] = observe(totals.get("checkpoint_seconds"), seconds)


def merge_summaries(first: dict[str, Any], then: dict[str, Any]) -> dict[str, Any]:
    """Two consecutive runs' summaries (`Summary.as_dict`) as one: a run that rolled back and went on."""
    merged = {**first, **then}
    merged["epochs"] = first["epochs"] + then["epochs"]
    merged["last_epoch"] = then["last_epoch"] if then["last_epoch"] is not None else first["last_epoch"]
    merged["elapsed_s"] = round(first["elapsed_s"] + then["elapsed_s"], 3)
    for key in ("rows_in", "records_read", *COUNTERS):
        counts = dict(first.get(key, {}))
        for name, n in then.get(key, {}).items():
            counts[name] = counts.get(name, 0) + n
        merged[key] = counts
    merged["rollbacks"] = first.get("rollbacks", 0) + 1
    return merged
