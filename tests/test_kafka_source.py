"""The Kafka source against a real broker (tests/kafka_broker.py), through the Python API and the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.helpers import examples, read_sink, run, sort_all

#: message timestamps: an hour ago, on a whole minute (older ones would fall to the broker's 7-day retention)
BASE_MS = (int(time.time()) // 60 * 60 - 3600) * 1000


def source_sql(kafka: Any, topic: str, columns: str, extra: str = "", connector: str = "kafka") -> str:
    return (
        f"CREATE TABLE src ({columns}) WITH ('connector' = '{connector}', 'topic' = '{topic}', "
        f"'properties.bootstrap.servers' = '{kafka.bootstrap}'{extra});\n"
    )


def events(ids: range | list[int], partitions: int = 1) -> list[dict[str, Any]]:
    return [
        {
            "value": json.dumps({"id": i, "v": i * 10}),
            "key": str(i),
            "partition": i % partitions,
            "timestamp": BASE_MS + i * 1000,
        }
        for i in ids
    ]


def ids_sql(kafka: Any, topic: str, extra: str = "") -> str:
    return (
        source_sql(kafka, topic, "id BIGINT, v INT", ", 'format' = 'json'" + extra)
        + "CREATE TABLE out (id BIGINT) WITH ('connector' = 'delta', 'path' = 'out');\n"
        + "INSERT INTO out SELECT id FROM src;"
    )


def out_ids(tmp_path: Path) -> list[int]:
    path = tmp_path / "out"
    if not (path / "_delta_log").exists():
        return []
    return sorted(read_sink(path).get_column("id").to_list())


def open_source(ddl: str, base: Path) -> Any:
    """A KafkaSource on a fresh start, for tests that look at its pieces and rows directly."""
    import sqlglot

    from engine.sources.kafka import KafkaSource
    from sql.dialect import Flink
    from sql.planner.tables import table_def

    source = KafkaSource(table_def(sqlglot.parse_one(ddl, dialect=Flink), {}), base)
    source.restore(None, [])
    return source


def timelapse(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "engine.cli", *args], cwd=cwd, capture_output=True, text=True, timeout=120
    )


def test_metadata_columns_and_every_message_once(kafka: Any, tmp_path: Path) -> None:
    topic = kafka.create_topic(2)
    kafka.produce(topic, [{**e, "headers": {"h": f"x{i}"}} for i, e in enumerate(events(range(6), partitions=2))])
    sql = (
        source_sql(
            kafka,
            topic,
            "id BIGINT, v INT, part INT METADATA FROM 'partition' VIRTUAL, off BIGINT METADATA FROM 'offset', "
            "ts TIMESTAMP_LTZ(3) METADATA FROM 'timestamp', k BYTES METADATA FROM 'key', "
            "headers MAP<STRING, BYTES> METADATA, `topic` STRING METADATA",
            ", 'format' = 'json', 'scan.startup.mode' = 'earliest-offset'",
        )
        + "CREATE TABLE out (id BIGINT, v INT, part INT, off BIGINT, ts TIMESTAMP_LTZ(3), k BYTES, t STRING) "
        "WITH ('connector' = 'delta', 'path' = 'out');\n"
        "INSERT INTO out SELECT id, v, part, off, ts, k, `topic` FROM src;"
    )
    run(tmp_path, sql, max_epoch_rows=4)
    out = read_sink(tmp_path / "out").sort("id")
    assert out.get_column("id").to_list() == list(range(6))
    assert out.get_column("v").to_list() == [i * 10 for i in range(6)]
    assert out.get_column("part").to_list() == [i % 2 for i in range(6)]
    assert out.get_column("off").to_list() == [i // 2 for i in range(6)]
    assert [t.timestamp() * 1000 for t in out.get_column("ts")] == [BASE_MS + i * 1000 for i in range(6)]
    assert out.get_column("k").to_list() == [str(i).encode() for i in range(6)]
    assert set(out.get_column("t")) == {topic}
    # a second run reads nothing again
    run(tmp_path, sql)
    assert read_sink(tmp_path / "out").height == 6


def test_headers_metadata_column(kafka: Any, tmp_path: Path) -> None:
    topic = kafka.create_topic(1)
    kafka.produce(topic, [{"value": '{"id": 1}', "headers": {"trace": "abc", "n": "1"}}, {"value": '{"id": 2}'}])
    source = open_source(
        source_sql(kafka, topic, "id BIGINT, headers MAP<STRING, BYTES> METADATA", ", 'format' = 'json'"), tmp_path
    )
    piece = source.plan(None)
    assert piece is not None and piece["ranges"] == [[topic, 0, 0, 2]] and piece["added"] == [[topic, 0, 0]]
    rows = source.read(piece).rows
    assert rows.get_column("headers").to_list() == [
        [{"key": "trace", "value": b"abc"}, {"key": "n", "value": b"1"}],
        [],
    ]
    assert source.read(piece).rows.equals(rows)  # the same slice, the same rows
    source.close()


@pytest.mark.parametrize(
    ("mode", "extra", "expected"),
    [
        ("earliest-offset", "", list(range(10))),
        ("latest-offset", "", []),
        ("timestamp", f", 'scan.startup.timestamp-millis' = '{BASE_MS + 4500}'", [5, 6, 7, 8, 9]),
        (
            "specific-offsets",
            ", 'scan.startup.specific-offsets' = 'partition:0,offset:3;partition:1,offset:4'",
            [6, 8, 9],
        ),
        ("group-offsets", ", 'properties.group.id' = 'g-empty'", list(range(10))),  # no commit: earliest
    ],
)
def test_startup_modes(kafka: Any, tmp_path: Path, mode: str, extra: str, expected: list[int]) -> None:
    topic = kafka.create_topic(2)
    kafka.produce(topic, events(range(10), partitions=2))
    sql = ids_sql(kafka, topic, f", 'scan.startup.mode' = '{mode}'{extra}")
    run(tmp_path, sql)
    assert out_ids(tmp_path) == expected
    # startup applies to a fresh start only: a restart resumes where the first run stopped
    kafka.produce(topic, events(range(10, 14), partitions=2))
    run(tmp_path, sql)
    assert out_ids(tmp_path) == [*expected, 10, 11, 12, 13]


def test_group_offsets_resume_where_the_group_committed(kafka: Any, tmp_path: Path) -> None:
    topic = kafka.create_topic(1)
    kafka.produce(topic, events(range(5)))
    group = ", 'properties.group.id' = 'g-commit'"
    run(tmp_path, ids_sql(kafka, topic, group), state="first")
    assert out_ids(tmp_path) == list(range(5))
    kafka.produce(topic, events(range(5, 8)))
    (tmp_path / "first_out").mkdir()
    # a new pipeline (fresh state) in the same group starts at the group's committed offsets
    other = tmp_path / "other"
    other.mkdir()
    run(other, ids_sql(kafka, topic, group + ", 'scan.startup.mode' = 'group-offsets'"))
    assert out_ids(other) == [5, 6, 7]


def test_once_reads_up_to_the_end_offsets_seen_at_start(kafka: Any, tmp_path: Path) -> None:
    from engine import Pipeline

    topic = kafka.create_topic(2)
    kafka.produce(topic, events(range(6), partitions=2))
    script = tmp_path / "p.sql"
    script.write_text(ids_sql(kafka, topic, ", 'scan.startup.mode' = 'earliest-offset'"))
    produced = []

    def more(report: Any) -> None:  # messages arriving during the run are the next run's
        if not produced:
            kafka.produce(topic, events(range(100, 104), partitions=2))
            produced.append(True)

    Pipeline.from_sql(script, state=tmp_path / "state").run(once=True, max_epoch_rows=2, on_epoch=more)
    assert out_ids(tmp_path) == list(range(6))
    Pipeline.from_sql(script, state=tmp_path / "state").run(once=True)
    assert out_ids(tmp_path) == [*range(6), 100, 101, 102, 103]


def test_key_fields_except_key_and_dead_letters(kafka: Any, tmp_path: Path) -> None:
    topic = kafka.create_topic(2)
    kafka.produce(
        topic,
        [
            {"key": '{"id": 1}', "value": '{"v": 10}', "partition": 0},
            {"key": '{"id": 2}', "value": "not json", "partition": 0},
            {"key": "broken", "value": '{"v": 30}', "partition": 1},
            {"key": '{"id": 4}', "value": b'\xff{"v": 1}', "partition": 1},
            {"key": '{"id": 5}', "value": '{"v": 50}', "partition": 1},
        ],
    )
    sql = (
        source_sql(
            kafka,
            topic,
            "k_id BIGINT, v INT",
            ", 'format' = 'json', 'key.format' = 'json', 'key.fields' = 'k_id', 'key.fields-prefix' = 'k_', "
            "'value.fields-include' = 'EXCEPT_KEY', 'scan.startup.mode' = 'earliest-offset'",
        )
        + "CREATE TABLE out (id BIGINT, v INT) WITH ('connector' = 'delta', 'path' = 'out');\n"
        + "INSERT INTO out SELECT k_id, v FROM src;"
    )
    summary = run(tmp_path, sql)
    assert read_sink(tmp_path / "out").sort("id").rows() == [(1, 10), (5, 50)]
    dead = pl.read_delta(str(tmp_path / "state" / "dead_letters" / "src")).sort("partition", "offset")
    assert dead.columns == ["epoch", "topic", "partition", "offset", "key", "timestamp", "raw", "raw_bytes", "reason"]
    assert dead.select("partition", "offset").rows() == [(0, 1), (1, 0), (1, 1)]
    assert dead.get_column("key").to_list() == [b'{"id": 2}', b"broken", b'{"id": 4}']
    assert dead.get_column("raw_bytes").to_list() == [b"not json", b'{"v": 30}', b'\xff{"v": 1}']
    assert dead.item(1, "reason").startswith("key: ")
    assert "UTF-8" in dead.item(2, "reason")
    assert summary["dead_letters"]["src"] == 3


def test_aborted_transactions_are_never_read(kafka: Any, tmp_path: Path) -> None:
    from confluent_kafka import Producer

    topic = kafka.create_topic(1)
    kafka.produce(topic, events(range(3)), transactional_id="tx-ok")
    producer = Producer(kafka.config(**{"transactional.id": "tx-abort"}))
    producer.init_transactions(30)
    producer.begin_transaction()
    for e in events(range(50, 53)):
        producer.produce(topic, value=e["value"])
    producer.flush(30)
    producer.abort_transaction(30)
    kafka.produce(topic, events(range(3, 5)), transactional_id="tx-ok")
    run(tmp_path, ids_sql(kafka, topic, ", 'scan.startup.mode' = 'earliest-offset'"), max_epoch_rows=2)
    assert out_ids(tmp_path) == list(range(5))


def test_an_open_transaction_is_read_once_committed(kafka: Any, tmp_path: Path) -> None:
    from confluent_kafka import Producer

    topic = kafka.create_topic(1)
    kafka.produce(topic, events(range(2)))
    producer = Producer(kafka.config(**{"transactional.id": "tx-open"}))
    producer.init_transactions(30)
    producer.begin_transaction()
    for e in events(range(10, 12)):
        producer.produce(topic, value=e["value"])
    producer.flush(30)
    sql = ids_sql(kafka, topic, ", 'scan.startup.mode' = 'earliest-offset'")
    run(tmp_path, sql)
    assert out_ids(tmp_path) == [0, 1]  # the last stable offset stops before the open transaction
    producer.commit_transaction(30)
    run(tmp_path, sql)
    assert out_ids(tmp_path) == [0, 1, 10, 11]


def test_upsert_kafka_reads_upserts_and_tombstones(kafka: Any, tmp_path: Path) -> None:

    topic = kafka.create_topic(1)
    kafka.produce(
        topic,
        [
            {"key": '{"id": 1}', "value": '{"id": 1, "name": "a"}'},
            {"key": '{"id": 2}', "value": '{"id": 2, "name": "b"}'},
            {"key": '{"id": 1}', "value": None},
            {"key": '{"id": 2}', "value": '{"id": 2, "name": "c"}'},
        ],
    )
    ddl = source_sql(
        kafka,
        topic,
        "id BIGINT, name STRING, PRIMARY KEY (id) NOT ENFORCED",
        ", 'key.format' = 'json', 'value.format' = 'json'",
        connector="upsert-kafka",
    )
    source = open_source(ddl, tmp_path)
    piece = source.plan(None)
    assert piece is not None
    rows = source.read(piece).rows
    source.close()
    assert rows.drop("__split").rows() == [(1, "a", "+U"), (2, "b", "+U"), (1, None, "-D"), (2, "c", "+U")]


def test_broker_unreachable_is_one_line_and_exit_2(tmp_path: Path) -> None:
    from tests.kafka_broker import free_port

    port = free_port()
    (tmp_path / "p.sql").write_text(
        "CREATE TABLE src (id BIGINT) WITH ('connector' = 'kafka', 'topic' = 't', "
        f"'properties.bootstrap.servers' = '127.0.0.1:{port}', 'format' = 'json');\n"
        "CREATE TABLE out (id BIGINT) WITH ('connector' = 'delta', 'path' = 'out');\n"
        "INSERT INTO out SELECT id FROM src;"
    )
    result = timelapse("run", "p.sql", "--state", "state", "--once", cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert f"cannot reach Kafka at 127.0.0.1:{port}" in lines[0] and "'src'" in lines[0]


def test_unknown_topic_is_one_line(kafka: Any, tmp_path: Path) -> None:
    (tmp_path / "p.sql").write_text(ids_sql(kafka, "no-such-topic"))
    result = timelapse("run", "p.sql", "--state", "state", "--once", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert "topic 'no-such-topic' does not exist" in result.stderr


def test_metadata_columns_in_ddl() -> None:
    import sqlglot

    from sql.dialect import Flink
    from sql.errors import SqlError
    from sql.planner.tables import HEADERS_TYPE, table_def

    def table(columns: str, connector: str = "kafka", extra: str = "") -> Any:
        ddl = (
            f"CREATE TABLE t ({columns}) WITH ('connector' = '{connector}', 'topic' = 'x', "
            f"'properties.bootstrap.servers' = 'h:1', 'format' = 'json'{extra})"
        )
        return table_def(sqlglot.parse_one(ddl, dialect=Flink), {})

    t = table(
        "id BIGINT, ts TIMESTAMP_LTZ(3) METADATA FROM 'timestamp', part INT METADATA FROM 'partition' VIRTUAL, "
        "`offset` BIGINT METADATA VIRTUAL, headers MAP<STRING, BYTES> METADATA, "
        "WATERMARK FOR ts AS ts - INTERVAL '5' SECOND"
    )
    columns = {c.name: (c.metadata, c.virtual) for c in t.columns}
    assert columns == {
        "id": (None, False),
        "ts": ("timestamp", False),
        "part": ("partition", True),
        "offset": ("offset", True),
        "headers": ("headers", False),
    }
    assert t.physical_schema["headers"] == HEADERS_TYPE
    assert t.watermark is not None and t.watermark.column == "ts"
    with pytest.raises(SqlError, match=r"unknown metadata key 'partiton'.*did you mean 'partition'"):
        table("p INT METADATA FROM 'partiton'")
    with pytest.raises(SqlError, match="only Kafka tables"):
        table("p INT METADATA FROM 'partition'", connector="filesystem")
    with pytest.raises(SqlError, match="EXCEPT_KEY"):
        table("k_id INT, v INT", extra=", 'key.format' = 'json', 'key.fields' = 'k_id', 'key.fields-prefix' = 'k_'")


# -- watermarks per partition, idleness, discovery, bounds ---------------------------------------------------------


def timed(ms: int, partition: int, k: int = 0) -> dict[str, Any]:
    """A message with event time BASE_MS + ms in its value, on `partition`."""
    return {"value": json.dumps({"k": k, "ts": BASE_MS + ms}), "partition": partition}


def window_sql(kafka: Any, topic: str, extra: str = "") -> str:
    return (
        source_sql(
            kafka,
            topic,
            "k BIGINT, ts TIMESTAMP(3), WATERMARK FOR ts AS ts - INTERVAL '1' SECOND",
            ", 'format' = 'json', 'scan.startup.mode' = 'earliest-offset'" + extra,
        )
        + "CREATE TABLE counts (ws TIMESTAMP(3), n BIGINT) WITH ('connector' = 'delta', 'path' = 'counts');\n"
        + "INSERT INTO counts SELECT window_start, COUNT(*) FROM TABLE(TUMBLE(TABLE src, DESCRIPTOR(ts), "
        + "INTERVAL '10' SECOND)) GROUP BY window_start, window_end;"
    )


def counts(tmp_path: Path) -> list[tuple[int, int]]:
    path = tmp_path / "counts"
    if not (path / "_delta_log").exists():
        return []
    frame = read_sink(path)
    return sorted((int(ws.timestamp() * 1000) - BASE_MS, n) for ws, n in frame.rows())


def test_each_partition_has_its_own_watermark(kafka: Any, tmp_path: Path) -> None:
    topic = kafka.create_topic(2)
    kafka.produce(topic, [timed(0, 0), timed(5_000, 0), timed(12_000, 0), timed(25_000, 0)])
    kafka.produce(topic, [timed(1_000, 1), timed(3_000, 1)])
    sql = window_sql(kafka, topic)
    run(tmp_path, sql, max_epoch_rows=1)
    # partition 1 is at 2 s: no window may close, however far partition 0 is
    assert counts(tmp_path) == []
    # 4 s is late in partition 1 (its own watermark is 14 s by then), whatever partition 0 did
    kafka.produce(topic, [timed(15_000, 1), timed(4_000, 1), timed(30_000, 1)])
    run(tmp_path, sql, max_epoch_rows=1)
    assert counts(tmp_path) == [(0, 4), (10_000, 2)]


def test_an_idle_partition_holds_the_watermark_until_its_timeout(kafka: Any, tmp_path: Path) -> None:
    from engine import Pipeline

    topic = kafka.create_topic(2)
    kafka.produce(topic, [timed(0, 1)])
    kafka.produce(topic, [timed(ms, 0) for ms in range(0, 26_000, 2_000)])
    script = tmp_path / "p.sql"
    script.write_text(window_sql(kafka, topic, ", 'scan.watermark.idle-timeout' = '1 s'"))
    Pipeline.from_sql(script, state=tmp_path / "state").run(once=True)
    assert counts(tmp_path) == []  # partition 1 (at -1 s) holds the watermark back
    # partition 0 keeps going (26 s, 26.1 s, ...: no later window closes), partition 1 stays silent
    stop = threading.Event()

    def keep_producing() -> None:
        ms = 26_000
        while not stop.is_set() and ms < 29_900:
            kafka.produce(topic, [timed(ms, 0)])
            ms += 100
            time.sleep(0.1)

    producer = threading.Thread(target=keep_producing)
    producer.start()
    started = time.monotonic()
    try:
        Pipeline.from_sql(script, state=tmp_path / "state").run(
            trigger=0.1, should_stop=lambda: bool(counts(tmp_path)) or time.monotonic() - started > 20
        )
    finally:
        stop.set()
        producer.join()
    elapsed = time.monotonic() - started
    assert counts(tmp_path) == [(0, 6), (10_000, 5)]  # partition 1 went idle: partition 0's watermark counts
    assert elapsed >= 1.0
    logged = [json.loads(p.read_text()) for p in sorted((tmp_path / "state" / "offsets").glob("*.json"))]
    idle = [e["sources"]["src"]["idle_splits"] for e in logged if "src" in e.get("sources", {})]
    assert idle[-1] == [f"{topic}:1"]


def test_partitions_added_while_running_are_discovered(kafka: Any, tmp_path: Path) -> None:
    from engine import Pipeline

    topic = kafka.create_topic(1)
    kafka.produce(topic, events(range(3)))
    script = tmp_path / "p.sql"
    script.write_text(
        ids_sql(
            kafka,
            topic,
            ", 'scan.startup.mode' = 'latest-offset', 'scan.topic-partition-discovery.interval' = '200 ms'",
        )
    )
    grown: list[bool] = []

    def grow(report: Any) -> None:
        if not grown:
            kafka.add_partitions(topic, 3)
            kafka.produce(topic, [{"value": json.dumps({"id": 100 + p, "v": 0}), "partition": p} for p in (1, 2)])
            grown.append(True)

    started = time.monotonic()
    Pipeline.from_sql(script, state=tmp_path / "state").run(
        trigger=0.1,
        on_epoch=grow,
        should_stop=lambda: len(out_ids(tmp_path)) >= 2 or time.monotonic() - started > 30,
    )
    # latest-offset skipped the first messages; new partitions are read from their earliest offset
    assert out_ids(tmp_path) == [101, 102]
    logged = [json.loads(p.read_text()) for p in sorted((tmp_path / "state" / "offsets").glob("*.json"))]
    added = [a for e in logged for a in e.get("sources", {}).get("src", {}).get("added", [])]
    assert added == [[topic, 0, 3], [topic, 1, 0], [topic, 2, 0]]


@pytest.mark.parametrize(
    ("mode", "extra", "expected"),
    [
        ("latest-offset", "", list(range(6))),
        ("timestamp", f", 'scan.bounded.timestamp-millis' = '{BASE_MS + 3500}'", [0, 1, 2, 3]),
        (
            "specific-offsets",
            ", 'scan.bounded.specific-offsets' = 'partition:0,offset:1;partition:1,offset:2'",
            [0, 1, 3],
        ),
    ],
)
def test_bounded_modes_keep_their_bound_across_runs(
    kafka: Any, tmp_path: Path, mode: str, extra: str, expected: list[int]
) -> None:
    topic = kafka.create_topic(2)
    kafka.produce(topic, events(range(6), partitions=2))
    sql = ids_sql(kafka, topic, f", 'scan.startup.mode' = 'earliest-offset', 'scan.bounded.mode' = '{mode}'{extra}")
    run(tmp_path, sql, max_epoch_rows=2)
    assert out_ids(tmp_path) == expected
    kafka.produce(topic, events(range(6, 10), partitions=2))
    run(tmp_path, sql)
    assert out_ids(tmp_path) == expected


LATE_TOPIC: dict[str, str] = {}


def late_messages() -> list[dict[str, Any]]:
    """4 partitions, keys skewed, event times advancing per partition with some late ones in each."""
    import random

    rng = random.Random(7)
    messages = []
    for p in range(4):
        t = p * 700
        for _i in range(25):
            t += rng.randint(0, 1500)
            late = rng.random() < 0.15
            ts = t - rng.randint(3_000, 12_000) if late else t
            messages.append(
                {"value": json.dumps({"k": rng.choice([1, 1, 1, 2, 3]), "ts": BASE_MS + ts}), "partition": p}
            )
    return messages


@settings(max_examples=examples(4), deadline=None, suppress_health_check=list(HealthCheck))
@given(max_rows=st.integers(6, 40), fetch_bytes=st.sampled_from([64, 200, 1000, 1_000_000]))
def test_results_do_not_depend_on_epoch_or_fetch_size(
    kafka: Any, tmp_path_factory: pytest.TempPathFactory, max_rows: int, fetch_bytes: int
) -> None:
    if "topic" not in LATE_TOPIC:
        LATE_TOPIC["topic"] = kafka.create_topic(4)
        kafka.produce(LATE_TOPIC["topic"], late_messages())
        reference = tmp_path_factory.mktemp("reference")
        summary = run(reference, keyed_window_sql(kafka, LATE_TOPIC["topic"], ""), drain=True)
        LATE_TOPIC["reference"] = str(reference)
        LATE_TOPIC["late"] = json.dumps(summary["late_rows"])
    workdir = tmp_path_factory.mktemp("split")
    extra = f", 'properties.max.partition.fetch.bytes' = '{fetch_bytes}'"
    summary = run(workdir, keyed_window_sql(kafka, LATE_TOPIC["topic"], extra), max_epoch_rows=max_rows, drain=True)
    expected = sort_all(read_sink(Path(LATE_TOPIC["reference"]) / "counts"))
    assert sort_all(read_sink(workdir / "counts")).equals(expected)
    assert summary["late_rows"] == json.loads(LATE_TOPIC["late"])
    assert summary["late_rows"]["per_k"] > 0


def keyed_window_sql(kafka: Any, topic: str, extra: str) -> str:
    return (
        source_sql(
            kafka,
            topic,
            "k BIGINT, ts TIMESTAMP(3), WATERMARK FOR ts AS ts - INTERVAL '2' SECOND",
            ", 'format' = 'json', 'scan.startup.mode' = 'earliest-offset'" + extra,
        )
        + "CREATE TABLE counts (k BIGINT, ws TIMESTAMP(3), n BIGINT) "
        + "WITH ('connector' = 'delta', 'path' = 'counts');\n"
        + "INSERT INTO counts SELECT /*+ STATE_ID('per_k') */ k, window_start, COUNT(*) FROM TABLE(TUMBLE(TABLE src, "
        + "DESCRIPTOR(ts), INTERVAL '5' SECOND)) GROUP BY k, window_start, window_end;"
    )


# -- retention: offsets the engine still needs are gone --------------------------------------------------------


def delete_before(kafka: Any, topic: str, offset: int) -> None:
    """What retention does to partition 0: its messages before `offset` are deleted (DeleteRecords)."""
    from confluent_kafka import TopicPartition

    for future in kafka.admin.delete_records([TopicPartition(topic, 0, offset)]).values():
        future.result(30)


def test_offsets_deleted_before_they_were_read_stop_with_the_partition_and_offsets(kafka: Any, tmp_path: Path) -> None:
    topic = kafka.create_topic(1)
    kafka.produce(topic, events(range(5)))
    sql = ids_sql(kafka, topic, ", 'scan.startup.mode' = 'earliest-offset'")
    run(tmp_path, sql, max_epochs=1, max_epoch_rows=1)
    assert out_ids(tmp_path) == [0]
    delete_before(kafka, topic, 3)
    (tmp_path / "pipeline.sql").write_text(sql)
    result = timelapse("run", "pipeline.sql", "--state", "state", "--once", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert f"offsets 1-2 of {topic} partition 0 were deleted by the topic's retention" in result.stderr


def test_a_logged_slice_whose_messages_are_gone_says_so(kafka: Any, tmp_path: Path) -> None:
    import os

    topic = kafka.create_topic(1)
    kafka.produce(topic, events(range(5)))
    (tmp_path / "pipeline.sql").write_text(ids_sql(kafka, topic, ", 'scan.startup.mode' = 'earliest-offset'"))
    env = {**os.environ, "TIMELAPSE_CRASH_AT": "epoch.offsets-logged:2"}
    command = ["run", "pipeline.sql", "--state", "state", "--once", "--max-epoch-rows", "1"]
    killed = subprocess.run(
        [sys.executable, "-m", "engine.cli", *command],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert killed.returncode != 0  # killed with epoch 2's slice (offset 1) logged, not read
    delete_before(kafka, topic, 3)
    result = timelapse("run", "pipeline.sql", "--state", "state", "--once", cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().count("\n") == 0, result.stderr
    assert f"offsets 1-1 of {topic} partition 0 are no longer available in Kafka" in result.stderr
    assert "the slice logged for this epoch cannot be read again" in result.stderr


def test_watermark_on_the_message_timestamp_and_a_topic_pattern(kafka: Any, tmp_path: Path) -> None:
    prefix = f"pat-{time.time_ns()}"
    first, second = (kafka.create_topic(1, name=f"{prefix}-{n}") for n in ("a", "b"))
    kafka.create_topic(1, name=f"other-{prefix}")  # not matched
    for topic in (first, second):
        kafka.produce(topic, [{"value": json.dumps({"k": 1}), "timestamp": BASE_MS + ms} for ms in (0, 4_000, 12_000)])
    sql = (
        f"CREATE TABLE src (k BIGINT, ts TIMESTAMP_LTZ(3) METADATA FROM 'timestamp', "
        f"t STRING METADATA FROM 'topic' VIRTUAL, WATERMARK FOR ts AS ts - INTERVAL '1' SECOND) "
        f"WITH ('connector' = 'kafka', 'topic-pattern' = '{prefix}-.*', "
        f"'properties.bootstrap.servers' = '{kafka.bootstrap}', 'format' = 'json', "
        "'scan.startup.mode' = 'earliest-offset');\n"
        "CREATE TABLE counts (ws TIMESTAMP(3), n BIGINT) WITH ('connector' = 'delta', 'path' = 'counts');\n"
        "INSERT INTO counts SELECT window_start, COUNT(*) FROM TABLE(TUMBLE(TABLE src, DESCRIPTOR(ts), "
        "INTERVAL '10' SECOND)) GROUP BY window_start, window_end;"
    )
    run(tmp_path, sql, max_epoch_rows=1)
    assert counts(tmp_path) == [(0, 4)]  # both topics' partitions at 11 s: the first window closed


def test_start_offsets_are_durable_from_the_first_epoch(kafka: Any, tmp_path: Path) -> None:
    import os

    topic = kafka.create_topic(1)
    kafka.produce(topic, events(range(3)))
    (tmp_path / "pipeline.sql").write_text(ids_sql(kafka, topic, ", 'scan.startup.mode' = 'latest-offset'"))
    env = {**os.environ, "TIMELAPSE_CRASH_AT": "epoch.offsets-logged:1"}
    killed = subprocess.run(
        [sys.executable, "-m", "engine.cli", "run", "pipeline.sql", "--state", "state", "--once"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert killed.returncode != 0  # killed before the first checkpoint, its start (offset 3) logged
    kafka.produce(topic, events(range(3, 5)))
    result = timelapse("run", "pipeline.sql", "--state", "state", "--once", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    # the progress lines only: nothing from the Kafka client (librdkafka logs lines starting with '%')
    assert not [line for line in result.stderr.splitlines() if line.startswith("%") or "rdkafka" in line]
    # the restart keeps the logged start: latest-offset is not looked up again (that would skip 3 and 4)
    assert out_ids(tmp_path) == [3, 4]


def test_client_properties_the_client_refuses_are_a_user_error(kafka: Any, tmp_path: Path) -> None:
    from engine.sources.base import ConnectorError

    topic = kafka.create_topic(1)
    with pytest.raises(ConnectorError, match=r"the Kafka client refuses its properties.*no\.such\.property"):
        run(tmp_path, ids_sql(kafka, topic, ", 'properties.no.such.property' = 'x'"))
    with pytest.raises(ConnectorError, match=r"'scan\.startup\.mode' = 'group-offsets' needs the option"):
        run(tmp_path, ids_sql(kafka, topic, ", 'scan.startup.mode' = 'group-offsets'"))
