"""Rolling back Kafka sinks against a real broker.

An upsert-kafka topic is rolled back for real, by compensation: every key the pipeline wrote after the target
checkpoint gets the value it had there (a tombstone if it had none), in one transaction, audited in the
manifest. Continuing with the same input then gives the straight run's compacted view. An append topic cannot
be rewritten: the rollback says what will be repeated and needs --force.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from engine import Pipeline, versioning
from engine.errors import VersioningError
from tests import test_kafka_sink as sink_tests
from tests.helpers import write_jsonl
from tests.kafka_broker import Broker

pytest.importorskip("confluent_kafka")

BASE_MS = 1_767_225_600_000


def make_events(seed: int, count: int) -> list[dict[str, Any]]:
    """Keys that appear over time (so some exist only after the rollback target) and values that make keys
    leave and come back (HAVING), i.e. tombstones on both sides of the target."""
    rng = random.Random(seed)
    return [
        {"seq": i, "k": f"k{rng.randint(0, 2 + i // 8)}", "v": rng.randint(0, 9), "ts": BASE_MS + i * 1000}
        for i in range(count)
    ]


QUERY = "INSERT INTO totals SELECT k, COUNT(*), SUM(v) FROM events GROUP BY k HAVING SUM(v) % 4 <> 1;\n"


def oracle(events: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    view: dict[str, dict[str, Any]] = {}
    for event in events:
        row = view.setdefault(event["k"], {"k": event["k"], "n": 0, "s": 0})
        row["n"] += 1
        row["s"] += event["v"]
    return {k: r for k, r in view.items() if r["s"] % 4 != 1}


def setup(root: Path, kafka: Broker, topic: str, events: list[dict[str, Any]], guarantee: str) -> Path:
    write_jsonl(root / "in" / "events.json", events)
    sql = sink_tests.SOURCE + sink_tests.upsert_sink(kafka, topic, **{"sink.delivery-guarantee": guarantee}) + QUERY
    (root / "pipeline.sql").write_text(sql)
    return root / "pipeline.sql"


def run(script: Path, **options: Any) -> dict[str, Any]:
    return Pipeline.from_sql(script, state=script.parent / "state").run(once=True, max_epoch_rows=10, **options)


@pytest.mark.parametrize("guarantee", ["exactly-once", "at-least-once"])
def test_an_upsert_kafka_sink_rolls_back_by_compensation(tmp_path: Path, kafka: Broker, guarantee: str) -> None:
    events = make_events(1, 70)
    topic = kafka.create_topic(partitions=2)
    script = setup(tmp_path, kafka, topic, events, guarantee)
    run(script, max_epochs=3)
    at_three = sink_tests.compacted(kafka.read(topic))
    assert at_three == oracle(events[:30])
    run(script)
    assert sink_tests.compacted(kafka.read(topic)) == oracle(events)

    result = versioning.rollback(tmp_path / "state", to_epoch=3, reason="bad deploy")
    assert sink_tests.compacted(kafka.read(topic)) == at_three  # right after the rollback: the view at epoch 3
    compensated = result["compensated"]["totals"]
    assert compensated["topic"] == topic and compensated["keys"] > 0
    messages = kafka.read(topic)
    marked = [m for m in messages if "timelapse.rollback-to" in m.headers]
    assert len(marked) == compensated["messages"]
    assert {m.headers["timelapse.rollback-to"] for m in marked} == {b"3"}
    assert any(m.value is None for m in marked)  # keys that did not exist at epoch 3 are deleted
    manifest = pl.read_delta(str(tmp_path / "state" / "manifest")).sort("committed_at")
    audit = json.loads(manifest.row(-1, named=True)["metrics"])["rollback"]
    assert audit["compensated"]["totals"]["keys"] == compensated["keys"]
    shown = versioning.render_history(versioning.history(tmp_path / "state"))
    assert f"Kafka 'totals' (topic {topic}): {compensated['keys']} keys compensated" in shown

    run(script)  # the same input again, from epoch 3's offsets
    assert sink_tests.compacted(kafka.read(topic)) == oracle(events)


def test_a_rollback_killed_after_its_compensation_is_finished_by_the_next_run(tmp_path: Path, kafka: Broker) -> None:
    events = make_events(2, 60)
    topic = kafka.create_topic(partitions=3)
    script = setup(tmp_path, kafka, topic, events, "exactly-once")
    run(script, max_epochs=2)
    at_two = sink_tests.compacted(kafka.read(topic))
    run(script)
    env = {**os.environ, "TIMELAPSE_CRASH_AT": "kafka.rollback.compensated"}
    command = [sys.executable, "-m", "engine.cli", "rollback", "state", "--to-epoch", "2"]
    killed = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, timeout=120)
    assert killed.returncode == -signal.SIGKILL, killed.stderr.decode()
    assert sink_tests.compacted(kafka.read(topic)) == at_two  # compensated; the rollback row not yet written
    run(script)  # finishes the rollback first (compensating again is harmless), then runs from epoch 2's offsets
    assert sink_tests.compacted(kafka.read(topic)) == oracle(events)


def test_an_append_kafka_sinks_rollback_needs_force_and_says_what_repeats(tmp_path: Path, kafka: Broker) -> None:
    topic = kafka.create_topic()
    events = sink_tests.rows(3, 50)
    sink_tests.deliver(tmp_path, events, 0)
    sql = sink_tests.SOURCE + sink_tests.kafka_sink(kafka, topic, sink_tests.FILTER_COLUMNS) + sink_tests.FILTER
    (tmp_path / "pipeline.sql").write_text(sql)
    run(tmp_path / "pipeline.sql")
    before = kafka.read(topic)
    manifest = pl.read_delta(str(tmp_path / "state" / "manifest")).sort("epoch")
    after_two = sum(json.loads(m)["rows_out"]["out"] for m in manifest.get_column("metrics").to_list()[2:])
    with pytest.raises(VersioningError) as refused:
        versioning.rollback(tmp_path / "state", to_epoch=2)
    message = str(refused.value)
    assert f"'out' (Kafka topic '{topic}': {after_two} messages after epoch 2 stay in the topic" in message
    assert "--force" in message
    result = versioning.rollback(tmp_path / "state", to_epoch=2, force=True)
    assert result["repeated_output"] == {"out": after_two}
    run(tmp_path / "pipeline.sql")
    again = kafka.read(topic)
    assert len(again) == len(before) + after_two  # the epochs after the rollback wrote them again, once
    assert sink_tests.by_seq(sink_tests.values(again[len(before) :])) == sink_tests.by_seq(
        sink_tests.values(before[len(before) - after_two :])
    )


def test_a_branch_does_not_write_into_its_parents_topic(tmp_path: Path, kafka: Broker) -> None:
    from engine.branching import create_branch
    from engine.sources.base import ConnectorError

    events = make_events(3, 40)
    topic, other = kafka.create_topic(), kafka.create_topic()
    script = setup(tmp_path, kafka, topic, events, "exactly-once")
    run(script, max_epochs=2)
    create_branch(tmp_path / "state", tmp_path / "branch", epoch=1)
    parent_view = kafka.read(topic)
    with pytest.raises(ConnectorError, match=f"branch of .*'totals' writes Kafka topic '{topic}'.*another topic"):
        Pipeline.from_sql(script, state=tmp_path / "branch").run(once=True)
    own = tmp_path / "branch.sql"
    own.write_text(script.read_text().replace(topic, other))
    Pipeline.from_sql(own, state=tmp_path / "branch").run(once=True, max_epoch_rows=10)
    assert kafka.read(topic) == parent_view  # the parent's topic is untouched
    # the branch continues from epoch 1's offsets: its topic holds the changes after epoch 1
    assert sink_tests.compacted(kafka.read(other)) == {
        k: r for k, r in oracle(events).items() if k in {e["k"] for e in events[10:]}
    }
