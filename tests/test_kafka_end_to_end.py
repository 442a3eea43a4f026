"""Kafka end to end, through `timelapse run` as a user runs it, against a real broker and DuckDB.

A Kafka source feeds a window aggregation into an exactly-once Kafka sink and a GROUP BY into a keyed Delta
sink; runs are killed with SIGKILL at the named fault points and at random instants while messages keep
arriving. Then a `read_committed` consumer sees every window result exactly once and equal to DuckDB over the
produced messages, the Delta sink equals DuckDB, and each malformed message is one dead letter. A second
pipeline reading the exactly-once topic (read_committed) sees the first one's logical output, never an aborted
message.

The oracle never reads timelapse: tests/test_kafka_pipeline.py's DuckDB queries over the messages as produced
(per-partition watermarks in offset order, the documented rule).
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

import polars as pl
import pytest

from engine import faults
from tests import test_kafka_pipeline as diff
from tests.helpers import duck, finish_run, launch_run, read_sink, sort_all
from tests.kafka_broker import Broker, Message

pytest.importorskip("confluent_kafka")


def source_ddl(topic: str, bootstrap: str, name: str = "events") -> str:
    return f"""
CREATE TABLE {name} (k BIGINT, v BIGINT, ts TIMESTAMP(3),
  WATERMARK FOR ts AS ts - INTERVAL '{diff.DELAY_S}' SECOND)
WITH ('connector' = 'kafka', 'topic' = '{topic}', 'properties.bootstrap.servers' = '{bootstrap}',
      'properties.group.id' = 'e2e', 'scan.startup.mode' = 'earliest-offset', 'format' = 'json');
"""


def pipeline_a(source: str, out: str, bootstrap: str, interval: str) -> str:
    """Window results into an exactly-once Kafka topic, per-key totals into a keyed Delta table."""
    return (
        f"SET 'checkpoint.interval' = '{interval}';\n"
        + source_ddl(source, bootstrap)
        + f"""
CREATE TABLE windows (k BIGINT, ws TIMESTAMP(3), n BIGINT, s BIGINT)
WITH ('connector' = 'kafka', 'topic' = '{out}', 'properties.bootstrap.servers' = '{bootstrap}',
      'format' = 'json', 'sink.delivery-guarantee' = 'exactly-once');
INSERT INTO windows SELECT k, window_start, COUNT(*), SUM(v)
  FROM TABLE(TUMBLE(TABLE events, DESCRIPTOR(ts), INTERVAL '5' SECOND)) GROUP BY k, window_start, window_end;
CREATE TABLE totals (k BIGINT, n BIGINT, s BIGINT, PRIMARY KEY (k) NOT ENFORCED)
  WITH ('connector' = 'delta', 'path' = 'totals');
INSERT INTO totals SELECT k, COUNT(*), SUM(v) FROM events GROUP BY k;
"""
    )


# -- running the CLI --------------------------------------------------------------------------------------------


def kill_at_random(root: Path, rng: random.Random, *extra: str) -> int:
    """One run killed at a random instant once it has logged a new epoch (1 if it was still running then)."""
    offsets = root / "state" / "offsets"
    logged = len(list(offsets.glob("[0-9]*.json")))
    process = launch_run(root, *extra)
    deadline = time.monotonic() + 60
    while process.poll() is None and len(list(offsets.glob("[0-9]*.json"))) <= logged:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    time.sleep(rng.uniform(0, 0.6))  # somewhere in that epoch, or in one of the next
    killed = process.poll() is None
    if killed:
        os.kill(process.pid, signal.SIGKILL)
    _out, err = process.communicate(timeout=120)
    assert killed or process.returncode == 0, err.decode()[-2000:]
    return int(killed)


# -- input and oracle -------------------------------------------------------------------------------------------
class Topic:
    """A 4-partition topic filled in chunks; remembers each message's offset in its partition."""

    def __init__(self, kafka: Broker, messages: list[dict[str, Any]]) -> None:
        self.kafka = kafka
        self.name = kafka.create_topic(diff.PARTITIONS)
        self.messages = messages
        self.offsets: list[int] = []
        self.counters = dict.fromkeys(range(diff.PARTITIONS), 0)
        self.produced = 0

    def produce(self, count: int) -> None:
        chunk = self.messages[self.produced : self.produced + count]
        self.kafka.produce(self.name, [{k: m[k] for k in ("partition", "value", "key")} for m in chunk])
        for m in chunk:
            self.offsets.append(self.counters[m["partition"]])
            self.counters[m["partition"]] += 1
        self.produced += len(chunk)

    @property
    def done(self) -> bool:
        return self.produced >= len(self.messages)

    def oracle(self) -> dict[str, pl.DataFrame]:
        return diff.oracle(self.messages[: self.produced], self.offsets)

    def malformed(self) -> int:
        return sum(1 for m in self.messages[: self.produced] if m["row"] is None)


def window_rows(messages: list[Message]) -> list[tuple[int, str, int, int]]:
    rows = [json.loads(m.value) for m in messages if m.value is not None]
    return sorted((r["k"], r["ws"], r["n"], r["s"]) for r in rows)


def expected_windows(oracle: pl.DataFrame) -> list[tuple[int, str, int, int]]:
    # the JSON format writes TIMESTAMP(3) as Flink's SQL standard: 'yyyy-MM-dd HH:mm:ss.SSS'
    return sorted(
        (r["k"], r["ws"].strftime("%Y-%m-%d %H:%M:%S.%f")[:-3], r["n"], r["s"]) for r in oracle.iter_rows(named=True)
    )


def check_totals(root: Path, oracle: pl.DataFrame) -> None:
    totals = read_sink(root / "totals")
    assert sort_all(totals).to_dicts() == sort_all(oracle.cast(totals.schema)).to_dicts()  # type: ignore[arg-type]


def dead_letters(root: Path, source: str = "events") -> pl.DataFrame:
    return pl.read_delta(str(root / "state" / "dead_letters" / source))


#: the fault points a run with a Kafka source, an exactly-once Kafka sink and a keyed Delta sink reaches
RUN_POINTS = [
    "epoch.offsets-logged",
    "kafka.sink.produced",
    "operator.mid",
    "kafka.sink.committed",
    "sink.commit.during",
    "state.commit.during",
    "dead-letters.commit.after",
    "manifest.commit.before",
    "manifest.commit.after",
]
assert set(RUN_POINTS) <= set(faults.POINTS) | set(faults.KAFKA_POINTS)


# -- 1. kill -9 with a Kafka source and an exactly-once Kafka sink ---------------------------------------------
@pytest.mark.parametrize(("interval", "seed"), [("1 epochs", 31), ("3 epochs", 32)])
def test_kill_minus_nine_with_a_kafka_source_and_an_exactly_once_kafka_sink(
    tmp_path: Path, kafka: Broker, interval: str, seed: int
) -> None:
    """Messages arrive in chunks between runs; runs are killed at the named points (a random hit, so the kill
    lands in a later epoch, after replays of several epochs when checkpoints are 3 epochs apart) and at random
    instants; a last run finishes. The topic holds every window result once, as DuckDB computes them."""
    rng = random.Random(seed)
    source = Topic(kafka, diff.make_messages(seed, 240))
    out = kafka.create_topic(2)
    (tmp_path / "pipeline.sql").write_text(pipeline_a(source.name, out, kafka.bootstrap, interval))
    # every point once over the two variants: a bounded number of kills
    points = RUN_POINTS[:5] if interval == "1 epochs" else RUN_POINTS[5:]
    killed = 0
    for point in points:
        source.produce(30)
        killed += finish_run(tmp_path, "--max-epoch-rows", "8", crash_at=f"{point}:{rng.randint(1, 4)}") != 0
    at_random = 0
    for _ in range(2):
        source.produce(15)
        at_random += kill_at_random(tmp_path, rng, "--max-epoch-rows", "8")
    source.produce(len(source.messages))
    assert finish_run(tmp_path, "--max-epoch-rows", "8") == 0
    assert killed >= len(points) // 2 and at_random >= 1, (killed, at_random)

    expected = source.oracle()
    got = window_rows(kafka.read(out))
    assert [w for w, n in Counter((k, ws) for k, ws, _, _ in got).items() if n > 1] == []  # each window once
    assert got == expected_windows(expected["w"])
    check_totals(tmp_path, expected["totals"])
    dead = dead_letters(tmp_path)
    assert dead.height == source.malformed()
    assert dead.select("partition", "offset").unique().height == dead.height  # each malformed message once


# -- 4. an exactly-once Kafka sink feeding another pipeline's Kafka source -------------------------------------
def pipeline_b(topic: str, bootstrap: str) -> str:
    """Reads pipeline A's window results (read_committed, the default) and keeps per-key sums."""
    return f"""
CREATE TABLE results (k BIGINT, ws TIMESTAMP(3), n BIGINT, s BIGINT)
WITH ('connector' = 'kafka', 'topic' = '{topic}', 'properties.bootstrap.servers' = '{bootstrap}',
      'properties.group.id' = 'e2e-b', 'scan.startup.mode' = 'earliest-offset', 'format' = 'json');
CREATE TABLE copy (k BIGINT, ws TIMESTAMP(3), n BIGINT, s BIGINT) WITH ('connector' = 'delta', 'path' = 'copy');
INSERT INTO copy SELECT * FROM results;
CREATE TABLE per_k (k BIGINT, windows BIGINT, n BIGINT, s BIGINT, PRIMARY KEY (k) NOT ENFORCED)
  WITH ('connector' = 'delta', 'path' = 'per_k');
INSERT INTO per_k SELECT k, COUNT(*), SUM(n), SUM(s) FROM results GROUP BY k;
"""


def chain(tmp_path: Path, kafka: Broker, *b_flags: str, interleaved: bool) -> None:
    """Pipeline A writes its window results with transactions while being killed mid-transaction (aborted
    transactions stay in the topic); pipeline B reads that topic (between A's runs when `interleaved`, else
    once at the end). B's sinks equal DuckDB over A's logical output: never an aborted message, none missing."""
    source = Topic(kafka, diff.make_messages(41, 180))
    out = kafka.create_topic(2)
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    (a / "pipeline.sql").write_text(pipeline_a(source.name, out, kafka.bootstrap, "1 epochs"))
    (b / "pipeline.sql").write_text(pipeline_b(out, kafka.bootstrap))
    for point in ("kafka.sink.produced:1", "kafka.sink.produced:2"):
        source.produce(60)
        assert finish_run(a, "--max-epoch-rows", "10", crash_at=point) == -signal.SIGKILL
        if interleaved:  # B reads while A's killed transaction is still open, then after it was aborted
            assert finish_run(b, *b_flags) == 0
    source.produce(len(source.messages))
    assert finish_run(a, "--max-epoch-rows", "10") == 0
    assert finish_run(b, *b_flags) == 0

    assert len(kafka.read(out, committed=False)) > len(kafka.read(out))  # aborted messages are in the topic
    windows = source.oracle()["w"].select("k", "ws", "n", "s")
    assert window_rows(kafka.read(out)) == expected_windows(windows)  # A's logical output, as a consumer sees it
    copy = read_sink(b / "copy").with_columns(pl.col("ws").dt.replace_time_zone(None).dt.cast_time_unit("us"))
    assert sort_all(copy).to_dicts() == sort_all(windows.cast(copy.schema)).to_dicts()  # type: ignore[arg-type]
    per_k = read_sink(b / "per_k")
    expected = duck("SELECT k, count(*) AS windows, sum(n) AS n, sum(s) AS s FROM w GROUP BY k", w=windows)
    assert sort_all(per_k).to_dicts() == sort_all(expected.cast(per_k.schema)).to_dicts()  # type: ignore[arg-type]


def test_an_exactly_once_topic_feeds_another_pipeline(tmp_path: Path, kafka: Broker) -> None:
    """B reads A's finished topic in one slice from its first offset."""
    chain(tmp_path, kafka, interleaved=False)


NOIDA_QUIRK = (
    "noida-db 0.2.3 read_committed bug, not timelapse's: a read_committed fetch that starts at an offset after an "
    "aborted transaction of a transactional id hides every later COMMITTED message of that id (measured: txn "
    "aborted at offsets 0-1, committed at 3-4 and 6; a consumer assigned at offset 0-2 sees [3, 4, 6], assigned "
    "at 3 sees []). B's slices start after A's aborted epochs, so B misses A's later results."
)


# slow: an expected failure of the test broker's (~30 s), not of timelapse; the chain of an exactly-once topic into
# another pipeline is covered by test_an_exactly_once_topic_feeds_another_pipeline
@pytest.mark.slow
@pytest.mark.xfail(not os.environ.get("TIMELAPSE_TEST_KAFKA"), reason=NOIDA_QUIRK, strict=True)
def test_an_exactly_once_topic_feeds_another_pipeline_reading_between_its_runs(tmp_path: Path, kafka: Broker) -> None:
    """B reads between A's runs, in small epochs: its slices start after A's aborted transactions."""
    chain(tmp_path, kafka, "--max-epoch-rows", "7", interleaved=True)
