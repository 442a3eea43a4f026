"""The layout of a state directory, its pipeline identity, and the lease that keeps one writer per directory.

A state directory is relocatable: it can be moved, copied or uploaded and behaves as the original. So no path
it records names its current location. `StateDir.record` turns a path into what is stored (the manifest's table
paths and operator directories, branch.json, branches/*.json), `StateDir.locate` turns a stored path back into
a real one at the directory's current location; nothing else reads or writes stored paths.

The rule (docs/architecture.md, "Paths are relative"):
- a path inside the state directory is stored relative to it: `operators/totals/state`, `dead_letters/orders`;
- a path beside it, inside the folder that holds it (the project folder: SQL, data, sinks and state), is stored
  relative to the state directory too: `../out/totals`. Moving or copying the whole project keeps them together;
- anything else (a sink in another tree, `/data/out`) is stored absolute, as declared.

Directories written by earlier versions store absolute paths. `original_roots` finds where such a directory
lived from the structure of what it stored (`<root>/operators/<id>`, `<root>/dead_letters/<source>`), and
`locate` maps an absolute path under an original root (or beside it, in its project folder) to the same place
under the current root. Nothing is rewritten: old rows are read through that mapping, new rows are relative.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from engine import lease
from engine.errors import UserError
from engine.lease import LEASE_FILE, LEASE_TIMEOUT_S, RENEW_EVERY_S, Lease, LeaseLost, StateDirBusy, read_lease
from engine.storage import Location, ObjectPath, is_uri, location, move, write_atomic

__all__ = [
    "LEASE_FILE",
    "LEASE_TIMEOUT_S",
    "RENEW_EVERY_S",
    "LeaseLost",
    "StateDir",
    "StateDirBusy",
    "move",
    "read_lease",
    "write_atomic",
]


@dataclass(frozen=True)
class StateDir:
    """A state directory on a local disk (`root` a `Path`) or in an object store (`root` an `ObjectPath`);
    every path below is of the same kind as `root`."""

    root: Location

    @property
    def manifest(self) -> Path:
        return self.root / "manifest"

    @property
    def offsets(self) -> Path:
        return self.root / "offsets"

    @property
    def damaged_offsets(self) -> Path:
        """Where offset files of uncommitted epochs that cannot be read are set aside (`<time>/` under it)."""
        return self.offsets / "_damaged"

    def dead_letters(self, source: str) -> Path:
        return self.root / "dead_letters" / source.lower()

    @property
    def operators(self) -> Path:
        return self.root / "operators"

    def operator(self, state_id: str, since: int | None = None) -> Path:
        """The directory of an operator's state tables; `since`: of state started afresh at that epoch, beside
        state it could not restore (which stays where it was, so earlier epochs remain readable)."""
        return self.operators / (state_id if since is None else f"{state_id}@{since}")

    def foreign_table(self, name: str) -> Path:
        """Where a branch keeps its copy of a table that lived outside its parent's directory, and where an export
        (and a branch of one) keeps its sinks."""
        return self.root / "tables" / name

    @property
    def export_file(self) -> Path:
        """In a savepoint export: what it holds and every file's checksum, written last (engine.savepoint_export)."""
        return self.root / "export.json"

    @property
    def export_start(self) -> Path:
        """`run --from-savepoint`'s intent while it copies an export here (removed with what it copied if cut short)."""
        return self.root / "from-savepoint-in-progress.json"

    @property
    def pipeline_file(self) -> Path:
        """The pipeline id (`pipeline_id`)."""
        return self.root / "pipeline.json"

    @property
    def rollback_intent(self) -> Path:
        """Present while a rollback is under way: what it restores, so a crash part-way is finished by the next run."""
        return self.root / "rollback-in-progress.json"

    @property
    def branch_file(self) -> Path:
        """In a branch: its parent and where its sinks are (engine.branching)."""
        return self.root / "branch.json"

    @property
    def branches(self) -> Path:
        """In a parent: one record per branch made from it (`timelapse log` shows them)."""
        return self.root / "branches"

    @staticmethod
    def set_aside_log(table: Path) -> Path:
        """Where a Delta table's unreadable log entries are set aside (`<time>/` under it); the manifest's too."""
        return table / "_damaged_log"

    def pipeline_id(self) -> str:
        """A stable id for this pipeline; prefixes the transaction markers written to its Delta tables."""
        path = self.pipeline_file
        if path.exists():
            return str(json.loads(path.read_text())["pipeline_id"])
        self.root.mkdir(parents=True, exist_ok=True)
        pid = uuid.uuid4().hex[:12]
        write_atomic(path, json.dumps({"pipeline_id": pid}).encode())
        return pid

    @property
    def checkpoint_request(self) -> Path:
        """Present while someone has asked the running pipeline for a checkpoint at its next epoch boundary."""
        return self.root / "checkpoint-requested"

    @property
    def tokens(self) -> Path:
        """The console's API tokens for this directory: names, roles and hashes (never a token itself)."""
        return self.root / "tokens.json"

    @property
    def requests(self) -> Path:
        """Actions asked of the running pipeline (savepoint, rollback, retention), one file each, and its answers."""
        return self.root / "requests"

    def plan_file(self, fingerprint: str) -> Path:
        """The plan graph a run of this fingerprint executed (what `explain` prints), for readers without the SQL."""
        return self.root / "plans" / f"{fingerprint}.json"

    # -- stored paths ----------------------------------------------------------------------------
    @property
    def base(self) -> Location:
        """The directory's current location: absolute, `..` and `.` folded (symlinks are kept)."""
        if isinstance(self.root, ObjectPath):
            return self.root
        return Path(os.path.abspath(self.root))

    def record(self, path: str | Location) -> str:
        """How `path` is stored: relative to this directory (POSIX separators) if it lies inside it or beside it
        in the folder that holds it, else absolute (a URI for object storage)."""
        if isinstance(self.base, ObjectPath) or is_uri(path):
            return self._record_uri(location(path))
        text = os.path.abspath(path)  # callers hold real paths; a relative one is relative to the working directory
        # As written first; then with symlinks followed, for callers that resolved the path (branching does).
        for base, target in ((self.base, Path(text)), (self.base.resolve(), Path(text).resolve())):
            if target.is_relative_to(base):
                return target.relative_to(base).as_posix()
            project = base.parent
            if project != project.parent and target.is_relative_to(project):
                return (PurePosixPath("..") / target.relative_to(project).as_posix()).as_posix()
        return text

    def _record_uri(self, target: Location) -> str:
        base = self.base
        if isinstance(target, ObjectPath) and isinstance(base, ObjectPath):
            if target.is_relative_to(base):
                return target.relative_to(base).as_posix()
            project = base.parent
            if project != base and target.is_relative_to(project):
                return (PurePosixPath("..") / target.relative_to(project).as_posix()).as_posix()
        return str(target) if isinstance(target, ObjectPath) else os.path.abspath(target)

    def locate(self, stored: str, origins: Iterable[Path] = ()) -> Location:
        """The real path of a stored one at this directory's current location; `origins` are where the
        directory lived when it stored absolute paths (`original_roots`). A stored URI in the bucket of an
        object-store directory is reached with the directory's options."""
        if is_uri(stored):
            found = location(stored)
            if isinstance(found, ObjectPath) and isinstance(self.root, ObjectPath) and found.scheme == self.root.scheme:
                return found.with_options(dict(self.root.options))
            return found
        if not os.path.isabs(stored):
            if isinstance(self.base, ObjectPath):
                return self.base / stored
            return Path(os.path.normpath(self.base / stored))
        path = Path(os.path.normpath(stored))
        moved = [origin for origin in origins if origin != self.base]
        for origin in moved:
            if path.is_relative_to(origin):
                return self.base / path.relative_to(origin)
        for origin in moved:  # beside the original, in its project folder: beside the current one
            project = origin.parent
            if project != project.parent and path.is_relative_to(project):
                return self.base.parent / path.relative_to(project)
        return path

    @staticmethod
    def original_roots(stored: Iterable[tuple[str, str]]) -> list[Path]:
        """Where a directory lived when it stored absolute paths, from (role, path) pairs of what it stored:
        operator directories (`<root>/operators/<id>`), their tables (`<root>/operators/<id>/<table>...`) and
        dead-letter tables (`<root>/dead_letters/<source>`). Longest first, so the most specific root wins."""
        roots: set[Path] = set()
        for role, text in stored:
            if not os.path.isabs(text):
                continue
            parts = Path(os.path.normpath(text)).parts
            anchor = "dead_letters" if role == "dead_letters" else "operators"
            if role == "dead_letters" or role == "directory":
                if len(parts) >= 3 and parts[-2] == anchor:
                    roots.add(Path(*parts[:-2]))
            elif role in ("state", "late") and anchor in parts[:-2]:
                at = max(i for i, part in enumerate(parts[:-2]) if part == anchor)
                roots.add(Path(*parts[:at]))
        return sorted(roots, key=lambda p: len(p.parts), reverse=True)

    def lock(self) -> Lease:
        """Take the directory for this process (a run, a rollback, a savepoint) until `close()`. A savepoint export
        (engine.savepoint_export) is never taken: it is only read, so that it stays what its checksums say."""
        if self.export_file.exists():
            raise UserError(f"{self.root} is a savepoint export and is only read; start from it in a new directory")
        return lease.acquire(self.root)
