"""Reading a Kafka sink's topic back: its end offsets, the epochs it already holds, and the compensation that
rolls an upsert-kafka topic back to a checkpoint.

Every read is `read_committed` (what the pipeline's readers see) and bounded: a broker that stops answering
ends the read with one line after `wait_s` seconds without progress.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

from engine import faults
from engine.kafka_config import LOG, client_module
from engine.sinks.kafka import EPOCH_HEADER, PIPELINE_HEADER, ROLLBACK_HEADER, wait_s

Fail = Callable[[Any], Exception]


def _consumer(config: dict[str, Any], committed: bool = True) -> Any:
    """A consumer of assigned partitions; `committed=False` for offset queries, which then give the high
    watermark (a read_committed client's query answers the last stable offset instead)."""
    kafka = client_module()
    return kafka.Consumer(
        {
            **config,
            "group.id": f"timelapse-read-{uuid.uuid4().hex[:12]}",  # assigned partitions only: nothing is committed
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "isolation.level": "read_committed" if committed else "read_uncommitted",
            "logger": LOG,
        }
    )


def _partitions(consumer: Any, topic: str, fail: Fail, wait: float) -> list[int]:
    metadata = consumer.list_topics(topic, timeout=wait)
    found = metadata.topics.get(topic)
    if found is None or found.error is not None:
        raise fail(f"topic '{topic}' is not readable: {found.error if found is not None else 'not found'}")
    return sorted(found.partitions)


def end_offsets(config: dict[str, Any], topic: str, fail: Fail, consumer: Any = None) -> dict[int, int]:
    """Each partition's end offset (the next offset to be written). `consumer`: one made by
    `offsets_consumer(config)` that the caller keeps (a sink asks at every checkpoint); else one for this call."""
    kafka = client_module()
    own = consumer is None
    consumer = offsets_consumer(config) if own else consumer
    try:
        wait = wait_s(config)
        partitions = _partitions(consumer, topic, fail, wait)
        return {p: _watermarks(consumer, kafka, topic, p, fail, wait)[1] for p in partitions}
    except kafka.KafkaException as err:
        raise fail(err.args[0]) from None
    finally:
        if own:
            consumer.close()


def offsets_consumer(config: dict[str, Any]) -> Any:
    """A client for offset queries: read_uncommitted, so that they answer the high watermark."""
    return _consumer(config, committed=False)


def _watermarks(consumer: Any, kafka: Any, topic: str, partition: int, fail: Fail, wait: float) -> tuple[int, int]:
    found = consumer.get_watermark_offsets(kafka.TopicPartition(topic, partition), timeout=wait)
    if found is None:
        raise fail(f"no answer about topic '{topic}' partition {partition} in {wait:g} s")
    return int(found[0]), int(found[1])


def scan(
    config: dict[str, Any],
    topic: str,
    start: dict[int, int] | None,
    end: dict[int, int] | None,
    fail: Fail,
    committed: bool = True,
) -> Iterator[Any]:
    """The committed messages of `topic` from `start` (per partition; the beginning where absent) up to `end`
    (per partition, exclusive; None: the current end of every partition; a partition it leaves out is not
    read), in offset order within each partition. `committed=False` reads aborted and open transactions too."""
    kafka = client_module()
    wait = wait_s(config)
    consumer = _consumer(config, committed)
    offsets = _consumer(config, committed=False)
    try:
        partitions = _partitions(consumer, topic, fail, wait)
        bounds: dict[int, tuple[int, int]] = {}
        for p in partitions:
            low, high = _watermarks(offsets, kafka, topic, p, fail, wait)
            first = max(low, (start or {}).get(p, low))
            last = high if end is None else min(high, end.get(p, 0))
            if first < last:
                bounds[p] = (first, last)
        if not bounds:
            return
        consumer.assign([kafka.TopicPartition(topic, p, first) for p, (first, _) in bounds.items()])
        pending = set(bounds)
        # At the end of what read_committed may read (the last stable offset) the client reports EOF; a
        # transaction whose commit markers are still being written (its writer was killed right after the
        # commit) holds it below the end a moment longer: a partition is done at its end offset, not at EOF.
        at_eof: set[int] = set()
        deadline = time.monotonic() + wait
        while pending:
            if time.monotonic() > deadline:
                raise fail(
                    f"reading topic '{topic}' made no progress in {wait:g} s (partitions {sorted(pending)}: "
                    "a transaction of another writer open there?)"
                )
            for message in consumer.consume(1000, 0.2):
                error = message.error()
                partition = message.partition()
                if error is not None:
                    if error.code() == kafka.KafkaError._PARTITION_EOF:
                        at_eof.add(partition)
                        continue
                    raise fail(error)
                if partition not in pending:
                    continue
                deadline = time.monotonic() + wait
                if message.offset() >= bounds[partition][1]:
                    pending.discard(partition)
                    continue
                yield message
                if message.offset() >= bounds[partition][1] - 1:
                    pending.discard(partition)
            if waiting := sorted(at_eof & pending):
                for place in consumer.position([kafka.TopicPartition(topic, p) for p in waiting]):
                    if place.offset >= bounds[place.partition][1]:
                        pending.discard(place.partition)
    except kafka.KafkaException as err:
        raise fail(err.args[0]) from None
    finally:
        consumer.close()
        offsets.close()


def headers(message: Any) -> dict[str, bytes]:
    return dict(message.headers() or [])


def held_epoch(config: dict[str, Any], topic: str, pipeline: str, start: dict[int, int], fail: Fail) -> int:
    """The highest epoch `pipeline` committed to `topic` at or after `start` (0 if none)."""
    owner = pipeline.encode()

    def highest(messages: Iterator[Any]) -> int:
        held = 0
        for message in messages:
            found = headers(message)
            if found.get(PIPELINE_HEADER) == owner and EPOCH_HEADER in found:
                held = max(held, int(found[EPOCH_HEADER]))
        return held

    # Usually every epoch written since the checkpoint is committed: what read_uncommitted finds is the answer
    # once read_committed finds the same. Otherwise (a run killed inside a transaction) read_committed decides,
    # from the start of the topic: a consumer that starts after an aborted transaction of the same producer may
    # be told about that transaction again and then hide the producer's later, committed messages (seen with a
    # test broker, noida-db 0.2.3), while one reading from the start sees every abort marker.
    written = highest(scan(config, topic, start or None, None, fail, committed=False))
    if not written:
        return 0
    committed = highest(scan(config, topic, start or None, None, fail))
    if committed == written:
        return committed
    return highest(
        message
        for message in scan(config, topic, None, None, fail)
        if not start or message.offset() >= start.get(message.partition(), 0)
    )


def compensate(
    name: str, target: dict[str, Any] | None, current: dict[str, Any], to_epoch: int, fail: Fail
) -> dict[str, Any]:
    """Take every key the pipeline wrote to an upsert-kafka topic after the checkpoint `target` (its sink
    position there; None if the sink did not exist yet) back to its value at that checkpoint, in one
    transaction. Writing the same compensation twice (a rollback finished after a crash) changes nothing."""
    kafka = client_module()
    config = {**current["properties"], "logger": LOG}
    topic, pipeline = current["topic"], current["pipeline"]
    owner = pipeline.encode()
    since = {int(p): int(o) for p, o in (target or {}).get("offsets", {}).items()} if target else None
    # Fence a writer left running and abort what a killed run left open: the reads below then see the end.
    producer = kafka.Producer({**config, "transactional.id": current["transactional_id"]})
    wait = wait_s(config)
    try:
        producer.init_transactions(wait)
        written: dict[tuple[int, bytes], None] = {}
        first_ours: dict[int, int] = {}
        # read_uncommitted: a key whose only change since was aborted gets its value again, which is harmless
        for message in scan(config, topic, since, None, fail, committed=False):
            if headers(message).get(PIPELINE_HEADER) == owner and message.key() is not None:
                written.setdefault((message.partition(), message.key()), None)
                first_ours.setdefault(message.partition(), message.offset())
        # The value each key had at the checkpoint: its last message before the position recorded there (before
        # the pipeline's first message, if the sink came later); none there, or a tombstone: a tombstone.
        until = since if since is not None else first_ours
        values: dict[tuple[int, bytes], bytes | None] = dict.fromkeys(written)
        touched = {p for p, _ in written}
        for message in scan(config, topic, None, {p: o for p, o in until.items() if p in touched}, fail):
            key = (message.partition(), message.key())
            if key in values:
                values[key] = message.value()
        marker = [(PIPELINE_HEADER, owner), (ROLLBACK_HEADER, str(to_epoch).encode())]
        failures: list[str] = []

        def delivered(err: Any, _message: Any) -> None:
            if err is not None:
                failures.append(err.str())

        producer.begin_transaction()
        for (partition, key), value in values.items():
            while True:
                try:
                    producer.produce(
                        topic, key=key, value=value, partition=partition, headers=marker, on_delivery=delivered
                    )
                    break
                except BufferError:
                    producer.poll(0.1)
        if producer.flush(wait) or failures:
            producer.abort_transaction(wait)
            raise fail(f"writing the compensation of '{name}' failed: {failures[0] if failures else 'timed out'}")
        producer.commit_transaction(wait)
        faults.point("kafka.rollback.compensated")
    except kafka.KafkaException as err:
        raise fail(err.args[0]) from None
    ends = end_offsets(config, topic, fail)
    return {
        "keys": len(values),
        "messages": len(values),
        "position": {**current, "offsets": {str(p): o for p, o in sorted(ends.items())}},
    }
