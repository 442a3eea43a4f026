"""A real Kafka-protocol broker for the tests, started and stopped here, and the few client calls tests need.

The broker is noida-db (a test dependency, `pip install -e '.[test]'`): no JVM, data on disk, and the parts of
the protocol these tests rely on behave as Kafka's do (high watermarks, `offsets_for_times`, transactions with
a last stable offset and fenced zombies), with one known exception: a `read_committed` consumer that starts
reading after an aborted transaction of a producer is not shown that producer's later committed messages (it
keeps the abort in force). Kafka itself only reports aborted transactions overlapping the fetched range. A test
that meets it is marked xfail when it runs against this broker (tests/test_kafka_end_to_end.py).

Set TIMELAPSE_TEST_KAFKA=host:port to run the same tests against another broker (an Apache Kafka, say)
instead; topics are then created with unique names and left behind.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewPartitions, NewTopic

QUIET = logging.getLogger("tests.kafka")  # librdkafka's own log lines go here, not to the test's stderr
QUIET.addHandler(logging.NullHandler())
QUIET.propagate = False


@dataclass
class Message:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: int
    headers: dict[str, bytes] = field(default_factory=dict)


class Broker:
    def __init__(self, bootstrap: str, process: subprocess.Popen[bytes] | None = None) -> None:
        self.bootstrap = bootstrap
        self.process = process
        self.admin = AdminClient(self.config())

    def config(self, **extra: Any) -> dict[str, Any]:
        return {"bootstrap.servers": self.bootstrap, "logger": QUIET, **extra}

    # -- topics -----------------------------------------------------------------------------------------------
    def create_topic(self, partitions: int = 1, name: str | None = None) -> str:
        name = name or f"t-{uuid.uuid4().hex[:12]}"
        futures = self.admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)])
        for future in futures.values():
            future.result(timeout=30)
        self._wait_for(name, partitions)
        return name

    def add_partitions(self, topic: str, total: int) -> None:
        for future in self.admin.create_partitions([NewPartitions(topic, total)]).values():
            future.result(timeout=30)
        self._wait_for(topic, total)

    def partitions(self, topic: str) -> int:
        metadata = self.admin.list_topics(topic, timeout=10)
        return len(metadata.topics[topic].partitions)

    def _wait_for(self, topic: str, partitions: int) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with contextlib.suppress(Exception):
                if self.partitions(topic) >= partitions:
                    return
            time.sleep(0.05)
        raise TimeoutError(f"topic {topic} did not get {partitions} partitions")

    # -- messages ---------------------------------------------------------------------------------------------
    def produce(
        self,
        topic: str,
        messages: Iterable[dict[str, Any] | bytes | str],
        transactional_id: str | None = None,
    ) -> None:
        """Produce `messages` (a value, or a dict of value/key/partition/timestamp/headers), in one transaction
        when `transactional_id` is given, and wait until all are acknowledged."""
        extra = {"transactional.id": transactional_id} if transactional_id else {"enable.idempotence": True}
        producer = Producer(self.config(**extra, **{"linger.ms": 5}))
        if transactional_id:
            producer.init_transactions(30)
            producer.begin_transaction()
        failures: list[str] = []

        def delivered(err: KafkaError | None, _msg: Any) -> None:
            if err is not None:
                failures.append(str(err))

        for message in messages:
            spec = message if isinstance(message, dict) else {"value": message}
            kwargs: dict[str, Any] = {"value": _bytes(spec.get("value")), "on_delivery": delivered}
            if spec.get("key") is not None:
                kwargs["key"] = _bytes(spec["key"])
            for name in ("partition", "timestamp"):
                if spec.get(name) is not None:
                    kwargs[name] = spec[name]
            if spec.get("headers"):
                kwargs["headers"] = [(k, _bytes(v)) for k, v in spec["headers"].items()]
            while True:
                try:
                    producer.produce(topic, **kwargs)
                    break
                except BufferError:
                    producer.poll(0.1)
        if transactional_id:
            producer.commit_transaction(30)
        else:
            producer.flush(30)
        if failures:
            raise RuntimeError(f"produce failed: {failures[:3]}")

    def end_offsets(self, topic: str) -> dict[int, int]:
        consumer = Consumer(self.config(**{"group.id": "tests-offsets"}))
        try:
            count = self.partitions(topic)
            return {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in range(count)}
        finally:
            consumer.close()

    def read(self, topic: str, committed: bool = True, timeout: float = 30) -> list[Message]:
        """Every message of `topic` a `read_committed` (or `read_uncommitted`) consumer sees, in partition and
        offset order."""
        ends = self.end_offsets(topic)
        consumer = Consumer(
            self.config(
                **{
                    "group.id": f"tests-{uuid.uuid4().hex[:8]}",
                    "enable.auto.commit": False,
                    "enable.partition.eof": True,
                    "isolation.level": "read_committed" if committed else "read_uncommitted",
                }
            )
        )
        pending = {p for p, end in ends.items() if end > 0}
        consumer.assign([TopicPartition(topic, p, 0) for p in pending])
        found: list[Message] = []
        deadline = time.monotonic() + timeout
        try:
            while pending and time.monotonic() < deadline:
                for msg in consumer.consume(1000, 0.5):
                    if msg.error() is not None:
                        if msg.error().code() == KafkaError._PARTITION_EOF:
                            pending.discard(msg.partition())
                            continue
                        raise RuntimeError(str(msg.error()))
                    found.append(
                        Message(
                            msg.topic(),
                            msg.partition(),
                            msg.offset(),
                            msg.key(),
                            msg.value(),
                            msg.timestamp()[1],
                            dict(msg.headers() or []),
                        )
                    )
        finally:
            consumer.close()
        if pending:
            raise TimeoutError(f"partitions {sorted(pending)} of {topic} were not read to their end")
        return sorted(found, key=lambda m: (m.partition, m.offset))

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)


def _bytes(value: Any) -> bytes | None:
    if value is None or isinstance(value, bytes):
        return value
    return str(value).encode()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def running_broker(data_dir: Path) -> Iterator[Broker]:
    """A broker for the duration of the block: TIMELAPSE_TEST_KAFKA's, or a noida-db started here."""
    if external := os.environ.get("TIMELAPSE_TEST_KAFKA"):
        broker = Broker(external)
        yield broker
        return
    binary = shutil.which("noida-db")
    if binary is None:
        raise RuntimeError("noida-db is not installed: pip install -c constraints.txt -e '.[test]'")
    port = free_port()
    log = open(data_dir / "broker.log", "wb")  # noqa: SIM115 - closed below, after the process ends
    command = [binary, "start", "--data-dir", str(data_dir / "data"), "--host", "127.0.0.1", "--only", "kafka"]
    process = subprocess.Popen(
        [*command, "--kafka-port", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group, ended as one
    )
    broker = Broker(f"127.0.0.1:{port}", process)
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"noida-db exited: {(data_dir / 'broker.log').read_text()[-2000:]}")
            try:
                broker.admin.list_topics(timeout=1)
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        yield broker
    finally:
        broker.stop()
        log.close()
