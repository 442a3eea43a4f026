"""engine.control: metrics in every checkpoint row, the plan graph on disk, and actions on a running pipeline
(a real `timelapse run` subprocess) or a stopped one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from engine import Pipeline, control, requests, versioning
from engine.epoch_report import DURATION_BUCKETS, observe
from engine.errors import Busy, VersioningError
from engine.manifest import read_checkpoints
from engine.state_dir import StateDir
from tests.helpers import read_sink, run, sort_all, write_jsonl

SQL = """
CREATE TABLE events (id BIGINT, k STRING, v BIGINT) WITH ('connector' = 'filesystem', 'path' = 'in', 'format' = 'json');
CREATE TABLE totals (k STRING, n BIGINT, s BIGINT, PRIMARY KEY (k) NOT ENFORCED)
WITH ('connector' = 'delta', 'path' = 'totals');
INSERT INTO totals SELECT /*+ STATE_ID('totals') */ k, COUNT(*), SUM(v) FROM events GROUP BY k;
CREATE TABLE big (id BIGINT, v BIGINT) WITH ('connector' = 'delta', 'path' = 'big');
INSERT INTO big SELECT id, v FROM events WHERE v > 5;
"""


def _write(root: Path, part: int, n: int = 40) -> None:
    rows = [{"id": part * 1000 + i, "k": f"k{i % 7}", "v": i % 11} for i in range(n)]
    write_jsonl(root / "in" / f"part-{part:03d}.json", rows)


def _rows(state: Path) -> list[dict[str, Any]]:
    frame = read_checkpoints(StateDir(state).manifest)
    return [{**row, "metrics": json.loads(row["metrics"] or "{}")} for row in frame.iter_rows(named=True)]


def _add(total: dict[str, int], more: dict[str, int]) -> dict[str, int]:
    return {k: total.get(k, 0) + more.get(k, 0) for k in {*total, *more}}


def test_observe_fills_cumulative_buckets() -> None:
    h = observe(observe(None, 0.003), 7.0)
    assert h["count"] == 2 and h["sum"] == pytest.approx(7.003)
    assert h["buckets"][0] == 1 and h["buckets"][-1] == 2
    assert h["buckets"] == sorted(h["buckets"]) and len(h["buckets"]) == len(DURATION_BUCKETS)


def test_totals_sum_the_runs_and_survive_restarts_and_rollbacks(tmp_path: Path) -> None:
    _write(tmp_path, 1)
    summaries = [run(tmp_path, SQL, max_epoch_rows=7, checkpoint_interval="2 epochs")]
    _write(tmp_path, 2)
    summaries.append(run(tmp_path, SQL, max_epoch_rows=9))
    state = tmp_path / "state"
    rows = _rows(state)
    checkpoints = [r for r in rows if r["kind"] == "epoch"]
    totals = checkpoints[-1]["metrics"]["totals"]
    assert totals["epochs"] == sum(s["epochs"] for s in summaries)
    assert totals["checkpoints"] == len(checkpoints)
    for key in ("rows_in", "rows_out", "dead_letters", "late_rows"):
        expected: dict[str, int] = {}
        for s in summaries:
            expected = _add(expected, s[key])
        assert {k: v for k, v in totals[key].items() if v} == {k: v for k, v in expected.items() if v}, key
    assert totals["epoch_seconds"]["count"] == totals["epochs"]
    assert totals["checkpoint_seconds"]["count"] == totals["checkpoints"]
    for row in checkpoints:
        assert row["metrics"]["checkpoint_ms"] >= 0
        assert set(row["metrics"]["state_bytes"]) == {"totals"}
    # monotone, row after row
    seen = [r["metrics"]["totals"]["epochs"] for r in checkpoints]
    assert seen == sorted(seen)

    versioning.rollback(state, to_epoch=2, reason="test")
    rolled = _rows(state)[-1]
    assert rolled["kind"] == "rollback" and rolled["metrics"]["totals"] == totals
    _write(tmp_path, 3)
    after = run(tmp_path, SQL)
    last = [r for r in _rows(state) if r["kind"] == "epoch"][-1]["metrics"]["totals"]
    assert last["epochs"] == totals["epochs"] + after["epochs"]
    assert last["rows_in"]["events"] == totals["rows_in"]["events"] + after["rows_in"]["events"]


def test_the_plan_graph_is_written_once_per_fingerprint(tmp_path: Path) -> None:
    _write(tmp_path, 1)
    run(tmp_path, SQL)
    plan = Pipeline.from_sql(tmp_path / "pipeline.sql", tmp_path / "state").plan
    path = StateDir(tmp_path / "state").plan_file(plan.fingerprint)
    graph = json.loads(path.read_text())
    assert graph == json.loads(json.dumps(plan.graph()))
    assert graph["fingerprint"] == plan.fingerprint
    nodes = {n["id"]: n for n in graph["nodes"]}
    assert len(nodes) == len(graph["nodes"])
    stateful = [n for n in graph["nodes"] if n["stateful"]]
    assert [n["state_id"] for n in stateful] == ["totals"]
    assert all(i in nodes for n in graph["nodes"] for i in n["inputs"])
    assert {n["kind"] for n in graph["nodes"]} >= {"scan", "aggregate", "sink"}
    for node in graph["nodes"]:
        assert node["label"] in plan.explain()


def test_actions_on_a_stopped_directory_are_done_directly(tmp_path: Path) -> None:
    _write(tmp_path, 1)
    run(tmp_path, SQL, max_epoch_rows=10)
    state = tmp_path / "state"
    assert control.holder(state) is None
    assert control.savepoint(state, "sp", epoch=2, user="carol") == {"savepoint": "sp", "epoch": 2}
    preview = control.rollback_preview(state, savepoint="sp")
    assert preview["to_epoch"] == 2 and preview["from_epoch"] == 4 and preview["refused"] is None
    assert "sink totals" in preview["restored"] and preview["emptied"] == []
    assert not StateDir(state).requests.exists()  # nothing was asked of a running pipeline
    assert control.rollback(state, savepoint="sp", user="dave")["rolled_back_to"] == 2
    assert _rows(state)[-1]["metrics"]["rollback"]["user"] == "dave"
    with pytest.raises(VersioningError, match="no savepoint named 'nope'"):
        control.delete_savepoint(state, "nope", user="dave")
    assert control.delete_savepoint(state, "sp", user="dave") == {"deleted": "sp"}


def test_an_expired_request_is_not_carried_out(tmp_path: Path) -> None:
    _write(tmp_path, 1)
    run(tmp_path, SQL)
    directory = StateDir(tmp_path / "state")
    expired = requests.submit(directory, "savepoint", {"name": "late"}, "eve", timeout_s=-1.0)
    live = requests.submit(directory, "savepoint", {"name": "fresh"}, "eve", timeout_s=30.0)
    run(tmp_path, SQL)  # a run serves the requests waiting at its first epoch boundary
    names = [r["metrics"].get("savepoint") for r in _rows(directory.root) if r["kind"] == "savepoint"]
    assert names == ["fresh"]
    assert not (directory.requests / f"{expired}.json").exists()
    assert requests.collect(directory, expired) is None
    assert requests.collect(directory, live) == {"ok": True, "result": {"savepoint": "fresh", "epoch": 1}}


# -- a running pipeline ------------------------------------------------------------------------------------------


def _launch(root: Path, *extra: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    command = [sys.executable, "-m", "engine.cli", "run", "pipeline.sql", "--state", "state", "--quiet"]
    return subprocess.Popen(
        [*command, "--trigger", "200ms", *extra], cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )


def _wait(condition: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def _logged_epoch(state: Path) -> int:
    from engine.offset_log import OffsetLog

    return max(OffsetLog(StateDir(state).offsets).epochs(), default=0)


def _last_epoch(state: Path) -> int:
    rows = [r for r in _rows(state) if r["kind"] == "epoch"] if (state / "manifest").exists() else []
    return rows[-1]["epoch"] if rows else 0


def test_actions_on_a_running_pipeline(tmp_path: Path) -> None:
    root, reference = tmp_path / "live", tmp_path / "reference"
    (root / "pipeline.sql").parent.mkdir(parents=True)
    (root / "pipeline.sql").write_text(SQL)
    state = root / "state"
    for part in range(1, 4):
        _write(root, part)
        _write(reference, part)
    process = _launch(root, "--max-epoch-rows", "20", "--checkpoint-interval", "3 epochs")
    try:
        _wait(lambda: control.holder(state) is not None and _last_epoch(state) >= 2)
        saved = control.savepoint(state, "mid", user="alice", reason="before more input")
        row = [r for r in _rows(state) if r["kind"] == "savepoint"][-1]
        assert row["metrics"]["user"] == "alice" and row["epoch"] == saved["epoch"]
        with pytest.raises(VersioningError, match="already exists"):
            control.savepoint(state, "mid", user="alice")

        # the CLI hands its savepoint to the running pipeline too (it used to be refused as busy)
        cli = subprocess.run(
            [sys.executable, "-m", "engine.cli", "savepoint", "create", str(state), "--name", "from-cli", "--json"],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
        )
        assert cli.returncode == 0, cli.stderr
        assert json.loads(cli.stdout)["savepoint"] == "from-cli"

        assert control.checkpoint(state, user="frank") == {"requested": True, "running": True}
        _write(root, 4)
        _write(reference, 4)
        _wait(lambda: any(r["metrics"].get("requested_by") == "frank" for r in _rows(state)))

        # epochs that ran (logged), not those checkpointed: every 3 epochs, so an idle run may hold two back
        _wait(lambda: _logged_epoch(state) > saved["epoch"] + 2)
        preview = control.rollback_preview(state, savepoint="mid")
        assert preview["to_epoch"] == saved["epoch"] and preview["refused"] is None
        done = control.rollback(state, savepoint="mid", user="bob", reason="bad deploy")
        assert done["rolled_back_to"] == saved["epoch"]
        rollback = [r for r in _rows(state) if r["kind"] == "rollback"][-1]
        assert rollback["metrics"]["rollback"]["user"] == "bob"
        assert rollback["metrics"]["rollback"]["reason"] == "bad deploy"
        # the pipeline runs on from the restored cut: new epochs, same process
        _write(root, 5)
        _write(reference, 5)
        _wait(lambda: _logged_epoch(state) > rollback["epoch"] + 1)
        assert process.poll() is None
        assert control.holder(state) is not None
        # a request error comes back as the same error
        with pytest.raises(VersioningError, match="no savepoint named 'gone'"):
            control.delete_savepoint(state, "gone", user="alice")
        # wait until everything is in, then stop it
        _wait(lambda: _rows(state)[-1]["metrics"].get("totals", {}).get("rows_in", {}).get("events", 0) > 0)
        _wait(lambda: _sink_matches(root, reference), timeout=30)
    finally:
        process.terminate()
        process.wait(timeout=30)
    assert control.holder(state) is None
    assert not list(StateDir(state).requests.glob("*.json"))


def _sink_matches(root: Path, reference: Path) -> bool:
    if not (reference / "state").exists():
        Pipeline.from_sql(_sql_file(reference), reference / "state").run(once=True)
    try:
        for name in ("totals", "big"):
            live, ref = sort_all(read_sink(root / name)), sort_all(read_sink(reference / name))
            assert_frame_equal(live, ref, check_dtypes=False)
    except (AssertionError, OSError, pl.exceptions.ComputeError):
        return False
    return True


def _sql_file(root: Path) -> Path:
    path = root / "pipeline.sql"
    if not path.exists():
        path.write_text(SQL)
    return path


def test_a_request_nobody_answers_times_out_as_busy(tmp_path: Path) -> None:
    _write(tmp_path, 1)
    run(tmp_path, SQL)
    state = tmp_path / "state"
    with StateDir(state).lock(), pytest.raises(Busy, match=r"did not answer within 0\.5 s"):
        control.savepoint(state, "x", user="alice", timeout=0.5)  # the lease is held, and nobody serves requests
    assert not list(StateDir(state).requests.glob("*.json"))
