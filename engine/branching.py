"""Branches: an independent pipeline whose state, offsets and sinks start as copies of a savepoint or epoch.

A branch is a new state directory. Every table of the chosen cut is copied as it was at that cut (operator
state keeps its change log, so reading the branch's state at its first epoch gives exactly the parent's);
the offset log up to the cut is copied, so the branch reads its sources on from the same positions. Sink
tables are copied to paths of their own: the user's, or `<parent path>-<branch name>` next to the parent's
(inside the branch, at the same relative path, for a sink that lived inside the parent: an export's).
`branch.json` in the new directory records the parent and those paths; the runner writes a branch's sinks
there whatever the SQL says, so a branch can never write into its parent's tables.

The parent is only read (at the versions its manifest names), so it may keep running; it gains a file under
`branches/` that `timelapse log` shows. A savepoint export (engine.savepoint_export) is a parent whose
checksums are checked first and that gains nothing; a branch of one keeps every sink inside itself
(`tables/<name>`) unless `--sink` says otherwise, since its SQL's paths may be those of the exported pipeline.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import getpass
import json
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import polars as pl

from engine import delta_tables
from engine.delta_tables import KEEP_HISTORY, to_arrow
from engine.errors import VersioningError
from engine.manifest import (
    SINK,
    Manifest,
    TableEntry,
    checkpoint_from_row,
    cut_row,
    entries,
    original_roots,
    read_checkpoints,
    savepoints,
)
from engine.offset_log import OffsetLog
from engine.state_dir import StateDir, write_atomic
from engine.storage import Location, location, remove_tree


def create_branch(
    parent: str | Path,
    new: str | Path,
    savepoint: str | None = None,
    epoch: int | None = None,
    sink_paths: dict[str, str] | None = None,
    user: str | None = None,
) -> dict[str, Any]:
    """Create the branch `new` from `parent` at a savepoint or epoch; returns what was copied where. `user` is
    recorded in both directories (default: the OS user; the console passes its token's name)."""
    user = user or getpass.getuser()
    source, target = StateDir(location(parent).resolve()), StateDir(location(new).resolve())
    if not source.manifest.exists():
        raise VersioningError(f"{parent} is not a timelapse state directory")
    if target.root.exists() and any(target.root.iterdir()):
        raise VersioningError(f"{new} already exists and is not empty; a branch needs a new directory")
    from engine.savepoint_export import checked_export  # an export is only read, once its checksums hold

    export = checked_export(source)
    rows = read_checkpoints(source.manifest)
    if savepoint is not None:
        found = savepoints(source.root).filter(pl.col("name") == savepoint)
        if found.is_empty():
            raise VersioningError(f"no savepoint named '{savepoint}'")
        epoch = int(found.item(0, "epoch"))
    if epoch is None:
        raise VersioningError("say where to branch from: --from savepoint NAME or --from epoch N")
    row = cut_row(rows, epoch, savepoint)  # a savepoint's own tables (an edited one's are not its epoch's)
    sink_paths = dict(sink_paths or {})
    parent_tables = entries(row)
    names = {t.name for t in parent_tables if t.role == SINK}
    unknown = sorted(set(sink_paths) - names)
    if unknown and export is None:  # an export may hold no sinks: then --sink says where the branch writes them
        raise VersioningError(f"no sink named {', '.join(unknown)} at epoch {epoch}; sinks: {', '.join(sorted(names))}")

    target.root.mkdir(parents=True, exist_ok=True)
    try:
        tables, operators = copy_cut(
            source, target, row, lambda entry: _branch_table(entry, source, target, sink_paths), copy_table
        )
        checkpoint = checkpoint_from_row(row)
        info = {
            "parent": str(source.root),
            "epoch": epoch,
            "savepoint": savepoint,
            "user": user,
            "sinks": {t.name: t.path for t in tables if t.role == SINK} | {n: sink_paths[n] for n in unknown},
            "parent_sinks": {t.name: t.path for t in parent_tables if t.role == SINK},
            **({"export": True} if export is not None else {}),
        }
        write_atomic(target.branch_file, json.dumps(_stored(info, target.record), indent=1).encode())
        Manifest(target.manifest).commit(
            dataclasses.replace(
                checkpoint,
                kind="epoch",
                committed_at=None,
                tables=tables,
                operators=operators,
                metrics={"branch": {k: info[k] for k in ("parent", "epoch", "savepoint", "user")}},
            )
        )
    except BaseException:
        remove_tree(target.root)  # half a branch is no branch
        raise
    result = {"branch": str(target.root), "from_epoch": epoch, "savepoint": savepoint, "sinks": info["sinks"]}
    if export is not None:
        return result  # an export is never written to: it stays as its checksums describe it
    record = {
        "path": source.record(target.root),  # relative when beside the parent, so both can move together
        "epoch": epoch,
        "savepoint": savepoint,
        "created_at": dt.datetime.now(dt.UTC).isoformat(),
        "user": user,
    }
    write_atomic(source.branches / f"{uuid.uuid4().hex[:12]}.json", json.dumps(record).encode())
    return result


def branch_info(state: Path) -> dict[str, Any] | None:
    """branch.json with its paths (stored relative to the branch, StateDir.record) made real again."""
    directory = StateDir(state)
    if not directory.branch_file.exists():
        return None
    info = json.loads(directory.branch_file.read_text())
    # Branches made by earlier versions stored absolute paths: map them like the manifest's.
    origins = original_roots(directory.manifest) if directory.manifest.exists() else []
    return _stored(info, lambda stored: str(directory.locate(stored, origins)))


def branches_of(state: Path) -> list[dict[str, Any]]:
    directory = StateDir(state)
    folder = directory.branches
    if not folder.is_dir():
        return []
    records = [json.loads(p.read_text()) for p in folder.glob("*.json")]
    return sorted(({**r, "path": str(directory.locate(r["path"]))} for r in records), key=lambda r: r["created_at"])


def _stored(info: dict[str, Any], convert: Callable[[str], str]) -> dict[str, Any]:
    """branch.json with `convert` applied to every path in it: the parent and the sinks on both sides."""
    return {
        **info,
        "parent": convert(info["parent"]),
        "sinks": {name: convert(p) for name, p in info["sinks"].items()},
        "parent_sinks": {name: convert(p) for name, p in info["parent_sinks"].items()},
    }


def sink_path_for(state: Path, name: str, declared: Path) -> Path:
    """Where a branch writes sink `name` (declared at `declared` by its SQL); the declared path elsewhere."""
    info = branch_info(state)
    if info is None:
        return declared
    if name in info["sinks"]:
        return location(info["sinks"][name])
    if info.get("export"):  # its SQL's paths may be the exported pipeline's own tables: the branch keeps its own
        return StateDir(state).foreign_table(name)
    if str(declared.resolve()) in {str(location(p).resolve()) for p in info["parent_sinks"].values()}:
        return location(f"{declared}-{state.name}")  # a new sink of the branch's SQL that points at a parent table
    return declared


def copy_cut(
    source: StateDir,
    target: StateDir,
    row: dict[str, Any],
    place: Callable[[TableEntry], Location | None],
    copy: Callable[[TableEntry, Location], TableEntry],
) -> tuple[list[TableEntry], dict[str, Any]]:
    """Copy the cut a manifest row names into `target` (a branch, an export, a run started from an export): each
    table to where `place` says (None: left out) by `copy`, the offset log up to the cut, and the pipeline id.
    Returns the copied tables and the row's operator records with their directories moved into `target`."""
    tables = []
    for entry in entries(row):
        destination = place(entry)
        if destination is not None:
            tables.append(copy(entry, destination))
    _copy_offsets(source, target, int(row["epoch"]))
    operators = {
        sid: {**record, "directory": str(relocated(location(record["directory"]), source, target))}
        for sid, record in json.loads(row.get("operators") or "{}").items()
        if "directory" in record
    }
    target.pipeline_id()
    return tables, operators


def _branch_table(entry: TableEntry, source: StateDir, target: StateDir, sink_paths: dict[str, str]) -> Location:
    """Where a branch keeps its copy of a table: a sink where the user says, else inside the branch if it lived
    inside the parent (an export's), else beside the parent's; everything else inside the branch."""
    path = location(entry.path)
    if entry.role != SINK:
        return relocated(path, source, target)
    if entry.name in sink_paths:
        destination = location(sink_paths[entry.name]).resolve()
    elif _inside(path, source):
        destination = relocated(path, source, target)
    else:
        destination = location(f"{path}-{target.root.name}").resolve()
    if destination.exists() and any(destination.iterdir()):
        raise VersioningError(f"sink path {destination} for '{entry.name}' already exists")
    return destination


def _inside(path: Location, directory: StateDir) -> bool:
    try:
        path.resolve().relative_to(directory.root)  # type: ignore[arg-type]
    except (ValueError, TypeError):
        return False
    return True


def copy_table(entry: TableEntry, destination: Location) -> TableEntry:
    """A table as it was at the cut, as the first version of a new table (its change log kept)."""
    rows = delta_tables.scan(entry.path, version=entry.version).collect()
    return write_copy(entry, destination, to_arrow(rows))


def write_copy(entry: TableEntry, destination: Location, rows: Any) -> TableEntry:
    """`rows` as a new table at `destination`, partitioned as `entry`'s; the entry that names it."""
    table = delta_tables.delta(entry.path, version=entry.version)
    destination.mkdir(parents=True, exist_ok=True)
    delta_tables.write(
        destination,
        rows,
        mode="append",
        partition_by=list(table.metadata().partition_columns) or None,
        configuration=KEEP_HISTORY,
    )
    return dataclasses.replace(entry, path=str(destination), version=int(delta_tables.delta(destination).version()))


def relocated(path: Location, source: StateDir, target: StateDir) -> Location:
    """The branch's copy of a table that lives in the parent's state directory (on the same storage or not)."""
    try:
        return target.root / path.resolve().relative_to(source.root)  # type: ignore[arg-type]
    except (ValueError, TypeError):  # TypeError: a local path is never relative to an object-store one
        return target.foreign_table(path.name)


def _copy_offsets(source: StateDir, target: StateDir, epoch: int) -> None:
    """The branch continues each source from the cut; it needs the sources' history up to there."""
    log = OffsetLog(source.offsets)
    copy = OffsetLog(target.offsets)
    if log.base.exists():
        write_atomic(copy.base, log.base.read_bytes())
    for logged in log.epochs():
        if logged > epoch:
            break
        entry = log.read(logged)
        if entry is not None:
            copy.write(logged, {k: v for k, v in entry.items() if k != "epoch"})
