"""`'connector' = 'kafka'` and `'upsert-kafka'` (read side): the engine owns the offsets, as Flink does.

Each epoch's slice names, per topic-partition, an offset range [start, end): the end is at most the partition's
end offset when planned (under read_committed, the default, its last stable offset, so an open transaction is
never read into), and the slice is logged before it is read. `read` assigns the consumer to exactly those
ranges, so a replay after a crash reads exactly the same messages. The piece also logs what planning decided
once and for all: the start offsets of partitions seen for the first time (from 'scan.startup.mode' on a fresh
start, the earliest offset for partitions found later by discovery) and the bound of 'scan.bounded.mode'.

Piece:    {"ranges": [[topic, partition, start, end], ...], "added": [[topic, partition, start], ...],
           "bounds": [[topic, partition, end], ...] (the first piece of a bounded source only),
           "splits": ["topic:partition", ...], "idle_splits": [...] (a table with a WATERMARK only)}
Position: {"next": [[topic, partition, next offset], ...], "bounds": [[topic, partition, end], ...] | null}

Rows carry the hidden SPLIT_COLUMN ('topic:partition'), in partition and offset order: each partition has its
own watermark (engine.watermarks), and a partition without new messages for 'scan.watermark.idle-timeout' is
listed in `idle_splits` (decided when planned, so a replay decides the same).

Committing offsets to 'properties.group.id' happens after a checkpoint, for monitoring only: the engine's own
offsets are those of the manifest, so rollback and branches rewind Kafka with everything else.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import polars as pl

from engine.sources.base import ConnectorError, Source, SourceBatch
from engine.sources.kafka_client import TP, KafkaClient
from engine.sources.kafka_records import Decoder
from sql import durations
from sql.catalog import TableDef
from sql.kafka_options import parse_specific_offsets

#: Flink's default 'scan.topic-partition-discovery.interval'; '0' disables discovery
DISCOVERY_INTERVAL = "5 min"


class KafkaSource(Source):
    def __init__(self, table: TableDef, base_dir: Path) -> None:
        super().__init__(table, base_dir)
        options = table.options
        self.upsert = table.connector.strip().lower() == "upsert-kafka"
        self.decoder = Decoder(table, self.upsert)
        self.schema = self.decoder.schema
        pattern = options.get("topic-pattern")
        self.pattern = re.compile(pattern) if pattern is not None else None
        self.topics = [t.strip() for t in options.get("topic", "").split(";") if t.strip()]
        # upsert-kafka always reads the whole topic, as Flink's does (it has no startup or bounded options)
        self.startup = options.get("scan.startup.mode", "group-offsets").strip().lower()
        self.bounded = options.get("scan.bounded.mode", "unbounded").strip().lower()
        self.client = KafkaClient(table)
        if self.startup == "group-offsets" and "scan.startup.mode" in options and self.client.group is None:
            raise ConnectorError(
                f"table '{table.name}'{table.where('scan.startup.mode')}: 'scan.startup.mode' = 'group-offsets' "
                "needs the option 'properties.group.id'"
            )
        if self.bounded == "group-offsets" and self.client.group is None:
            raise ConnectorError(
                f"table '{table.name}'{table.where('scan.bounded.mode')}: 'scan.bounded.mode' = 'group-offsets' "
                "needs the option 'properties.group.id'"
            )
        self.reset = options.get("properties.auto.offset.reset", "earliest").strip().lower()
        interval = options.get("scan.topic-partition-discovery.interval", DISCOVERY_INTERVAL)
        self.discovery_interval = durations.parse_duration(interval) if interval.strip() not in ("0", "") else 0.0
        self.next: dict[TP, int] | None = None  # None: a fresh start, nothing planned yet
        self.bounds: dict[TP, int] | None = None
        self.once_ends: dict[TP, int] | None = None
        self.discovered_at: float | None = None  # this run's last discovery
        idle = options.get("scan.watermark.idle-timeout")
        self.idle_timeout = durations.parse_duration(idle) if idle else None
        self.last_active: dict[TP, float] = {}  # wall-clock time each partition last had new offsets (this run)
        self.logged_idle: list[str] = []  # the idle partitions the last piece logged

    # -- position -----------------------------------------------------------------------------------------
    def restore(self, position: Any, history: list[dict[str, Any]]) -> None:
        # The position holds everything the logged slices up to the checkpoint decided; history adds nothing.
        if not position:
            self.next, self.bounds = None, None
            return
        self.next = {(t, int(p)): int(o) for t, p, o in position["next"]}
        bounds = position.get("bounds")
        self.bounds = {(t, int(p)): int(o) for t, p, o in bounds} if bounds is not None else None

    @property
    def position(self) -> Any:
        if self.next is None:
            return None
        return {
            "next": [[t, p, o] for (t, p), o in sorted(self.next.items())],
            "bounds": [[t, p, o] for (t, p), o in sorted(self.bounds.items())] if self.bounds is not None else None,
        }

    def advance(self, piece: dict[str, Any]) -> None:
        if self.next is None:
            self.next = {}
        for topic, partition, start in piece.get("added", []):
            self.next[(topic, int(partition))] = int(start)
        if piece.get("bounds") is not None:
            self.bounds = {(t, int(p)): int(o) for t, p, o in piece["bounds"]}
        for topic, partition, _start, end in piece.get("ranges", []):
            self.next[(topic, int(partition))] = int(end)
        if "idle_splits" in piece:
            self.logged_idle = list(piece["idle_splits"])

    def on_checkpoint(self) -> Callable[[], None]:
        offsets = dict(self.next or {})
        return lambda: self.client.commit(offsets)

    def close(self) -> None:
        self.client.close()

    def empty(self) -> pl.DataFrame:
        return pl.DataFrame(schema=self.schema)

    # -- planning -----------------------------------------------------------------------------------------
    def plan(self, max_rows: int | None) -> dict[str, Any] | None:
        now = time.monotonic()
        known = dict(self.next or {})
        added: dict[TP, int] = {}
        bounds: dict[TP, int] | None = None
        if self.next is None:  # a fresh start: the startup mode chooses where each partition begins
            partitions = self.client.partitions(self.topics, self.pattern)
            marks = self.client.watermarks(partitions)
            added = self._startup(partitions, marks)
            if self.bounded != "unbounded":
                bounds = self._bounds(partitions, marks)
            self.discovered_at = now
        elif self._discovery_due(now):
            partitions = self.client.partitions(self.topics, self.pattern)
            new = [tp for tp in partitions if tp not in known]
            if new:  # as in Flink, partitions found after the start are read from their earliest offset
                added = {tp: low for tp, (low, _high) in self.client.watermarks(new).items()}
            self.discovered_at = now
        current = {**known, **added}
        marks = self.client.watermarks(sorted(current))  # the ends now, after any startup lookups
        if self.once and self.once_ends is None:
            self.once_ends = {tp: high for tp, (_low, high) in marks.items()}
        fixed = bounds if bounds is not None else self.bounds
        limits = {}
        for tp, start in sorted(current.items()):
            low, high = marks[tp]
            limit = high
            if fixed is not None:
                limit = min(limit, fixed.get(tp, start))
            if self.once_ends is not None:
                limit = min(limit, self.once_ends.get(tp, start))
            if start < low and limit > start:
                raise ConnectorError(
                    f"table '{self.table.name}'{self.table.where()}: offsets {start}-{low - 1} of {tp[0]} "
                    f"partition {tp[1]} were deleted by the topic's retention before they were read "
                    f"(the partition now starts at offset {low})"
                )
            limits[tp] = max(limit, start)
        takes = split_budget([limits[tp] - current[tp] for tp in limits], max_rows)
        ranges = [
            [t, p, current[(t, p)], current[(t, p)] + n] for (t, p), n in zip(limits, takes, strict=True) if n > 0
        ]
        idle = self._idle({tp: limits[tp] > current[tp] for tp in limits})
        # A change of idle partitions is worth an epoch of its own (the watermark may move), unless all are idle:
        # the source as a whole is then idle (engine.watermarks), and that needs no piece.
        quiet = idle == self.logged_idle or len(idle) == len(limits)
        if not ranges and not added and bounds is None and quiet:
            return None
        piece: dict[str, Any] = {"ranges": ranges, "added": [[t, p, o] for (t, p), o in sorted(added.items())]}
        if bounds is not None:
            piece["bounds"] = [[t, p, o] for (t, p), o in sorted(bounds.items())]
        if self.table.watermark is not None:  # each partition's watermark counts (engine.watermarks)
            piece["splits"] = [_split(tp) for tp in limits]
            piece["idle_splits"] = idle
        return piece

    def _idle(self, pending: dict[TP, bool]) -> list[str]:
        """The partitions without new messages for 'scan.watermark.idle-timeout' (`pending`: whether each has
        messages to read): they stop holding the source's watermark back. Decided here and logged with the
        piece, so a replay decides the same."""
        now = time.time()
        for tp, has_messages in pending.items():
            if has_messages or tp not in self.last_active:
                self.last_active[tp] = now
        if self.idle_timeout is None or self.table.watermark is None:
            return []
        return [_split(tp) for tp in pending if now - self.last_active[tp] >= self.idle_timeout]

    def _discovery_due(self, now: float) -> bool:
        """Partition discovery: at each run's first plan, then every interval; never for a bounded source (its
        partitions are those its bound names) nor after the first plan of a `--once` run."""
        if self.bounds is not None:
            return False
        if self.discovered_at is None:
            return True
        if self.once or not self.discovery_interval:
            return False
        return now - self.discovered_at >= self.discovery_interval

    def _startup(self, partitions: list[TP], marks: dict[TP, tuple[int, int]]) -> dict[TP, int]:
        mode = "earliest-offset" if self.upsert else self.startup
        options = self.table.options
        if mode == "earliest-offset":
            return {tp: marks[tp][0] for tp in partitions}
        if mode == "latest-offset":
            return {tp: marks[tp][1] for tp in partitions}
        if mode == "timestamp":
            found = self.client.offsets_for_times(partitions, int(options["scan.startup.timestamp-millis"]))
            return {tp: found[tp] if found.get(tp, -1) >= 0 else marks[tp][1] for tp in partitions}
        committed = self.client.committed(partitions)
        if mode == "specific-offsets":
            given = parse_specific_offsets(options["scan.startup.specific-offsets"]) or {}
            return {
                tp: _clamp(given[tp[1]], marks[tp]) if tp[1] in given else committed.get(tp, marks[tp][0])
                for tp in partitions
            }
        # group-offsets (Flink's default): the group's committed offsets; where it has none, the consumer
        # property 'auto.offset.reset' decides (earliest unless set)
        start = {}
        for tp in partitions:
            if tp in committed:
                start[tp] = _clamp(committed[tp], marks[tp])
            elif self.reset in ("earliest", "smallest", "beginning"):
                start[tp] = marks[tp][0]
            elif self.reset in ("latest", "largest", "end"):
                start[tp] = marks[tp][1]
            else:
                raise ConnectorError(
                    f"table '{self.table.name}'{self.table.where()}: the consumer group "
                    f"'{self.client.group}' has no committed offset for {tp[0]} partition {tp[1]}, and "
                    f"'properties.auto.offset.reset' = '{self.reset}' says not to start elsewhere"
                )
        return start

    def _bounds(self, partitions: list[TP], marks: dict[TP, tuple[int, int]]) -> dict[TP, int]:
        """Where a bounded source stops, fixed at its first start (unlisted partitions: their end then)."""
        options = self.table.options
        ends = {tp: marks[tp][1] for tp in partitions}
        if self.bounded == "timestamp":
            found = self.client.offsets_for_times(partitions, int(options["scan.bounded.timestamp-millis"]))
            return {tp: found[tp] if found.get(tp, -1) >= 0 else ends[tp] for tp in partitions}
        if self.bounded == "group-offsets":
            committed = self.client.committed(partitions)
            return {tp: committed.get(tp, ends[tp]) for tp in partitions}
        if self.bounded == "specific-offsets":
            given = parse_specific_offsets(options["scan.bounded.specific-offsets"]) or {}
            return {tp: given.get(tp[1], ends[tp]) for tp in partitions}
        return ends  # latest-offset

    # -- reading ------------------------------------------------------------------------------------------
    def split(self, piece: dict[str, Any], shares: int) -> list[dict[str, Any] | None]:
        """By partition: each worker fetches whole partitions (round robin over the piece's ranges), so each
        partition's rows, and its watermark, stay in one worker's share."""
        ranges = piece.get("ranges", [])
        return [{**piece, "ranges": ranges[i::shares]} if ranges[i::shares] else None for i in range(shares)]

    def read(self, piece: dict[str, Any]) -> SourceBatch:
        ranges = [(t, int(p), int(s), int(e)) for t, p, s, e in piece.get("ranges", [])]
        messages = self.client.fetch(ranges, frozenset(self.decoder.metadata.values()))
        if messages.height == 0:
            return SourceBatch(self.empty(), self.decoder.decode(messages).dead_letters)
        return self.decoder.decode(messages)


def split_budget(available: list[int], budget: int | None) -> list[int]:
    """How many offsets each partition gives to an epoch capped at `budget`: equal shares, a partition's unused
    share going to the others; a pure function of its arguments, so a replanned epoch splits the same way."""
    if budget is None:
        return list(available)
    take = [0] * len(available)
    remaining = budget
    active = [i for i, a in enumerate(available) if a > 0]
    while remaining > 0 and active:
        share = max(1, remaining // len(active))
        for i in list(active):
            step = min(share, available[i] - take[i], remaining)
            take[i] += step
            remaining -= step
            if take[i] == available[i]:
                active.remove(i)
            if remaining == 0:
                break
    return take


def _split(tp: TP) -> str:
    return f"{tp[0]}:{tp[1]}"  # as kafka_records.split_id names the rows' partition


def _clamp(offset: int, marks: tuple[int, int]) -> int:
    """An offset asked for that is outside the partition starts at its nearest end (Kafka resets it so too)."""
    low, high = marks
    return min(max(offset, low), high)
