"""State larger than memory (`SET 'state.memory.budget'`), differential: under a budget too small for the state,
the operators' cold key groups wait on local disk, and every sink, late row, dead letter and state table equals
the unbounded run's and DuckDB's answer; whatever the epoch size and budget, across restarts (each part loads its
key groups from the Delta tables), through compaction, and after a kill -9 mid-epoch.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine import state_store
from engine.operators import spilled
from tests.helpers import examples
from tests.scaleout_helpers import assert_same_run, metrics, roots, run_with
from tests.test_scaleout import (
    EVENT_SINKS,
    EVENTS,
    JOIN_SINKS,
    JOINS,
    RESCALE,
    RESCALE_SINKS,
    SMALL,
    SMALL_SINKS,
    assert_events_match_duckdb,
    assert_joins_match_duckdb,
    assert_same_state,
    event_rows,
    write_events,
    write_joins,
)


def budget(sql: str, size: str) -> str:
    return f"SET 'state.memory.budget' = '{size}';\n{sql}"


def spill_dirs() -> set[Path]:
    return set(Path(tempfile.gettempdir()).glob(f"{spilled.SPILL_PREFIX}{os.getpid()}-*"))


def test_windows_group_by_top_n_and_chains_under_a_tiny_budget(tmp_path: Path) -> None:
    rows = event_rows(11, 130)
    unbounded, bounded = roots(tmp_path, lambda r: write_events(r, rows), "unbounded", "bounded")
    run_with(unbounded, EVENTS, None, max_epoch_rows=22)
    before = spill_dirs()
    run_with(bounded, budget(EVENTS, "2 KB"), None, max_epoch_rows=22)
    assert spill_dirs() == before  # the run removed its spill directory
    assert_same_run(unbounded, bounded, EVENT_SINKS, sources=("events",))
    assert_same_state(unbounded, bounded)
    assert_events_match_duckdb(bounded, rows)
    last = metrics(bounded)[-1]
    held, total = last["state_memory_bytes"], last["state_bytes"]
    assert sum(held.values()) < sum(total.values())  # some state was on disk, not in memory


def test_joins_and_over_under_a_tiny_budget(tmp_path: Path) -> None:
    unbounded, bounded = roots(tmp_path, lambda r: write_joins(r, 3), "unbounded", "bounded")
    run_with(unbounded, JOINS, None, max_epoch_rows=12)
    run_with(bounded, budget(JOINS, "1 KB"), None, max_epoch_rows=12)
    assert_same_run(unbounded, bounded, JOIN_SINKS)
    assert_same_state(unbounded, bounded)
    assert_joins_match_duckdb(bounded, 3)


@pytest.mark.parametrize("compacting", [False, True])
def test_restarts_and_compaction_under_a_budget(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, compacting: bool
) -> None:
    """Stopped every 3 epochs and restarted (each part loads its key groups from the checkpoint: OVER's rows by
    their partition, the others by key), with tombstones in the logs, or with the logs compacted range by range
    at most checkpoints: the same as one unbounded run."""
    if compacting:
        monkeypatch.setattr(state_store, "COMPACT_MIN_ROWS", 10)
    rows = event_rows(5, 100)
    unbounded, bounded = roots(tmp_path, lambda r: write_events(r, rows), "unbounded", "bounded")
    run_with(unbounded, RESCALE, None, max_epoch_rows=20)
    for _ in range(10):
        summary = run_with(bounded, budget(RESCALE, "4 KB"), None, max_epoch_rows=20, max_epochs=2)
        if summary["epochs"] == 0:
            break
    assert_same_run(unbounded, bounded, RESCALE_SINKS, sources=("events",))
    assert_same_state(unbounded, bounded)
    compactions = [
        path
        for path in (bounded / "state").rglob("_delta_log/*.json")
        if '"operation":"WRITE"' in path.read_text() and '"mode":"Overwrite"' in path.read_text()
    ]
    assert bool(compactions) == compacting, "compaction ran where it should not, or not where it should"


@settings(max_examples=examples(10), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    seed=st.integers(0, 10_000),
    count=st.integers(0, 80),
    max_rows=st.one_of(st.none(), st.integers(1, 30)),
    size=st.sampled_from(["1 B", "3 KB", "30 KB", "1 GB"]),
)
def test_any_epoch_size_and_budget_give_the_unbounded_result(
    seed: int, count: int, max_rows: int | None, size: str
) -> None:
    tmp = Path(tempfile.mkdtemp())
    try:
        rows = event_rows(seed, count)
        unbounded, bounded = roots(tmp, lambda r: write_events(r, rows), "unbounded", "bounded")
        run_with(unbounded, SMALL, None, max_epoch_rows=7)
        run_with(bounded, budget(SMALL, size), None, max_epoch_rows=max_rows)
        assert_same_run(unbounded, bounded, SMALL_SINKS, sources=("events",), with_epoch=False)
    finally:
        shutil.rmtree(tmp)


def test_kill_9_mid_epoch_under_a_budget(tmp_path: Path) -> None:
    """Killed after some of an operator's parts ran (some written to disk) and before the epoch committed: the
    restart equals the unbounded run."""
    rows = event_rows(8, 120)
    unbounded, bounded = roots(tmp_path, lambda r: write_events(r, rows), "unbounded", "bounded")
    run_with(unbounded, EVENTS, None, max_epoch_rows=20)
    (bounded / "pipeline.sql").write_text(budget(EVENTS, "2 KB"))
    env = {**os.environ, "TIMELAPSE_CRASH_AT": "spill.written:60"}
    crashed = subprocess.run(
        [sys.executable, "-m", "engine.cli", "run", "pipeline.sql", "--state", "state", "--once",
         "--max-epoch-rows", "20", "--json"],
        cwd=bounded, env=env, capture_output=True, text=True,
    )  # fmt: skip
    assert crashed.returncode == -9, crashed.stderr
    run_with(bounded, budget(EVENTS, "2 KB"), None, max_epoch_rows=20)
    assert_same_run(unbounded, bounded, EVENT_SINKS, sources=("events",), with_epoch=False)
    assert_same_state(unbounded, bounded)


def test_a_wrong_budget_is_one_line_with_its_position(tmp_path: Path) -> None:
    (tmp_path / "pipeline.sql").write_text(budget("SELECT 1;", "lots"))
    done = subprocess.run(
        [sys.executable, "-m", "engine.cli", "run", "pipeline.sql", "--state", "state", "--once"],
        cwd=tmp_path, capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1 and "state.memory.budget" in done.stderr
    assert "line 1, column" in done.stderr, done.stderr
