"""The offset log: what each epoch will read, written durably before the epoch reads anything.

One small JSON file per epoch. A crash mid-epoch is recovered by re-reading exactly the logged slice, so
the re-run sees the same input as the lost run. Delta would cost a table commit per epoch here; the manifest
row (a Delta commit) remains the commit point.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from engine.state_dir import write_atomic


class OffsetLog:
    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def _path(self, epoch: int) -> Path:
        return self.directory / f"{epoch:012d}.json"

    def write(self, epoch: int, entry: dict[str, Any]) -> None:
        write_atomic(self._path(epoch), json.dumps({"epoch": epoch, **entry}, sort_keys=True).encode())

    def read(self, epoch: int) -> dict[str, Any] | None:
        path = self._path(epoch)
        if not path.exists():
            return None
        return dict(json.loads(path.read_text()))

    def epochs(self) -> list[int]:
        if not self.directory.exists():
            return []
        return sorted(int(p.stem) for p in self.directory.glob("*.json"))

    def discard_after(self, epoch: int) -> None:
        """Forget planned-but-uncommitted epochs beyond `epoch` (their slices will be planned again)."""
        for e in self.epochs():
            if e > epoch:
                self._path(e).unlink(missing_ok=True)
