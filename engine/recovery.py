"""Damaged storage: find it, fall back to the newest checkpoint that reads cleanly, and say what happened.

A run that cannot open the state it would resume from, or fails on a damaged file while it runs (a truncated
or corrupted Parquet file, a missing or corrupted Delta log entry), first confirms the damage with `verify`,
so that a bug is never mistaken for it. Then it picks the newest retained checkpoint whose every table opens
at its version and reads in full, sets aside the log entries after that version of any table whose later
versions cannot be opened (moved to `<table>/_damaged_log/<time>/`, never deleted), and rolls back to it like
`timelapse rollback`: sinks, state and offsets together, recorded in the manifest with the reason. The epochs
after it are recomputed from their sources. If no checkpoint reads cleanly, the run stops and names the damage.

A manifest whose newest log entries cannot be read falls back to its newest version that can: the entries
after it are moved to `manifest/_damaged_log/<time>/`, and the epochs they committed are replayed from the
offset log, as after a crash just before the manifest commit (sinks skip the epochs they hold).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl

from engine import damage as checks
from engine.damage import StateDamaged, first_line
from engine.manifest import RESUMABLE, SINK, entries, read_checkpoints, readable
from engine.state_dir import StateDir
from engine.storage import location
from engine.verify import check_table
from engine.versioning import rollback

__all__ = ["StateDamaged", "fall_back"]


def fall_back(state: Path, cause: BaseException) -> dict[str, Any]:
    """Roll back to the newest checkpoint that reads cleanly; raise StateDamaged when there is none, and re-raise
    `cause` when no damage can be found (then it was not damage)."""
    directory = StateDir(state)
    try:
        rows = read_checkpoints(directory.manifest)
    except BaseException as err:  # the manifest is the source of truth: nothing to fall back on without it
        if isinstance(err, KeyboardInterrupt | SystemExit):
            raise
        return _manifest_fall_back(directory, err)
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
    for entry in entries(row):
        what = check_table(entry.path, entry.version, read_rows=True)
        if what:
            found.append((f"{entry.role} table {entry.name} version {entry.version}", what))
    return found


def _set_aside_unreadable_logs(current: dict[str, Any], target: dict[str, Any]) -> list[str]:
    """For each table whose head cannot be opened, move the log entries after the target's version aside."""
    versions = {t.path: t.version for t in entries(target)}
    moved = []
    for entry in entries(current):
        if check_table(entry.path, None, read_rows=False) is None:
            continue
        moved += checks.set_aside_log(location(entry.path), versions.get(entry.path, 0))
    return moved


def _manifest_fall_back(directory: StateDir, err: BaseException) -> dict[str, Any]:
    """Set the manifest's unreadable newest log entries aside and resume from its newest readable version."""
    found = checks.manifest_damage(directory.manifest)
    state = directory.root
    if found is None or found.clean is None:
        raise StateDamaged(
            f"the manifest of {state} cannot be read ({first_line(err)}) and no earlier version of it reads; "
            f"`timelapse verify {state}` and the manifest's _delta_log show what is damaged"
        ) from err
    rows = checks.read_at(directory.manifest, found.clean)
    resumable = rows.filter(pl.col("kind").is_in(list(RESUMABLE)))
    current = resumable.row(-1, named=True) if resumable.height else None
    # A lost rollback row cannot be replayed: the tables were restored, and the row said to what.
    for entry in entries(current):
        if entry.role == SINK and checks.restored_after(location(entry.path), entry.version):
            raise StateDamaged(
                f"the manifest of {state} cannot be read from version {found.clean + 1} on ({found.what}), and the "
                f"sink {entry.name} was rolled back after the last readable version; "
                f"`timelapse verify {state}` lists the damage"
            ) from err
    moved = checks.set_aside_log(directory.manifest, found.clean)
    epoch = int(current["epoch"]) if current else 0
    summary = f"manifest version {found.clean + 1}: {found.what}"
    aside = location(moved[0]).parent if moved else StateDir.set_aside_log(directory.manifest)
    return {
        "fell_back_to": epoch,
        "damage": summary,
        "set_aside": moved,
        "message": (
            f"the manifest's log entries from version {found.clean + 1} on cannot be read ({found.what}); they were "
            f"moved to {aside} and the run resumes "
            f"from epoch {epoch}, replaying the later epochs from the offset log"
        ),
    }
