"""MATCH_RECOGNIZE after kill -9: a `timelapse run` killed at a fault point and run again ends with the sink and
the state (rows and open runs) of an uninterrupted run."""

from __future__ import annotations

from pathlib import Path

import pytest

import engine
from tests.helpers import finish_run, read_sink, run, write_jsonl
from tests.test_match_recognize import SENSOR_RISE, V_SHAPE, prices, run_case_sql

POINTS = ["operator.mid", "state.commit.during", "state.commit.after", "manifest.commit.before"]


def _snapshot(root: Path) -> tuple[list[tuple[object, ...]], list[tuple[object, ...]], list[tuple[object, ...]]]:
    history = engine.open(root / "state")
    return (
        sorted(read_sink(root / "out").rows(), key=repr),
        sorted(history.state("mr").rows(), key=repr),
        sorted(history.state("mr/runs").rows(), key=repr),
    )


@pytest.mark.parametrize("point", POINTS)
def test_kill_9_then_rerun_equals_an_uninterrupted_run(tmp_path: Path, point: str) -> None:
    case = V_SHAPE if point.startswith("state") else SENSOR_RISE
    data = prices(3, 24)
    straight, crashed = tmp_path / "straight", tmp_path / "crashed"
    for root in (straight, crashed):
        write_jsonl(root / "events" / "1.json", data)
        (root / "pipeline.sql").write_text(run_case_sql(case).replace("'10 epochs'", "'2 epochs'"))
    run(straight, (straight / "pipeline.sql").read_text(), max_epoch_rows=4)
    assert finish_run(crashed, "--max-epoch-rows", "4", crash_at=f"{point}:3") != 0 or point == "operator.mid"
    assert finish_run(crashed, "--max-epoch-rows", "4") == 0
    assert _snapshot(crashed) == _snapshot(straight)


@pytest.mark.xdist_group("ray")  # starts Ray, like tests/test_scaleout.py (tests/conftest.py RAY_MODULES)
def test_two_ray_workers_give_the_single_process_result(tmp_path: Path) -> None:
    """Partitions spread over two Ray workers by key group: the sink and the open partial matches are those of a
    single-process run (results do not depend on the worker count)."""
    from tests.scaleout_helpers import run_with

    data = prices(5, 40, keys="abcdef")
    snapshots = []
    for name, workers in (("single", None), ("two", 2)):
        root = tmp_path / name
        write_jsonl(root / "events" / "1.json", data)
        run_with(root, run_case_sql(V_SHAPE), workers, max_epoch_rows=7)
        snapshots.append(_snapshot(root))
    assert snapshots[0][0], "the input should give matches"
    assert snapshots[0] == snapshots[1]
