"""SIGKILL at every named fault point, for a window aggregation, an upsert GROUP BY and a join in one pipeline.

After every crash the next run recovers; at the end the sinks equal DuckDB over all the input, every bad
record is in the dead-letter table exactly once, and the state equals an uninterrupted run's.
"""

from __future__ import annotations

import random
import signal
from pathlib import Path

import pytest

from engine import faults
from tests import crash_harness as harness


def test_the_points_are_named_and_disarmed_by_default() -> None:
    assert faults._armed is None
    faults.point("state.commit.after")  # disarmed: nothing happens
    with pytest.raises(ValueError, match="unknown fault point"):
        faults.arm("state.commit.sometime")


def test_every_crash_point_of_a_run(tmp_path: Path) -> None:
    rng = random.Random(8)
    points = harness.RUN_POINTS
    stream = harness.Stream(tmp_path / "crashed", seed=8, chunks=len(points) + 8)
    stream.setup("2 epochs")
    missed = []
    for point in points:
        for hits in (rng.randint(1, 3), 1, 1):
            stream.deliver()
            if harness.run_pipeline(stream.root, f"{point}:{hits}") == -signal.SIGKILL:
                break
        else:
            missed.append(point)
    assert not missed, f"never reached: {missed}"
    harness.finish_and_check(stream, tmp_path)


def test_every_crash_point_of_savepoints_and_rollbacks(tmp_path: Path) -> None:
    stream = harness.Stream(tmp_path / "crashed", seed=9, chunks=len(harness.VERSIONING_POINTS) + 2)
    stream.setup("1 epochs")
    stream.deliver()
    harness.run_pipeline(stream.root)
    for attempt, point in enumerate(harness.VERSIONING_POINTS):
        stream.deliver()
        assert harness.crash_versioning(stream.root, point, attempt), point
        harness.run_pipeline(stream.root)  # finishes an interrupted rollback, then goes on
    harness.finish_and_check(stream, tmp_path)


def test_a_restart_that_checkpoints_at_other_epochs_discards_the_crashed_runs_state_commits(tmp_path: Path) -> None:
    """Run 1 checkpoints every 3 epochs and dies after writing its state, before the manifest row. Run 2
    checkpoints every 2 epochs: its first checkpoint (epoch 2) must not name state that holds epoch 3."""
    stream = harness.Stream(tmp_path / "crashed", seed=4, chunks=3)
    stream.setup("3 epochs")
    stream.deliver()
    harness.run_pipeline(stream.root)
    stream.deliver_all()
    assert harness.run_pipeline(stream.root, "manifest.commit.before") == -signal.SIGKILL
    status = harness.run_pipeline(stream.root, "manifest.commit.after", "--checkpoint-interval", "2 epochs")
    assert status == -signal.SIGKILL
    harness.finish_and_check(stream, tmp_path)


@pytest.mark.slow
def test_crash_soak(tmp_path: Path) -> None:
    tally = harness.Tally()
    for index in range(3):
        harness.crash_pipeline(tmp_path / f"p{index}", index, 10, tally)
    assert tally.crashes >= 10
