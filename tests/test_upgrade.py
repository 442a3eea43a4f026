"""Upgrades with kept state: changed SQL on an existing state directory keeps, starts, drops or refuses state."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from engine import state_at, upgrade
from engine.operators.aggregate import AggregateOperator
from engine.pipeline import upgrade_check
from engine.upgrade import UpgradeRefused
from sql.planner import plan_script
from tests import test_joins as j
from tests.helpers import duck, read_sink, run, sort_all

TOTALS = """
CREATE TABLE totals (cust BIGINT, n BIGINT, amount BIGINT, PRIMARY KEY (cust) NOT ENFORCED)
WITH ('connector' = 'delta', 'path' = 'totals');
INSERT INTO totals SELECT cust, COUNT(*), SUM(amount) FROM orders WHERE amount > 0 GROUP BY cust;
"""
PER_10S = """
CREATE TABLE w (cust BIGINT, ws TIMESTAMP(3), n BIGINT) WITH ('connector' = 'delta', 'path' = 'w');
INSERT INTO w SELECT cust, window_start, COUNT(*)
FROM TABLE(TUMBLE(TABLE orders, DESCRIPTOR(ts), INTERVAL '10' SECOND)) GROUP BY cust, window_start, window_end;
"""
PAIRS = """
CREATE TABLE pairs (oid BIGINT, pid BIGINT) WITH ('connector' = 'delta', 'path' = 'pairs');
INSERT INTO pairs SELECT o.id, p.id FROM orders o JOIN payments p ON o.cust = p.cust AND o.amount > p.paid;
"""
V1 = j.SOURCES + TOTALS + PER_10S + PAIRS


def _setup(root: Path) -> None:
    j.write(root, j.make(31, 120, 0), j.make(32, 120, 1000))
    run(root, V1, max_epoch_rows=20, max_epochs=3)


def test_a_stateless_change_keeps_every_operator_and_stays_correct(tmp_path: Path) -> None:
    _setup(tmp_path)
    v2 = V1.replace("SELECT o.id, p.id", "SELECT o.id, p.id + 0")  # a projection above the join
    summary = run(tmp_path, v2.replace("WHERE amount > 0", "WHERE amount > -1"), max_epoch_rows=20)
    assert {c["status"] for c in summary["upgrade"]} == {"kept"}
    orders = j.frame(j.make(31, 120, 0))
    expected = duck("SELECT cust, COUNT(*) AS n, SUM(amount) AS amount FROM orders GROUP BY cust", orders=orders)
    assert_frame_equal(sort_all(read_sink(tmp_path / "totals")), sort_all(expected), check_dtypes=False)


def test_the_report_covers_kept_new_dropped_and_incompatible(tmp_path: Path) -> None:
    _setup(tmp_path)
    changed = (
        j.SOURCES
        + TOTALS
        + PER_10S.replace("'10' SECOND", "'20' SECOND")
        + """
CREATE TABLE biggest (cust BIGINT, amount INT, PRIMARY KEY (cust) NOT ENFORCED)
WITH ('connector' = 'delta', 'path' = 'biggest');
INSERT INTO biggest SELECT cust, MAX(amount) FROM orders GROUP BY cust;
"""
    )
    (tmp_path / "v2.sql").write_text(changed)
    changes = upgrade_check(tmp_path / "v2.sql", tmp_path / "state")
    by_status = {c.status: c for c in changes}
    assert set(by_status) == {"kept", "new", "dropped", "incompatible"}
    assert by_status["kept"].kind == "group aggregate"
    assert by_status["new"].kind == "group aggregate" and "empty" in by_status["new"].reason
    assert by_status["dropped"].kind == "regular join"
    incompatible = by_status["incompatible"]
    assert "window changed: TUMBLE(ts, 0:00:10) -> TUMBLE(ts, 0:00:20)" in incompatible.reason
    assert incompatible.replaces and incompatible.kind == "window aggregate"

    with pytest.raises(UpgradeRefused, match="allow-non-restored-state"):
        run(tmp_path, changed, max_epoch_rows=20)

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "engine.cli", *args], capture_output=True, text=True, cwd=tmp_path, timeout=120
        )

    checked = cli("upgrade-check", "state", "v2.sql", "--json")
    assert checked.returncode == 0, checked.stderr
    report = json.loads(checked.stdout)
    assert report["refused"] and {o["status"] for o in report["operators"]} == set(by_status)
    refused = cli("run", "v2.sql", "--state", "state", "--once", "--quiet")
    assert refused.returncode == 2 and "window changed" in refused.stderr and "Traceback" not in refused.stderr

    allowed = cli(
        "run",
        "v2.sql",
        "--state",
        "state",
        "--once",
        "--quiet",
        "--max-epoch-rows",
        "20",
        "--allow-non-restored-state",
        "--json",
    )
    assert allowed.returncode == 0, allowed.stderr
    assert "kept" in allowed.stderr and "incompatible" in allowed.stderr  # the report, before the first epoch
    assert {c["status"] for c in json.loads(allowed.stdout)["upgrade"]} == set(by_status)
    # The new aggregate started empty at epoch 4: it saw only the orders read from then on (3 x 20 before).
    orders = j.frame(j.make(31, 120, 0))
    expected = duck("SELECT cust, MAX(amount) AS amount FROM orders GROUP BY cust", orders=orders[60:])
    assert_frame_equal(sort_all(read_sink(tmp_path / "biggest")), sort_all(expected), check_dtypes=False)
    # The kept aggregate carried on: its totals cover every order.
    totals = duck("SELECT cust, COUNT(*) AS n, SUM(amount) AS amount FROM orders GROUP BY cust", orders=orders)
    assert_frame_equal(sort_all(read_sink(tmp_path / "totals")), sort_all(totals), check_dtypes=False)


def test_a_pinned_state_id_with_a_changed_key_starts_in_a_new_directory(tmp_path: Path) -> None:
    pinned = TOTALS.replace("SELECT cust,", "SELECT /*+ STATE_ID('totals') */ cust,")
    j.write(tmp_path, j.make(31, 120, 0), j.make(32, 120, 1000))
    run(tmp_path, j.SOURCES + pinned, max_epoch_rows=20, max_epochs=3)
    before = sort_all(state_at(tmp_path / "state", "totals", 3).collect())
    changed = pinned.replace("GROUP BY cust", "GROUP BY cust, id")
    (tmp_path / "v2.sql").write_text(j.SOURCES + changed)
    (change,) = upgrade_check(tmp_path / "v2.sql", tmp_path / "state")
    assert change.status == "incompatible" and "grouping key changed" in change.reason
    run(tmp_path, j.SOURCES + changed, max_epoch_rows=20, allow_non_restored_state=True)
    assert (tmp_path / "state" / "operators" / "totals@4").is_dir()
    # The old state is still readable as it was at epoch 3; the new one holds only what epochs 4-6 read.
    assert_frame_equal(sort_all(state_at(tmp_path / "state", "totals", 3).collect()), before)
    now = state_at(tmp_path / "state", "totals").collect()
    assert now.height == 60 and set(now.columns) >= {"cust", "id"}
    manifest = pl.read_delta(str(tmp_path / "state" / "manifest")).sort("committed_at")
    recorded = json.loads(manifest.row(-1, named=True)["operators"])
    assert recorded["totals"]["directory"].endswith("totals@4") and recorded["totals"]["key"] == ["cust", "id"]


def test_a_state_layout_change_under_the_same_sql_is_reported_and_refused(tmp_path: Path, monkeypatch) -> None:
    _setup(tmp_path)
    (tmp_path / "v1.sql").write_text(V1)
    manifest = pl.read_delta(str(tmp_path / "state" / "manifest")).sort("committed_at")
    recorded = json.loads(manifest.row(-1, named=True)["operators"])
    assert {op["layout"] for op in recorded.values()} == {1}
    assert {c.status for c in upgrade_check(tmp_path / "v1.sql", tmp_path / "state")} == {"kept"}
    # The engine's aggregate state changes its physical layout; the SQL does not change.
    monkeypatch.setattr(AggregateOperator, "LAYOUT_VERSION", 2)
    changes = {c.state_id: c for c in upgrade_check(tmp_path / "v1.sql", tmp_path / "state")}
    aggregates = [c for c in changes.values() if "aggregate" in c.kind]
    assert len(aggregates) == 2
    assert all(c.status == "incompatible" and c.reason == "state layout version changed: 1 -> 2" for c in aggregates)
    assert {c.status for c in changes.values() if "join" in c.kind} == {"kept"}
    with pytest.raises(UpgradeRefused, match="state layout version changed"):
        run(tmp_path, V1, max_epoch_rows=20)


def test_a_manifest_without_layout_versions_reads_as_version_one(tmp_path: Path) -> None:
    _setup(tmp_path)
    manifest = pl.read_delta(str(tmp_path / "state" / "manifest")).sort("committed_at")
    recorded = json.loads(manifest.row(-1, named=True)["operators"])
    older = {sid: {k: v for k, v in op.items() if k != "layout"} for sid, op in recorded.items()}
    plan = plan_script(V1)
    assert not upgrade.layouts_differ(older, plan)
    assert {c.status for c in upgrade.compare(older, plan)} == {"kept"}


def test_hop_state_kept_per_window_by_an_older_engine_is_reported_as_another_layout(tmp_path: Path) -> None:
    """HOP and CUMULATE keep slices now (layout 2); a manifest whose HOP state was one row per window (layout 1,
    or no layout recorded) is refused by the upgrade check with the reason, not misread as slices."""
    hop = PER_10S.replace("TUMBLE(TABLE orders, DESCRIPTOR(ts), INTERVAL '10' SECOND)",
                          "HOP(TABLE orders, DESCRIPTOR(ts), INTERVAL '5' SECOND, INTERVAL '10' SECOND)")  # fmt: skip
    script = j.SOURCES + hop
    j.write(tmp_path, j.make(31, 60, 0), j.make(32, 60, 1000))
    run(tmp_path, script, max_epoch_rows=20, max_epochs=2)
    manifest = pl.read_delta(str(tmp_path / "state" / "manifest")).sort("committed_at")
    recorded = json.loads(manifest.row(-1, named=True)["operators"])
    assert {op["layout"] for op in recorded.values()} == {2}
    older = {sid: {**op, "layout": 1} for sid, op in recorded.items()}
    plan = plan_script(script)
    assert upgrade.layouts_differ(older, plan)
    (change,) = upgrade.compare(older, plan)
    assert change.status == "incompatible" and change.reason == "state layout version changed: 1 -> 2"
    # TUMBLE keeps a row per window as before: the layout of every existing TUMBLE state is unchanged.
    tumble = plan_script(j.SOURCES + PER_10S)
    assert {op["layout"] for op in upgrade.stateful_operators(tumble).values()} == {1}
