"""Damage that `verify` reports and a run must act on the same way: the offset log, the manifest's own log, and
the data files of the table versions a run resumes from.

Each check here is used by both `timelapse verify` and the restart path of `timelapse run`, so the two always
agree on what is damaged. What a run does about it:
- an offset file of a committed epoch (or the folded `base.json`) that is garbled or missing: the sources cannot
  be resumed without it (the filesystem source rebuilds its list of files from it), so the run stops (exit 5)
  and names the file;
- a garbled or missing offset file of an epoch after the last committed one: if no sink or dead-letter table
  holds that epoch yet, the epoch produced nothing durable and is planned again (the file is moved aside to
  `offsets/_damaged/<time>/`); if one does, the epoch must be replayed exactly, so the run stops and names it;
- a manifest log entry that cannot be read: the entries from it on are moved aside to `manifest/_damaged_log/`
  and the run resumes from the manifest's previous version, replaying the later epochs from the offset log
  (sinks skip what they hold), as after a crash just before the manifest commit;
- a data file of a table version the latest checkpoint names that is missing or has the wrong size: the run
  falls back to the newest checkpoint that reads cleanly (`engine.recovery`), or stops.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import polars as pl

from engine import delta_tables
from engine.delta_tables import open_table
from engine.errors import StorageFailure
from engine.manifest import DEAD_LETTERS, SINK, TableEntry, read_at
from engine.offset_log import OffsetLog
from engine.state_dir import StateDir, move, write_atomic
from engine.storage import ObjectPath, location

#: how far back a damaged manifest head is looked past (the entries since the last Delta checkpoint)
MANIFEST_LOOKBACK = 20
_VERSIONED = re.compile(r"^(\d{20})\.")


class StateDamaged(StorageFailure, RuntimeError):
    """The state directory's files are damaged; the message names them and what was done."""


class DamagedFiles(StateDamaged):
    """Data files of the table versions a run resumes from are missing or have the wrong size."""


def first_line(err: BaseException) -> str:
    """An error's first line, for one-line reports (Rust errors can run to many lines)."""
    text = str(err).strip()
    return text.splitlines()[0][:300] if text else type(err).__name__


# -- the offset log ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OffsetDamage:
    epoch: int  # 0 for base.json
    path: Path
    what: str
    committed: bool  # the epoch is committed (or folded): its file is needed to resume the sources


def load_offset_file(path: Path) -> dict[str, Any]:
    """An offset log file's entry; ValueError says what is wrong with it."""
    try:
        entry = json.loads(path.read_bytes())
    except (ValueError, UnicodeDecodeError) as err:
        raise ValueError(f"is not valid JSON ({first_line(err)})") from None
    if not isinstance(entry, dict) or not isinstance(entry.get("sources"), dict):
        raise ValueError("is not an offset log entry (no 'sources')")
    return entry


def offset_damage(offsets: Path, committed: int) -> list[OffsetDamage]:
    """Every garbled or missing offset file a run resuming after epoch `committed` would read, oldest first.

    Committed epochs from the folded summary on must all have their file; after them, the files of planned but
    uncommitted epochs must follow on without a gap (a file after a gap would be replayed as the wrong epoch).
    """
    found: list[OffsetDamage] = []
    folded_until = 0
    base = OffsetLog(offsets).base
    present = {int(p.stem): p for p in offsets.glob("*.json") if p.stem.isdigit()} if offsets.is_dir() else {}
    if base.exists():
        try:
            folded_until = int(load_offset_file(base)["until_epoch"])
        except (ValueError, KeyError, TypeError) as err:
            what = str(err) if isinstance(err, ValueError) else "has no 'until_epoch'"
            found.append(OffsetDamage(0, base, what, True))
            folded_until = min(present, default=committed + 1) - 1  # it folded what precedes the files left
    for epoch in range(folded_until + 1, committed + 1):
        path = offsets / f"{epoch:012d}.json"
        if epoch not in present:
            found.append(OffsetDamage(epoch, path, "is missing", True))
    for epoch in sorted(e for e in present if e > folded_until):
        try:
            load_offset_file(present[epoch])
        except ValueError as err:
            found.append(OffsetDamage(epoch, present[epoch], str(err), epoch <= committed))
    later = sorted(e for e in present if e > committed)
    expected = committed + 1
    for epoch in later:
        if epoch != expected:
            found.append(OffsetDamage(expected, offsets / f"{expected:012d}.json", "is missing", False))
            break
        expected += 1
    return sorted(found, key=lambda d: d.epoch)


def held_epoch(tables: list[tuple[Path, str]]) -> int:
    """The newest epoch any of these (path, transaction app id) tables holds; 0 when none holds one."""
    held = 0
    for path, app_id in tables:
        table = open_table(path) if (path / "_delta_log").is_dir() else None
        if table is not None:
            held = max(held, int(table.transaction_version(app_id) or 0))
    return held


def manifest_marker_tables(directory: StateDir, tables: list[TableEntry]) -> list[tuple[Path, str]]:
    """The tables of a manifest row that carry the per-epoch marker, with their app ids."""
    pid = recover_pipeline_id(tables) if pipeline_file_problem(directory) else directory.pipeline_id()
    if pid is None:
        return []
    marked = []
    for entry in tables:
        if entry.role == SINK:
            marked.append((location(entry.path), f"{pid}/{entry.name}"))
        elif entry.role == DEAD_LETTERS:
            marked.append((location(entry.path), f"{pid}/dead_letters/{entry.name}"))
    return marked


def offset_verdict(damage: list[OffsetDamage], held: int) -> tuple[list[OffsetDamage], OffsetDamage | None]:
    """(damage a run stops on, the first uncommitted damage a run re-plans from, or None)."""
    fatal = [d for d in damage if d.committed]
    later = [d for d in damage if not d.committed]
    if later and held >= later[0].epoch:  # a sink holds the epoch: only its logged slice reproduces it
        fatal.append(later[0])
        return fatal, None
    return fatal, (later[0] if later else None)


def describe_offset_damage(d: OffsetDamage, held: int) -> str:
    if d.epoch == 0:
        return f"the folded offset log {d.path} {d.what}; the sources cannot be resumed without it"
    if d.committed:
        return (
            f"the offset file {d.path} of committed epoch {d.epoch} {d.what}; the sources cannot be resumed without it"
        )
    if held >= d.epoch:
        return (
            f"the offset file {d.path} of epoch {d.epoch} {d.what}, and a sink already holds epoch {held}: "
            "the epoch cannot be replayed exactly"
        )
    return (
        f"the offset file {d.path} of uncommitted epoch {d.epoch} {d.what}; no sink holds it, "
        "so the next run plans it again"
    )


def set_aside_offsets(offsets: Path, from_epoch: int) -> list[str]:
    """Move the offset files of epochs from `from_epoch` on to `offsets/_damaged/<time>/` (never deleted)."""
    aside = StateDir(offsets.parent).damaged_offsets / dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S%f")
    moved = []
    for path in sorted(offsets.glob("*.json"), key=lambda p: p.name):
        if path.stem.isdigit() and int(path.stem) >= from_epoch:
            aside.mkdir(parents=True, exist_ok=True)
            move(path, aside / path.name)
            moved.append(str(aside / path.name))
    return moved


def offsets_message(fatal: list[OffsetDamage], held: int) -> str:
    listing = "; ".join(describe_offset_damage(d, held) for d in fatal)
    return (
        f"{listing}. Restore the file from a copy of the state directory, or start again from the sources with a "
        "new state directory"
    )


def check_offsets(offsets: Path, committed: int, marked: list[tuple[Path, str]]) -> dict[str, Any] | None:
    """A run's offset check: raise StateDamaged for damage it cannot repair; set aside the files of an
    uncommitted epoch no sink holds (and those after it), so that it is planned again, and say so."""
    found = offset_damage(offsets, committed)
    if not found:
        return None
    held = held_epoch(marked)
    fatal, replan = offset_verdict(found, held)
    if fatal:
        raise StateDamaged(offsets_message(fatal, held))
    if replan is None:
        return None
    moved = set_aside_offsets(offsets, replan.epoch)
    where = f"; moved to {location(moved[0]).parent}" if moved else ""
    return {"message": describe_offset_damage(replan, held) + where, "set_aside": moved}


# -- the manifest's log ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ManifestDamage:
    head: int  # the newest log version present
    clean: int | None  # the newest version that opens and reads, or None
    what: str


def _log_versions(table: Path) -> list[int]:
    log = table / "_delta_log"
    return sorted({int(m.group(1)) for p in log.iterdir() if (m := _VERSIONED.match(p.name))}) if log.is_dir() else []


def manifest_damage(path: Path) -> ManifestDamage | None:
    """None when the manifest's latest version reads; else its newest version that does (if any, nearby)."""
    try:
        delta_tables.delta(path)
        read_at(path, None)
        return None
    except BaseException as err:  # delta-rs errors, and panics of the Rust readers
        if isinstance(err, KeyboardInterrupt | SystemExit):
            raise
        what = first_line(err)
    versions = _log_versions(path)
    head = versions[-1] if versions else 0
    for version in range(head - 1, max(-1, head - 1 - MANIFEST_LOOKBACK), -1):
        try:
            delta_tables.delta(path, version=version)
            rows = read_at(path, version)
        except BaseException as err:
            if isinstance(err, KeyboardInterrupt | SystemExit):
                raise
            continue
        if rows.height:
            return ManifestDamage(head, version, what)
    return ManifestDamage(head, None, what)


def set_aside_log(table: Path, keep: int) -> list[str]:
    """Move a Delta table's log entries after version `keep` to `<table>/_damaged_log/<time>/` (never deleted)."""
    aside = StateDir.set_aside_log(table) / dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S%f")
    log = table / "_delta_log"
    moved = []
    for item in sorted(log.iterdir(), key=lambda p: p.name):
        match = _VERSIONED.match(item.name)
        stale_pointer = item.name == "_last_checkpoint" and _points_after(item, keep)
        if (match and int(match.group(1)) > keep) or stale_pointer:
            aside.mkdir(parents=True, exist_ok=True)
            move(item, aside / item.name)
            moved.append(str(aside / item.name))
    return moved


def _points_after(pointer: Path, version: int) -> bool:
    try:
        return int(json.loads(pointer.read_text())["version"]) > version
    except (ValueError, KeyError):
        return True


def restored_after(path: Path, version: int) -> bool:
    """Whether a table was rolled back (restored) after `version`: then a manifest row that recorded it is lost."""
    table = open_table(path)
    if table is None or int(table.version()) <= version:
        return False
    later = [c for c in table.history(limit=int(table.version()) - version) if int(c["version"]) > version]
    return any("timelapse.rollback_to_epoch" in c or str(c.get("operation", "")) == "RESTORE" for c in later)


# -- data files --------------------------------------------------------------------------------------------


def check_files(tables: list[TableEntry]) -> None:
    """The data files of the table versions a run builds on must be there, at their logged size: appends never
    read a sink's files, so damage there would otherwise go unnoticed while the run adds to it. Raises
    DamagedFiles, which the run confirms and falls back from (engine.recovery)."""
    for entry in tables:
        bad = missing_files(entry.path, entry.version)
        if bad:
            more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
            raise DamagedFiles(f"{entry.role} table {entry.name} version {entry.version}: {bad[0]}{more}")


def missing_files(path: str, version: int) -> list[str]:
    """Data files of a table version that are missing or whose size differs from the log's: a cheap check
    (no rows read) of what a run is about to build on. Locally one stat per file; in an object store one
    listing of the table's prefix, whatever the number of files (a HEAD per file would cost a request each)."""
    table = delta_tables.delta(path, version=version)
    actions = pl.DataFrame(table.get_add_actions(flatten=True)).select("path", "size_bytes")
    root = location(path)
    listed = listed_sizes(root) if isinstance(root, ObjectPath) else None
    bad = []
    for name, size in actions.iter_rows():
        parsed = urlparse(name)
        if parsed.scheme and parsed.scheme != "file":
            continue  # a file outside the table (a shallow clone's): not checked here
        file = location(name) if parsed.scheme else root / unquote(name)
        if listed is not None:
            actual = listed.get(unquote(name))
        else:
            try:
                actual = os.stat(file).st_size
            except FileNotFoundError:
                actual = None
        if actual is None:
            bad.append(f"{file} is missing")
        elif actual != size:
            bad.append(f"{file} has {actual} bytes, the log says {size}")
    return bad


def listed_sizes(root: ObjectPath) -> dict[str, int]:
    """Every object under a table's prefix with its size, by its path relative to the table (one LIST)."""
    prefix = f"{root.key}/" if root.key else ""
    return {str(meta["path"])[len(prefix) :]: int(meta["size"]) for meta in root.list_files()}


# -- the state directory's own files -----------------------------------------------------------------------

#: how many of a table's newest log entries are searched for its transaction markers
MARKER_LOOKBACK = 50


def pipeline_file_problem(directory: StateDir) -> str | None:
    """What is wrong with `pipeline.json` of a directory that has committed (None: nothing).

    It holds the id that prefixes every transaction marker: with a new id, sinks would not recognise the epochs
    they hold, and a replayed epoch would be written twice.
    """
    path = directory.pipeline_file
    if not path.exists():
        return "is missing"
    try:
        pid = json.loads(path.read_bytes())["pipeline_id"]
    except (ValueError, UnicodeDecodeError, KeyError, TypeError):
        return "is not valid (no pipeline id)"
    return None if isinstance(pid, str) and pid else "is not valid (no pipeline id)"


def recover_pipeline_id(tables: list[TableEntry]) -> str | None:
    """The pipeline id, read back from the transaction markers of the sink and dead-letter tables a manifest
    row names; None when no marker names one id (no marker yet, or several pipelines' markers)."""
    found: set[str] = set()
    for entry in tables:
        if entry.role == SINK:
            suffix = f"/{entry.name}"
        elif entry.role == DEAD_LETTERS:
            suffix = f"/dead_letters/{entry.name}"
        else:
            continue
        found |= {app[: -len(suffix)] for app in _marker_ids(location(entry.path)) if app.endswith(suffix)}
    return found.pop() if len(found) == 1 else None


def _marker_ids(table: Path) -> set[str]:
    ids: set[str] = set()
    log = table / "_delta_log"
    entries = sorted(log.glob("*.json"), key=lambda p: p.name, reverse=True)[:MARKER_LOOKBACK] if log.is_dir() else []
    for entry in entries:
        for line in entry.read_text(errors="replace").splitlines():
            try:
                action = json.loads(line)
            except ValueError:
                continue
            txn = action.get("txn") if isinstance(action, dict) else None
            if isinstance(txn, dict) and isinstance(txn.get("appId"), str):
                ids.add(txn["appId"])
    return ids


def repair_pipeline_file(directory: StateDir, tables: list[TableEntry] | None) -> dict[str, Any] | None:
    """Write `pipeline.json` back from the sinks' markers when it is damaged; None when nothing was wrong.
    Raises StateDamaged when the id cannot be recovered but a sink may hold markers under it."""
    what = pipeline_file_problem(directory)
    if what is None or tables is None:
        return None
    path = directory.pipeline_file
    pid = recover_pipeline_id(tables)
    if pid is None:
        raise StateDamaged(
            f"{path} {what}, and no sink's transaction marker names the pipeline id: without it, epochs a sink "
            "holds would be written again. Restore the file from a copy of the state directory"
        )
    if path.exists():
        move(path, path.with_name(f"pipeline.json.damaged-{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%S%f}"))
    write_atomic(path, json.dumps({"pipeline_id": pid}).encode())
    return {"message": f"{path} {what}; the pipeline id {pid} was recovered from the sinks' transaction markers"}


def intent_problem(directory: StateDir) -> str | None:
    """A cut-short rollback's intent file that cannot be read: the rollback cannot be finished."""
    path = directory.rollback_intent
    if not path.exists():
        return None
    try:
        intent = json.loads(path.read_bytes())
        int(intent["to_epoch"]), int(intent["from_epoch"])
    except (ValueError, UnicodeDecodeError, KeyError, TypeError):
        return (
            f"{path} (a rollback that was cut short) cannot be read, so the rollback cannot be finished; move it "
            "away and run `timelapse rollback` again to the epoch you were rolling back to"
        )
    return None
