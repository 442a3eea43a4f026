"""Savepoints and rollback: state, offsets and Delta sinks go back together, and a re-run is correct."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from engine import state_at, versioning
from engine.state_dir import StateDir, StateDirBusy
from tests import test_joins as j
from tests.helpers import read_sink, run, sort_all

STATEFUL = (
    j.SOURCES
    + """
CREATE TABLE w (cust BIGINT, ws TIMESTAMP(3), n BIGINT) WITH ('connector' = 'delta', 'path' = 'w');
INSERT INTO w SELECT /*+ STATE_ID('per10') */ cust, window_start, COUNT(*)
FROM TABLE(TUMBLE(TABLE orders, DESCRIPTOR(ts), INTERVAL '10' SECOND)) GROUP BY cust, window_start, window_end;
CREATE TABLE totals (cust BIGINT, n BIGINT, amount BIGINT, PRIMARY KEY (cust) NOT ENFORCED)
WITH ('connector' = 'delta', 'path' = 'totals');
INSERT INTO totals SELECT /*+ STATE_ID('totals') */ cust, COUNT(*), SUM(amount) FROM orders GROUP BY cust;
CREATE TABLE pairs (oid BIGINT, pid BIGINT) WITH ('connector' = 'delta', 'path' = 'pairs');
INSERT INTO pairs SELECT o.id, p.id FROM orders o JOIN payments p ON o.cust = p.cust AND o.amount > p.paid;
"""
)


def _inputs(root: Path) -> None:
    j.write(root, j.make(71, 200, 0), j.make(72, 200, 1000))


def _sinks(root: Path) -> dict[str, pl.DataFrame]:
    return {name: sort_all(read_sink(root / name)) for name in ("w", "totals", "pairs")}


def test_rollback_to_a_savepoint_then_rerun_equals_a_straight_run(tmp_path: Path) -> None:
    straight, rolled = tmp_path / "straight", tmp_path / "rolled"
    for root in (straight, rolled):
        _inputs(root)
    run(straight, STATEFUL, max_epoch_rows=5)
    summary = run(rolled, STATEFUL, max_epoch_rows=5)
    assert summary["last_epoch"] == 40
    versioning.create_savepoint(rolled / "state", "before", epoch=15)
    result = versioning.rollback(rolled / "state", savepoint="before", reason="test")
    assert result == {"rolled_back_to": 15, "next_epoch": 41, "tables": result["tables"], "repeated_output": {}}
    # Right after the rollback, the sinks and the state are those of epoch 15.
    at_15 = state_at(rolled / "state", "totals", 15).collect()
    now = state_at(rolled / "state", "totals").collect()
    assert_frame_equal(sort_all(now), sort_all(at_15))
    again = run(rolled, STATEFUL, max_epoch_rows=5)
    assert again["epochs"] == 25 and again["last_epoch"] == 65
    for name, frame in _sinks(straight).items():
        assert_frame_equal(_sinks(rolled)[name], frame, check_dtypes=False)
    for op in ("per10", "totals"):
        a = state_at(straight / "state", op).collect().drop("_kg")
        b = state_at(rolled / "state", op).collect().drop("_kg")
        assert_frame_equal(sort_all(a), sort_all(b))


def test_a_state_id_named_like_its_sink_rolls_back_each_table_to_its_own_version(tmp_path: Path) -> None:
    """`STATE_ID('w') ... INSERT INTO w`: the state table and the sink share a name but not their Delta versions
    (the window sink commits only when windows fire); each must go back to its own."""
    sql = STATEFUL.replace("STATE_ID('per10')", "STATE_ID('w')")
    straight, rolled = tmp_path / "straight", tmp_path / "rolled"
    for root in (straight, rolled):
        _inputs(root)
    run(straight, sql, max_epoch_rows=5)
    run(rolled, sql, max_epoch_rows=5, max_epochs=30)
    import engine

    tables = engine.open(rolled / "state").tables(at=30)
    versions = {(r["kind"], r["name"]): r["version"] for r in tables.iter_rows(named=True) if r["name"] == "w"}
    assert versions[("state", "w")] != versions[("sink", "w")], versions  # else the test proves nothing
    preview = versioning.plan_rollback(StateDir(rolled / "state"), 15, None, None)
    assert {"sink w", "state w"} <= set(preview["restored"])
    versioning.rollback(rolled / "state", to_epoch=15, reason="same names")
    history = engine.open(rolled / "state")
    assert_frame_equal(sort_all(history.sink("w")), sort_all(history.sink("w", at=15)))
    assert_frame_equal(sort_all(history.state("w")), sort_all(history.state("w", at=15)))
    run(rolled, sql, max_epoch_rows=5)
    for name, frame in _sinks(straight).items():
        assert_frame_equal(_sinks(rolled)[name], frame, check_dtypes=False)


def test_rollback_with_changed_sql_applies_the_new_sql_from_the_rollback_point(tmp_path: Path) -> None:
    from tests.test_epochs import SQL, make_input

    make_input(tmp_path, 9, 2, 20)  # 2 files: 22 and 20 records (the first has 2 bad lines)
    run(tmp_path, SQL, max_epoch_rows=5)
    versioning.rollback(tmp_path / "state", to_epoch=3, reason="filter was wrong")
    run(tmp_path, SQL.replace("temperature > 30", "temperature > 40"), max_epoch_rows=5)
    records = []
    for path in sorted((tmp_path / "data" / "readings").glob("*.json")):
        records += path.read_text().splitlines()
    expected_ids = []
    for position, line in enumerate(records):
        try:
            row = json.loads(line)
            temperature = float(row["temperature"])
        except (ValueError, KeyError):
            continue
        if temperature > (30 if position < 15 else 40):  # epochs 1-3 read the first 15 records
            expected_ids.append((row["id"], temperature))
    actual = read_sink(tmp_path / "out" / "hot_readings").select("id", "temperature").rows()
    assert sorted(actual) == sorted(expected_ids)


def test_rollback_is_refused_while_running_and_for_print_sinks_without_force(tmp_path: Path) -> None:
    _inputs(tmp_path)
    sql = (
        STATEFUL
        + """
    CREATE TABLE shown (oid BIGINT) WITH ('connector' = 'print');
    INSERT INTO shown SELECT id FROM orders WHERE amount > 45;
    """
    )
    run(tmp_path, sql, max_epoch_rows=50)
    handle = StateDir(tmp_path / "state").lock()
    try:
        with pytest.raises(StateDirBusy):
            versioning.rollback(tmp_path / "state", to_epoch=1)
    finally:
        handle.close()
    with pytest.raises(versioning.VersioningError, match="'shown'"):
        versioning.rollback(tmp_path / "state", to_epoch=1)
    done = versioning.rollback(tmp_path / "state", to_epoch=1, force=True, reason="bad deploy")
    assert done["repeated_output"]["shown"] > 0
    manifest = pl.read_delta(str(tmp_path / "state" / "manifest")).sort("committed_at")
    audit = json.loads(manifest.row(-1, named=True)["metrics"])["rollback"]
    assert audit["from_epoch"] == 4 and audit["to_epoch"] == 1 and audit["reason"] == "bad deploy" and audit["user"]


def test_savepoints_from_the_cli(tmp_path: Path) -> None:
    _inputs(tmp_path)
    run(tmp_path, STATEFUL, max_epoch_rows=50)

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "engine.cli", *args], capture_output=True, text=True, cwd=tmp_path, timeout=120
        )

    assert cli("savepoint", "create", "state", "--name", "v1", "--epoch", "2").returncode == 0
    assert cli("savepoint", "create", "state", "--name", "latest").returncode == 0
    listed = json.loads(cli("savepoint", "list", "state", "--json").stdout)
    assert [(s["name"], s["epoch"]) for s in listed] == [("v1", 2), ("latest", 4)]
    duplicate = cli("savepoint", "create", "state", "--name", "v1")
    assert duplicate.returncode == 2 and "already exists" in duplicate.stderr
    assert cli("savepoint", "delete", "state", "--name", "latest").returncode == 0
    rolled = cli("rollback", "state", "--savepoint", "v1", "--reason", "cli", "--json")
    assert rolled.returncode == 0 and json.loads(rolled.stdout)["rolled_back_to"] == 2
    unknown = cli("rollback", "state", "--to-epoch", "99")
    assert unknown.returncode == 2 and "epoch 99 is not a committed epoch" in unknown.stderr
    run(tmp_path, STATEFUL, max_epoch_rows=50)
    events = json.loads(cli("log", "state", "--json").stdout)
    assert [e["kind"] for e in events] == [
        "epochs",
        "savepoint",
        "savepoint",
        "savepoint_deleted",
        "rollback",
        "epochs",
    ]
    assert (events[0]["first"], events[0]["last"]) == (1, 4) and events[-1]["continues_from"] == 2
    assert (events[-1]["first"], events[-1]["last"]) == (5, 6)
    text = cli("log", "state").stdout
    assert "rollback 4 -> 2" in text and "epochs 5-6" in text and "continuing from epoch 2" in text


def test_a_rollback_cut_short_by_a_crash_is_finished_by_the_next_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from engine.manifest import Manifest

    straight, rolled = tmp_path / "straight", tmp_path / "rolled"
    for root in (straight, rolled):
        _inputs(root)
    run(straight, STATEFUL, max_epoch_rows=25)
    run(rolled, STATEFUL, max_epoch_rows=25)
    original = Manifest.commit

    def crash(self: Manifest, checkpoint: object) -> None:
        raise SystemExit("killed after the tables were restored, before the manifest row")

    monkeypatch.setattr(Manifest, "commit", crash)
    with pytest.raises(SystemExit):
        versioning.rollback(rolled / "state", to_epoch=3)
    monkeypatch.setattr(Manifest, "commit", original)
    assert (rolled / "state" / "rollback-in-progress.json").exists()
    run(rolled, STATEFUL, max_epoch_rows=25)  # finishes the rollback, then re-runs epochs 4-8 as 9-13
    assert not (rolled / "state" / "rollback-in-progress.json").exists()
    for name, frame in _sinks(straight).items():
        assert_frame_equal(_sinks(rolled)[name], frame, check_dtypes=False)


# savepoint (slow, ~35 s on CI): kills at instants of a savepoint's creation; its fault points (before and inside the
# manifest commit) are killed deterministically by test_fault_injection's
# test_every_crash_point_of_savepoints_and_rollbacks
@pytest.mark.parametrize("operation", ["rollback", pytest.param("savepoint", marks=pytest.mark.slow)])
def test_kill_9_during_rollback_or_savepoint_creation_leaves_a_consistent_dir(tmp_path: Path, operation: str) -> None:
    import os
    import signal
    import time

    straight = tmp_path / "straight"
    _inputs(straight)
    run(straight, STATEFUL, max_epoch_rows=25)
    command = {
        "rollback": ["rollback", "state", "--savepoint", "sp", "--reason", "kill test"],
        "savepoint": ["savepoint", "create", "state", "--name", "late", "--epoch", "3"],
    }[operation]

    def prepared(name: str) -> Path:
        root = tmp_path / name
        _inputs(root)
        run(root, STATEFUL, max_epoch_rows=25)
        versioning.create_savepoint(root / "state", "sp", epoch=3)
        return root

    def start(root: Path) -> subprocess.Popen[bytes]:
        return subprocess.Popen([sys.executable, "-m", "engine.cli", *command], cwd=root)

    timing = prepared("timing")
    began = time.perf_counter()
    assert start(timing).wait(timeout=120) == 0
    full = time.perf_counter() - began
    for index, fraction in enumerate((0.55, 0.75, 0.9, 0.97)):
        root = prepared(f"kill{index}")
        process = start(root)
        time.sleep(full * fraction)
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=60)
        # The directory is consistent: the history reads, and a run completes whatever was cut short.
        versioning.history(root / "state")
        if operation == "savepoint":
            names = versioning.savepoints(root / "state").get_column("name").to_list()
            if "late" not in names:  # killed before its manifest row: creating it again works
                versioning.create_savepoint(root / "state", "late", epoch=3)
            versioning.rollback(root / "state", savepoint="late")
        elif not (root / "state" / "rollback-in-progress.json").exists():
            rows = pl.read_delta(str(root / "state" / "manifest"))
            if rows.filter(pl.col("kind") == "rollback").is_empty():  # killed before it began: do it again
                versioning.rollback(root / "state", savepoint="sp")
        run(root, STATEFUL, max_epoch_rows=25)
        assert not (root / "state" / "rollback-in-progress.json").exists()
        for name, frame in _sinks(straight).items():
            assert_frame_equal(_sinks(root)[name], frame, check_dtypes=False)
