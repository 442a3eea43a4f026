"""Portable full snapshots: a savepoint exported as a self-contained, checksummed state directory.

`export_savepoint` writes a new state directory that holds only the savepoint's cut:
- every state, late-row and dead-letter table as one fresh Delta table holding the rows live at the cut (operator
  state resolved from its change log, `engine.state_store.resolve`: the newest row per key, tombstones dropped;
  `_epoch`, `_kg` and `_deleted` kept, encrypted columns copied as ciphertext);
- a manifest of two rows: the cut's epoch row (naming the new tables' versions) and the savepoint row naming it;
- the offset log up to the cut, folded as retention folds it (`offsets/base.json` and the cut's own file), so the
  sources continue from the cut's positions;
- with `with_sinks`, the Delta sinks as of the cut, inside the export (`tables/<name>`);
- `pipeline.json`, the cut's plan (`plans/`), and, written last, `export.json`: where it came from, and the sha256
  and size of every other file. An export without it is incomplete.
Every path it stores is relative (`StateDir.record`), so it can be moved or uploaded as a whole.

Starting from an export (`engine.branching.create_branch`, `start_from_export` for `timelapse run
--from-savepoint`) checks the checksums first and refuses a missing, unlisted or changed file (exit 4). Nothing
ever writes into an export.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import getpass
import hashlib
import json
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa

from engine import delta_tables, encryption, faults
from engine.branching import copy_cut, copy_table, relocated, write_copy
from engine.cli_types import EXIT_PROBLEMS
from engine.delta_tables import to_arrow
from engine.errors import EngineError, UserError, VersioningError
from engine.history import state_keys
from engine.manifest import (
    SINK,
    STATE,
    Manifest,
    TableEntry,
    checkpoint_from_row,
    cut_row,
    entries,
    epoch_row,
    live_savepoints,
    read_checkpoints,
    rows_of,
    savepoint_rows,
)
from engine.offset_log import OffsetLog
from engine.state_dir import StateDir, write_atomic
from engine.state_store import resolve
from engine.storage import Location, ObjectPath, file_sizes, location, read_if_exists, remove_tree

EXPORT_FILE = "export.json"  # StateDir.export_file; its name in messages and listings
#: in a state directory being materialised from an export, until its manifest row commits
FORMAT = 1


class ExportDamaged(EngineError):
    """An export whose files are not those its checksums list: `verify`'s exit code (4)."""

    exit_code = EXIT_PROBLEMS


def export_savepoint(
    state: str | Location, name: str, to: str | Location, with_sinks: bool = False, user: str | None = None
) -> dict[str, Any]:
    """Export savepoint `name` of `state` to the new directory `to` (local or object storage); returns what was
    written. `state` is only read, at the versions its manifest names, so a pipeline may keep running on it."""
    user = user or getpass.getuser()
    source, target = StateDir(location(state).resolve()), StateDir(location(to).resolve())
    rows = rows_of(source)
    saved = live_savepoints(rows).get(name)
    if saved is None:
        raise VersioningError(f"no savepoint named '{name}'")
    if target.root.exists() and not target.root.is_dir():
        raise VersioningError(f"{to} is a file; an export needs a new directory")
    if target.root.exists() and any(target.root.iterdir()):
        raise VersioningError(f"{to} already exists and is not empty; an export needs a new directory")
    epoch = int(saved["epoch"])
    row = cut_row(rows, epoch, name)  # an edited savepoint's own tables (engine.state_edit)
    created = dt.datetime.now(dt.UTC)
    origin = {"origin": str(source.root), "savepoint": name, "epoch": epoch, "user": user}

    def place(entry: TableEntry) -> Location | None:
        if entry.role == SINK:
            return target.foreign_table(entry.name) if with_sinks else None
        return relocated(location(entry.path), source, target)

    # A table the cut names but that is not where it says (a state directory copied without the sinks beside it):
    # refused before anything is written, naming it.
    missing = [t for t in entries(row) if place(t) is not None and not delta_tables.is_table(t.path)]
    if missing:
        listing = ", ".join(f"{t.role} '{t.name}' ({t.path})" for t in missing)
        hint = "; export without --with-sinks, or" if any(t.role == SINK for t in missing) else ";"
        raise VersioningError(f"cannot export savepoint '{name}': {listing} not found{hint} move the tables along")
    target.root.mkdir(parents=True, exist_ok=True)
    try:
        tables, operators = copy_cut(source, target, row, place, _compacted)
        # Only the cut's own offset file stays a file (a run reads it: idle sources, lookup versions); the epochs
        # before it fold into base.json, as retention folds them.
        OffsetLog(target.offsets).fold(epoch)
        plan = source.plan_file(row["plan_fingerprint"])
        if (content := read_if_exists(plan)) is not None:
            write_atomic(target.plan_file(row["plan_fingerprint"]), content)
        checkpoint = checkpoint_from_row(row)
        audit = json.loads(savepoint_rows(rows)[name]["metrics"] or "{}")
        manifest = Manifest(target.manifest)
        metrics = {**checkpoint.metrics, "export": {**origin, "created_at": created.isoformat()}}
        metrics.pop("branch", None)  # the export's history starts at the cut
        manifest.commit(
            dataclasses.replace(checkpoint, kind="epoch", tables=tables, operators=operators, metrics=metrics)
        )
        manifest.commit(
            dataclasses.replace(
                checkpoint,
                kind="savepoint",
                committed_at=saved["created_at"],
                tables=tables,
                operators=operators,
                # the savepoint row's audit as it was (an edit's or a bootstrap's: `timelapse log` shows it)
                metrics={**audit, "savepoint": name, "user": saved["user"], "reason": saved["reason"]},
            )
        )
        faults.point("export.copied")
        files = _listing(target.root, with_digests=True)
        info = {
            "format": FORMAT,
            **origin,
            "created_at": created.isoformat(),
            "with_sinks": with_sinks,
            "sinks": sorted(t.name for t in tables if t.role == SINK),
            "files": files,
        }
        write_atomic(target.export_file, json.dumps(info, indent=1, sort_keys=True).encode())  # last
    except BaseException:
        remove_tree(target.root)  # half an export is no export
        raise
    return {
        "export": str(target.root),
        "savepoint": name,
        "epoch": epoch,
        "tables": len(tables),
        "sinks": info["sinks"],
        "files": len(files),
        "bytes": sum(f["size"] for f in files.values()),
    }


def _compacted(entry: TableEntry, destination: Location) -> TableEntry:
    """A table as one fresh version holding the rows live at the cut: operator state resolved from its change
    log; late rows and dead letters (append-only) as they were. Encrypted columns are copied as ciphertext,
    unless a key column is encrypted: then the key must be at hand to resolve, and the copy is sealed again."""
    table = delta_tables.delta(entry.path, version=entry.version)
    sealed = encryption.sealed_columns(table.schema())
    keys = state_keys(entry) if entry.role == STATE else []
    opened: set[str] = set()
    if set(keys) & set(sealed):
        frame = delta_tables.scan(entry.path, version=entry.version)
        opened = {n for n, record in sealed.items() if encryption.can_open(record)}
        if closed := sorted(set(keys) & set(sealed) - opened):
            raise encryption.KeyError_(
                f"state '{entry.name}': its key column '{closed[0]}' is encrypted with the key "
                f"{sealed[closed[0]]['key']}, which is not set; an export keeps each key's live row, so it needs it"
            )
    else:
        frame = pl.scan_delta(table)  # as stored: ciphertext stays ciphertext, no key needed
    if entry.role == STATE and {"_epoch", "_deleted"} <= set(frame.collect_schema().names()):
        frame = resolve(frame, keys)
    rows = to_arrow(frame.collect())
    for name, record in sealed.items():  # Polars drops field metadata: mark the columns still sealed again
        index = rows.schema.get_field_index(name)
        if name not in opened and index >= 0 and pa.types.is_binary(rows.schema.field(index).type):
            field = pa.field(name, pa.binary(), nullable=True, metadata={encryption.META: json.dumps(record)})
            rows = rows.set_column(index, field, rows.column(index))
    return write_copy(entry, destination, rows)


# -- checksums -------------------------------------------------------------------------------------------------


def _listing(root: Location, with_digests: bool = False) -> dict[str, dict[str, Any]]:
    """Every file under `root` but export.json, by relative POSIX path: its size (and sha256)."""
    found: dict[str, dict[str, Any]] = {path: {"size": size} for path, size in file_sizes(root).items()}
    found.pop(EXPORT_FILE, None)
    if with_digests:
        for relative, entry in found.items():
            entry["sha256"] = _digest(root / relative)
    return dict(sorted(found.items()))


def _digest(path: Location) -> str:
    if isinstance(path, ObjectPath):
        return hashlib.sha256(path.read_bytes()).hexdigest()
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def export_problems(root: Location) -> list[str]:
    """What differs between an export and its checksums: files missing, unlisted or changed (empty: none)."""
    data = read_if_exists(StateDir(root).export_file)
    if data is None:
        return [f"{EXPORT_FILE} is missing: the export is incomplete (it is written last)"]
    try:
        listed: dict[str, dict[str, Any]] = json.loads(data)["files"]
    except (ValueError, KeyError, TypeError):
        return [f"{EXPORT_FILE} cannot be read"]
    present = _listing(root)
    problems = [f"{name} is missing" for name in listed if name not in present]
    problems += [f"{name} is not in the export's listing" for name in present if name not in listed]
    for name in (n for n in listed if n in present):
        if present[name]["size"] != listed[name]["size"] or _digest(root / name) != listed[name]["sha256"]:
            problems.append(f"{name} has changed (its checksum differs)")
    return problems


def export_info(root: Location) -> dict[str, Any] | None:
    """export.json of an export (None: not an export, or an incomplete one)."""
    data = read_if_exists(StateDir(root).export_file)
    return None if data is None else dict(json.loads(data))


def checked_export(directory: StateDir) -> dict[str, Any] | None:
    """If `directory` is an export: its export.json, once every file matches its checksums (else ExportDamaged,
    naming the first file that does not). None for any other state directory."""
    if not is_export(directory):
        return None
    if problems := export_problems(directory.root):
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise ExportDamaged(f"the export {directory.root} is damaged: {problems[0]}{more}; nothing was done")
    return export_info(directory.root)


def is_export(directory: StateDir) -> bool:
    """Whether `directory` is a savepoint export: it has export.json, or its manifest says so (export.json is
    written last, so an export cut short has none)."""
    if directory.export_file.exists():
        return True
    try:
        return directory.manifest.exists() and _marked(read_checkpoints(directory.manifest))
    except Exception:  # a manifest that cannot be read is for the damage checks to report
        return False


def _committed(directory: StateDir) -> bool:
    """Whether the directory's manifest holds a row (a manifest table may exist, created, with none yet)."""
    return directory.manifest.exists() and not read_checkpoints(directory.manifest).is_empty()


def _marked(rows: pl.DataFrame) -> bool:
    """Whether the manifest is an export's: its first row records the export."""
    return not rows.is_empty() and "export" in json.loads(rows.row(0, named=True)["metrics"] or "{}")


def refuse_run_on_export(state: str | Location, from_savepoint: bool = False) -> None:
    """A run never writes into an export: it starts from it in a new directory. Nor does it run, without
    --from-savepoint, on a directory whose start from an export was cut short (it holds part of the export)."""
    directory = StateDir(location(state))
    if directory.export_file.exists():
        raise UserError(
            f"{state} is a savepoint export and is only read: start a pipeline from it with "
            f"`timelapse run PIPELINE.sql --state NEW_DIR --from-savepoint {state}`"
        )
    if not from_savepoint and directory.export_start.exists() and not _committed(directory):
        raise UserError(
            f"{state}: a start from a savepoint export was cut short here; run again with --from-savepoint "
            "(it starts over), or delete the directory"
        )


# -- `timelapse run --from-savepoint EXPORT` -------------------------------------------------------------------


def start_pipeline(pipeline: Any, export: str | Location) -> dict[str, Any]:
    """Make `pipeline`'s new state directory start from `export` (then `pipeline.run()`): `timelapse run
    --from-savepoint`. Its Delta sinks go where its SQL declares them."""
    return start_from_export(export, pipeline.state, declared_sinks(pipeline.plan, pipeline.base_dir))


def declared_sinks(plan: Any, base_dir: Path) -> dict[str, Location]:
    """Where a plan's Delta sinks are declared, by table name (relative paths against the SQL's folder)."""
    found: dict[str, Location] = {}
    for sink in plan.sinks:
        options = sink.table.options
        if str(options.get("connector", "")).lower() == "delta" and "path" in options:
            declared = location(options["path"])
            found[sink.table.name] = declared if declared.is_absolute() else base_dir / declared
    return found


def start_from_export(
    export: str | Location, state: str | Location, sinks: dict[str, Location], user: str | None = None
) -> dict[str, Any]:
    """Materialise `export` into the new (or empty) state directory `state`, as a pipeline that starts from its
    savepoint: state and offsets are copied; each sink in `sinks` (where the SQL declares them, each path new or
    empty) starts as the export's copy if the export has one, else empty. Returns what was copied."""
    user = user or getpass.getuser()
    source, target = StateDir(location(export).resolve()), StateDir(location(state).resolve())
    intent = target.export_start
    if (started := read_if_exists(intent)) is not None and not _committed(target):
        # A start cut short (a kill): what it copied is removed, the directory and the sinks it had found empty.
        for stored in json.loads(started)["sinks"]:
            remove_tree(target.locate(stored))
        remove_tree(target.root)
    if target.root.exists() and any(target.root.iterdir()):
        raise UserError(f"{state} is not empty: --from-savepoint starts a new pipeline in a new or empty directory")
    info = checked_export(source)
    if info is None:
        raise UserError(f"{export} is not a savepoint export (no {EXPORT_FILE}); see `timelapse savepoint export`")
    row = epoch_row(read_checkpoints(source.manifest), int(info["epoch"]))
    # A table already at a declared path may be another pipeline's (the exported one's, still running): writing
    # on there would mix two histories in one table, as a branch refuses to.
    for name, declared in sorted(sinks.items()):
        if declared.exists() and any(declared.iterdir()):
            raise UserError(
                f"sink '{name}': {declared} already holds a table; a pipeline started from a savepoint writes its "
                "sinks afresh: point the SQL at a new path, or use `timelapse branch`"
            )
    copied: list[Location] = []

    def place(entry: TableEntry) -> Location | None:
        if entry.role != SINK or entry.name not in sinks:
            return None if entry.role == SINK else relocated(location(entry.path), source, target)
        copied.append(sinks[entry.name])
        return sinks[entry.name]

    exported = {t.name for t in entries(row) if t.role == SINK}
    target.root.mkdir(parents=True, exist_ok=True)
    # Durable before anything is copied: the sinks it will create, for the clean-up of a start cut short.
    write_atomic(intent, json.dumps({"sinks": [target.record(p) for n, p in sinks.items() if n in exported]}).encode())
    try:
        tables, operators = copy_cut(source, target, row, place, copy_table)
        faults.point("from-savepoint.copied")
        origin = {"parent": str(source.root), "epoch": int(info["epoch"]), "savepoint": info["savepoint"]}
        Manifest(target.manifest).commit(
            dataclasses.replace(
                checkpoint_from_row(row),
                kind="epoch",
                committed_at=None,
                tables=tables,
                operators=operators,
                metrics={"branch": {**origin, "user": user}},  # `timelapse log`: where this pipeline started
            )
        )
    except BaseException:
        for path in [*copied, target.root]:
            remove_tree(path)
        raise
    intent.unlink(missing_ok=True)  # the manifest row is the commit point; the intent only helps clean up before it
    return {**origin, "state": str(target.root), "sinks": {t.name: t.path for t in tables if t.role == SINK}}
