"""One writer per state directory (lease, takeover after a crash, fencing), and readers beside a running writer
always seeing a consistent cut."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

import engine
from engine.history import HistoryError
from engine.pipeline import Pipeline
from engine.state_dir import LEASE_FILE, LeaseLost, StateDirBusy, read_lease
from tests.helpers import read_sink, run, sort_all, write_jsonl

SQL = """
CREATE TABLE ev (k BIGINT, v INT, ts TIMESTAMP(3), WATERMARK FOR ts AS ts - INTERVAL '1' SECOND)
WITH ('connector' = 'filesystem', 'path' = 'in', 'format' = 'json');
CREATE TABLE totals (k BIGINT, n BIGINT, s BIGINT, PRIMARY KEY (k) NOT ENFORCED)
WITH ('connector' = 'delta', 'path' = 'totals');
INSERT INTO totals SELECT k, COUNT(*), SUM(v) FROM ev GROUP BY k;
"""
ROWS_PER_EPOCH = 5


def inputs(root: Path, count: int) -> None:
    rows = [{"k": i % 7, "v": 1, "ts": 1_767_225_600_000 + i * 1000} for i in range(count)]
    write_jsonl(root / "in" / "a.json", rows)
    (root / "pipeline.sql").write_text(SQL)


def start(root: Path, *extra: str) -> subprocess.Popen[bytes]:
    args = ["run", "pipeline.sql", "--state", "state", "--max-epoch-rows", str(ROWS_PER_EPOCH), "--quiet", *extra]
    return subprocess.Popen([sys.executable, "-m", "engine.cli", *args], cwd=root, stderr=subprocess.PIPE)


def wait_for(condition: object, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_a_second_run_is_refused_and_a_crashed_runs_lease_is_taken_over(tmp_path: Path) -> None:
    inputs(tmp_path, 40)
    first = start(tmp_path, "--trigger", "200ms")  # keeps running, waiting for more input
    state = tmp_path / "state"
    wait_for(lambda: (state / "manifest").exists() and read_lease(state) is not None)
    token = read_lease(state)["token"]  # type: ignore[index]
    second = subprocess.run(
        [sys.executable, "-m", "engine.cli", "run", "pipeline.sql", "--state", "state", "--once"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert second.returncode == 3
    assert f"another timelapse process is running on {state} (pid {first.pid}" in second.stderr
    assert "Traceback" not in second.stderr
    os.kill(first.pid, signal.SIGKILL)
    first.wait()
    summary = run(tmp_path, SQL)  # taken over at once: the kernel dropped the dead process's lock
    assert read_lease(state)["token"] == token + 1  # type: ignore[index]
    assert summary["stopped"] == "finished"
    assert read_sink(tmp_path / "totals").get_column("n").sum() == 40


def test_a_run_whose_lease_was_taken_over_stops_without_committing(tmp_path: Path) -> None:
    """A holder paused past its lease (another host took over) is fenced by the token at its next commit."""
    inputs(tmp_path, 40)
    state = tmp_path / "state"

    def taken_over(report: object) -> None:
        if getattr(report, "epoch", 0) == 2:
            holder = read_lease(state)
            assert holder is not None
            stolen = {**holder, "token": holder["token"] + 1, "host": "other-host", "pid": 4242}
            (state / LEASE_FILE).write_text(json.dumps({**stolen, "heartbeat": time.time()}))

    pipeline = Pipeline.from_sql(tmp_path / "pipeline.sql", state)
    with pytest.raises(LeaseLost, match=r"taken over .*other-host"):
        pipeline.run(once=True, max_epoch_rows=ROWS_PER_EPOCH, on_epoch=taken_over)
    committed = pl.read_delta(str(state / "manifest")).get_column("epoch").max()
    # Epoch 3 was not committed; epoch 2's checkpoint, written in the background while its report was being
    # delivered, may have been fenced too.
    assert committed in (1, 2)
    with pytest.raises(StateDirBusy, match="leased to pid 4242 on other-host"):
        run(tmp_path, SQL)  # the other host's lease is fresh
    holder = read_lease(state)
    (state / LEASE_FILE).write_text(json.dumps({**holder, "heartbeat": time.time() - 60}))  # type: ignore[dict-item]
    run(tmp_path, SQL, max_epoch_rows=ROWS_PER_EPOCH)  # the stale lease is taken over; nothing lost
    assert read_sink(tmp_path / "totals").get_column("n").sum() == 40


def test_readers_beside_a_running_pipeline_always_see_a_consistent_cut(tmp_path: Path) -> None:
    """While a pipeline commits an epoch every few milliseconds, a reader loop opens the latest cut again and
    again: the sink and the state it sees are always of the same epoch, and cover exactly that epoch's input."""
    inputs(tmp_path, 300)  # 60 epochs
    writer = start(tmp_path, "--once", "--retain", "5")  # retention runs too, freeing old versions
    state = tmp_path / "state"
    wait_for(lambda: (state / "manifest").exists())
    seen: set[int] = set()
    while writer.poll() is None or len(seen) < 3:
        history = engine.open(state)
        try:
            row = history.row()
        except HistoryError:  # no epoch committed yet
            continue
        epoch = int(row["epoch"])
        group = next(t["name"] for t in row["tables"] if t["role"] == "state")
        try:
            sink = sort_all(history.sink("totals", at=epoch))
            held = sort_all(history.state(group, at=epoch).select("k", pl.col("count__count").alias("n")))
        except HistoryError as err:  # retention (5 checkpoints) freed the epoch while it was read: said so
            assert "retention" in str(err) or "no longer" in str(err), err
            continue
        assert_frame_equal(sink.select("k", "n"), held, check_dtypes=False)  # sink and state of one cut
        assert sink.get_column("n").sum() == epoch * ROWS_PER_EPOCH  # exactly the input of epochs 1..epoch
        seen.add(epoch)
        if writer.poll() is not None and len(seen) >= 3:
            break
    assert writer.wait() == 0, writer.stderr.read().decode() if writer.stderr else ""
    assert len(seen) >= 3
