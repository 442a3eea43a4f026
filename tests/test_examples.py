"""Every example pipeline runs as its header says, and produces rows."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

EXAMPLES = sorted((Path(__file__).parent.parent / "examples").glob("*/pipeline.sql"))


@pytest.mark.parametrize("script", EXAMPLES, ids=[p.parent.name for p in EXAMPLES])
def test_example_runs(tmp_path: Path, script: Path) -> None:
    copy = tmp_path / script.parent.name
    shutil.copytree(script.parent, copy, ignore=shutil.ignore_patterns("out"))
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "engine.cli",
            "run",
            str(copy / "pipeline.sql"),
            "--state",
            str(tmp_path / "state"),
            "--once",
            "--max-epoch-rows",
            "5000",
            "--quiet",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    outputs = [p for p in (copy / "out").iterdir() if (p / "_delta_log").exists()]
    assert outputs and all(pl.read_delta(str(p)).height > 0 for p in outputs)
