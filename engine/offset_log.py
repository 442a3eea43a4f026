"""The offset log: what each epoch will read, written durably before the epoch reads anything.

One small JSON file per epoch. A crash mid-epoch is recovered by re-reading exactly the logged slice, so
the re-run sees the same input as the lost run. Delta would cost a table commit per epoch here; the manifest
row (a Delta commit) remains the commit point.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.state_dir import write_atomic
from engine.storage import delete_files, read_if_exists


@dataclass(frozen=True)
class PlannedEpoch:
    """What an epoch reads, logged before anything is read: a slice per source, the planning time (the epoch's
    PROCTIME), the idle sources, the lookup tables' versions, and whether it drains."""

    pieces: dict[str, dict[str, Any]]
    at: dt.datetime
    idle: set[str]
    dimensions: dict[str, Any]
    drain: bool = False

    def entry(self) -> dict[str, Any]:
        if self.drain:
            return {"planned_at": self.at.isoformat(), "sources": {}, "idle": [], "drain": True}
        return {
            "planned_at": self.at.isoformat(),
            "sources": self.pieces,
            "idle": sorted(self.idle),
            "dimensions": self.dimensions,
        }

    @staticmethod
    def logged(entry: dict[str, Any]) -> PlannedEpoch:
        return PlannedEpoch(
            entry["sources"],
            dt.datetime.fromisoformat(entry["planned_at"]),
            set(entry.get("idle", [])),
            entry.get("dimensions", {}),
            bool(entry.get("drain", False)),
        )


class OffsetLog:
    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def _path(self, epoch: int) -> Path:
        return self.directory / f"{epoch:012d}.json"

    def write(self, epoch: int, entry: dict[str, Any]) -> None:
        write_atomic(self._path(epoch), json.dumps({"epoch": epoch, **entry}, sort_keys=True).encode())

    def read(self, epoch: int) -> dict[str, Any] | None:
        data = read_if_exists(self._path(epoch))  # one GET on an object store, not HEAD + LIST + GET
        return None if data is None else dict(json.loads(data))

    def epochs(self) -> list[int]:
        # A folder that does not exist lists as empty, on a disk as in a bucket: one LIST, no existence check.
        return sorted(int(p.stem) for p in self.directory.glob("*.json") if p.stem.isdigit())

    @property
    def base(self) -> Path:
        return self.directory / "base.json"

    def history(self, until_epoch: int) -> dict[str, list[dict[str, Any]]]:
        """Each source's logged slices up to `until_epoch`, oldest first (folded slices come first)."""
        pieces: dict[str, list[dict[str, Any]]] = {}
        folded_until = 0
        if (data := read_if_exists(self.base)) is not None:
            base = json.loads(data)
            folded_until = int(base["until_epoch"])
            for name, folded in base["sources"].items():
                pieces.setdefault(name, []).extend(folded)
        for epoch in self.epochs():
            if epoch <= folded_until:
                continue  # a fold cut short by a crash: the summary already holds this epoch
            if epoch > until_epoch:
                break
            for name, piece in (self.read(epoch) or {}).get("sources", {}).items():
                pieces.setdefault(name, []).append(piece)
        return pieces

    def fold(self, until_epoch: int, keep: Collection[int] = ()) -> None:
        """Replace the files of epochs before `until_epoch` by one summary, so the log stays small.

        A source's history is only ever used for what accumulates: the first slice (when the source started)
        and the `files_added` lists. The summary keeps exactly that, written before the files go. The files of
        epochs in `keep` stay beside it (retention keeps the slices a retained checkpoint read, for blame):
        `history()` takes them from the summary, so they count once.
        """
        older = [e for e in self.epochs() if e < until_epoch]
        if not older:
            return
        folded_until = 0
        if (data := read_if_exists(self.base)) is not None:
            folded_until = int(json.loads(data)["until_epoch"])
        fresh = [e for e in older if e > folded_until]  # files kept by an earlier fold are in its summary
        if fresh:
            history = self.history(fresh[-1])
            folded = {}
            for name, pieces in history.items():
                first = {k: v for k, v in pieces[0].items() if k != "files_added"}
                files = [f for piece in pieces for f in piece.get("files_added", [])]
                folded[name] = [{**first, "files_added": files}]
            summary = {"until_epoch": fresh[-1], "sources": folded}
            write_atomic(self.base, json.dumps(summary, sort_keys=True).encode())
        kept = set(keep)
        delete_files(self._path(epoch) for epoch in older if epoch not in kept)

    def discard_after(self, epoch: int) -> None:
        """Forget planned-but-uncommitted epochs beyond `epoch` (their slices will be planned again)."""
        delete_files(self._path(e) for e in self.epochs() if e > epoch)
