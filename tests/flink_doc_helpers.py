"""Running Flink's documentation examples as a user would (tests/test_flink_doc_examples*.py): inputs as JSON
files, the script run to the end of its input, errors read from the CLI."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
from pathlib import Path
from typing import Any

import polars as pl

from engine import Pipeline
from tests.helpers import sort_all, write_jsonl

UTC = dt.UTC


def ts(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=UTC)


def run_flink_sql(root: Path, sql: str, inputs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Write each input as JSON lines under `root/<name>/`, then run the script to the end of its input (drained:
    the bounded input's final watermark, as Flink's bounded sources end)."""
    for name, rows in inputs.items():
        write_jsonl(root / name / "part-0.json", rows)
    script = root / "pipeline.sql"
    script.write_text(sql)
    return Pipeline.from_sql(script, state=root / "state").run(drain=True)


def cli(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "engine.cli", *args], cwd=root, capture_output=True, text=True, timeout=300
    )


def assert_one_line_error(root: Path, sql: str, line: int, fragment: str) -> str:
    """`timelapse run` refuses the script: exit code 2, one line on stderr naming the line and a column."""
    (root / "pipeline.sql").write_text(sql)
    result = cli(root, "run", "pipeline.sql", "--state", "state", "--once")
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"error: line {line}, column "), lines[0]
    assert fragment in lines[0], lines[0]
    return lines[0]


def rows(frame: pl.DataFrame) -> list[tuple[Any, ...]]:
    return [tuple(r) for r in sort_all(frame).iter_rows()]
