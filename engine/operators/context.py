"""What an operator may know about the epoch it runs in."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

import polars as pl


@dataclass
class EpochContext:
    epoch: int
    proctime: dt.datetime  # the epoch's planned time: logged, so a replay sees the same PROCTIME()
    sources: dict[str, pl.DataFrame]  # rows read from each source this epoch, by table name
    #: the pipeline watermark once this epoch's rows are taken into account: windows ending by it fire
    watermark: dt.datetime | None = None
    #: per source: its watermark before this epoch, and the floor the other sources put under it
    #: (None: no constraint; `undefined`: some other source has no watermark yet)
    previous_watermarks: dict[str, dt.datetime | None] = field(default_factory=dict)
    watermark_floors: dict[str, dt.datetime | str | None] = field(default_factory=dict)
    scanned: dict[str, pl.DataFrame] = field(default_factory=dict)  # Scan outputs, materialised once
    operators: dict[str, Any] = field(default_factory=dict)  # stateful operator instances by node id
    dimension_versions: dict[str, Any] = field(default_factory=dict)  # lookup tables' versions, as logged
