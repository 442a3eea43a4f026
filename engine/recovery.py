"""Damaged storage: find it, fall back to the newest checkpoint that reads cleanly, and say what happened.

A run that cannot open the state it would resume from, or fails on a damaged file while it runs (a truncated
or corrupted Parquet file, a missing or corrupted Delta log entry), first confirms the damage with `verify`,
so that a bug is never mistaken for it. Then it picks the newest retained checkpoint whose every table opens
at its version and reads in full, sets aside the log entries after that version of any table whose later
versions cannot be opened (moved to `<table>/_damaged_log/<time>/`, never deleted), and rolls back to it like
`timelapse rollback`: sinks, state and offsets together, recorded in the manifest with the reason. The epochs
after it are recomputed from their sources. If no checkpoint reads cleanly, the run stops and names the damage.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path
from typing import Any

import polars as pl

from engine.manifest import RESUMABLE, read_checkpoints
from engine.state_dir import StateDir
from engine.verify import check_table, first_line
from engine.versioning import readable, rollback

_VERSIONED = re.compile(r"^(\d{20})\.")


class StateDamaged(RuntimeError):
    """The state directory's files are damaged; the message names them and what was done."""


def fall_back(state: Path, cause: BaseException) -> dict[str, Any]:
    """Roll back to the newest checkpoint that reads cleanly; raise StateDamaged when there is none, and re-raise
    `cause` when no damage can be found (then it was not damage)."""
    directory = StateDir(state)
    try:
        rows = read_checkpoints(directory.manifest)
    except BaseException as err:  # the manifest is the source of truth: nothing to fall back on without it
        if isinstance(err, KeyboardInterrupt | SystemExit):
            raise
        raise StateDamaged(
            f"the manifest of {state} cannot be read ({first_line(err)}); "
            f"`timelapse verify {state}` and the manifest's _delta_log show what is damaged"
        ) from err
    resumable = rows.filter(pl.col("kind").is_in(list(RESUMABLE)))
    if not resumable.height:  # a fresh directory's first epoch failed: no state to be damaged, nothing to fall back to
        raise cause
    current = resumable.row(-1, named=True)
    damage = _problems(current)
    if not damage:
        raise cause
    summary = "; ".join(f"{name}: {what}" for name, what in damage)
    epochs = rows.filter(pl.col("kind") == "epoch").sort("committed_at", descending=True)
    for row in epochs.iter_rows(named=True):
        if row["committed_at"] >= current["committed_at"] and row["epoch"] == current["epoch"]:
            continue
        if not readable(rows, row) or _problems(row):
            continue
        set_aside = _set_aside_unreadable_logs(current, row)
        report = rollback(state, to_epoch=int(row["epoch"]), reason=f"automatic fallback: {summary}"[:2000], force=True)
        return {"fell_back_to": int(row["epoch"]), "damage": summary, "set_aside": set_aside, **report}
    raise StateDamaged(
        f"the state at epoch {current['epoch']} is damaged ({summary}) and no retained checkpoint reads cleanly; "
        f"`timelapse verify {state}` lists every problem"
    )


def _problems(row: dict[str, Any]) -> list[tuple[str, str]]:
    found = []
    for entry in row["tables"] or []:
        what = check_table(entry["path"], int(entry["version"]), read_rows=True)
        if what:
            found.append((f"{entry['role']} table {entry['name']} version {entry['version']}", what))
    return found


def _set_aside_unreadable_logs(current: dict[str, Any], target: dict[str, Any]) -> list[str]:
    """For each table whose head cannot be opened, move the log entries after the target's version aside."""
    versions = {t["path"]: int(t["version"]) for t in target["tables"] or []}
    moved = []
    for entry in current["tables"] or []:
        path = Path(entry["path"])
        keep = versions.get(entry["path"], 0)
        if check_table(str(path), None, read_rows=False) is None:
            continue
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S")
        aside = path / "_damaged_log" / stamp
        log = path / "_delta_log"
        for item in sorted(log.iterdir()):
            match = _VERSIONED.match(item.name)
            stale_pointer = item.name == "_last_checkpoint" and _points_after(item, keep)
            if (match and int(match.group(1)) > keep) or stale_pointer:
                aside.mkdir(parents=True, exist_ok=True)
                item.rename(aside / item.name)
                moved.append(str(aside / item.name))
    return moved


def _points_after(pointer: Path, version: int) -> bool:
    try:
        return int(json.loads(pointer.read_text())["version"]) > version
    except (ValueError, KeyError):
        return True
