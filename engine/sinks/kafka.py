"""`'connector' = 'kafka'` and `'upsert-kafka'` as sinks: each epoch's rows as Kafka messages.

Flink's options: 'topic', 'properties.*' (to librdkafka), 'format' / 'value.format', 'key.format' with
'key.fields' (and 'key.fields-prefix'), 'value.fields-include', 'sink.partitioner', 'sink.delivery-guarantee'
(Flink's default, 'at-least-once'; 'sink.semantic' is its older name) and 'sink.transactional-id-prefix'.

'exactly-once' writes each epoch in one Kafka transaction. Every message carries the headers
`timelapse.pipeline` (the pipeline and table, as the Delta marker's app id) and `timelapse.epoch` (N): the
Delta marker's counterpart. `position()` at a checkpoint is the topic's end offsets; a restarted run reads
(read_committed) from there to the end and skips the epochs the topic already holds, so a replayed epoch is
never written twice. The transactional id is stable (prefix + pipeline + table): `init_transactions` of a new
run fences a zombie writer and aborts what a killed run left open.

'at-least-once' uses the idempotent producer and waits at the end of every epoch until the broker acknowledged
it; a crash repeats the epochs since the last checkpoint. 'none' waits only at checkpoints and at the end.

'upsert-kafka': the message key is the PRIMARY KEY; +I and +U write the row, -D a tombstone (NULL value),
-U nothing (the +U that follows replaces it).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import polars as pl

from engine import faults
from engine.formats import FormatError, make_format
from engine.kafka_config import client_config, client_module, describe
from engine.sinks.base import SinkConnector
from engine.sources.base import ConnectorError
from sql.catalog import TableDef
from sql.kafka_options import WRITABLE_METADATA
from sql.plan import DELETE, OP_COLUMN, UPDATE_BEFORE

PIPELINE_HEADER = "timelapse.pipeline"
EPOCH_HEADER = "timelapse.epoch"
ROLLBACK_HEADER = "timelapse.rollback-to"
#: librdkafka's defaults wait 5 minutes for a message; a pipeline reports a dead broker sooner
DEFAULTS = {"message.timeout.ms": 30000, "socket.timeout.ms": 10000}
#: client properties never copied into the manifest (the position record that rollback reads)
SECRET_WORDS = ("password", "secret", "jaas", "token", "key.pem", "certificate.pem", "credential")


def wait_s(config: Mapping[str, Any]) -> float:
    """The bound of every wait on the broker: three socket timeouts (librdkafka's socket.timeout.ms, 10 s unless
    the table sets it), so a broker that is down ends the run with one line in about 30 s instead of hanging."""
    return 3 * float(config.get("socket.timeout.ms", DEFAULTS["socket.timeout.ms"])) / 1000


def guarantee(table: TableDef) -> str:
    options = table.options
    value = options.get("sink.delivery-guarantee") or options.get("sink.semantic") or "at-least-once"
    return value.strip().lower().replace("_", "-")


def transactional_id(table: TableDef, app_id: str) -> str:
    """Stable across runs of this pipeline (so a restart fences the previous writer), distinct per table."""
    prefix = table.options.get("sink.transactional-id-prefix", "").strip()
    return f"{prefix}-{app_id}" if prefix else f"timelapse-{app_id}"


def _secret(name: str) -> bool:
    return any(word in name.lower() for word in SECRET_WORDS)


def stored_properties(table: TableDef) -> dict[str, str]:
    """The client properties a rollback needs to reach the topic, without credentials."""
    config = client_config(table)
    config.pop("logger", None)
    return {k: str(v) for k, v in config.items() if not _secret(k)}


class KafkaSink(SinkConnector):
    upsert = False

    def __init__(self, table: TableDef, base_dir: Path, app_id: str) -> None:
        super().__init__(table, base_dir, app_id)
        options = table.options
        if "topic" not in options:
            raise ValueError(f"table '{table.name}'{table.where()}: a Kafka sink writes one 'topic'")
        self.topic = options["topic"].strip()
        self.guarantee = guarantee(table)
        self.exactly_once = self.guarantee == "exactly-once"
        self.transactional_id = transactional_id(table, app_id)
        self._offsets_client: Any = None  # asked for the topic's end offsets at every checkpoint
        self.partitioner = options.get("sink.partitioner", "default").strip().lower()
        self._metadata = {c.metadata: c.name for c in table.columns if c.metadata and not c.virtual}
        for key in self._metadata:
            if key not in WRITABLE_METADATA:
                raise ValueError(
                    f"table '{table.name}'{table.where()}: metadata '{key}' is read-only; a Kafka sink writes "
                    f"{' and '.join(WRITABLE_METADATA)} (declare the column VIRTUAL)"
                )
        physical = [
            c for c in table.columns if c.computed is None and not c.virtual and c.name not in self._metadata.values()
        ]
        if self.upsert:
            keys = list(table.primary_key)
        else:
            keys = [k.strip() for k in options.get("key.fields", "").split(";") if k.strip()]
        self.key_columns = [next(c.name for c in physical if c.name.lower() == k.lower()) for k in keys]
        include = options.get("value.fields-include", "all").strip().lower()
        self.value_columns = [c.name for c in physical if include == "all" or c.name not in self.key_columns]
        dtypes = {c.name: c.dtype for c in physical}
        prefix = options.get("key.fields-prefix", "")
        try:
            value_name = options.get("value.format") or options.get("format", "json")
            value_options = {k.removeprefix("value."): v for k, v in options.items()}
            self.value_format = make_format(value_name, {c: dtypes[c] for c in self.value_columns}, value_options)
            self.key_format = None
            if self.key_columns:
                key_options = {k.removeprefix("key."): v for k, v in options.items() if k.startswith("key.")}
                key_columns = {c.removeprefix(prefix) if prefix else c: dtypes[c] for c in self.key_columns}
                self.key_format = make_format(options["key.format"], key_columns, key_options)
        except FormatError as err:
            raise ValueError(f"table '{table.name}'{table.where('format')}: {err}") from None
        self._key_prefix = prefix
        self._producer: Any = None
        self._partitions = 0
        self._held = 0  # the highest epoch of this pipeline the topic holds (exactly-once)
        self._round_robin = 0
        self._failures: list[str] = []
        self._open_transaction = False
        self._wait = wait_s(client_config(table))

    # -- clients -----------------------------------------------------------------------------------------------
    def _config(self, **overrides: Any) -> dict[str, Any]:
        config = client_config(self.table, **overrides)
        for key, value in DEFAULTS.items():
            config.setdefault(key, value)
        return config

    def _fail(self, err: Any) -> ConnectorError:
        return ConnectorError(describe(self.table, err))

    def open(self) -> None:
        kafka = client_module()
        extra: dict[str, Any] = {"enable.idempotence": self.guarantee != "none"}
        if self.exactly_once:
            extra["transactional.id"] = self.transactional_id
        if self.partitioner == "default" and "properties.partitioner" not in self.table.options:
            extra["partitioner"] = "murmur2_random"  # the Java client's: keys land where Flink's writers put them
        try:
            self._producer = kafka.Producer(self._config(**extra))
            self._partitions = self._partition_count()
        except kafka.KafkaException as err:
            raise self._fail(err.args[0] if err.args else err) from None

    def _partition_count(self) -> int:
        metadata = self._producer.list_topics(timeout=self._wait)
        found = metadata.topics.get(self.topic)
        if found is None or found.error is not None or not found.partitions:
            raise ConnectorError(
                f"table '{self.table.name}'{self.table.where('topic')}: Kafka topic '{self.topic}' does not exist at "
                f"{self.table.options.get('properties.bootstrap.servers', '?')}; create it first"
            )
        return len(found.partitions)

    def restore(self, position: Any, replaying: bool = True) -> None:
        """Fence the previous writer, then find the epochs the topic holds past the last checkpoint (none if no
        epoch was started after it: then a first run does not read a topic that others filled)."""
        if not self.exactly_once:
            return
        kafka = client_module()
        try:
            # Aborts what a killed run left open, so read_committed readers (and the scan below) move on.
            self._producer.init_transactions(self._wait)
        except kafka.KafkaException as err:
            raise self._fail(err.args[0]) from None
        if not replaying:
            return
        from engine.sinks.kafka_topic import held_epoch

        offsets = position.get("offsets") if isinstance(position, dict) else None
        start = {int(p): int(o) for p, o in (offsets or {}).items()}
        self._held = held_epoch(client_config(self.table), self.topic, self.app_id, start, self._fail)

    # -- writing -----------------------------------------------------------------------------------------------
    def write(self, epoch: int, rows: pl.DataFrame) -> None:
        if not rows.height or (self.exactly_once and epoch <= self._held):
            return
        keys, values, partitions, timestamps, headers = self._encode(rows)
        if not values:
            return
        kafka = client_module()
        marker = [(PIPELINE_HEADER, self.app_id.encode()), (EPOCH_HEADER, str(epoch).encode())]
        try:
            if self.exactly_once:
                self._producer.begin_transaction()
                self._open_transaction = True
            self._produce(keys, values, partitions, timestamps, headers, marker)
            if self.guarantee != "none" or self.exactly_once:
                self._flush()
            if self.exactly_once:
                faults.point("kafka.sink.produced")
                self._producer.commit_transaction(self._wait)
                self._open_transaction = False
                self._held = epoch
                faults.point("kafka.sink.committed")
        except kafka.KafkaException as err:
            raise self._fail(self._reason(err.args[0])) from None

    def _reason(self, error: Any) -> str:
        if (hasattr(error, "fatal") and error.fatal()) or "fenced" in str(error).lower():
            return (
                f"another writer took over transactional id '{self.transactional_id}' (this run was fenced): "
                f"{error.str() if hasattr(error, 'str') else error}"
            )
        return error.str() if hasattr(error, "str") else str(error)

    def _encode(
        self, rows: pl.DataFrame
    ) -> tuple[list[Any] | None, list[Any], list[int] | None, list[int] | None, list[Any] | None]:
        """Per message: key, value (None: a tombstone), partition, timestamp (ms), the row's own headers."""
        if self.upsert and OP_COLUMN in rows.columns:
            rows = rows.filter(pl.col(OP_COLUMN) != UPDATE_BEFORE)  # the +U that follows replaces the key's value
        if not rows.height:
            return None, [], None, None, None
        if self.upsert or OP_COLUMN not in rows.columns or not self.value_format.changelog:
            value_rows = rows.drop(OP_COLUMN, strict=False)
        else:
            value_rows = rows
        values = self.value_format.encode(value_rows.select(self._value_selection(value_rows)))
        if self.upsert and OP_COLUMN in rows.columns:
            values = pl.select(
                pl.when(rows.get_column(OP_COLUMN) == DELETE).then(None).otherwise(values).alias("value")
            ).to_series()
        keys = None
        if self.key_format is not None:
            renamed = rows.select(
                pl.col(c).alias(c.removeprefix(self._key_prefix) if self._key_prefix else c) for c in self.key_columns
            )
            keys = self.key_format.encode(renamed).to_list()
        partitions = None
        if self.partitioner == "fixed":
            partitions = [0] * rows.height
        elif self.partitioner == "round-robin":
            start = self._round_robin
            self._round_robin = (start + rows.height) % self._partitions
            partitions = [(start + i) % self._partitions for i in range(rows.height)]
        timestamps = None
        if (column := self._metadata.get("timestamp")) is not None:
            timestamps = rows.get_column(column).dt.epoch("ms").fill_null(0).to_list()
        headers = None
        if (column := self._metadata.get("headers")) is not None:
            headers = [_header_pairs(entry) for entry in rows.get_column(column).to_list()]
        return keys, values.to_list(), partitions, timestamps, headers

    def _value_selection(self, rows: pl.DataFrame) -> list[str]:
        return [c for c in self.value_columns if c in rows.columns] + ([OP_COLUMN] if OP_COLUMN in rows.columns else [])

    def _delivered(self, err: Any, _message: Any) -> None:
        if err is not None:
            self._failures.append(err.str() if hasattr(err, "str") else str(err))

    def _produce(
        self,
        keys: list[Any] | None,
        values: list[Any],
        partitions: list[int] | None,
        timestamps: list[int] | None,
        headers: list[Any] | None,
        marker: list[tuple[str, bytes]],
    ) -> None:
        # One call per message is the client's interface; everything else was vectorised into the lists above.
        produce, poll = self._producer.produce, self._producer.poll
        for i, value in enumerate(values):
            while True:
                try:
                    produce(
                        self.topic,
                        value=value,
                        key=keys[i] if keys is not None else None,
                        partition=partitions[i] if partitions is not None else -1,
                        timestamp=timestamps[i] if timestamps is not None else 0,
                        headers=marker + headers[i] if headers is not None else marker,
                        on_delivery=self._delivered,
                    )
                    break
                except BufferError:  # the client's queue is full: let it send, then go on
                    poll(0.1)

    def _flush(self) -> None:
        left = self._producer.flush(self._wait)
        if self._failures or left:
            reason = self._failures[0] if self._failures else f"{left} messages not acknowledged in {self._wait:g} s"
            self._failures = []
            raise ConnectorError(describe(self.table, f"writing to topic '{self.topic}' failed: {reason}"))

    def position(self) -> dict[str, Any]:
        """At a checkpoint: everything is acknowledged, and the topic's end offsets are where a restart looks
        for epochs written after it; also what a rollback needs to reach the topic (no credentials)."""
        self._flush()
        from engine.sinks.kafka_topic import end_offsets, offsets_consumer

        config = client_config(self.table)
        if self._offsets_client is None:  # kept for the run: a client per checkpoint costs its set-up each time
            self._offsets_client = offsets_consumer(config)
        offsets = end_offsets(config, self.topic, self._fail, self._offsets_client)
        self._partitions = max(self._partitions, len(offsets))
        return {
            "connector": "upsert-kafka" if self.upsert else "kafka",
            "topic": self.topic,
            "offsets": {str(p): o for p, o in sorted(offsets.items())},
            "pipeline": self.app_id,
            "guarantee": self.guarantee,
            "transactional_id": self.transactional_id,
            "properties": stored_properties(self.table),
            **({"credentials_omitted": omitted} if (omitted := self._omitted()) else {}),
        }

    def _omitted(self) -> list[str]:
        return sorted(k for k in self.table.options if k.startswith("properties.") and _secret(k))

    def close(self) -> None:
        if self._offsets_client is not None:
            client, self._offsets_client = self._offsets_client, None
            with contextlib.suppress(Exception):
                client.close()
        if self._producer is None:
            return
        with contextlib.suppress(Exception):
            if self._open_transaction:
                self._producer.abort_transaction(self._wait)
            else:
                self._producer.flush(self._wait)
        self._producer = None


class UpsertKafkaSink(KafkaSink):
    upsert = True


def _header_pairs(entry: Any) -> list[tuple[str, bytes | None]]:
    """A row's 'headers' value (MAP<STRING, BYTES>: a list of key/value structs, or a struct) as Kafka headers."""
    if not entry:
        return []
    pairs = entry.items() if isinstance(entry, dict) else ((h["key"], h["value"]) for h in entry)
    return [(str(k), v.encode() if isinstance(v, str) else v) for k, v in pairs if k is not None]


def refuse_parent_topics(sinks: Mapping[str, SinkConnector], parent: Path) -> None:
    """A branch copies its parent's Delta sinks, but a Kafka topic cannot be copied: a branch writing into a
    topic its parent writes would mix its results into the parent's, so it must name a topic of its own."""
    from engine.checkpoints import SINK_POSITIONS
    from engine.manifest import read_checkpoints
    from engine.state_dir import StateDir

    kafka = {name: sink for name, sink in sinks.items() if isinstance(sink, KafkaSink)}
    manifest = StateDir(parent).manifest
    if not kafka or not manifest.exists():
        return
    written: dict[str, tuple[str, set[str]]] = {}
    for metrics in read_checkpoints(manifest).get_column("metrics").to_list():
        for name, position in json.loads(metrics or "{}").get(SINK_POSITIONS, {}).items():
            if isinstance(position, dict) and "topic" in position:
                servers = position.get("properties", {}).get("bootstrap.servers", "")
                written[position["topic"]] = (name, _servers(servers))
    for name, sink in kafka.items():
        found = written.get(sink.topic)
        if found is None:
            continue
        theirs, servers = found
        ours = _servers(sink.table.options.get("properties.bootstrap.servers", ""))
        if servers and ours and not servers & ours:
            continue  # the same name on another cluster
        raise ConnectorError(
            f"table '{name}'{sink.table.where('topic')}: this state directory is a branch of {parent}, whose sink "
            f"'{theirs}' writes Kafka topic '{sink.topic}'; a branch does not write into its parent's topics: "
            "name another topic in the branch's SQL ('topic' = '...')"
        )


def _servers(text: str) -> set[str]:
    return {s.strip().lower() for s in text.split(",") if s.strip()}
