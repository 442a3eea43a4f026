"""kill -9 at random instants, restart, repeat: the sinks must equal an uninterrupted run's, exactly."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from tests.helpers import read_sink, sort_all
from tests.test_epochs import SQL, expected, make_input


def _start(root: Path) -> subprocess.Popen[bytes]:
    command = [
        sys.executable,
        "-m",
        "engine.cli",
        "run",
        str(root / "pipeline.sql"),
        "--state",
        str(root / "state"),
        "--once",
        "--max-epoch-rows",
        "3",
        "--quiet",
        "--json",
    ]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=root)


def crash_until_done(root: Path, kills: int, seed: int) -> int:
    """Kill the run `kills` times at random instants, then let it finish. Returns how many kills landed."""
    rng = random.Random(seed)
    landed = 0
    for _ in range(kills):
        process = _start(root)
        time.sleep(rng.uniform(0.2, 1.6))
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
            landed += 1
        process.wait()
    process = _start(root)
    _out, err = process.communicate(timeout=120)
    assert process.returncode == 0, err.decode()
    return landed


def _check(root: Path) -> None:
    assert_frame_equal(sort_all(read_sink(root / "out" / "hot_readings")), expected(root))
    dead = pl.read_delta(str(root / "state" / "dead_letters" / "sensordata"))
    assert dead.height == 2 * len(range(0, 6, 2))  # every bad record exactly once
    manifest = pl.read_delta(str(root / "state" / "manifest")).sort("epoch")
    assert manifest.get_column("epoch").to_list() == list(range(1, manifest.height + 1))


@pytest.mark.parametrize("seed", [1, 2])
def test_kill_9_at_random_points_loses_and_duplicates_nothing(tmp_path: Path, seed: int) -> None:
    make_input(tmp_path, seed, 6, 40)
    (tmp_path / "pipeline.sql").write_text(SQL)
    landed = crash_until_done(tmp_path, kills=5, seed=seed)
    assert landed >= 1
    _check(tmp_path)


@pytest.mark.slow
def test_kill_9_soak(tmp_path: Path) -> None:
    make_input(tmp_path, 7, 6, 200)
    (tmp_path / "pipeline.sql").write_text(SQL)
    crash_until_done(tmp_path, kills=100, seed=7)
    _check(tmp_path)
