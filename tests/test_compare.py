"""`timelapse compare` / `engine.compare`: an A/B test from one savepoint against answers computed by hand.

The parent A and its branch B read the same 8 orders, two per epoch. Up to the savepoint (epoch 2) both filters
admit every row; from epoch 3 on, A keeps `amount < 50` and B keeps `amount > 5`:

    epoch 1: (1, 10) (2, 20)      epoch 3: (4, 60) (2, 5)     A drops (4, 60); B drops (2, 5)
    epoch 2: (3, 30) (1, 10)      epoch 4: (5, 3)  (4, 60)    A drops (4, 60); B drops (5, 3)
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import polars as pl
import pytest

import engine
from engine import versioning
from engine.branching import create_branch
from engine.comparison import CompareError
from tests.helpers import run, write_jsonl

ORDERS = [(1, 10), (2, 20), (3, 30), (1, 10), (4, 60), (2, 5), (5, 3), (4, 60)]
SQL = """
CREATE TABLE orders (cust BIGINT, amount BIGINT)
WITH ('connector' = 'filesystem', 'path' = 'orders', 'format' = 'json');
CREATE TABLE totals (cust BIGINT, n BIGINT, amount BIGINT, PRIMARY KEY (cust) NOT ENFORCED)
WITH ('connector' = 'delta', 'path' = 'totals');
INSERT INTO totals SELECT /*+ STATE_ID('totals') */ cust, COUNT(*), SUM(amount) FROM orders WHERE {f} GROUP BY cust;
CREATE TABLE kept (cust BIGINT, amount BIGINT) WITH ('connector' = 'delta', 'path' = 'kept');
INSERT INTO kept SELECT cust, amount FROM orders WHERE {f};
"""
SQL_A = SQL.format(f="amount < 50")
# B also writes a sink A does not have: the summary lists it as B's only
SQL_B = SQL.format(f="amount > 5") + (
    "CREATE TABLE extra (cust BIGINT) WITH ('connector' = 'delta', 'path' = 'extra');\n"
    "INSERT INTO extra SELECT cust FROM orders;\n"
)


@pytest.fixture(scope="module")
def ab(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_ab(tmp_path_factory.mktemp("ab"))


def make_ab(root: Path) -> Path:
    """`root/state` (A) and its branch `root/whatif` (B) from savepoint `sp` at epoch 2, both run to epoch 4."""
    write_jsonl(root / "orders" / "1.json", [{"cust": c, "amount": a} for c, a in ORDERS])
    run(root, SQL_A, max_epoch_rows=2, max_epochs=2)
    versioning.create_savepoint(root / "state", "sp", epoch=2)
    create_branch(root / "state", root / "whatif", savepoint="sp")
    assert run(root, SQL_A, max_epoch_rows=2)["last_epoch"] == 4
    assert run(root, SQL_B, state="whatif", max_epoch_rows=2)["last_epoch"] == 4
    return root


def _rows(frame: pl.DataFrame) -> list[dict[str, Any]]:
    return frame.to_dicts()


def _epochs(frame: pl.DataFrame) -> list[tuple[int, ...]]:
    """(epoch, only_a, only_b, changed) per pair of checkpoints, whose numbers agree here (no rollback)."""
    assert frame["epoch_a"].to_list() == frame["epoch_b"].to_list()
    return [tuple(r) for r in frame.select("epoch_a", "only_a", "only_b", "changed").iter_rows()]


def test_a_keyed_sink_and_an_operator_against_hand_computed_answers(ab: Path) -> None:
    c = engine.compare(ab / "state", ab / "whatif", sink="totals")
    assert c.key == ["cust"]  # the sink's PRIMARY KEY, recorded in the manifest
    assert c.origin == {"parent": "a", "epoch": 2, "savepoint": "sp"}
    assert (c.epoch_a, c.epoch_b) == (4, 4)
    # A: 1 -> (2, 20), 2 -> (2, 25), 3 -> (1, 30), 5 -> (1, 3); B: 1 -> (2, 20), 2 -> (1, 20), 3, 4 -> (2, 120)
    assert _rows(c.only_a) == [{"cust": 5, "n": 1, "amount": 3}]
    assert _rows(c.only_b) == [{"cust": 4, "n": 2, "amount": 120}]
    assert _rows(c.changed) == [{"cust": 2, "n_a": 2, "n_b": 1, "amount_a": 25, "amount_b": 20}]
    # equal at the savepoint; epoch 3: cust 4 only in B, cust 2 changed; epoch 4: cust 5 only in A too
    assert _epochs(c.per_epoch) == [(2, 0, 0, 0), (3, 0, 1, 1), (4, 1, 1, 1)]

    state = engine.compare(ab / "state", ab / "whatif", operator="totals")
    assert state.key == ["cust"] and "_kg" not in state.only_a.columns
    assert state.only_a["cust"].to_list() == [5] and state.only_b["cust"].to_list() == [4]
    changed = state.changed.select("cust", "count__count_a", "count__count_b", "sum_amount__sum_a", "sum_amount__sum_b")
    assert _rows(changed) == [
        {"cust": 2, "count__count_a": 2, "count__count_b": 1, "sum_amount__sum_a": 25, "sum_amount__sum_b": 20}
    ]
    assert _epochs(state.per_epoch) == _epochs(c.per_epoch)


def test_at_one_point_on_both_sides(ab: Path) -> None:
    at3 = engine.compare(ab / "state", ab / "whatif", sink="totals", at=3)
    assert _rows(at3.only_a) == [] and _rows(at3.only_b) == [{"cust": 4, "n": 1, "amount": 60}]
    assert _rows(at3.changed) == [{"cust": 2, "n_a": 2, "n_b": 1, "amount_a": 25, "amount_b": 20}]
    assert _epochs(at3.per_epoch) == [(3, 0, 1, 1)]  # --at: one comparison, not one per epoch
    # the savepoint is A's; the branch has none of that name: its epoch is used on B
    sp = engine.compare(ab / "state", ab / "whatif", operator="totals", at="sp")
    assert (sp.epoch_a, sp.epoch_b) == (2, 2) and sp.counts() == {"only_a": 0, "only_b": 0, "changed": 0}


def test_a_sink_without_key_is_compared_as_multisets(ab: Path) -> None:
    c = engine.compare(ab / "state", ab / "whatif", sink="kept")
    assert c.key == [] and "multisets" in (c.note or "")
    assert _rows(c.only_a) == [{"cust": 2, "amount": 5, "count": 1}, {"cust": 5, "amount": 3, "count": 1}]
    assert _rows(c.only_b) == [{"cust": 4, "amount": 60, "count": 2}]  # B holds that row twice, A never
    assert c.changed.is_empty()
    assert c.counts() == {"only_a": 2, "only_b": 2, "changed": 0}
    assert _epochs(c.per_epoch) == [(2, 0, 0, 0), (3, 1, 1, 0), (4, 2, 2, 0)]
    # a key given must identify rows: (1, 10) is there twice on both sides
    with pytest.raises(CompareError, match=r"the key \(cust, amount\) is not unique in A's 'kept'"):
        engine.compare(ab / "state", ab / "whatif", sink="kept", key=["cust", "amount"])


def test_the_summary_and_unknown_names(ab: Path) -> None:
    summary = engine.compare(ab / "state", ab / "whatif").summary
    assert summary is not None
    assert summary.to_dicts() == [
        {
            "kind": "sink",
            "name": "extra",
            "present": "b only",
            "key": None,
            "only_a": None,
            "only_b": None,
            "changed": None,
        },
        {"kind": "sink", "name": "kept", "present": "both", "key": None, "only_a": 2, "only_b": 2, "changed": 0},
        {"kind": "sink", "name": "totals", "present": "both", "key": "cust", "only_a": 1, "only_b": 1, "changed": 1},
        {
            "kind": "operator",
            "name": "totals",
            "present": "both",
            "key": "cust",
            "only_a": 1,
            "only_b": 1,
            "changed": 1,
        },
    ]
    with pytest.raises(CompareError, match=r"no operator 'nope' in A .*operators: totals"):
        engine.compare(ab / "state", ab / "whatif", operator="nope")
    with pytest.raises(CompareError, match=r"no sink 'extra' in A .*sinks: kept, totals"):
        engine.compare(ab / "state", ab / "whatif", sink="extra")
    with pytest.raises(CompareError, match="no column nope"):
        engine.compare(ab / "state", ab / "whatif", sink="kept", key=["nope"])


def test_the_cli(ab: Path) -> None:
    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "engine.cli", "compare", "state", "whatif", *args]
        return subprocess.run(command, capture_output=True, text=True, cwd=ab, timeout=120)

    done = cli("--sink", "totals", "--json")
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["counts"] == {"only_a": 1, "only_b": 1, "changed": 1} and out["key"] == ["cust"]
    assert out["only_a"] == [{"cust": 5, "n": 1, "amount": 3}]
    assert out["only_b"] == [{"cust": 4, "n": 2, "amount": 120}]
    assert out["changed"] == [{"cust": 2, "n_a": 2, "n_b": 1, "amount_a": 25, "amount_b": 20}]
    assert [(r["epoch_a"], r["only_a"], r["only_b"], r["changed"]) for r in out["per_epoch"]] == [
        (2, 0, 0, 0),
        (3, 0, 1, 1),
        (4, 1, 1, 1),
    ]
    refused = cli("--operator", "nope")
    assert refused.returncode == 2 and refused.stdout == ""
    assert refused.stderr.strip().splitlines() == [
        "error: no operator 'nope' in A (state) at epoch 4; operators: totals"
    ]


def test_on_s3(ab: Path, s3: Any) -> None:
    """The same pair uploaded to a bucket (paths in a state directory are relative): the same answers."""
    from engine.storage import copy_tree, location

    remote = f"s3://{s3.bucket()}/ab"
    copy_tree(ab, location(remote))
    c = engine.compare(f"{remote}/state", f"{remote}/whatif", sink="totals")
    assert c.origin == {"parent": "a", "epoch": 2, "savepoint": "sp"}
    assert _rows(c.only_b) == [{"cust": 4, "n": 2, "amount": 120}]
    assert _rows(c.changed) == [{"cust": 2, "n_a": 2, "n_b": 1, "amount_a": 25, "amount_b": 20}]
    assert _epochs(c.per_epoch) == [(2, 0, 0, 0), (3, 0, 1, 1), (4, 1, 1, 1)]
    multiset = engine.compare(f"{remote}/state", f"{remote}/whatif", sink="kept", at=4)
    assert multiset.counts() == {"only_a": 2, "only_b": 2, "changed": 0}


@pytest.fixture(scope="module")
def rolled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A rolled back to the savepoint its branch B started from, then run with B's SQL: A's line is 1, 2, 5, 6
    (3 and 4 abandoned), B's is 2, 3, 4, so the two agree at every pair of checkpoints. Also `b3`, a branch of A
    at epoch 3 (before the rollback), and `grand`, a branch of B at its epoch 3."""
    root = tmp_path_factory.mktemp("rolled")
    write_jsonl(root / "orders" / "1.json", [{"cust": c, "amount": a} for c, a in ORDERS])
    run(root, SQL_A, max_epoch_rows=2, max_epochs=2)
    versioning.create_savepoint(root / "state", "sp", epoch=2)
    create_branch(root / "state", root / "whatif", savepoint="sp")
    run(root, SQL_A, max_epoch_rows=2)
    versioning.create_savepoint(root / "state", "sp3", epoch=3)
    create_branch(root / "state", root / "b3", savepoint="sp3")
    versioning.rollback(root / "state", savepoint="sp")
    assert run(root, SQL_B, max_epoch_rows=2)["last_epoch"] == 6
    assert run(root, SQL_B, state="whatif", max_epoch_rows=2)["last_epoch"] == 4
    versioning.create_savepoint(root / "state", "both", epoch=5)
    versioning.create_savepoint(root / "whatif", "both", epoch=3)
    create_branch(root / "whatif", root / "grand", savepoint="both")
    assert run(root, SQL_B, state="grand", max_epoch_rows=2)["last_epoch"] == 4
    return root


def _pairs(frame: pl.DataFrame) -> list[tuple[int, ...]]:
    return [tuple(r) for r in frame.select("epoch_a", "epoch_b", "only_a", "only_b", "changed").iter_rows()]


def test_abandoned_epochs_are_left_out_and_lines_are_paired_by_position(rolled: Path) -> None:
    c = engine.compare(rolled / "state", rolled / "whatif", sink="totals")
    assert c.counts() == {"only_a": 0, "only_b": 0, "changed": 0} and (c.epoch_a, c.epoch_b) == (6, 4)
    # A's epochs 3 and 4 (its old SQL, abandoned by the rollback) are not compared with B's 3 and 4
    assert _pairs(c.per_epoch) == [(2, 2, 0, 0, 0), (5, 3, 0, 0, 0), (6, 4, 0, 0, 0)]
    # a branch of a branch: the grandparent is found, and the line runs through B's checkpoints
    g = engine.compare(rolled / "state", rolled / "grand", sink="totals")
    assert g.origin == {"parent": "a", "epoch": 2, "savepoint": "sp"}
    assert _pairs(g.per_epoch) == [(5, 3, 0, 0, 0), (6, 4, 0, 0, 0)]
    # two branches of A taken at epochs 2 and 3 part at 2
    s = engine.compare(rolled / "whatif", rolled / "b3")
    assert s.origin is not None and (s.origin["parent"], s.origin["epoch"]) == ("common", 2)
    # a summary's totals, not a Polars error: B (epoch 4) against b3's copy of A's epoch 3: sink and operator
    # totals differ in cust 4 (B only) and cust 2 (changed); kept: (4, 60) twice in B only, (2, 5) in b3 only
    assert s.counts() == {"only_a": 4, "only_b": 1, "changed": 2}


def test_points_per_side_and_errors_naming_the_side(rolled: Path) -> None:
    both = engine.compare(rolled / "state", rolled / "whatif", sink="totals", at="both")
    assert (both.epoch_a, both.epoch_b) == (5, 3) and _pairs(both.per_epoch) == [(5, 3, 0, 0, 0)]
    with pytest.raises(CompareError, match=r"^B \(.*whatif\): epoch 1 .*the oldest readable epoch there is 2$"):
        engine.compare(rolled / "state", rolled / "whatif", sink="totals", at=1)
    with pytest.raises(CompareError, match=r"at=3.5: an epoch is a whole number"):
        engine.compare(rolled / "state", rolled / "whatif", sink="totals", at=3.5)
    with pytest.raises(CompareError, match="key takes column names"):
        engine.compare(rolled / "state", rolled / "whatif", sink="totals", key=[])
    assert engine.compare(rolled / "state", rolled / "whatif", sink="totals", key="cust, n", at=2).key == ["cust", "n"]
    assert engine.compare(rolled / "state", rolled / "whatif", sink="totals", key="cust").key == ["cust"]


def test_columns_of_different_types() -> None:
    """B's column cast to A's type only when every value casts back unchanged; else both compared as text."""
    from engine.comparison import diff

    left = pl.LazyFrame({"k": [1, 2, 3], "v": [1, 2, 3], "w": [1, 2, 3]})
    right = pl.LazyFrame({"k": [1, 2, 3], "v": ["1", "x", "3"], "w": pl.Series([1, 2, 3], dtype=pl.Int32)})
    notes: list[str] = []
    only_a, only_b, changed = diff(left, right, ["k"], notes)
    assert only_a.is_empty() and only_b.is_empty()
    assert changed.to_dicts() == [{"k": 2, "v_a": "2", "v_b": "x", "w_a": 2, "w_b": 2}]  # not null == null
    assert notes == ["compared as text, their types differ and their values do not all cast to one type: v"]
    floats = pl.LazyFrame({"k": [1, 2, 3], "v": [1.0, 2.5, 3.0], "w": [1, 2, 3]})
    widened = diff(left, floats, ["k"])[2]  # A's integers cast to B's floats; 2.5 is not truncated to 2
    assert widened.select("k", "v_a", "v_b").to_dicts() == [{"k": 2, "v_a": 2.0, "v_b": 2.5}]


def test_notes_limits_and_the_csv(rolled: Path) -> None:
    from engine.comparison import _key
    from engine.manifest import SINK, TableEntry

    kept = engine.compare(rolled / "state", rolled / "whatif", sink="kept", at=2)
    assert kept.note == "the sink 'kept' declares no PRIMARY KEY: compared as multisets of rows"
    old = TableEntry("kept", SINK, "kept", 1, None)  # written before sinks' keys were recorded
    assert _key(old, old, None) == ([], "no key recorded: compared as multisets of rows")

    summary = engine.compare(rolled / "whatif", rolled / "b3").to_dict(limit=1)
    assert len(summary["summary"]) == 1 and summary["more"] == {"summary": 3}
    detail = engine.compare(rolled / "whatif", rolled / "b3", sink="kept").to_dict(limit=1)
    assert detail["only_a"] == [{"cust": 4, "amount": 60, "count": 2}] and detail["more"]["only_a"] == 0

    done = subprocess.run(
        [sys.executable, "-m", "engine.cli", "compare", "state", "b3", "--sink", "kept", "--csv", "--limit", "1"],
        capture_output=True,
        text=True,
        cwd=rolled,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    # A (epoch 6, SQL B after the rollback) against b3 (A's epoch 3): one row of each kind shown
    assert done.stdout.splitlines()[0] == "diff,cust,amount,count" and len(done.stdout.splitlines()) == 3
