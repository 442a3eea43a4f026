"""`timelapse verify DIR`: check every table and version the manifest names, and report what is wrong.

For the current cut and every live savepoint, each table is opened at its version and every row is read, so a
missing or damaged data file or log entry is found. For the other retained checkpoints only the Delta log is
opened at its version (cheap), unless `deep` reads their rows too. The manifest's own log and every offset
log file a run would read are checked with the run's own checks (`engine.damage`), so that whatever a run would
stop on or repair is reported here too. Nothing is changed.
"""

from __future__ import annotations

import io
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import polars as pl

from engine import damage, delta_tables
from engine.damage import first_line
from engine.manifest import RESUMABLE, entries, live_savepoints, readable
from engine.state_dir import StateDir
from engine.storage import ObjectPath, location


@dataclass(frozen=True)
class Problem:
    epoch: int
    table: str
    path: str
    version: int
    what: str


def verify(state: str | Path, deep: bool = False) -> dict[str, Any]:
    directory = StateDir(location(state))
    if not directory.manifest.exists():
        raise FileNotFoundError(f"{state} is not a timelapse state directory")
    problems: list[Problem] = []
    notes: list[str] = []
    from engine.savepoint_export import export_problems, is_export

    if is_export(directory):  # a savepoint export: every file against its checksums
        listing = str(directory.export_file)
        problems += [Problem(0, "export", listing, 0, f"export: {what}") for what in export_problems(directory.root)]
    found = damage.manifest_damage(directory.manifest)
    version = None
    if found is not None:
        what = f"version {found.head} cannot be read: {found.what}"
        if found.clean is None:
            what += "; no earlier version reads either, so a run stops here"
        else:
            what += f"; a run sets the entries after version {found.clean} aside and resumes from it"
        entry = directory.manifest / "_delta_log" / f"{found.head:020d}.json"
        problems.append(Problem(0, "manifest", str(entry), found.head, what))
        if found.clean is None:
            return {"checkpoints": 0, "tables_checked": 0, "problems": [asdict(p) for p in problems], "notes": notes}
        version = found.clean
    rows = damage.read_at(directory.manifest, version)
    resumable = rows.filter(pl.col("kind").is_in(list(RESUMABLE)))
    if resumable.is_empty():
        return {"checkpoints": 0, "tables_checked": 0, "problems": [asdict(p) for p in problems], "notes": notes}
    current = resumable.row(-1, named=True)
    committed = int(current["epoch"])
    offsets = damage.offset_damage(directory.offsets, committed)
    if problems and is_export(directory):  # its checksums already name a missing file: not the epochs before it
        offsets = [d for d in offsets if d.epoch >= committed or d.path.exists()]
    if offsets:
        held = damage.held_epoch(damage.manifest_marker_tables(directory, entries(current)))
        for d in offsets:
            problems.append(
                Problem(d.epoch, "offset log", str(d.path), d.epoch, damage.describe_offset_damage(d, held))
            )
    saved = {int(sp["epoch"]) for sp in live_savepoints(rows).values()}
    full = [current] + [r for r in rows.filter(pl.col("kind") == "epoch").iter_rows(named=True) if r["epoch"] in saved]
    light = [r for r in rows.filter(pl.col("kind") == "epoch").iter_rows(named=True) if readable(rows, r)]
    checked: set[tuple[str, int]] = set()
    for row, read_rows in [(r, True) for r in full] + [(r, deep) for r in light]:
        for entry in entries(row):
            key = (entry.path, entry.version)
            if key in checked:
                continue
            checked.add(key)
            what = check_table(entry.path, entry.version, read_rows)
            if not what and row is current:  # what a run checks before it builds on these versions
                missing = damage.missing_files(entry.path, entry.version)
                what = f"a data file {missing[0]}" if missing else None
            if what:
                problems.append(Problem(int(row["epoch"]), entry.name, entry.path, entry.version, what))
    intent = directory.rollback_intent
    if (unreadable := damage.intent_problem(directory)) is not None:
        problems.append(Problem(0, "rollback intent", str(intent), 0, unreadable))
    elif intent.exists():
        notes.append(f"a rollback was cut short ({json.loads(intent.read_text())}); the next run finishes it")
    if (what := damage.pipeline_file_problem(directory)) is not None:
        pid = damage.recover_pipeline_id(entries(current))
        then = (
            f"a run recovers the pipeline id {pid} from the sinks' transaction markers"
            if pid
            else "no sink's marker names the pipeline id, so a run stops"
        )
        path = directory.pipeline_file
        problems.append(Problem(0, "pipeline id", str(path), 0, f"{path} {what}; {then}"))
    return {
        "checkpoints": len(light),
        "tables_checked": len(checked),
        "problems": [asdict(p) for p in problems],
        "notes": notes,
    }


def check_table(path: str, version: int | None, read_rows: bool) -> str | None:
    """What is wrong with a table at `version` (None: its latest), or None. `read_rows` reads every data file."""
    if not delta_tables.is_table(path):
        return "the table is missing"
    label = "the latest version" if version is None else f"version {version}"
    try:
        table = delta_tables.delta(path, version=version)
    except Exception as err:
        return f"{label} cannot be opened: {first_line(err)}"
    except BaseException as err:  # a damaged file can make the Rust readers panic
        if isinstance(err, KeyboardInterrupt | SystemExit):
            raise
        return f"{label} cannot be opened: {first_line(err)}"
    if not read_rows:
        return None
    uri = None
    root = location(path)
    listed = damage.listed_sizes(root) if isinstance(root, ObjectPath) else None  # one LIST, not a HEAD per file
    try:
        for uri in table.file_uris():
            if listed is not None:
                remote = location(uri)
                relative = remote.relative_to(root).as_posix() if remote.is_relative_to(root) else None
                if relative is not None and relative not in listed:
                    return f"the data file {uri} is missing"
                pl.read_parquet(io.BytesIO(remote.read_bytes()))
                continue
            local = Path(unquote(urlparse(uri).path)) if uri.startswith(("file:", "/")) else None
            if local is not None and not local.exists():
                return f"the data file {local} is missing"
            pl.read_parquet(uri)
        uri = None
        delta_tables.scan(path, version=int(table.version())).select(pl.len()).collect()
    except BaseException as err:  # Polars panics (a BaseException) on some truncated files
        if isinstance(err, KeyboardInterrupt | SystemExit):
            raise
        where = f"the data file {uri}" if uri else "a data file"
        return f"{where} cannot be read: {reader_error(err)}"
    return None


def reader_error(err: BaseException) -> str:
    """A reader's error in a line; a Rust reader's panic says only that the file is damaged (its text is the
    panic's, which names Rust source lines, not the file)."""
    if type(err).__name__ == "PanicException":
        return "it is truncated or corrupted (the Parquet reader failed on it)"
    return first_line(err)


def render(report: dict[str, Any]) -> str:
    lines = [f"checked {report['tables_checked']} table versions across {report['checkpoints']} retained checkpoints"]
    lines += [f"note: {note}" for note in report.get("notes", [])]
    if not report["problems"]:
        lines.append("no problems found")
    for p in report["problems"]:
        if p["table"] == "offset log":
            lines.append(f"PROBLEM epoch {p['epoch']}: {p['what']}" if p["epoch"] else f"PROBLEM {p['what']}")
        elif p["table"] in ("rollback intent", "pipeline id", "export"):
            lines.append(f"PROBLEM {p['what']}")
        elif p["table"] == "manifest":
            lines.append(f"PROBLEM manifest log entry {p['path']}: {p['what']}")
        else:
            lines.append(f"PROBLEM epoch {p['epoch']}: {p['table']} (version {p['version']}, {p['path']}): {p['what']}")
    return "\n".join(lines)
