"""Retention: old checkpoints are freed, savepoints and recent checkpoints stay readable and restorable."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
from deltalake import DeltaTable
from polars.testing import assert_frame_equal

from engine import HistoryError, history, retention, state_at, versioning
from tests.helpers import run, sort_all
from tests.test_versioning import STATEFUL, _inputs, _sinks


def _files(root: Path) -> tuple[int, int]:
    """(data files, log entries) over every Delta table under `root`."""
    data = sum(1 for p in root.rglob("*.parquet") if "_delta_log" not in p.parts)
    log = sum(1 for p in root.rglob("_delta_log/*") if p.suffix in (".json", ".parquet"))
    return data, log


def test_a_savepoint_survives_aggressive_retention_and_still_restores(tmp_path: Path) -> None:
    straight, kept = tmp_path / "straight", tmp_path / "kept"
    for root in (straight, kept):
        _inputs(root)
    run(straight, STATEFUL, max_epoch_rows=5)

    run(kept, STATEFUL, max_epoch_rows=5, max_epochs=15)
    versioning.create_savepoint(kept / "state", "before", epoch=12)
    at_12 = sort_all(state_at(kept / "state", "totals", 12).collect())
    run(kept, STATEFUL, max_epoch_rows=5, retain_count=2)  # a retention pass every 2 checkpoints

    # Epochs older than the last two are gone, with a clear message; the savepoint's epoch is not.
    with pytest.raises(HistoryError, match="removed by retention"):
        history.checkpoint(kept / "state", 5)
    with pytest.raises(versioning.VersioningError, match="removed by retention"):
        versioning.rollback(kept / "state", to_epoch=5)
    with pytest.raises(versioning.VersioningError, match="removed by retention"):
        versioning.create_savepoint(kept / "state", "late", epoch=20)
    assert_frame_equal(sort_all(state_at(kept / "state", "totals", 12).collect()), at_12)
    assert state_at(kept / "state", "totals", 39).collect().height > 0

    versioning.rollback(kept / "state", savepoint="before")
    run(kept, STATEFUL, max_epoch_rows=5, retain_count=2)
    for name, frame in _sinks(straight).items():
        assert_frame_equal(_sinks(kept)[name], frame, check_dtypes=False)


def test_retention_bounds_the_files_of_a_long_run(tmp_path: Path) -> None:
    everything, bounded = tmp_path / "all", tmp_path / "bounded"
    for root in (everything, bounded):
        _inputs(root)
    run(everything, STATEFUL, max_epoch_rows=4, retain_count="all")
    run(bounded, STATEFUL, max_epoch_rows=4, retain_count=3)
    assert retention.expired_before(everything / "state") is None
    assert retention.expired_before(bounded / "state") == 46  # the last pass ran at epoch 48
    # Each pass is a manifest row, so count the operators' tables only.
    unbounded_files = _files(everything / "state" / "operators")
    bounded_files = _files(bounded / "state" / "operators")
    assert bounded_files[0] <= unbounded_files[0] and bounded_files[1] < unbounded_files[1] / 3
    offsets = sorted(p.name for p in (bounded / "state" / "offsets").iterdir())
    assert offsets[0] == "000000000046.json" and "base.json" in offsets
    for name, frame in _sinks(everything).items():
        assert_frame_equal(_sinks(bounded)[name], frame)
    # The folded offset log still restores every source: a further run reads nothing twice.
    again = run(bounded, STATEFUL, max_epoch_rows=4)
    assert again["epochs"] == 0
    for name, frame in _sinks(everything).items():
        assert_frame_equal(_sinks(bounded)[name], frame)
    events = versioning.history(bounded / "state")
    assert sum(e["kind"] == "retention" for e in events) == 16
    # Delta remembers removed files only back to the oldest retained checkpoint, so its checkpoints stop growing
    # with every compaction ever made (they did, at a century's horizon).
    for log in (bounded / "state").rglob("_delta_log"):
        configuration = DeltaTable(str(log.parent)).metadata().configuration
        assert configuration[retention.TOMBSTONES].endswith("minutes"), log


def test_retention_from_the_cli(tmp_path: Path) -> None:
    _inputs(tmp_path)
    run(tmp_path, STATEFUL, max_epoch_rows=50)
    done = subprocess.run(
        [sys.executable, "-m", "engine.cli", "retention", "state", "--count", "2", "--reason", "disk"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "epochs from 3 on stay readable" in done.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "engine.cli", "retention", "state", "--count", "two"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert bad.returncode == 2 and "positive number" in bad.stderr and "Traceback" not in bad.stderr
    manifest = pl.read_delta(str(tmp_path / "state" / "manifest"))
    assert manifest.filter(pl.col("kind") == "retention").height == 1
