"""The Kafka sink against a real broker: file sources -> 'kafka' / 'upsert-kafka' topics, read back by a
read_committed consumer.

Exactly-once: every result once, in epoch order, with the pipeline and epoch headers, whatever the instant a
run is killed at (random instants and the Kafka fault points); zombie writers fenced. Also at-least-once, the
partitioners, key fields, upsert-kafka's compacted view against DuckDB, and the plan-time refusals.
"""

from __future__ import annotations

import json
import os
import random
import signal
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from engine import Pipeline
from engine.state_dir import StateDir
from sql.errors import SqlError
from tests import test_windows as windows
from tests.helpers import duck, finish_run, launch_run, run, write_jsonl
from tests.kafka_broker import Broker, Message

pytest.importorskip("confluent_kafka")

SOURCE = """
CREATE TABLE events (seq BIGINT, k STRING, v INT, ts TIMESTAMP(3),
  WATERMARK FOR ts AS ts - INTERVAL '5' SECOND)
WITH ('connector' = 'filesystem', 'path' = 'in', 'format' = 'json');
"""


def kafka_sink(kafka: Broker, topic: str, columns: str, name: str = "out", **options: str) -> str:
    settings = {
        "connector": "kafka",
        "topic": topic,
        "properties.bootstrap.servers": kafka.bootstrap,
        "format": "json",
        "sink.delivery-guarantee": "exactly-once",
        **options,
    }
    listed = ",\n  ".join(f"'{k}' = '{v}'" for k, v in settings.items())
    return f"CREATE TABLE {name} ({columns}) WITH (\n  {listed});\n"


def rows(seed: int, count: int) -> list[dict[str, Any]]:
    return windows.make_rows(seed, count)


def deliver(root: Path, events: list[dict[str, Any]], chunk: int, name: str = "part") -> None:
    write_jsonl(root / "in" / f"{name}-{chunk:04d}.json", events)


def values(messages: list[Message]) -> list[dict[str, Any]]:
    return [json.loads(m.value) for m in messages if m.value is not None]


def by_seq(found: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(found, key=lambda r: json.dumps(r, sort_keys=True))


FILTER = "INSERT INTO out SELECT seq, k, v FROM events WHERE v > 2;\n"
FILTER_COLUMNS = "seq BIGINT, k STRING, v INT"


def expected_filter(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return by_seq([{"seq": r["seq"], "k": r["k"], "v": r["v"]} for r in events if r["v"] is not None and r["v"] > 2])


# -- exactly-once ----------------------------------------------------------------------------------------------
def test_every_result_once_in_epoch_order_with_the_headers(tmp_path: Path, kafka: Broker) -> None:
    topic = kafka.create_topic(partitions=3)
    events = rows(1, 60)
    deliver(tmp_path, events, 0)
    sql = SOURCE + kafka_sink(kafka, topic, FILTER_COLUMNS, **{"key.format": "raw", "key.fields": "k"}) + FILTER
    summary = run(tmp_path, sql, max_epoch_rows=7)
    assert summary["epochs"] >= 8
    found = kafka.read(topic)
    assert by_seq(values(found)) == expected_filter(events)
    pipeline = json.loads((tmp_path / "state" / "pipeline.json").read_text())["pipeline_id"]
    for partition in {m.partition for m in found}:
        in_order = [m for m in found if m.partition == partition]
        assert all(m.headers["timelapse.pipeline"] == f"{pipeline}/out".encode() for m in in_order)
        epochs = [int(m.headers["timelapse.epoch"]) for m in in_order]
        assert epochs == sorted(epochs)  # epoch order within every partition
        seqs = [json.loads(m.value)["seq"] for m in in_order]
        assert seqs == sorted(seqs)  # and the rows' own order within an epoch
    # the same run again: nothing new, nothing repeated
    run(tmp_path, sql, max_epoch_rows=7)
    assert len(kafka.read(topic)) == len(found)


def test_kill_at_the_kafka_fault_points_and_at_random_instants(tmp_path: Path, kafka: Broker) -> None:
    """Input arrives in chunks; runs are killed at the points between produce and commit, after the commit, before
    the manifest, and at random instants. The topic then holds what a straight run writes, each result once."""
    crashed, straight = kafka.create_topic(partitions=2), kafka.create_topic(partitions=2)
    events = rows(2, 160)
    root = tmp_path / "crashed"
    (root / "in").mkdir(parents=True)
    sql = SOURCE + kafka_sink(kafka, crashed, FILTER_COLUMNS) + FILTER
    (root / "pipeline.sql").write_text("SET 'checkpoint.interval' = '2 epochs';\n" + sql)
    points = [
        "kafka.sink.produced:2",
        "kafka.sink.committed:3",
        "manifest.commit.before:1",
        "kafka.sink.committed:1",
        "epoch.offsets-logged:2",
        "kafka.sink.produced:1",
    ]
    rng = random.Random(5)
    killed = 0
    chunk = 0
    for point in points:
        deliver(root, events[20 * chunk : 20 * (chunk + 1)], chunk)
        chunk += 1
        killed += finish_run(root, "--max-epoch-rows", "6", crash_at=point) == -signal.SIGKILL
    while chunk < 8:  # random instants
        deliver(root, events[20 * chunk : 20 * (chunk + 1)], chunk)
        chunk += 1
        process = launch_run(root, "--max-epoch-rows", "6")
        time.sleep(rng.uniform(0.5, 2.5))
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
            killed += 1
        process.communicate()
    assert finish_run(root, "--max-epoch-rows", "6") == 0
    assert killed >= 5
    reference = tmp_path / "straight"
    deliver(reference, events, 0)
    run(reference, SOURCE + kafka_sink(kafka, straight, FILTER_COLUMNS) + FILTER, max_epoch_rows=6)
    got, want = values(kafka.read(crashed)), values(kafka.read(straight))
    assert by_seq(got) == by_seq(want) == expected_filter(events)
    assert not [seq for seq, n in Counter(r["seq"] for r in got).items() if n > 1]  # exactly once
    assert len(kafka.read(crashed, committed=False)) > len(got)  # aborted transactions were there, unseen


WINDOW_COLUMNS = (
    "k STRING, ws TIMESTAMP(3), we TIMESTAMP(3), c BIGINT, cv BIGINT, cd BIGINT, s BIGINT, "
    "a DOUBLE, mn INT, mx INT, cf BIGINT, e BIGINT"
)


def test_a_window_aggregation_does_not_depend_on_epoch_size_or_checkpoint_interval(
    tmp_path: Path, kafka: Broker
) -> None:
    events = rows(3, 150)
    window = windows.tvf_query(windows.WINDOWS["tumble"][0])
    oracle = windows.oracle_window(events, windows.WINDOWS["tumble"][1])
    results = []
    for max_rows, interval in ((7, "1 epochs"), (23, "5 epochs"), (150, "5 epochs")):
        topic = kafka.create_topic(partitions=2)
        root = tmp_path / f"r{max_rows}"
        deliver(root, events, 0)
        sql = (
            f"SET 'checkpoint.interval' = '{interval}';\n" + SOURCE + kafka_sink(kafka, topic, WINDOW_COLUMNS) + window
        )
        run(root, sql, max_epoch_rows=max_rows)
        results.append(by_seq(values(kafka.read(topic))))
    assert results[0] == results[1] == results[2]
    assert len(results[0]) == oracle.height


def test_a_zombie_writer_is_fenced_by_the_next_run(tmp_path: Path, kafka: Broker) -> None:
    from confluent_kafka import KafkaException, Producer

    topic = kafka.create_topic()
    events = rows(4, 30)
    deliver(tmp_path, events, 0)
    sql = SOURCE + kafka_sink(kafka, topic, FILTER_COLUMNS, **{"sink.transactional-id-prefix": "zt"}) + FILTER
    pipeline = StateDir(tmp_path / "state").pipeline_id()  # what the run will find
    zombie = Producer(kafka.config(**{"transactional.id": f"zt-{pipeline}/out"}))
    zombie.init_transactions(30)
    zombie.begin_transaction()
    zombie.produce(topic, value=b'{"seq": -1}')
    zombie.flush(30)
    (tmp_path / "pipeline.sql").write_text(sql)
    Pipeline.from_sql(tmp_path / "pipeline.sql", state=tmp_path / "state").run(once=True, max_epoch_rows=10)
    with pytest.raises(KafkaException):
        zombie.commit_transaction(10)
    assert by_seq(values(kafka.read(topic))) == expected_filter(events)  # the zombie's message is not there


# -- other guarantees, partitioners, keys ---------------------------------------------------------------------
def test_at_least_once_and_none(tmp_path: Path, kafka: Broker) -> None:
    events = rows(5, 40)
    for guarantee in ("at-least-once", "none"):
        topic = kafka.create_topic(partitions=2)
        root = tmp_path / guarantee
        deliver(root, events, 0)
        sql = SOURCE + kafka_sink(kafka, topic, FILTER_COLUMNS, **{"sink.delivery-guarantee": guarantee}) + FILTER
        run(root, sql, max_epoch_rows=9)
        found = kafka.read(topic)
        assert by_seq(values(found)) == expected_filter(events)
        assert all("timelapse.epoch" in m.headers for m in found)
    # Flink's default is at-least-once: no transactional id is needed
    topic = kafka.create_topic()
    root = tmp_path / "default"
    deliver(root, events, 0)
    sql = SOURCE + kafka_sink(kafka, topic, FILTER_COLUMNS).replace(
        "'sink.delivery-guarantee' = 'exactly-once'", "'sink.parallelism' = '1'"
    )
    run(root, sql + FILTER, max_epoch_rows=9)
    assert by_seq(values(kafka.read(topic))) == expected_filter(events)


def test_partitioners(tmp_path: Path, kafka: Broker) -> None:
    events = rows(6, 60)
    counts = {}
    for partitioner in ("fixed", "round-robin", "default"):
        topic = kafka.create_topic(partitions=3)
        root = tmp_path / partitioner
        deliver(root, events, 0)
        keyed = {"key.format": "raw", "key.fields": "k"} if partitioner == "default" else {}
        sql = SOURCE + kafka_sink(kafka, topic, FILTER_COLUMNS, **{"sink.partitioner": partitioner}, **keyed)
        run(root, sql + FILTER, max_epoch_rows=13)
        found = kafka.read(topic)
        assert by_seq(values(found)) == expected_filter(events)
        counts[partitioner] = Counter(m.partition for m in found)
        if partitioner == "default":  # by key: every key in one partition
            where: dict[bytes | None, set[int]] = {}
            for m in found:
                if m.key is not None:  # a NULL key goes to any partition
                    where.setdefault(m.key, set()).add(m.partition)
            assert all(len(p) == 1 for p in where.values())
    assert set(counts["fixed"]) == {0}
    spread = counts["round-robin"]
    assert set(spread) == {0, 1, 2} and max(spread.values()) - min(spread.values()) <= 1


def test_key_fields_with_a_prefix_and_value_fields_except_key(tmp_path: Path, kafka: Broker) -> None:
    topic = kafka.create_topic()
    events = rows(7, 20)
    deliver(tmp_path, events, 0)
    options = {
        "key.format": "json",
        "key.fields": "k_k;k_seq",
        "key.fields-prefix": "k_",
        "value.fields-include": "EXCEPT_KEY",
    }
    sql = SOURCE + kafka_sink(kafka, topic, "k_k STRING, k_seq BIGINT, v INT", **options)
    run(tmp_path, sql + "INSERT INTO out SELECT k, seq, v FROM events;", max_epoch_rows=8)
    found = kafka.read(topic)
    assert sorted((json.loads(m.key)["seq"], json.loads(m.key)["k"], json.loads(m.value)) for m in found) == sorted(
        (r["seq"], r["k"], {"v": r["v"]}) for r in events
    )


# -- upsert-kafka ---------------------------------------------------------------------------------------------
UPSERT_COLUMNS = "k STRING, n BIGINT, s BIGINT, PRIMARY KEY (k) NOT ENFORCED"
GROUP_BY = "INSERT INTO totals SELECT k, COUNT(*), SUM(v) FROM events WHERE k IS NOT NULL GROUP BY k;\n"


def upsert_sink(kafka: Broker, topic: str, **options: str) -> str:
    sink = kafka_sink(
        kafka, topic, UPSERT_COLUMNS, name="totals", connector="upsert-kafka", **{"key.format": "json"}, **options
    )
    return sink.replace("'format' = 'json'", "'value.format' = 'json'")


def compacted(messages: list[Message]) -> dict[str, dict[str, Any]]:
    """What a compacted topic keeps: the last value per key; a tombstone removes the key."""
    view: dict[str, dict[str, Any]] = {}
    for m in sorted(messages, key=lambda m: (m.partition, m.offset)):
        key = json.loads(m.key)["k"]
        if m.value is None:
            view.pop(key, None)
        else:
            view[key] = json.loads(m.value)
    return view


def group_by_oracle(events: list[dict[str, Any]], where: str = "") -> dict[str, dict[str, Any]]:
    frame = windows.frame(events)
    query = f"SELECT k, count(*) AS n, sum(v) AS s FROM src WHERE k IS NOT NULL {where} GROUP BY k"
    return {r["k"]: r for r in duck(query, src=frame).to_dicts()}


def test_upsert_kafka_from_a_group_by_equals_duckdb(tmp_path: Path, kafka: Broker) -> None:
    topic = kafka.create_topic(partitions=2)
    events = rows(8, 120)
    deliver(tmp_path, events, 0)
    # HAVING makes keys come and go: a key that drops below is deleted (a tombstone), and may come back
    having = GROUP_BY.replace("GROUP BY k;", "GROUP BY k HAVING SUM(v) % 3 <> 0;")
    run(tmp_path, SOURCE + upsert_sink(kafka, topic) + having, max_epoch_rows=11)
    found = kafka.read(topic)
    expected = {k: r for k, r in group_by_oracle(events).items() if r["s"] is None or r["s"] % 3 != 0}
    assert compacted(found) == expected
    assert len({m.partition for m in found}) >= 1


# -- refusals and errors --------------------------------------------------------------------------------------
def test_an_updating_result_into_kafka_with_json_is_refused_at_plan_time(kafka: Broker) -> None:
    sql = (
        SOURCE
        + kafka_sink(kafka, "t", "k STRING, n BIGINT")
        + "INSERT INTO out SELECT k, COUNT(*) FROM events GROUP BY k;"
    )
    with pytest.raises(SqlError, match=r"upsert-kafka.*changelog format") as caught:
        Pipeline.from_sql(sql, state="unused")
    assert "'out'" in str(caught.value) and "line" in str(caught.value)
    # a changelog format carries the row kinds: planned as it is (Flink's rule)
    changelog = kafka_sink(kafka, "t", "k STRING, n BIGINT", format="debezium-json")
    Pipeline.from_sql(SOURCE + changelog + "INSERT INTO out SELECT k, COUNT(*) FROM events GROUP BY k;", state="x")
    pattern = kafka_sink(kafka, "t", FILTER_COLUMNS).replace("'topic' = 't'", "'topic-pattern' = 't.*'")
    with pytest.raises(SqlError, match="'topic-pattern' only reads topics"):
        Pipeline.from_sql(SOURCE + pattern + FILTER, state="unused")


def test_a_missing_topic_is_one_line_naming_the_table(tmp_path: Path, kafka: Broker) -> None:
    deliver(tmp_path, rows(9, 5), 0)
    sql = SOURCE + kafka_sink(kafka, "no-such-topic-here", FILTER_COLUMNS) + FILTER
    (tmp_path / "pipeline.sql").write_text(sql)
    process = launch_run(tmp_path)
    _out, err = process.communicate(timeout=60)
    assert process.returncode == 2
    text = err.decode().strip()
    assert "\n" not in text and "Traceback" not in text
    assert "table 'out' (line" in text and "'no-such-topic-here' does not exist" in text


def test_a_broker_that_is_down_ends_the_run_with_one_line(tmp_path: Path, kafka: Broker) -> None:
    from tests.kafka_broker import free_port

    deliver(tmp_path, rows(10, 5), 0)
    sink = kafka_sink(kafka, "t", FILTER_COLUMNS, **{"properties.socket.timeout.ms": "1000"})
    down = f"127.0.0.1:{free_port()}"
    (tmp_path / "pipeline.sql").write_text(SOURCE + sink.replace(kafka.bootstrap, down) + FILTER)
    started = time.monotonic()
    process = launch_run(tmp_path)
    _out, err = process.communicate(timeout=60)
    assert time.monotonic() - started < 30  # bounded by the socket timeout, not librdkafka's minutes
    assert process.returncode == 2
    text = err.decode().strip()
    assert "\n" not in text and "Traceback" not in text and "rdkafka" not in text
    assert text.startswith("error: table 'out' (line") or "table 'out' (line" in text
    assert down in text


def test_a_timestamp_metadata_column_sets_the_message_timestamp(tmp_path: Path, kafka: Broker) -> None:
    """`ts TIMESTAMP_LTZ(3) METADATA FROM 'timestamp'` on a sink: the column is the message's timestamp, not a
    field of the value. (The table is marked in code: the DDL's METADATA clause is parsed by the source work.)"""
    import dataclasses

    from sql import plan_script

    topic = kafka.create_topic()
    events = [e for e in rows(11, 20) if e["ts"] is not None]
    deliver(tmp_path, events, 0)
    sql = (
        SOURCE + kafka_sink(kafka, topic, "seq BIGINT, ts TIMESTAMP(3)") + "INSERT INTO out SELECT seq, ts FROM events;"
    )
    plan = plan_script(sql)
    sink = plan.sinks[0]
    columns = tuple(dataclasses.replace(c, metadata="timestamp") if c.name == "ts" else c for c in sink.table.columns)
    sink.table = dataclasses.replace(sink.table, columns=columns)
    Pipeline(plan, tmp_path / "state", tmp_path).run(once=True, max_epoch_rows=6)
    found = kafka.read(topic)
    assert sorted((json.loads(m.value)["seq"], m.timestamp) for m in found) == sorted(
        (e["seq"], e["ts"]) for e in events
    )
    assert all(set(json.loads(m.value)) == {"seq"} for m in found)


def test_a_first_run_does_not_read_what_the_topic_already_held(tmp_path: Path, kafka: Broker) -> None:
    """Only epochs started after the last checkpoint can be in the topic already: a first run writes from epoch 1
    whatever the topic holds (here even messages that claim to be this pipeline's epoch 99)."""
    topic = kafka.create_topic()
    events = rows(12, 20)
    deliver(tmp_path, events, 0)
    pipeline = StateDir(tmp_path / "state").pipeline_id()
    forged = {"timelapse.pipeline": f"{pipeline}/out", "timelapse.epoch": "99"}
    kafka.produce(topic, [{"value": b'{"seq": -1}', "headers": forged}])
    run(tmp_path, SOURCE + kafka_sink(kafka, topic, FILTER_COLUMNS) + FILTER, max_epoch_rows=10)
    assert by_seq(values(kafka.read(topic))[1:]) == expected_filter(events)
