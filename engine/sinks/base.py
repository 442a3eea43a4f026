"""What every sink connector provides to the epoch loop."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Any

import polars as pl

from engine import paths
from engine.storage import Location, options_from
from sql.catalog import TableDef


class SinkConnector(ABC):
    #: Whether a replayed epoch is written only once. Non-transactional sinks (print) repeat output on replay.
    exactly_once = True

    def __init__(self, table: TableDef, base_dir: Path, app_id: str) -> None:
        self.table = table
        self.base_dir = base_dir
        self.app_id = app_id

    def resolve(self, path: str) -> Location:
        """The table's 'path', with its 'storage.*' options for the object store it names (engine.paths)."""
        return paths.connector_path(self.table.name, "path", path, self.base_dir, options_from(self.table.options))

    def open(self) -> None:
        """Create whatever the sink needs before the first epoch."""

    @abstractmethod
    def write(self, epoch: int, rows: pl.DataFrame) -> None:
        """Take epoch `epoch`'s rows. A sink may hold them back until `flush` (the Delta sink does, so that the
        epochs between two checkpoints cost it one commit)."""

    def flush(self) -> None:
        """Make every epoch taken so far durable in the sink: called before each checkpoint's manifest row, so
        that a checkpoint never names an epoch a sink does not hold."""

    def detach_flush(self) -> Callable[[], tuple[int | None, Any]]:
        """Take what `flush` would write, now; the returned call writes it and gives the sink's `version()` and
        `position()` as of that write. It may run in a thread while the next epochs call `write` (a checkpoint
        written in the background, engine/checkpoints.py). A sink that writes in `write` (print, Kafka) has
        nothing to take: its version and position are read now."""
        assert type(self).flush is SinkConnector.flush, f"{type(self).__name__} holds rows back: detach them"
        version, position = self.version(), self.position()
        return lambda: (version, position)

    def restore(self, position: Any, replaying: bool = True) -> None:
        """Before the first write of a run: what the last checkpoint recorded with `position()` (None if none).
        A sink that is not a Delta table uses it to find the epochs it already holds past that checkpoint;
        `replaying` is False when no epoch after that checkpoint was ever started, so there are none."""

    def position(self) -> Any:
        """For sinks that are not Delta tables: where the sink stood at this checkpoint (JSON), kept in the
        manifest row with the checkpoint; None for Delta sinks, whose version the manifest records instead."""
        return None

    def close(self) -> None:
        """Release clients and connections when the run ends."""

    def version(self) -> int | None:
        """The Delta version after the last write, for the manifest; None for sinks without versions."""
        return None

    @property
    def path(self) -> Location | None:
        return None
