"""Kafka in and out: throughput beside the file source on the same events, and end-to-end latency.

    python -m benchmarks.kafka [--events 1000000] [--repeat 3] [--latency-seconds 20] [--record]

Starts the test broker (noida-db, as the tests do; or TIMELAPSE_TEST_KAFKA=host:port for another broker) and
produces the same JSON events to a 4-partition topic and to a JSON-lines file. Then, alternating engines run by
run so that drift on the machine hits both alike:

- `filter`: source -> WHERE temperature > 30 -> Delta, for the Kafka and the file source;
- `window`: source -> TUMBLE(10 s) per sensor -> Kafka sink (exactly-once) for the Kafka source, and the same
  query into Delta for the file source;

each a `--once` run in a fresh state directory, 100k-message epochs. events/s is over wall time; events per CPU
second (the process's user + system time) is the per-core rate.

Latency: a producer writes events at a steady rate with their produce time in the value; the pipeline
(`--trigger 100ms`, Kafka source -> filter -> exactly-once Kafka sink) runs in another process; a read_committed
consumer takes, per message, the time it became visible minus its produce time. With a checkpoint every epoch
and with `'checkpoint.interval' = '10 epochs'`.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from benchmarks.record import record

SOURCES = {
    "kafka": """CREATE TABLE readings (sensor BIGINT, temperature DOUBLE, ts TIMESTAMP(3),
  WATERMARK FOR ts AS ts - INTERVAL '5' SECOND) WITH ('connector' = 'kafka', 'topic' = '{topic}',
  'properties.bootstrap.servers' = '{bootstrap}', 'scan.startup.mode' = 'earliest-offset', 'format' = 'json');""",
    "file": """CREATE TABLE readings (sensor BIGINT, temperature DOUBLE, ts TIMESTAMP(3),
  WATERMARK FOR ts AS ts - INTERVAL '5' SECOND) WITH ('connector' = 'filesystem', 'path' = '{events}',
  'format' = 'json');""",
}
FILTER = """CREATE TABLE hot (sensor BIGINT, temperature DOUBLE, ts TIMESTAMP(3))
  WITH ('connector' = 'delta', 'path' = '{root}/hot');
INSERT INTO hot SELECT sensor, temperature, ts FROM readings WHERE temperature > 30;"""
WINDOW_SINKS = {
    "kafka": """CREATE TABLE per_window (sensor BIGINT, window_start TIMESTAMP(3), n BIGINT, total DOUBLE)
  WITH ('connector' = 'kafka', 'topic' = '{out_topic}', 'properties.bootstrap.servers' = '{bootstrap}',
  'format' = 'json', 'sink.delivery-guarantee' = 'exactly-once');""",
    "file": """CREATE TABLE per_window (sensor BIGINT, window_start TIMESTAMP(3), n BIGINT, total DOUBLE)
  WITH ('connector' = 'delta', 'path' = '{root}/per_window');""",
}
WINDOW = """INSERT INTO per_window SELECT sensor, window_start, COUNT(*), SUM(temperature)
FROM TABLE(TUMBLE(TABLE readings, DESCRIPTOR(ts), INTERVAL '10' SECOND)) GROUP BY sensor, window_start, window_end;"""

LATENCY_SQL = """{checkpoint}
CREATE TABLE readings (sensor BIGINT, temperature DOUBLE, produced_ms BIGINT) WITH ('connector' = 'kafka',
  'topic' = '{topic}', 'properties.bootstrap.servers' = '{bootstrap}', 'scan.startup.mode' = 'earliest-offset',
  'format' = 'json');
CREATE TABLE hot (sensor BIGINT, temperature DOUBLE, produced_ms BIGINT) WITH ('connector' = 'kafka',
  'topic' = '{out_topic}', 'properties.bootstrap.servers' = '{bootstrap}', 'format' = 'json',
  'sink.delivery-guarantee' = 'exactly-once');
INSERT INTO hot SELECT sensor, temperature, produced_ms FROM readings WHERE temperature > 0;
"""


def events(count: int) -> list[bytes]:
    """`count` readings of 1,000 sensors, one per 10 ms of event time, as JSON values (a few percent late)."""
    out = []
    for i in range(count):
        ts = 1_700_000_000_000 + i * 10 - (3_000 if i % 37 == 0 else 0)
        temperature = (i * 7919) % 500 / 10
        out.append(b'{"sensor":%d,"temperature":%.1f,"ts":%d}' % (i * 2654435761 % 1000, temperature, ts))
    return out


def run_once(sql: str, root: Path, max_rows: int) -> dict[str, Any]:
    """A `--once` run of `sql` in its own process (fresh interpreter, so runs do not share caches)."""
    script = root / "pipeline.sql"
    script.write_text(sql)
    code = (
        "import json, os, sys, time; from pathlib import Path; from engine.runner import Runner, RunOptions;"
        "from sql import plan_script;"
        f"plan = plan_script(Path({str(script)!r}).read_text()); r = Runner(plan, Path({str(root / 'state')!r}),"
        f" Path({str(root)!r})); t = os.times(); w = time.perf_counter();"
        f"s = r.run(RunOptions(once=True, trigger_seconds=0, max_epoch_rows={max_rows})); r.close();"
        "u = os.times(); print(json.dumps({'wall_s': time.perf_counter() - w,"
        " 'cpu_s': (u.user - t.user) + (u.system - t.system), 'epochs': s.epochs}))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def throughput(broker: Any, count: int, repeat: int, work: Path) -> list[dict[str, Any]]:
    values = events(count)
    topic = broker.create_topic(4)
    broker.produce(topic, [{"value": v, "partition": i % 4} for i, v in enumerate(values)])
    events_file = work / "events" / "readings.json"
    events_file.parent.mkdir()
    events_file.write_bytes(b"\n".join(values) + b"\n")
    rows: list[dict[str, Any]] = []
    for query in ("filter", "window"):
        runs: dict[str, list[dict[str, Any]]] = {"kafka": [], "file": []}
        for attempt in range(repeat):
            for engine in ("kafka", "file") if attempt % 2 == 0 else ("file", "kafka"):
                root = work / f"{query}-{engine}-{attempt}"
                root.mkdir()
                out_topic = broker.create_topic(4) if query == "window" and engine == "kafka" else ""
                sql = SOURCES[engine] + "\n" + (FILTER if query == "filter" else WINDOW_SINKS[engine] + "\n" + WINDOW)
                sql = sql.format(
                    topic=topic, bootstrap=broker.bootstrap, events=events_file, root=root, out_topic=out_topic
                )
                runs[engine].append(run_once(sql, root, 100_000))
        for engine, measured in runs.items():
            rates = [count / m["wall_s"] for m in measured]
            per_cpu = [count / m["cpu_s"] for m in measured]
            rows.append(
                {
                    "benchmark": "kafka-throughput",
                    "query": query,
                    "source": engine,
                    "sink": "kafka (exactly-once)" if query == "window" and engine == "kafka" else "delta",
                    "events": count,
                    "events_per_s_median": round(statistics.median(rates)),
                    "events_per_s_range": [round(min(rates)), round(max(rates))],
                    "events_per_cpu_s_median": round(statistics.median(per_cpu)),
                    "runs": repeat,
                }
            )
    return rows


def latency(broker: Any, seconds: float, rate: int, checkpoint: str | None, work: Path) -> dict[str, Any]:
    topic, out_topic = broker.create_topic(4), broker.create_topic(4)
    root = work / f"latency-{checkpoint or 'every-epoch'}".replace(" ", "-")
    root.mkdir()
    setting = f"SET 'checkpoint.interval' = '{checkpoint}';" if checkpoint else ""
    script = root / "pipeline.sql"
    script.write_text(
        LATENCY_SQL.format(checkpoint=setting, topic=topic, out_topic=out_topic, bootstrap=broker.bootstrap)
    )
    pipeline = subprocess.Popen(
        [sys.executable, "-m", "engine.cli", "run", str(script), "--state", str(root / "state"), "--trigger", "100ms"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    seen: list[float] = []
    stop = threading.Event()
    consumer_thread = threading.Thread(target=_consume_latencies, args=(broker, out_topic, seen, stop))
    consumer_thread.start()
    try:
        time.sleep(3)  # the pipeline's start-up (imports, broker metadata) is not latency
        _produce_steadily(broker, topic, seconds, rate)
        time.sleep(3)
    finally:
        pipeline.terminate()
        pipeline.wait(30)
        stop.set()
        consumer_thread.join(30)
    ordered = sorted(seen)
    return {
        "benchmark": "kafka-latency",
        "checkpoint": checkpoint or "every epoch",
        "trigger": "100ms",
        "messages": len(ordered),
        "rate_per_s": rate,
        "p50_ms": round(statistics.median(ordered), 1) if ordered else None,
        "p99_ms": round(ordered[max(0, int(len(ordered) * 0.99) - 1)], 1) if ordered else None,
        "max_ms": round(ordered[-1], 1) if ordered else None,
    }


def _produce_steadily(broker: Any, topic: str, seconds: float, rate: int) -> None:
    from confluent_kafka import Producer

    producer = Producer(broker.config(**{"linger.ms": 1}))
    started = time.time()
    i = 0
    while time.time() - started < seconds:
        due = started + i / rate
        if (wait := due - time.time()) > 0:
            time.sleep(wait)
        now_ms = int(time.time() * 1000)
        producer.produce(topic, b'{"sensor":%d,"temperature":%d,"produced_ms":%d}' % (i % 100, 1 + i % 40, now_ms))
        producer.poll(0)
        i += 1
    producer.flush(30)


def _consume_latencies(broker: Any, topic: str, seen: list[float], stop: threading.Event) -> None:
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer(
        broker.config(
            **{
                "group.id": "latency",
                "isolation.level": "read_committed",
                "enable.auto.commit": False,
                "fetch.wait.max.ms": 5,
            }
        )
    )
    consumer.assign([TopicPartition(topic, p, 0) for p in range(4)])
    while not stop.is_set():
        for message in consumer.consume(500, 0.05):
            if message.error() is None:
                produced = json.loads(message.value())["produced_ms"]
                seen.append(time.time() * 1000 - produced)
    consumer.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--latency-seconds", type=float, default=20)
    parser.add_argument("--latency-rate", type=int, default=2000, help="messages per second")
    parser.add_argument("--record", action="store_true")
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from tests.kafka_broker import running_broker

    os.environ.setdefault("POLARS_MAX_THREADS", "2")
    with tempfile.TemporaryDirectory() as tmp, running_broker(Path(tmp)) as broker:
        work = Path(tmp) / "work"
        work.mkdir()
        rows = throughput(broker, args.events, args.repeat, work)
        for checkpoint in (None, "10 epochs"):
            rows.append(latency(broker, args.latency_seconds, args.latency_rate, checkpoint, work))
    for row in rows:
        print(json.dumps(row))
    if args.record:
        stamp = time.strftime("%Y-%m-%d")
        record("kafka", [{**row, "date": stamp} for row in rows])


if __name__ == "__main__":
    main()
