"""Kafka end to end: changelog sources on Kafka, and rollback and branches over a Kafka source.

- debezium-json and upsert-kafka topics (inserts, updates, deletes, tombstones, malformed messages) feed a
  GROUP BY into a keyed Delta table, which equals DuckDB over the CDC table's final state for every epoch size.
- A pipeline reading a Kafka topic is rolled back with `timelapse rollback`: the epochs after the target
  re-read exactly the logged offset ranges, and the sinks end as a straight run's. A branch from a savepoint
  (`timelapse branch`) reading the same topic ends as the straight run too, and leaves its parent alone.

The oracles never read timelapse: DuckDB over the messages as produced.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from tests import test_kafka_pipeline as diff
from tests.helpers import duck, read_sink, run, sort_all, write_jsonl
from tests.kafka_broker import Broker
from tests.test_kafka_end_to_end import Topic

pytest.importorskip("confluent_kafka")

PARTITIONS = 4


# -- 2. debezium-json and upsert-kafka sources on Kafka feeding a GROUP BY -------------------------------------
def history(seed: int, changes: int = 120) -> list[tuple[str, dict[str, Any], dict[str, Any] | None]]:
    """Changes of a table (id, category, amount): (kind, row, before) with kind insert, update or delete; rows
    move between categories, and category 'e' empties at the end (the sink must lose it)."""
    rng = random.Random(seed)
    live: dict[int, dict[str, Any]] = {}
    out: list[tuple[str, dict[str, Any], dict[str, Any] | None]] = []
    for _ in range(changes):
        roll = rng.random()
        if not live or roll < 0.45:
            row = {"id": len(out) + 1000 * seed, "category": rng.choice("abcde"), "amount": rng.randint(-20, 90)}
            live[row["id"]] = row
            out.append(("insert", row, None))
        elif roll < 0.8:
            before = live[rng.choice(sorted(live))]
            after = {**before, "amount": rng.randint(-20, 90)}
            if rng.random() < 0.4:
                after["category"] = rng.choice("abcde")
            live[before["id"]] = after
            out.append(("update", after, before))
        else:
            row = live.pop(rng.choice(sorted(live)))
            out.append(("delete", row, row))
    for row_id in [i for i, row in sorted(live.items()) if row["category"] == "e"]:
        row = live.pop(row_id)
        out.append(("delete", row, row))
    return out


def group_by_oracle(live: dict[int, dict[str, Any]]) -> pl.DataFrame:
    state = pl.DataFrame(
        list(live.values()), schema={"id": pl.Int64, "category": pl.String, "amount": pl.Int64}, orient="row"
    )
    return duck(
        "SELECT category, count(*) AS n, sum(amount) AS total FROM state GROUP BY category",
        state=state,
    )


def debezium_messages(seed: int) -> tuple[list[dict[str, Any]], pl.DataFrame, int]:
    """Debezium change events keyed by id (one partition per id, so each row's changes stay in order), with
    the tombstones Debezium writes after deletes (skipped) and malformed messages (dead letters)."""
    rng = random.Random(seed)
    messages: list[dict[str, Any]] = []
    live: dict[int, dict[str, Any]] = {}
    for kind, row, before in history(seed):
        key = json.dumps({"id": row["id"]})
        partition = row["id"] % PARTITIONS
        op = {"insert": rng.choice("cr"), "update": "u", "delete": "d"}[kind]
        value = {
            "before": before,
            "after": None if kind == "delete" else row,
            "op": op,
            "source": {"table": "orders"},
        }
        messages.append({"key": key, "partition": partition, "value": json.dumps(value)})
        if kind == "delete":
            live.pop(row["id"])
            if rng.random() < 0.5:
                messages.append({"key": key, "partition": partition, "value": None})  # Debezium's tombstone
        else:
            live[row["id"]] = row
    malformed = ["{not json", '{"op":"x","after":{"id":1}}', '{"op":"u","before":null,"after":{"id":1}}']
    for bad in malformed:
        messages.insert(rng.randrange(len(messages) + 1), {"key": None, "partition": rng.randrange(4), "value": bad})
    return messages, group_by_oracle(live), len(malformed)


def upsert_messages(seed: int) -> tuple[list[dict[str, Any]], pl.DataFrame, int]:
    """Keyed upserts and tombstones; also a tombstone of a key never written, an unchanged re-upsert, and
    values that cannot be read (dead letters: the key keeps its value)."""
    rng = random.Random(seed)
    messages: list[dict[str, Any]] = []
    live: dict[int, dict[str, Any]] = {}
    malformed = 0

    def emit(row_id: int, value: str | None) -> None:
        messages.append({"key": json.dumps({"id": row_id}), "partition": row_id % PARTITIONS, "value": value})

    for kind, row, _before in history(seed):
        if kind == "delete":
            live.pop(row["id"])
            emit(row["id"], None)
        else:
            live[row["id"]] = row
            emit(row["id"], json.dumps(row))
        roll = rng.random()
        if roll < 0.05:
            emit(10**6 + len(messages), None)  # the tombstone of an unknown key: nothing
        elif roll < 0.1 and live:
            same = live[rng.choice(sorted(live))]
            emit(same["id"], json.dumps(same))  # unchanged: nothing
        elif roll < 0.13 and live:
            emit(rng.choice(sorted(live)), rng.choice(['{"id": 1, "amount": "many"}', "not json"]))
            malformed += 1
    return messages, group_by_oracle(live), malformed


CHANGELOG_SOURCES = {
    "debezium-json": (
        "'connector' = 'kafka', 'format' = 'debezium-json', 'scan.startup.mode' = 'earliest-offset'",
        debezium_messages,
    ),
    "upsert-kafka": ("'connector' = 'upsert-kafka', 'key.format' = 'json', 'value.format' = 'json'", upsert_messages),
}


@pytest.mark.parametrize("kind", sorted(CHANGELOG_SOURCES))
def test_a_changelog_topic_feeds_a_group_by_for_every_epoch_size(tmp_path: Path, kafka: Broker, kind: str) -> None:
    options, make = CHANGELOG_SOURCES[kind]
    messages, expected, malformed = make(7)
    topic = kafka.create_topic(PARTITIONS)
    kafka.produce(topic, messages)
    key = ", PRIMARY KEY (id) NOT ENFORCED" if kind == "upsert-kafka" else ""
    sql = f"""
CREATE TABLE src (id BIGINT, category STRING, amount INT{key})
WITH ({options}, 'topic' = '{topic}', 'properties.bootstrap.servers' = '{kafka.bootstrap}');
CREATE TABLE per_category (category STRING, n BIGINT, total BIGINT, PRIMARY KEY (category) NOT ENFORCED)
WITH ('connector' = 'delta', 'path' = 'out');
INSERT INTO per_category SELECT category, COUNT(*), SUM(amount) FROM src GROUP BY category;
"""
    for size in (5, 40, None):
        root = tmp_path / str(size)
        root.mkdir()
        summary = run(root, sql, max_epoch_rows=size)
        got = read_sink(root / "out")
        assert sort_all(got).to_dicts() == sort_all(expected.cast(got.schema)).to_dicts(), size  # type: ignore[arg-type]
        assert "e" not in got.get_column("category").to_list()
        assert summary["dead_letters"] == {"src": malformed}, size
        dead = pl.read_delta(str(root / "state" / "dead_letters" / "src"))
        assert dead.height == malformed and dead.get_column("reason").is_not_null().all()


# -- 3. rollback and branch with a Kafka source ----------------------------------------------------------------
def timelapse(root: Path, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "engine.cli", *args], cwd=root, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    return done.stdout


def logged(state: Path) -> dict[int, list[list[Any]]]:
    """Each epoch's logged Kafka ranges (topic, partition, start, end)."""
    return {
        int(path.stem): json.loads(path.read_text())["sources"]["events"]["ranges"]
        for path in sorted((state / "offsets").glob("[0-9]*.json"))
    }


def sinks(root: Path, suffix: str = "") -> dict[str, list[dict[str, Any]]]:
    return {name: sort_all(read_sink(root / f"{name}{suffix}")).to_dicts() for name in ("w", "totals", "named")}


def dead_offsets(state: Path) -> list[tuple[int, int]]:
    dead = pl.read_delta(str(state / "dead_letters" / "events"))
    return sorted(zip(dead.get_column("partition").to_list(), dead.get_column("offset").to_list(), strict=True))


def test_rollback_and_a_branch_with_a_kafka_source_equal_a_straight_run(tmp_path: Path, kafka: Broker) -> None:
    source = Topic(kafka, diff.make_messages(23, 200))
    parent, straight = tmp_path / "parent", tmp_path / "straight"
    for root in (parent, straight):
        write_jsonl(root / "names" / "1.json", diff.NAMES.to_dicts())
        (root / "pipeline.sql").write_text(diff.pipeline(source.name, kafka.bootstrap, None))
    script = parent / "pipeline.sql"

    def go(state: str = "state", **options: Any) -> dict[str, Any]:
        return run(parent, script.read_text(), state=state, max_epoch_rows=15, **options)

    source.produce(100)
    go(max_epochs=4)
    timelapse(parent, "savepoint", "create", "state", "--name", "sp", "--epoch", "3")
    source.produce(100)  # the rest arrives between runs
    go()
    before = logged(parent / "state")
    last = max(before)
    assert last > 8
    diff.check(parent, source.oracle())

    # -- rollback: the epochs after the target read the same slices again, and the sinks end the same
    rolled = json.loads(timelapse(parent, "rollback", "state", "--to-epoch", "5", "--reason", "replay", "--json"))
    assert rolled["rolled_back_to"] == 5
    go()
    after = logged(parent / "state")
    # epoch numbers go on after a rollback; the epochs after it read epoch 6.. 's slices again, range by range
    replayed = [after[e] for e in range(rolled["next_epoch"], max(after) + 1)]
    assert replayed == [before[e] for e in range(6, last + 1)]
    assert {e: after[e] for e in before} == before  # the log of the rolled-back epochs is kept
    diff.check(parent, source.oracle())
    assert len(dead_offsets(parent / "state")) == source.malformed() == len(set(dead_offsets(parent / "state")))

    run(straight, (straight / "pipeline.sql").read_text(), max_epoch_rows=15)
    assert sinks(parent) == sinks(straight)
    assert dead_offsets(parent / "state") == dead_offsets(straight / "state")

    # -- a branch from the savepoint reads the same topic from epoch 3's offsets: the straight run's results
    parent_sinks, parent_log = sinks(parent), logged(parent / "state")
    out = timelapse(parent, "branch", "state", "whatif", "--from", "savepoint", "sp")
    assert "created from savepoint 'sp' (epoch 3)" in out
    branch_log = logged(parent / "whatif")
    assert all(branch_log[e] == before[e] for e in branch_log)  # the branch starts from the parent's slices
    go(state="whatif")
    assert sinks(parent, "-whatif") == sinks(straight)
    ranges = logged(parent / "whatif")
    assert [r for e in range(4, max(ranges) + 1) for r in ranges[e]] != []
    assert dead_offsets(parent / "whatif") == dead_offsets(straight / "state")
    # a branch from an epoch, its sinks where --sink puts them
    out = timelapse(parent, "branch", "state", "at7", "--from", "epoch", "7", "--sink", "totals=elsewhere/totals")
    assert "created from epoch 7" in out
    go(state="at7")
    expected = sinks(straight)
    for name in ("w", "named"):
        assert sort_all(read_sink(parent / f"{name}-at7")).to_dicts() == expected[name]
    assert sort_all(read_sink(parent / "elsewhere" / "totals")).to_dicts() == expected["totals"]
    # ... and the parent is as it was
    assert sinks(parent) == parent_sinks and logged(parent / "state") == parent_log
    go()  # the parent carries on unaffected: nothing new to read
    assert sinks(parent) == parent_sinks
