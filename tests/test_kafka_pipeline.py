"""Kafka in a whole pipeline, against DuckDB over the messages produced (an oracle that never reads timelapse).

JSON messages on 4 partitions, keys skewed towards a few hot ones, some late within their partition, some
malformed; three queries read them: a window aggregation, an unbounded GROUP BY upserted into Delta, and a
regular join with a file source. The sinks must equal the oracle for every epoch size and fetch size.

The oracle applies the documented rule (docs/sql.md, "Kafka"): a message's watermark is the running maximum
of its own partition's WATERMARK expression over the messages before it in that partition (offset order), so
whether it is late never depends on how partitions interleave into epochs or fetches; a window fires once the
minimum over the partitions' watermarks passes its end.
"""

from __future__ import annotations

import json
import random
import shutil
import tempfile
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.helpers import duck, examples, read_sink, run, sort_all, write_jsonl

BASE_MS = 1_767_225_600_000  # 2026-01-01 00:00:00 UTC
PARTITIONS = 4
DELAY_S = 3


def make_messages(seed: int, count: int) -> list[dict[str, Any]]:
    """Messages with a partition each; per partition mostly in order, some far behind, a few malformed."""
    rng = random.Random(seed)
    messages = []
    clock = dict.fromkeys(range(PARTITIONS), 0)
    for i in range(count):
        partition = rng.choice([0, 0, 1, 2, 3])  # partition 0 is busier
        clock[partition] += rng.randint(0, 1500)
        back = rng.randint(5_000, 20_000) if rng.random() < 0.15 else 0
        ts = BASE_MS + max(0, clock[partition] - back) + i  # distinct times: no ties in the oracle
        key = rng.choice([1, 1, 1, 1, 2, 2, 3, 4, 5, 6])  # skewed: key 1 is hot
        value: bytes
        if rng.random() < 0.05:
            value = rng.choice([b'{"k": 1, "v": "many", "ts": 5}', b"not json", b'{"k": 2, "v": 3}', b"\xff\xfe"])
            row = None
        else:
            row = {"k": key, "v": rng.randint(1, 9), "ts": ts}
            value = json.dumps(row).encode()
        messages.append({"partition": partition, "value": value, "row": row, "key": str(key)})
    return messages


def pipeline(topic: str, bootstrap: str, fetch_bytes: int | None) -> str:
    fetch = f", 'properties.max.partition.fetch.bytes' = '{fetch_bytes}'" if fetch_bytes else ""
    return f"""
    CREATE TABLE events (k BIGINT, v BIGINT, ts TIMESTAMP(3),
      part INT METADATA FROM 'partition' VIRTUAL, off BIGINT METADATA FROM 'offset' VIRTUAL,
      WATERMARK FOR ts AS ts - INTERVAL '{DELAY_S}' SECOND)
    WITH ('connector' = 'kafka', 'topic' = '{topic}', 'properties.bootstrap.servers' = '{bootstrap}',
          'properties.group.id' = 'differential', 'scan.startup.mode' = 'earliest-offset',
          'format' = 'json'{fetch});
    CREATE TABLE names (k BIGINT, name STRING) WITH ('connector' = 'filesystem', 'path' = 'names', 'format' = 'json');
    CREATE TABLE windows (k BIGINT, ws TIMESTAMP(3), n BIGINT, s BIGINT) WITH ('connector' = 'delta', 'path' = 'w');
    INSERT INTO windows SELECT k, window_start, COUNT(*), SUM(v)
      FROM TABLE(TUMBLE(TABLE events, DESCRIPTOR(ts), INTERVAL '5' SECOND)) GROUP BY k, window_start, window_end;
    CREATE TABLE totals (k BIGINT, n BIGINT, s BIGINT, PRIMARY KEY (k) NOT ENFORCED)
      WITH ('connector' = 'delta', 'path' = 'totals');
    INSERT INTO totals SELECT k, COUNT(*), SUM(v) FROM events GROUP BY k;
    CREATE TABLE named (part INT, off BIGINT, name STRING, v BIGINT, PRIMARY KEY (part, off) NOT ENFORCED)
      WITH ('connector' = 'delta', 'path' = 'named');
    INSERT INTO named SELECT e.part, e.off, n.name, e.v FROM events AS e JOIN names AS n ON e.k = n.k;
    """


def oracle(messages: list[dict[str, Any]], offsets: list[int]) -> dict[str, pl.DataFrame]:
    rows = [
        {**m["row"], "part": m["partition"], "off": off}
        for m, off in zip(messages, offsets, strict=True)
        if m["row"] is not None
    ]
    frame = pl.DataFrame(
        rows, schema={"k": pl.Int64, "v": pl.Int64, "ts": pl.Int64, "part": pl.Int64, "off": pl.Int64}
    ).with_columns(pl.col("ts").cast(pl.Datetime("ms")).dt.replace_time_zone("UTC"))
    marked = duck(
        f"""SELECT *, max(ts - INTERVAL {DELAY_S} SECOND) OVER (PARTITION BY part ORDER BY off
                   ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS wm,
                   max(ts - INTERVAL {DELAY_S} SECOND) OVER (PARTITION BY part) AS final_wm FROM m""",
        m=frame,
    )
    finals = marked.select("part", "final_wm").unique()
    # The source's watermark: the minimum over its partitions (each has messages in these inputs).
    final = finals.get_column("final_wm").min() if finals.height == PARTITIONS else None
    final_sql = "NULL" if final is None else f"TIMESTAMP '{final}'"
    windows = duck(
        f"""WITH w AS (SELECT *, time_bucket(INTERVAL 5 SECOND, ts) AS ws FROM m)
        SELECT k, ws, count(*) AS n, sum(v) AS s FROM w
        WHERE (wm IS NULL OR ws + INTERVAL 5 SECOND - INTERVAL 1 MILLISECOND > wm)
          AND ws + INTERVAL 5 SECOND - INTERVAL 1 MILLISECOND <= {final_sql}
        GROUP BY k, ws""",
        m=marked,
    )
    totals = duck("SELECT k, count(*) AS n, sum(v) AS s FROM m GROUP BY k", m=frame)
    named = duck(
        "SELECT m.part::INT AS part, m.off, n.name, m.v FROM m JOIN names AS n ON m.k = n.k",
        m=frame,
        names=NAMES,
    )
    return {"w": windows, "totals": totals, "named": named}


NAMES = pl.DataFrame({"k": [1, 2, 3, 4], "name": ["one", "two", "three", "four"]})


def produce(kafka: Any, messages: list[dict[str, Any]]) -> tuple[str, list[int]]:
    """A new 4-partition topic holding `messages`; each message's offset in its partition."""
    topic = kafka.create_topic(PARTITIONS)
    kafka.produce(topic, [{k: m[k] for k in ("partition", "value", "key")} for m in messages])
    counters = dict.fromkeys(range(PARTITIONS), 0)
    offsets = []
    for m in messages:
        offsets.append(counters[m["partition"]])
        counters[m["partition"]] += 1
    return topic, offsets


def check(workdir: Path, expected: dict[str, pl.DataFrame]) -> None:
    windows = read_sink(workdir / "w").with_columns(pl.col("ws").dt.replace_time_zone(None).dt.cast_time_unit("us"))
    assert sort_all(windows).to_dicts() == sort_all(expected["w"].cast(windows.schema)).to_dicts()  # type: ignore[arg-type]
    totals = read_sink(workdir / "totals")
    assert sort_all(totals).to_dicts() == sort_all(expected["totals"].cast(totals.schema)).to_dicts()  # type: ignore[arg-type]
    named = read_sink(workdir / "named")
    assert sort_all(named).to_dicts() == sort_all(expected["named"].cast(named.schema)).to_dicts()  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("max_rows", "fetch_bytes"),
    [
        (None, None),
        (7, None),
        (50, 300),
        # 100 epochs of 3 rows with tiny fetches (~50 s on CI): small epochs are covered by (7, None) and by
        # test_any_split_gives_the_oracle, small fetches by (50, 300)
        pytest.param(3, 120, marks=pytest.mark.slow),
    ],
)
def test_kafka_pipeline_equals_duckdb(
    tmp_path: Path, kafka: Any, max_rows: int | None, fetch_bytes: int | None
) -> None:
    messages = make_messages(seed=16, count=300)
    topic, offsets = produce(kafka, messages)
    write_jsonl(tmp_path / "names" / "1.json", NAMES.to_dicts())
    summary = run(tmp_path, pipeline(topic, kafka.bootstrap, fetch_bytes), max_epoch_rows=max_rows)
    check(tmp_path, oracle(messages, offsets))
    malformed = sum(1 for m in messages if m["row"] is None)
    dead = pl.read_delta(str(tmp_path / "state" / "dead_letters" / "events"))
    assert dead.height == malformed
    assert set(dead.columns) >= {"topic", "partition", "offset", "key", "raw_bytes", "reason"}
    assert summary["epochs"] >= 1


@settings(max_examples=examples(6), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 10_000), max_rows=st.one_of(st.none(), st.integers(1, 60)))
def test_any_split_gives_the_oracle(kafka: Any, seed: int, max_rows: int | None) -> None:
    messages = make_messages(seed, count=120)
    topic, offsets = produce(kafka, messages)
    workdir = Path(tempfile.mkdtemp())
    try:
        write_jsonl(workdir / "names" / "1.json", NAMES.to_dicts())
        run(workdir, pipeline(topic, kafka.bootstrap, None), max_epoch_rows=max_rows)
        check(workdir, oracle(messages, offsets))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
