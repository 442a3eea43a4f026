"""What an operator may know about the epoch it runs in."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import polars as pl


@dataclass
class EpochContext:
    epoch: int
    proctime: dt.datetime  # the epoch's planned time: logged, so a replay sees the same PROCTIME()
    sources: dict[str, pl.DataFrame]  # rows read from each source this epoch, by table name
    watermark: dt.datetime | None = None
