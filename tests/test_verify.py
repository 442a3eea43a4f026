"""`timelapse verify`: a healthy directory passes; a damaged data file or log entry is found and named."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import polars as pl

from engine.verify import verify
from tests.helpers import run
from tests.test_versioning import STATEFUL, _inputs


def _cli(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "engine.cli", "verify", "state", *args], capture_output=True, text=True, cwd=root
    )


def test_verify_finds_damaged_files_and_log_entries(tmp_path: Path) -> None:
    _inputs(tmp_path)
    run(tmp_path, STATEFUL, max_epoch_rows=25)
    healthy = _cli(tmp_path)
    assert healthy.returncode == 0 and "no problems found" in healthy.stdout
    report = verify(tmp_path / "state", deep=True)
    assert report["problems"] == [] and report["checkpoints"] == 8 and report["tables_checked"] > 8

    # A truncated data file of the GROUP BY's state table, read by the current cut.
    state_table = tmp_path / "state" / "operators" / "totals" / "state"
    newest = max(state_table.glob("*.parquet"), key=lambda p: p.stat().st_mtime)
    newest.write_bytes(newest.read_bytes()[:20])
    # A missing log entry of the window sink, needed to open an early epoch's version.
    sink_log = tmp_path / "w" / "_delta_log"
    (sink_log / "00000000000000000002.json").unlink()

    damaged = _cli(tmp_path, "--json")
    assert damaged.returncode == 4, damaged.stderr
    problems = json.loads(damaged.stdout)["problems"]
    assert any(p["table"] == "totals" and "cannot be read" in p["what"] and ".parquet" in p["what"] for p in problems)
    assert any(p["table"] == "w" and "cannot be opened" in p["what"] for p in problems)
    assert "Traceback" not in damaged.stderr
    text = _cli(tmp_path).stdout
    assert "PROBLEM epoch 8: totals" in text
    assert pl.read_delta(str(tmp_path / "state" / "manifest")).height == 8  # verify changes nothing
