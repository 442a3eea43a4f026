"""Shared test helpers: write inputs, run pipelines through the public API, read sinks back."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import duckdb
import polars as pl

from engine import Pipeline


def examples(thorough: int) -> int:
    """A property test's example count: `thorough` under the `thorough` hypothesis profile, at most the profile's
    `max_examples` under the default `ci` one (tests/conftest.py)."""
    from hypothesis import settings

    return min(thorough, settings().max_examples)


def write_jsonl(path: Path, rows: list[dict[str, Any]], extra_lines: list[str] | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps(r, ensure_ascii=False) for r in rows] + (extra_lines or [])
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")


def run(workdir: Path, sql: str, state: str = "state", **options: Any) -> dict[str, Any]:
    script = workdir / "pipeline.sql"
    script.write_text(sql)
    return Pipeline.from_sql(script, state=workdir / state).run(once=True, **options)


def read_sink(path: Path) -> pl.DataFrame:
    return pl.read_delta(str(path))


def sort_all(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.sort(frame.columns, nulls_last=True)


def duck(query: str, **tables: pl.DataFrame) -> pl.DataFrame:
    """Run `query` in DuckDB over Polars frames; timestamps are handed over as UTC wall-clock values.

    They are handed over in microseconds: DuckDB 2.0.1's `epoch_ms` fails on a TIMESTAMP_MS column
    ("Unimplemented type for cast (INT64 -> INT64)"), and microseconds are DuckDB's own TIMESTAMP.
    """
    con = duckdb.connect()
    for name, frame in tables.items():
        naive = frame.with_columns(
            pl.col(c).dt.replace_time_zone(None).dt.cast_time_unit("us")
            for c, t in frame.schema.items()
            if isinstance(t, pl.Datetime)
        )
        con.register(name, naive.to_arrow())
    return con.sql(query).pl()


def naive(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.with_columns(
        pl.col(c).dt.convert_time_zone("UTC").dt.replace_time_zone(None).dt.cast_time_unit("us")
        for c, t in frame.schema.items()
        if isinstance(t, pl.Datetime)
    )


def launch_run(root: Path, *extra: str, crash_at: str | None = None) -> subprocess.Popen[bytes]:
    """`timelapse run pipeline.sql --state state --once` in `root`, killed at fault point `crash_at` if given."""
    env = {k: v for k, v in os.environ.items() if k not in ("TIMELAPSE_CRASH_AT", "TIMELAPSE_FAIL_AT")}
    if crash_at:
        env["TIMELAPSE_CRASH_AT"] = crash_at
    command = [sys.executable, "-m", "engine.cli", "run", "pipeline.sql", "--state", "state", "--once", "--quiet"]
    return subprocess.Popen([*command, *extra], cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def finish_run(root: Path, *extra: str, crash_at: str | None = None) -> int:
    """`launch_run` to its end: it must finish, or die by SIGKILL at its fault point."""
    process = launch_run(root, *extra, crash_at=crash_at)
    _out, err = process.communicate(timeout=120)
    assert process.returncode in (0, -signal.SIGKILL), err.decode()[-2000:]
    return process.returncode


def replay_changes(changes: list[tuple[str, list[dict[str, Any]]]], schema: dict[str, pl.DataType]) -> pl.DataFrame:
    """The rows left after a change history ("insert"/"update"/"delete", the rows each names; an update's last
    row is its after image), as the oracle of a changelog input's final contents."""
    live: dict[Any, dict[str, Any]] = {}
    for kind, rows in changes:
        if kind == "delete":
            del live[rows[0]["id"]]
        else:
            live[rows[-1]["id"]] = rows[-1]
    return pl.DataFrame(list(live.values()), schema=schema, orient="row")
