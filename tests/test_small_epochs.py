"""Small epochs under a checkpoint policy: Delta sinks commit at checkpoints, once for the epochs since the last
one, and stay exactly-once whatever the instant of a kill -9 (tests/crash_harness.py: a TUMBLE aggregation, an
upsert GROUP BY and a FULL JOIN upserted by key, compared with DuckDB and with an uninterrupted run's state)."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import polars as pl
from deltalake import DeltaTable

from tests import crash_harness as harness


def sink_epochs(stream: harness.Stream, name: str) -> list[int]:
    """The epochs a Delta sink's commits name (its marker's epoch), oldest first."""
    history = DeltaTable(stream.at(stream.sink(name))).history()
    return sorted(int(c["timelapse.epoch"]) for c in history if "timelapse.epoch" in c)


def manifest_epochs(stream: harness.Stream) -> set[int]:
    manifest = pl.read_delta(stream.at(f"{stream.state}/manifest")).filter(pl.col("kind") == "epoch")
    return set(manifest.get_column("epoch").to_list())


def test_sinks_commit_once_per_checkpoint_and_equal_duckdb(tmp_path: Path) -> None:
    stream = harness.Stream(tmp_path / "run", seed=31, chunks=3)
    stream.setup("4 epochs")
    stream.deliver_all()
    harness.run_pipeline(stream.root, max_rows=3)
    last = max(manifest_epochs(stream))
    assert last >= 12
    for name in harness.SINKS:
        epochs = sink_epochs(stream, name)
        # One commit at most per checkpoint (epochs 1-4, 5-8, ...), marked with the last epoch that gave rows.
        intervals = [(epoch - 1) // 4 for epoch in epochs]
        assert epochs and len(intervals) == len(set(intervals)) and max(epochs) <= last, (name, epochs)
    harness.check_sinks(stream)
    harness.check_state(stream, tmp_path)


def test_a_sink_flushed_past_the_checkpoint_is_not_written_twice_by_a_replay_that_checkpoints_elsewhere(
    tmp_path: Path,
) -> None:
    """Run 1 flushes its sinks for epochs 1-5 (a checkpoint every 5) and dies before the manifest row: the last
    checkpoint names none of them. Run 2 checkpoints every 2 epochs: it replays 1-5, whose rows the sinks hold
    (written once, with epoch 5's marker), so its checkpoints at 2 and 4 write nothing and 6 on are new."""
    stream = harness.Stream(tmp_path / "crashed", seed=32, chunks=3)
    stream.setup("5 epochs")
    stream.deliver_all()
    assert harness.run_pipeline(stream.root, "manifest.commit.before", max_rows=2) == -signal.SIGKILL
    assert not (tmp_path / "crashed" / "state" / "manifest").exists() or not manifest_epochs(stream)
    held = sink_epochs(stream, "totals")
    assert held == [5]
    # One sink flushed, the next killed inside its commit (data files written, no log entry).
    status = harness.run_pipeline(stream.root, "sink.commit.during:2", "--checkpoint-interval", "2 epochs", max_rows=2)
    assert status == -signal.SIGKILL
    harness.run_pipeline(stream.root, None, "--checkpoint-interval", "3 epochs", max_rows=1)
    for name in harness.SINKS:
        epochs = sink_epochs(stream, name)
        assert len(epochs) == len(set(epochs)), (name, epochs)
    harness.check_sinks(stream)


def test_kill_9_at_random_instants_with_small_epochs_and_a_checkpoint_policy(tmp_path: Path) -> None:
    """SIGKILL at a random instant of each run (no fault point: wherever the run is), small epochs, a checkpoint
    every 3 epochs; then the run to the end equals DuckDB and an uninterrupted run's state."""
    rng = random.Random(33)
    stream = harness.Stream(tmp_path / "crashed", seed=33, chunks=6)
    stream.setup("3 epochs")
    env = {k: v for k, v in os.environ.items() if k != "TIMELAPSE_CRASH_AT"} | harness.ENV
    command = [sys.executable, "-m", "engine.cli", "run", "pipeline.sql", "--state", "state", "--once", "--quiet"]
    kills = 0
    for _ in range(6):
        stream.deliver()
        process = subprocess.Popen(
            [*command, "--max-epoch-rows", str(rng.choice([1, 2, 5]))],
            cwd=stream.root,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            process.wait(timeout=rng.uniform(1.5, 4.0))  # imports take about a second
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGKILL)
            kills += 1
        _out, err = process.communicate(timeout=120)
        assert process.returncode in (0, -signal.SIGKILL), err.decode()[-2000:]
    assert kills >= 2
    harness.finish_and_check(stream, tmp_path)


def test_large_commits_keep_the_last_change_per_key(tmp_path: Path) -> None:
    """Checkpoints of more than 10k staged rows (engine.state_store.last_per_key): one of keys all distinct, and
    ones where keys changed in several epochs since the checkpoint; the state and the upsert sink equal DuckDB."""
    import engine
    from tests.helpers import duck, read_sink, run, sort_all, write_jsonl

    rows = [{"k": i if i < 12_000 else i % 3_000, "v": i % 7} for i in range(24_000)]
    write_jsonl(tmp_path / "in" / "a.json", rows[:12_000])
    write_jsonl(tmp_path / "in" / "b.json", rows[12_000:])
    sql = """
CREATE TABLE src (k BIGINT, v BIGINT) WITH ('connector' = 'filesystem', 'path' = 'in', 'format' = 'json');
CREATE TABLE totals (k BIGINT, n BIGINT, s BIGINT, PRIMARY KEY (k) NOT ENFORCED)
WITH ('connector' = 'delta', 'path' = 'totals');
INSERT INTO totals SELECT k, COUNT(*), SUM(v) FROM src GROUP BY k;
"""
    run(tmp_path, sql, max_epoch_rows=12_000, checkpoint_interval="1 epochs")  # 12k distinct keys in one commit
    write_jsonl(tmp_path / "in" / "c.json", rows)
    run(tmp_path, sql, max_epoch_rows=4_000, checkpoint_interval="6 epochs")  # keys changed in several epochs
    source = pl.DataFrame([*rows, *rows], schema={"k": pl.Int64, "v": pl.Int64})
    expected = sort_all(duck("SELECT k, count(*) AS n, sum(v) AS s FROM src GROUP BY k", src=source))
    assert read_sink(tmp_path / "totals").sort("k").equals(expected)
    history = engine.open(tmp_path / "state")
    state = next(history.state(t["name"]) for t in history.row()["tables"] if t["role"] == "state")
    assert state.height == expected.height
    assert sort_all(state.select("k", pl.col("count__count").alias("n"))).equals(expected.select("k", "n"))
