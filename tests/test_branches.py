"""Branches: independent pipelines started from a savepoint or epoch; both sides stay correct."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from engine import state_at, versioning
from engine.branching import create_branch
from tests.helpers import read_sink, run, sort_all
from tests.test_versioning import STATEFUL, _inputs, _sinks


def _sinks_at(paths: dict[str, str]) -> dict[str, pl.DataFrame]:
    return {name: sort_all(read_sink(Path(path))) for name, path in paths.items()}


def test_a_branch_and_its_parent_run_independently_and_both_are_correct(tmp_path: Path) -> None:
    straight, parent = tmp_path / "straight", tmp_path / "parent"
    for root in (straight, parent):
        _inputs(root)
    run(straight, STATEFUL, max_epoch_rows=5)
    run(parent, STATEFUL, max_epoch_rows=5, max_epochs=15)
    versioning.create_savepoint(parent / "state", "sp", epoch=10)
    run(parent, STATEFUL, max_epoch_rows=5, max_epochs=5)  # the parent moves on before the branch exists

    result = create_branch(parent / "state", parent / "whatif", savepoint="sp")
    assert result["from_epoch"] == 10
    assert result["sinks"]["totals"] == str((parent / "totals-whatif").resolve())
    # The branch starts as the parent's cut at epoch 10: state and sinks.
    for op in ("totals", "per10"):
        a = state_at(parent / "state", op, 10).collect()
        b = state_at(parent / "whatif", op).collect()
        assert_frame_equal(sort_all(a), sort_all(b))
    assert_frame_equal(
        sort_all(pl.read_delta(str(parent / "totals"), version=_version(parent / "state", 10, "totals"))),
        sort_all(read_sink(parent / "totals-whatif")),
    )

    # Both run to the end, with the same SQL: each equals the straight run; neither touched the other.
    # Same SQL, so the same sink paths: the branch still writes its own tables.
    run(parent, STATEFUL, state="whatif", max_epoch_rows=5)
    run(parent, STATEFUL, max_epoch_rows=5)
    expected = _sinks(straight)
    for name, frame in _sinks(parent).items():
        assert_frame_equal(frame, expected[name], check_dtypes=False)
    for name, frame in _sinks_at(result["sinks"]).items():
        assert_frame_equal(frame, expected[name], check_dtypes=False)

    events = versioning.history(parent / "state")
    assert any(e["kind"] == "branch" and e["savepoint"] == "sp" and e["epoch"] == 10 for e in events)
    branch_events = versioning.history(parent / "whatif")
    assert branch_events[0]["kind"] == "branched_from" and branch_events[0]["epoch"] == 10
    rendered = versioning.render_history(events)
    assert "branch" in rendered and "savepoint 'sp' = epoch 10" in rendered


def _version(state: Path, epoch: int, sink: str) -> int:
    from engine.history import checkpoint

    row = checkpoint(state, epoch)
    return int(next(t["version"] for t in row["tables"] if t["name"] == sink))


def test_a_branch_with_changed_sql_from_the_cli(tmp_path: Path) -> None:
    _inputs(tmp_path)
    run(tmp_path, STATEFUL, max_epoch_rows=5, max_epochs=8)
    before = sort_all(read_sink(tmp_path / "totals"))
    changed = STATEFUL.replace("FROM orders GROUP BY cust", "FROM orders WHERE amount > 25 GROUP BY cust")
    (tmp_path / "variant.sql").write_text(changed)

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "engine.cli", *args], capture_output=True, text=True, cwd=tmp_path, timeout=120
        )

    made = cli("branch", "state", "b", "--from", "epoch", "4", "--sink", "totals=totals_b", "--sql", "variant.sql")
    assert made.returncode == 0, made.stderr
    assert "created from epoch 4" in made.stdout and "kept" in made.stdout
    ran = cli("run", "variant.sql", "--state", "b", "--once", "--quiet", "--max-epoch-rows", "5", "--json")
    assert ran.returncode == 0, ran.stderr
    assert json.loads(ran.stdout)["epochs"] == 36
    # The parent's sink is untouched; the branch's reflects the new filter from epoch 5 on.
    assert_frame_equal(sort_all(read_sink(tmp_path / "totals")), before)
    from tests import test_joins as j
    from tests.helpers import duck

    orders = j.frame(j.make(71, 200, 0)).with_row_index("position")
    expected = duck(
        "SELECT cust, COUNT(*) AS n, SUM(amount) AS amount FROM orders "
        "WHERE position < 20 OR amount > 25 GROUP BY cust",
        orders=orders,
    )
    assert_frame_equal(sort_all(read_sink(tmp_path / "totals_b")), sort_all(expected), check_dtypes=False)

    again = cli("branch", "state", "b", "--from", "epoch", "4")
    assert again.returncode == 2 and "not empty" in again.stderr
    unknown = cli("branch", "state", "c", "--from", "savepoint", "nope")
    assert unknown.returncode == 2 and "no savepoint named 'nope'" in unknown.stderr
    assert not (tmp_path / "c").exists()
    log = cli("log", "state")
    assert "branch" in log.stdout and "epoch 4" in log.stdout


def test_branching_refuses_an_unknown_sink(tmp_path: Path) -> None:
    _inputs(tmp_path)
    run(tmp_path, STATEFUL, max_epoch_rows=50)
    with pytest.raises(versioning.VersioningError, match="no sink named nope"):
        create_branch(tmp_path / "state", tmp_path / "b", epoch=1, sink_paths={"nope": str(tmp_path / "x")})
