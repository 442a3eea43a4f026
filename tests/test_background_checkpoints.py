"""Checkpoints written in the background (engine/checkpoints.py): taken between two epochs, written while the
next ones run. The tables must be those of checkpoints written inline, the sinks exactly-once after a kill -9
inside a background write, a failed write reported as a one-line error, and a sink's early flush (a full
buffer) must not overtake the epochs a background write still holds."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
from deltalake import DeltaTable
from polars.testing import assert_frame_equal

from tests import crash_harness as harness
from tests.helpers import duck, read_sink, sort_all, write_jsonl


def cli(root: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[bytes]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("TIMELAPSE_CRASH_AT", "TIMELAPSE_FAIL_AT"))}
    return subprocess.run(
        [sys.executable, "-m", "engine.cli", *args],
        cwd=root,
        env=base | harness.ENV | (env or {}),
        capture_output=True,
        timeout=300,
    )


def manifest(stream: harness.Stream) -> pl.DataFrame:
    rows = pl.read_delta(stream.at(f"{stream.state}/manifest")).filter(pl.col("kind") == "epoch")
    return rows.sort("epoch")


def test_background_and_inline_checkpoints_commit_the_same_epochs_and_tables(tmp_path: Path) -> None:
    runs = {}
    for written in ("background", "inline"):
        stream = harness.Stream(tmp_path / written, seed=41, chunks=3)
        stream.setup("3 epochs")
        stream.deliver_all()
        env = {"TIMELAPSE_INLINE_CHECKPOINTS": "1"} if written == "inline" else {}
        args = ("run", "pipeline.sql", "--state", "state", "--once", "--max-epoch-rows", "3", "--quiet")
        done = cli(stream.root, *args, env=env)
        assert done.returncode == 0, done.stderr.decode()[-2000:]
        harness.check_sinks(stream)
        runs[written] = stream
    background, inline = manifest(runs["background"]), manifest(runs["inline"])
    assert background.get_column("epoch").to_list() == inline.get_column("epoch").to_list()
    # An epoch that ran but was not a checkpoint is named as such, with the checkpoints around it.
    kept = sorted(inline.get_column("epoch").to_list())[-2:]  # two retained checkpoints, 3 epochs apart
    between = kept[0] + 1
    refused = cli(runs["inline"].root, "savepoint", "create", "state", "--name", "x", "--epoch", str(between))
    message = refused.stderr.decode()
    assert refused.returncode == 2 and f"epoch {between} is not a checkpoint" in message
    assert f"the nearest: epochs {kept[0]} and {kept[1]}" in message
    first, second = (harness.final_state(s.at(s.state)) for s in (runs["background"], runs["inline"]))
    assert sorted(first) == sorted(second)
    for name, frame in second.items():
        assert_frame_equal(first[name], frame, check_dtypes=False, check_column_order=False)


@pytest.mark.parametrize("point", ["state.commit.during:2", "manifest.commit.before:2"])
def test_kill_9_inside_a_background_write_then_restart_is_exactly_once(tmp_path: Path, point: str) -> None:
    """The kill lands in the checkpoint thread while the next epoch may be running in the main one."""
    stream = harness.Stream(tmp_path / "run", seed=42, chunks=4)
    stream.setup("2 epochs")
    stream.deliver_all()
    assert harness.run_pipeline(stream.root, point, max_rows=2) == -signal.SIGKILL
    harness.run_pipeline(stream.root, max_rows=2)
    harness.check_sinks(stream)
    harness.check_state(stream, tmp_path)


def test_a_failed_background_write_is_one_line_and_a_restart_finishes(tmp_path: Path) -> None:
    stream = harness.Stream(tmp_path / "run", seed=43, chunks=3)
    stream.setup("1 epochs")
    stream.deliver_all()
    args = ("run", "pipeline.sql", "--state", "state", "--once", "--max-epoch-rows", "2")
    failed = cli(stream.root, *args, env={"TIMELAPSE_FAIL_AT": "state.commit.before:3"})
    err = failed.stderr.decode()
    assert failed.returncode == 5, err[-2000:]
    assert "No space left on device" in err and "Traceback" not in err
    done = cli(stream.root, *args[:-1], "50", "--quiet")  # the rest in larger epochs: results do not depend on them
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    harness.check_sinks(stream)


@pytest.mark.parametrize("flush_bytes", [1, 2_000])
def test_an_early_sink_flush_waits_for_the_epochs_a_background_write_holds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, flush_bytes: int
) -> None:
    """A sink flushes early when its buffer is full (`FLUSH_BYTES`, small here so that it happens between two
    checkpoints): the epochs it writes are later than those a background write holds, and must land after them."""
    from engine.sinks import delta as delta_sink
    from tests.helpers import run

    monkeypatch.setattr(delta_sink, "FLUSH_BYTES", flush_bytes)
    rows = [{"k": i % 17, "v": i} for i in range(600)]
    for n in range(3):
        write_jsonl(tmp_path / "in" / f"{n}.json", rows[n * 200 : (n + 1) * 200])
    sql = """
CREATE TABLE src (k BIGINT, v BIGINT) WITH ('connector' = 'filesystem', 'path' = 'in', 'format' = 'json');
CREATE TABLE totals (k BIGINT, n BIGINT, s BIGINT, PRIMARY KEY (k) NOT ENFORCED)
WITH ('connector' = 'delta', 'path' = 'totals');
CREATE TABLE copied (k BIGINT, v BIGINT) WITH ('connector' = 'delta', 'path' = 'copied');
INSERT INTO totals SELECT k, COUNT(*), SUM(v) FROM src GROUP BY k;
INSERT INTO copied SELECT k, v FROM src;
"""
    run(tmp_path, sql, max_epoch_rows=7, checkpoint_interval="4 epochs")
    source = pl.DataFrame(rows, schema={"k": pl.Int64, "v": pl.Int64})
    expected = sort_all(duck("SELECT k, count(*) AS n, sum(v) AS s FROM src GROUP BY k", src=source))
    assert_frame_equal(sort_all(read_sink(tmp_path / "totals")), expected, check_dtypes=False)
    assert_frame_equal(sort_all(read_sink(tmp_path / "copied")), sort_all(source), check_dtypes=False)
    for sink in ("totals", "copied"):
        history = DeltaTable(str(tmp_path / sink)).history()
        epochs = [int(c["timelapse.epoch"]) for c in reversed(history) if "timelapse.epoch" in c]
        assert epochs == sorted(set(epochs)), (sink, epochs)  # in epoch order, none twice
