"""What an operator may know about the epoch it runs in."""

from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import dataclass, field
from typing import Any

import polars as pl

#: The watermark a drain advances every source to: every window, session, padding and timer is due.
END_OF_TIME = dt.datetime(9999, 12, 31, 23, 59, 59, 999000, tzinfo=dt.UTC)


@dataclass
class EpochContext:
    epoch: int
    proctime: dt.datetime  # the epoch's planned time: logged, so a replay sees the same PROCTIME()
    sources: dict[str, pl.DataFrame]  # rows read from each source this epoch, by table name
    #: the watermark the running operator fires by, once this epoch's rows are taken into account: the minimum
    #: over the sources upstream of it (set per operator by `for_operator`; the pipeline's minimum otherwise)
    watermark: dt.datetime | None = None
    #: per source: its watermark before this epoch (where its rows' running watermark starts)
    previous_watermarks: dict[str, dt.datetime | None] = field(default_factory=dict)
    #: per source: its watermark after this epoch's rows; and the sources idle this epoch
    source_watermarks: dict[str, dt.datetime | None] = field(default_factory=dict)
    idle: frozenset[str] = frozenset()
    #: a drain: the input present is processed and every watermark jumps to END_OF_TIME
    drain: bool = False
    scanned: dict[str, pl.DataFrame] = field(default_factory=dict)  # Scan outputs, materialised once
    dimension_versions: dict[str, Any] = field(default_factory=dict)  # lookup tables' versions, as logged
    #: the versions the previous epoch logged: a lookup table's dead letters are recorded when its version changes
    previous_dimension_versions: dict[str, Any] = field(default_factory=dict)
    #: dead letters operators set aside this epoch (a lookup table's unconvertible values), by table name
    dead_letters: dict[str, pl.DataFrame] = field(default_factory=dict)

    def for_operator(self, sources: tuple[str, ...]) -> EpochContext:
        """The context an operator fed by `sources` (those with a watermark) runs in."""
        if self.drain:
            return dataclasses.replace(self, watermark=END_OF_TIME)
        return dataclasses.replace(self, watermark=operator_watermark(self.source_watermarks, sources, self.idle))


def operator_watermark(
    marks: dict[str, dt.datetime | None], sources: tuple[str, ...], idle: frozenset[str] | set[str]
) -> dt.datetime | None:
    """An operator's watermark: the minimum over the watermarks of the sources upstream of it, leaving out idle
    ones (unless all are idle); None until each of them has one. Sources elsewhere in the pipeline never count."""
    active = [name for name in sources if name not in idle] or list(sources)
    values = [marks.get(name) for name in active]
    if not values or any(v is None for v in values):
        return None
    return min(v for v in values if v is not None)
