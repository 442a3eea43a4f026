"""The Kafka source's conversations with the broker: metadata, offsets, and fetching exact offset ranges.

Every call has a bounded timeout and turns the client's errors into one-line `ConnectorError`s naming the table
and the broker; librdkafka's own log lines go to the `timelapse.kafka` logger (engine.kafka_config), never to
the user's terminal.
"""

from __future__ import annotations

import re
import time
from typing import Any

import polars as pl

from engine.kafka_config import LOG, client_config, client_module, group_id
from engine.sources.base import ConnectorError
from engine.sources.kafka_records import MESSAGE_SCHEMA
from sql.catalog import TableDef

#: seconds a metadata or offsets request may take before the broker counts as unreachable
REQUEST_TIMEOUT = 10.0
#: seconds a fetch may go without progress before the read is abandoned with an error
FETCH_STALL_TIMEOUT = 30.0
#: (topic, partition)
TP = tuple[str, int]
#: messages kept between reads beyond which the carry is dropped (and fetched again when needed)
CARRY_LIMIT = 500_000


class KafkaClient:
    """One consumer, used with `assign` only: the engine, not the consumer group, decides what is read."""

    def __init__(self, table: TableDef) -> None:
        self.table = table
        self.kafka = client_module()
        self.servers = table.options.get("properties.bootstrap.servers", "?")
        self.group = group_id(table)
        overrides: dict[str, Any] = {
            "group.id": self.group or "timelapse",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "enable.partition.eof": True,
            # a slice whose messages retention deleted is an error, never a silent jump to other offsets
            "auto.offset.reset": "error",
            "error_cb": self._error,
        }
        # Defaults a table's properties may change. An epoch reads a known range and returns: librdkafka's
        # defaults suit a consumer that polls forever (a 1 s pause of a partition whose queue is full, a 500 ms
        # wait on the broker for more data), and stalled every epoch's read for a second or more.
        for key, value in {
            "isolation.level": "read_committed",
            "fetch.wait.max.ms": 10,
            "fetch.queue.backoff.ms": 5,
            "fetch.error.backoff.ms": 20,
        }.items():
            if f"properties.{key}" not in table.options:
                overrides[key] = value
        self.config = client_config(table, **overrides)
        self._consumer: Any = None
        self._errors: list[str] = []
        # messages a read received past its ranges' ends, and per assigned partition where the next read
        # must start to use them (`_stream_from`) and where the consumer's stream is (`_stream_at`)
        self._carry = pl.DataFrame(schema=MESSAGE_SCHEMA)
        self._stream_from: dict[TP, int] = {}
        self._stream_at: dict[TP, int] = {}
        self._paused: set[TP] = set()

    def _error(self, err: Any) -> None:
        # Connection problems are retried by librdkafka; they only matter if a request then times out.
        self._errors.append(err.str())
        LOG.debug("client error: %s", err.str())

    def where(self) -> str:
        return f"table '{self.table.name}'{self.table.where()}"

    @property
    def consumer(self) -> Any:
        if self._consumer is None:
            try:
                self._consumer = self.kafka.Consumer(self.config)
            except (self.kafka.KafkaException, ValueError, TypeError) as err:
                raise ConnectorError(
                    f"{self.where()}: the Kafka client refuses its properties: {_reason(err)}"
                ) from None
        return self._consumer

    def close(self) -> None:
        if self._consumer is not None:
            self._forget()
            consumer, self._consumer = self._consumer, None
            try:
                consumer.close()
            except Exception as err:  # closing must never hide the run's own outcome
                LOG.debug("close failed: %s", err)

    def unreachable(self, err: Any) -> ConnectorError:
        reason = _reason(err)
        if self._errors:
            reason = self._errors[-1]
        return ConnectorError(
            f"{self.where()}: cannot reach Kafka at {self.servers} within {REQUEST_TIMEOUT:g} s ({reason})"
        )

    # -- metadata -----------------------------------------------------------------------------------------
    def partitions(self, topics: list[str] | None, pattern: re.Pattern[str] | None) -> list[TP]:
        """The partitions of the named topics (each must exist), or of every topic matching `pattern`."""
        found: list[TP] = []
        try:
            if pattern is not None:
                metadata = self.consumer.list_topics(timeout=REQUEST_TIMEOUT)
                for name, topic in metadata.topics.items():
                    if pattern.fullmatch(name) and topic.error is None and not name.startswith("__"):
                        found += [(name, p) for p in topic.partitions]
                return sorted(found)
            for name in topics or []:
                topic = self.consumer.list_topics(name, timeout=REQUEST_TIMEOUT).topics.get(name)
                if topic is None or topic.error is not None or not topic.partitions:
                    raise ConnectorError(
                        f"{self.where()}: topic '{name}' does not exist at Kafka {self.servers}"
                        + (f" ({topic.error.str()})" if topic is not None and topic.error is not None else "")
                    )
                found += [(name, p) for p in topic.partitions]
        except self.kafka.KafkaException as err:
            raise self.unreachable(err.args[0] if err.args else err) from None
        return sorted(found)

    def watermarks(self, partitions: list[TP]) -> dict[TP, tuple[int, int]]:
        """(first offset, end offset) of each partition; the end is the last stable offset under read_committed."""
        found = {}
        for topic, partition in partitions:
            try:
                found[(topic, partition)] = self.consumer.get_watermark_offsets(
                    self.kafka.TopicPartition(topic, partition), timeout=REQUEST_TIMEOUT, cached=False
                )
            except self.kafka.KafkaException as err:
                raise self.unreachable(err.args[0] if err.args else err) from None
            if found[(topic, partition)] is None:
                raise self.unreachable("no answer")
        return found

    def committed(self, partitions: list[TP]) -> dict[TP, int]:
        """The consumer group's committed offsets (absent where the group has none)."""
        if not partitions or self.group is None:
            return {}
        tps = [self.kafka.TopicPartition(t, p) for t, p in partitions]
        try:
            answer = self.consumer.committed(tps, timeout=REQUEST_TIMEOUT)
        except self.kafka.KafkaException as err:
            raise self.unreachable(err.args[0] if err.args else err) from None
        return {(tp.topic, tp.partition): tp.offset for tp in answer if tp.offset >= 0 and tp.error is None}

    def offsets_for_times(self, partitions: list[TP], millis: int) -> dict[TP, int]:
        """The first offset whose timestamp is at least `millis`, per partition (-1: none yet)."""
        if not partitions:
            return {}
        tps = [self.kafka.TopicPartition(t, p, millis) for t, p in partitions]
        try:
            answer = self.consumer.offsets_for_times(tps, timeout=REQUEST_TIMEOUT)
        except self.kafka.KafkaException as err:
            raise self.unreachable(err.args[0] if err.args else err) from None
        return {(tp.topic, tp.partition): tp.offset for tp in answer}

    def commit(self, offsets: dict[TP, int]) -> None:
        """Report offsets to the consumer group, asynchronously: monitoring only, failures are only logged."""
        if self.group is None or not offsets:
            return
        try:
            self.consumer.commit(
                offsets=[self.kafka.TopicPartition(t, p, o) for (t, p), o in sorted(offsets.items())],
                asynchronous=True,
            )
        except Exception as err:  # the engine's offsets are in the manifest: a failed report changes nothing
            LOG.info("offset commit to group %s failed: %s", self.group, err)

    # -- fetching -----------------------------------------------------------------------------------------
    def fetch(self, ranges: list[tuple[str, int, int, int]], metadata: frozenset[str] = frozenset()) -> pl.DataFrame:
        """Exactly the messages at offsets [start, end) of each (topic, partition, start, end), in range and
        offset order. A range may hold fewer messages than offsets (transaction markers, aborted transactions,
        compaction): a partition is done when a message at or after its end arrives, or it reaches its end.
        Headers and leader epochs are collected only when `metadata` (the table's metadata keys) asks for them.

        Partitions stay assigned between reads, and what a read receives past a range's end is kept (`_carry`)
        for the next read, which usually starts exactly there: each message is fetched once, and an epoch does
        not wait for a fresh assignment to start fetching. A range that starts anywhere else (a replay, a
        rollback) is fetched afresh from its start."""
        ranges = [r for r in ranges if r[3] > r[2]]
        if not ranges:
            return pl.DataFrame(schema=MESSAGE_SCHEMA)
        try:
            return self._fetch(ranges, metadata)
        except BaseException:
            self._forget()  # an interrupted read leaves no assignment or carried messages to trust
            raise

    def _fetch(self, ranges: list[tuple[str, int, int, int]], metadata: frozenset[str]) -> pl.DataFrame:
        kafka = self.kafka
        consumer = self.consumer
        pending: dict[TP, tuple[int, int]] = {(t, p): (s, e) for t, p, s, e in ranges}
        spans = pl.DataFrame(
            [(t, p, s, e, i) for i, (t, p, s, e) in enumerate(ranges)],
            schema={
                "topic": pl.String,
                "partition": pl.Int32,
                "\x00start": pl.Int64,
                "\x00end": pl.Int64,
                "\x00range": pl.Int32,
            },
            orient="row",
        )
        # progress: per partition, the offset after the highest one received (the stream is there)
        progress: dict[TP, int] = {}
        fresh = []
        for topic, partition, start, _end in ranges:
            tp = (topic, partition)
            if self._stream_from.get(tp) == start:  # the stream carries on where the last read ended
                progress[tp] = self._stream_at[tp]
            else:
                fresh.append(tp)
        try:
            if resume := [kafka.TopicPartition(*tp) for tp in pending if tp in self._paused and tp not in fresh]:
                consumer.resume(resume)
            self._paused.difference_update(pending)
            if stale := [kafka.TopicPartition(*tp) for tp in fresh if tp in self._stream_at]:
                consumer.incremental_unassign(stale)
            if fresh:
                consumer.incremental_assign([kafka.TopicPartition(*tp, pending[tp][0]) for tp in fresh])
        except kafka.KafkaException as err:
            raise self.unreachable(err.args[0] if err.args else err) from None
        batches = [self._carry]
        if fresh:  # what was carried for a partition read afresh is not part of its new stream
            dropped = pl.DataFrame(fresh, schema={"topic": pl.String, "partition": pl.Int32}, orient="row")
            batches = [self._carry.join(dropped, on=["topic", "partition"], how="anti")]
        for tp in fresh:
            self._stream_at[tp] = pending[tp][0]
        for tp, (_start, end) in list(pending.items()):
            if progress.get(tp, -1) >= end:
                del pending[tp]
        last_progress = time.monotonic()
        want_headers, want_epoch = "headers" in metadata, "leader-epoch" in metadata
        while pending:
            # Ask for no more than the ranges can still hold: consume() returns once it has that many,
            # instead of waiting out its timeout for a full batch (that wait was most of an epoch's latency).
            remaining = sum(end - progress.get(tp, start) for tp, (start, end) in pending.items())
            messages = consumer.consume(num_messages=max(1, min(10_000, remaining)), timeout=0.2)
            if messages:
                last_progress = time.monotonic()
                good = self._sort_out_errors(messages, pending)
                if good:
                    batch = self._batch(good, want_headers, want_epoch)
                    batches.append(batch)
                    # A partition is done once a message at or after its range's last offset arrives.
                    ends = batch.group_by("topic", "partition").agg(pl.col("offset").max())
                    finished = []
                    for topic, partition, highest in ends.iter_rows():
                        tp = (topic, partition)
                        progress[tp] = highest + 1
                        span = pending.get(tp)
                        if span is not None and highest + 1 >= span[1]:
                            del pending[tp]
                            finished.append(kafka.TopicPartition(topic, partition))
                    if finished and pending:
                        # A finished partition stops fetching while the others catch up (the broker may serve
                        # partitions unevenly); it resumes, where it stopped, when a read needs it again.
                        consumer.pause(finished)
                        self._paused.update((t.topic, t.partition) for t in finished)
            if pending and not messages:
                self._check_positions(pending)
                if pending and time.monotonic() - last_progress > FETCH_STALL_TIMEOUT:
                    (topic, partition), (start, end) = next(iter(pending.items()))
                    raise ConnectorError(
                        f"{self.where()}: no progress reading offsets {start}-{end - 1} of {topic} partition "
                        f"{partition} from Kafka at {self.servers} for {FETCH_STALL_TIMEOUT:g} s"
                        + (f" ({self._errors[-1]})" if self._errors else "")
                    )
        received = pl.concat(batches) if batches else pl.DataFrame(schema=MESSAGE_SCHEMA)
        # Only the messages inside each range (a read runs past a range's end, or holds older carried ones).
        frame = (
            received.join(spans, on=["topic", "partition"], how="inner")
            .filter(pl.col("offset").is_between(pl.col("\x00start"), pl.col("\x00end"), closed="left"))
            .unique(["\x00range", "offset"], keep="first", maintain_order=True)
        )
        self._keep_for_next_read(received, ranges, progress)
        return frame.sort("\x00range", "offset").select(list(MESSAGE_SCHEMA))

    def _keep_for_next_read(
        self, received: pl.DataFrame, ranges: list[tuple[str, int, int, int]], progress: dict[TP, int]
    ) -> None:
        """Carry what arrived past each range's end; the next read of those partitions starts at that end."""
        for topic, partition, _start, end in ranges:
            self._stream_from[(topic, partition)] = end
            self._stream_at[(topic, partition)] = max(end, progress.get((topic, partition), end))
        starts = pl.DataFrame(
            [(t, p, o) for (t, p), o in self._stream_from.items()],
            schema={"topic": pl.String, "partition": pl.Int32, "\x00from": pl.Int64},
            orient="row",
        )
        carry = (
            received.join(starts, on=["topic", "partition"], how="inner")
            .filter(pl.col("offset") >= pl.col("\x00from"))
            .drop("\x00from")
        )
        if carry.height > CARRY_LIMIT:  # a partition read far ahead of what epochs ask for: fetch it again later
            self._forget()
            return
        self._carry = carry

    def _forget(self) -> None:
        """Drop the assignment and the carried messages: the next read fetches every range from its start."""
        self._carry = pl.DataFrame(schema=MESSAGE_SCHEMA)
        self._stream_from.clear()
        self._stream_at.clear()
        self._paused.clear()
        if self._consumer is not None:
            try:
                self._consumer.unassign()
            except self.kafka.KafkaException as err:
                LOG.debug("unassign: %s", err)

    def _sort_out_errors(self, messages: list[Any], pending: dict[TP, tuple[int, int]]) -> list[Any]:
        """The messages that carry data; acts on the events among them (partition ends, deleted offsets)."""
        events = [m for m in messages if m.error() is not None]
        if not events:
            return messages
        kafka = self.kafka
        eof = kafka.KafkaError._PARTITION_EOF
        gone = (kafka.KafkaError._AUTO_OFFSET_RESET, kafka.KafkaError.OFFSET_OUT_OF_RANGE)
        for message in events:
            tp = (message.topic(), message.partition())
            err = message.error()
            if err.code() == eof:
                # the partition's end (under read_committed, its last stable offset) when the event was made: the
                # range is done if that is at or past its end (an older event may come from before the read)
                span = pending.get(tp)
                if span is not None and message.offset() >= span[1]:
                    del pending[tp]
            elif err.code() in gone:
                raise self._gone(tp, pending.get(tp), err)
            elif err.fatal() or err.code() in (kafka.KafkaError.UNKNOWN_TOPIC_OR_PART, kafka.KafkaError._UNKNOWN_TOPIC):
                raise ConnectorError(f"{self.where()}: reading {tp[0]} partition {tp[1]}: {err.str()}")
            else:
                LOG.debug("fetch: %s", err.str())
        return [m for m in messages if m.error() is None]

    @staticmethod
    def _batch(messages: list[Any], want_headers: bool, want_epoch: bool) -> pl.DataFrame:
        """One consume call's messages as columns: a pass per column, no per-message branching."""
        stamps = [m.timestamp() for m in messages]
        count = len(messages)
        return pl.DataFrame(
            {
                "topic": [m.topic() for m in messages],
                "partition": [m.partition() for m in messages],
                "offset": [m.offset() for m in messages],
                "key": [m.key() for m in messages],
                "value": [m.value() for m in messages],
                "timestamp": [stamp if kind else None for kind, stamp in stamps],
                "timestamp_type": [kind for kind, _ in stamps],
                "headers": [_headers(m.headers()) for m in messages] if want_headers else [None] * count,
                "leader_epoch": [m.leader_epoch() for m in messages] if want_epoch else [None] * count,
            },
            schema=MESSAGE_SCHEMA,
        )

    def _check_positions(self, pending: dict[TP, tuple[int, int]]) -> None:
        """Partitions whose fetch position passed their end without a message there (a trailing marker)."""
        try:
            positions = self.consumer.position([self.kafka.TopicPartition(t, p) for t, p in pending])
        except self.kafka.KafkaException:
            return
        for tp in positions:
            key = (tp.topic, tp.partition)
            if key in pending and tp.offset >= 0 and tp.offset >= pending[key][1]:
                del pending[key]

    def _gone(self, tp: TP, span: tuple[int, int] | None, err: Any) -> ConnectorError:
        first = ""
        try:
            low, _high = self.consumer.get_watermark_offsets(
                self.kafka.TopicPartition(*tp), timeout=REQUEST_TIMEOUT, cached=False
            )
            first = f"; the partition now starts at offset {low}"
        except Exception:
            LOG.debug("watermarks after out-of-range: %s", err)
        offsets = f"offsets {span[0]}-{span[1] - 1}" if span else "offsets"
        return ConnectorError(
            f"{self.where()}: {offsets} of {tp[0]} partition {tp[1]} are no longer available in Kafka "
            f"(deleted by the topic's retention){first}; the slice logged for this epoch cannot be read again"
        )


def _headers(headers: list[tuple[str, bytes | None]] | None) -> list[dict[str, Any]] | None:
    return [{"key": k, "value": v} for k, v in headers] if headers else []


def _reason(err: Any) -> str:
    return err.str() if hasattr(err, "str") else str(err)
