"""Crash a real `timelapse run` with SIGKILL at named fault points, restart it, repeat; then check the result.

The pipeline holds the three kinds of state the issue names: a TUMBLE window aggregation (appended to `out`),
an upsert GROUP BY (`totals`, by primary key) and a FULL JOIN (`joined`, by primary key). Input arrives in
chunks, like a live stream: before every crashing run a new chunk of files lands in the source directories,
with a few malformed records among the events. At the end every sink is compared with DuckDB over all the
input, the dead letters are counted (each bad record exactly once), and the state of every operator is
compared with the state of an uninterrupted run over the same input.

    python -m tests.crash_harness --crashes 300 --seed 1      # the soak: random points, random hit counts

CI runs `tests/test_fault_injection.py`: every point at least once.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl
from polars.testing import assert_frame_equal

from engine import faults
from tests import test_joins as joins
from tests import test_windows as windows
from tests.helpers import duck, read_sink, sort_all, write_jsonl

#: points reached by `timelapse run`; the others are reached by savepoint and rollback commands
RUN_POINTS = [p for p in faults.POINTS if not p.startswith(("rollback.", "savepoint."))]
VERSIONING_POINTS = [p for p in faults.POINTS if p.startswith(("rollback.", "savepoint."))]

SQL = (
    """
SET 'checkpoint.interval' = '{interval}';
SET 'checkpoint.retention.count' = '3';
"""
    + windows.SOURCE
    + windows.SINK
    # The join's inputs carry no watermark, so the window's firing depends on the events alone (as the oracle's).
    + joins.SOURCES.replace(",\n  WATERMARK FOR ts AS ts - INTERVAL '5' SECOND)", ")")
    + """
CREATE TABLE totals (k STRING, n BIGINT, s BIGINT, PRIMARY KEY (k) NOT ENFORCED)
WITH ('connector' = 'delta', 'path' = 'totals');
CREATE TABLE joined (oid BIGINT, pid BIGINT, amount INT, paid INT, PRIMARY KEY (oid, pid) NOT ENFORCED)
WITH ('connector' = 'delta', 'path' = 'joined');
INSERT INTO totals SELECT k, COUNT(*), SUM(v) FROM events GROUP BY k;
INSERT INTO joined SELECT o.id, p.id, o.amount, p.paid FROM orders o FULL JOIN payments p ON o.cust = p.cust;
"""
    + windows.tvf_query(windows.WINDOWS["tumble"][0])
)

BAD_LINES = ['{"seq": 1, "k": "a", "v": ', '{"seq": "x", "k": "a", "v": 1, "ts": 0}']
SINKS = ("out", "totals", "joined")
ENV = {"TIMELAPSE_COMPACT_MIN_ROWS": "40"}  # compaction happens with little data, so its points are reached


@dataclass
class Stream:
    """The input of one pipeline, delivered in chunks."""

    root: Path
    seed: int
    chunks: int
    events: list[dict[str, object]] = field(default_factory=list)
    orders: list[dict[str, object]] = field(default_factory=list)
    payments: list[dict[str, object]] = field(default_factory=list)
    delivered: int = 0
    interval: str = "1 epochs"
    #: an object-store prefix (`s3://bucket/p`) holding the state directory and the Delta sinks; None: local
    remote: str | None = None
    #: whether the Delta sinks are under `remote` too (else local, beside the SQL)
    remote_sinks: bool = True

    @property
    def state(self) -> str:
        """The state directory as `timelapse` is given it (relative to `root`, or a URI)."""
        return f"{self.remote}/state" if self.remote else "state"

    def sink(self, name: str) -> str:
        """Where a Delta sink lives (relative to `root`, or a URI)."""
        return f"{self.remote}/{name}" if self.remote and self.remote_sinks else name

    def at(self, where: str) -> str:
        """A path as a reader in this process names it."""
        return where if "://" in where else str(self.root / where)

    def __post_init__(self) -> None:
        self.events = windows.make_rows(self.seed, 40 * self.chunks)
        self.orders = joins.make(self.seed + 1, 8 * self.chunks, 0)
        self.payments = joins.make(self.seed + 2, 8 * self.chunks, 100_000)

    def setup(self, interval: str) -> None:
        self.interval = interval
        self.root.mkdir(parents=True, exist_ok=True)
        sql = SQL.format(interval=interval)
        for name in SINKS:
            sql = sql.replace(f"'path' = '{name}'", f"'path' = '{self.sink(name)}'")
        (self.root / "pipeline.sql").write_text(sql)
        for name in ("in", "orders", "payments"):
            (self.root / name).mkdir(exist_ok=True)

    def deliver(self) -> bool:
        """Land the next chunk of files; False when everything has been delivered."""
        if self.delivered >= self.chunks:
            return False
        i = self.delivered
        write_jsonl(self.root / "in" / f"part-{i:04d}.json", self.events[40 * i : 40 * (i + 1)], BAD_LINES)
        for name, rows, other in (("orders", self.orders, "paid"), ("payments", self.payments, "amount")):
            chunk = [{k: v for k, v in r.items() if k != other} for r in rows[8 * i : 8 * (i + 1)]]
            write_jsonl(self.root / name / f"part-{i:04d}.json", chunk)
        self.delivered += 1
        return True

    def deliver_all(self) -> None:
        while self.deliver():
            pass


def timelapse(root: Path, args: list[str], crash_at: str | None = None) -> int:
    """One `timelapse` command in `root`, armed to crash at `crash_at`; returns its exit status (-9 when the
    armed point killed it). Any other failure fails the test."""
    env = {k: v for k, v in os.environ.items() if k != "TIMELAPSE_CRASH_AT"} | ENV
    if crash_at:
        env["TIMELAPSE_CRASH_AT"] = crash_at
    process = subprocess.run(
        [sys.executable, "-m", "engine.cli", *args], cwd=root, env=env, capture_output=True, timeout=300
    )
    if process.returncode not in (0, -signal.SIGKILL):
        raise AssertionError(f"{args[0]} failed ({process.returncode}): {process.stderr.decode()[-2000:]}")
    return process.returncode


def run_pipeline(root: Path, crash_at: str | None = None, *extra: str, max_rows: int = 10, state: str = "state") -> int:
    """One `timelapse run --once` (`state`: the state directory, relative to `root` or a URI)."""
    args = ["run", "pipeline.sql", "--state", state, "--once", "--max-epoch-rows", str(max_rows), "--quiet", *extra]
    return timelapse(root, args, crash_at)


# -- checking ---------------------------------------------------------------------------------
def oracle(stream: Stream) -> dict[str, pl.DataFrame]:
    return {
        "out": windows.oracle_window(stream.events, windows.WINDOWS["tumble"][1]),
        "totals": duck("SELECT k, count(*) AS n, sum(v) AS s FROM src GROUP BY k", src=windows.frame(stream.events)),
        "joined": duck(
            "SELECT o.id AS oid, p.id AS pid, o.amount, p.paid FROM o FULL JOIN p ON o.cust = p.cust",
            o=joins.frame(stream.orders),
            p=joins.frame(stream.payments),
        ),
    }


def check_sinks(stream: Stream) -> int:
    """Compare every sink with DuckDB; returns how many sink rows were compared."""
    expected = oracle(stream)
    windows.assert_same(windows.naive(read_sink(stream.at(stream.sink("out")))), expected["out"])
    for name in ("totals", "joined"):
        actual = read_sink(stream.at(stream.sink(name)))
        assert_frame_equal(sort_all(actual), sort_all(expected[name]), check_dtypes=False)
    dead = pl.read_delta(f"{stream.at(stream.state)}/dead_letters/events")
    assert dead.height == len(BAD_LINES) * stream.chunks, f"{dead.height} dead letters"
    assert dead.select("file", "position").n_unique() == dead.height  # none twice
    return sum(frame.height for frame in expected.values()) + dead.height


def final_state(state: str) -> dict[str, pl.DataFrame]:
    import engine

    history = engine.open(state)
    row = history.row()
    names = [t["name"] for t in row["tables"] if t["role"] == "state"]
    return {name: sort_all(history.state(name)) for name in names}


def check_state(stream: Stream, scratch: Path) -> None:
    """Every operator's state equals an uninterrupted run's (made in `scratch`); the GROUP BY's equals DuckDB's."""
    reference = reference_run(scratch / "reference", stream.seed, stream.chunks, stream.interval)
    actual, expected = final_state(stream.at(stream.state)), final_state(reference.at(reference.state))
    assert sorted(actual) == sorted(expected)
    for name, frame in expected.items():
        assert_frame_equal(actual[name], frame, check_dtypes=False, check_column_order=False)
    counts = duck("SELECT k, count(*) AS n FROM src GROUP BY k", src=windows.frame(stream.events))
    group_by = next(f for name, f in actual.items() if name.startswith("group-agg"))
    assert_frame_equal(
        sort_all(group_by.select("k", pl.col("count__count").alias("n"))), sort_all(counts), check_dtypes=False
    )


def finish_and_check(stream: Stream, scratch: Path) -> int:
    """Deliver the rest of the input and run to the end; then check sinks and state. Returns sink rows compared."""
    stream.deliver_all()
    run_pipeline(stream.root, state=stream.state)
    rows = check_sinks(stream)
    check_state(stream, scratch)
    return rows


#: uninterrupted runs already made in this process, by (seed, chunks, interval): tests that crash the same input
#: in different ways compare with one reference (it is only read)
_REFERENCES: dict[tuple[int, int, str], Stream] = {}


def reference_run(root: Path, seed: int, chunks: int, interval: str) -> Stream:
    made = _REFERENCES.get((seed, chunks, interval))
    if made is not None and (made.root / "state" / "manifest").exists():
        return made
    stream = Stream(root, seed, chunks)
    stream.setup(interval)
    stream.deliver_all()
    run_pipeline(root)
    _REFERENCES[(seed, chunks, interval)] = stream
    return stream


# -- the soak ---------------------------------------------------------------------------------
@dataclass
class Tally:
    attempts: int = 0
    crashes: int = 0
    by_point: dict[str, int] = field(default_factory=dict)
    pipelines: int = 0
    bad_records: int = 0
    rows_compared: int = 0

    def landed(self, point: str) -> None:
        self.crashes += 1
        self.by_point[point] = self.by_point.get(point, 0) + 1


def crash_pipeline(root: Path, seed: int, crashes: int, tally: Tally, chunks: int = 12) -> None:
    """One pipeline: `crashes` crashing runs at random points (new input before each), then run to the end."""
    rng = random.Random(seed)
    interval = rng.choice(["1 epochs", "3 epochs", "200 ms"])
    stream = Stream(root / "crashed", seed, chunks)
    stream.setup(interval)
    for attempt in range(crashes):
        stream.deliver()
        if rng.random() < 0.1 and last_epoch(stream.root) is not None:
            point = rng.choice(VERSIONING_POINTS)
            killed = crash_versioning(stream.root, point, attempt)
        else:
            point = rng.choice(RUN_POINTS)
            killed = run_pipeline(stream.root, f"{point}:{rng.randint(1, 6)}") == -signal.SIGKILL
        tally.attempts += 1
        if killed:
            tally.landed(point)
    tally.rows_compared += finish_and_check(stream, root)
    assert timelapse(stream.root, ["verify", "state"]) == 0
    tally.pipelines += 1
    tally.bad_records += len(BAD_LINES) * chunks


def crash_versioning(root: Path, point: str, attempt: int) -> bool:
    """A savepoint, or a rollback to one, killed at `point`; afterwards the directory must still be usable.

    A rollback replays the epochs after the savepoint with new epoch numbers; the sinks end up the same.
    """
    name = f"sp{attempt}"
    epoch = last_epoch(root)
    if epoch is None:
        return False  # nothing committed yet: nothing to name
    create = ["savepoint", "create", "state", "--name", name, "--epoch", str(epoch)]
    if point.startswith("savepoint."):
        return timelapse(root, create, point) == -signal.SIGKILL
    timelapse(root, create)
    run_pipeline(root)  # move past the savepoint, so the rollback has something to undo
    status = timelapse(root, ["rollback", "state", "--savepoint", name, "--reason", "crash test"], point)
    return status == -signal.SIGKILL


def last_epoch(root: Path) -> int | None:
    """The newest committed epoch (after a rollback too), or None."""
    manifest = root / "state" / "manifest"
    if not manifest.exists():
        return None
    epochs = pl.read_delta(str(manifest)).filter(pl.col("kind") == "epoch")
    return None if epochs.is_empty() else int(epochs.get_column("epoch").max())  # type: ignore[arg-type]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--crashes", type=int, default=300, help="crashing runs in all")
    parser.add_argument("--per-pipeline", type=int, default=10, help="crashing runs per pipeline")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--dir", type=Path, default=None, help="work directory (default: a temporary one)")
    parser.add_argument("--record", action="store_true", help="append the result to benchmarks/results/")
    args = parser.parse_args()
    import tempfile

    started = time.perf_counter()
    tally = Tally()
    with tempfile.TemporaryDirectory() as scratch:
        base = args.dir or Path(scratch)
        index = 0
        while tally.attempts < args.crashes:
            crash_pipeline(base / f"p{index}", args.seed * 1000 + index, args.per_pipeline, tally)
            index += 1
            print(json.dumps({"pipelines": tally.pipelines, "attempts": tally.attempts, "crashes": tally.crashes}))
    result = {
        "attempts": tally.attempts,
        "crashes_survived": tally.crashes,
        "pipelines_checked": tally.pipelines,
        "bad_records": tally.bad_records,
        "sink_rows_compared": tally.rows_compared,
        "points": dict(sorted(tally.by_point.items())),
        "lost_or_duplicated_rows": 0,  # every pipeline above passed its oracle checks
        "elapsed_s": round(time.perf_counter() - started, 1),
    }
    print(json.dumps(result, indent=1))
    if args.record:
        from benchmarks.record import record

        record(
            "crash_soak", [{"benchmark": "crash-soak", "date": time.strftime("%Y-%m-%d"), "seed": args.seed, **result}]
        )


if __name__ == "__main__":
    main()
