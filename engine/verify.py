"""`timelapse verify DIR`: check every table and version the manifest names, and report what is wrong.

For the current cut and every live savepoint, each table is opened at its version and every row is read, so a
missing or damaged data file or log entry is found. For the other retained checkpoints only the Delta log is
opened at its version (cheap), unless `deep` reads their rows too. Nothing is changed.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import polars as pl
from deltalake import DeltaTable

from engine.manifest import RESUMABLE, read_checkpoints
from engine.state_dir import StateDir
from engine.versioning import live_savepoints, readable


@dataclass(frozen=True)
class Problem:
    epoch: int
    table: str
    path: str
    version: int
    what: str


def verify(state: str | Path, deep: bool = False) -> dict[str, Any]:
    directory = StateDir(Path(state))
    if not directory.manifest.exists():
        raise FileNotFoundError(f"{state} is not a timelapse state directory")
    rows = read_checkpoints(directory.manifest)
    resumable = rows.filter(pl.col("kind").is_in(list(RESUMABLE)))
    if resumable.is_empty():
        return {"checkpoints": 0, "tables_checked": 0, "problems": []}
    current = resumable.row(-1, named=True)
    saved = {int(sp["epoch"]) for sp in live_savepoints(rows).values()}
    full = [current] + [r for r in rows.filter(pl.col("kind") == "epoch").iter_rows(named=True) if r["epoch"] in saved]
    light = [r for r in rows.filter(pl.col("kind") == "epoch").iter_rows(named=True) if readable(rows, r)]
    problems: list[Problem] = []
    checked: set[tuple[str, int]] = set()
    for row, read_rows in [(r, True) for r in full] + [(r, deep) for r in light]:
        for entry in row["tables"] or []:
            key = (entry["path"], int(entry["version"]))
            if key in checked:
                continue
            checked.add(key)
            what = check_table(entry["path"], int(entry["version"]), read_rows)
            if what:
                problems.append(Problem(int(row["epoch"]), entry["name"], entry["path"], int(entry["version"]), what))
    intent = directory.root / "rollback-in-progress.json"
    notes = []
    if intent.exists():
        notes.append(f"a rollback was cut short ({json.loads(intent.read_text())}); the next run finishes it")
    return {
        "checkpoints": len(light),
        "tables_checked": len(checked),
        "problems": [asdict(p) for p in problems],
        "notes": notes,
    }


def check_table(path: str, version: int | None, read_rows: bool) -> str | None:
    """What is wrong with a table at `version` (None: its latest), or None. `read_rows` reads every data file."""
    if not (Path(path) / "_delta_log").is_dir():
        return "the table is missing"
    label = "the latest version" if version is None else f"version {version}"
    try:
        table = DeltaTable(path, version=version)
    except Exception as err:
        return f"{label} cannot be opened: {first_line(err)}"
    except BaseException as err:  # a damaged file can make the Rust readers panic
        if isinstance(err, KeyboardInterrupt | SystemExit):
            raise
        return f"{label} cannot be opened: {first_line(err)}"
    if not read_rows:
        return None
    try:
        pl.scan_delta(path, version=int(table.version())).select(pl.len()).collect()
        for uri in table.file_uris():
            pl.read_parquet(uri)
    except BaseException as err:  # Polars panics (a BaseException) on some truncated files
        if isinstance(err, KeyboardInterrupt | SystemExit):
            raise
        return f"a data file cannot be read: {first_line(err)}"
    return None


def first_line(err: BaseException) -> str:
    """An error's first line, for one-line reports (Rust errors can run to many lines)."""
    text = str(err).strip()
    return text.splitlines()[0][:300] if text else type(err).__name__


def render(report: dict[str, Any]) -> str:
    lines = [f"checked {report['tables_checked']} table versions across {report['checkpoints']} retained checkpoints"]
    lines += [f"note: {note}" for note in report.get("notes", [])]
    if not report["problems"]:
        lines.append("no problems found")
    for p in report["problems"]:
        lines.append(f"PROBLEM epoch {p['epoch']}: {p['table']} (version {p['version']}, {p['path']}): {p['what']}")
    return "\n".join(lines)
