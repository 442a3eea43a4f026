"""State larger than memory: an operator's key groups split into parts, the parts that do not fit on local disk.

With `SET 'state.memory.budget' = '1 GB'`, every stateful operator runs as `PARTS` (64) copies of its kind, each
holding a contiguous range of the 128 key groups (what a Ray worker holds, `engine/scaleout/`, run one after
another in this process). A row reaches the part of its key group, and every key's state lives in one part, so
the parts together compute what one operator does; they share the operator's Delta tables, and the operator
commits what they staged, once, as one.

An epoch runs the parts in order. A part whose state is on disk ("cold") is loaded before it runs; after it ran,
it stays in memory only while the operator's hot parts fit in its share of the budget, and is written out
otherwise. The budget is shared among the operators in proportion to their state. Cold parts are Arrow IPC files
derived from the state (the Delta tables stay the only record of it): they live under a spill directory that
is removed when the run ends, and a restart loads each part from the Delta tables at the checkpoint, one range
of key groups at a time, so the whole state is never in memory, not even while restoring or compacting.

The cost: each epoch reads and writes the cold parts it runs (benchmarks/README.md measures it).
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa

from engine import delta_tables, faults
from engine.operators.base import OperatorSettings, StatefulOperator, TableSpec
from engine.operators.context import EpochContext
from engine.operators.late import LateRows
from engine.state_store import BOOKKEEPING, StateTable, by_key, resolve
from sql.plan import KEY_GROUPS, Node

#: parts per operator under a budget (a power of two up to KEY_GROUPS); more parts: less memory while a cold
#: part runs, more, smaller Polars calls per epoch
PARTS = int(os.environ.get("TIMELAPSE_SPILL_PARTS", "64"))
SPILL_PREFIX = "timelapse-spill-"
#: a part with no timer due even at this instant has none at all
LAST_INSTANT = dt.datetime.max.replace(tzinfo=dt.UTC) - dt.timedelta(days=1)


class MemoryBudget:
    """The bytes of live state the operators of a run may hold in memory, shared in proportion to their state,
    and the directory their cold parts are written to."""

    def __init__(self, total: int, root: Path | None = None) -> None:
        self.total = total
        self.operators: list[SpilledOperator] = []
        self.directory = Path(tempfile.mkdtemp(prefix=f"{SPILL_PREFIX}{os.getpid()}-", dir=root))
        _remove_abandoned(self.directory.parent)

    def share(self, operator: SpilledOperator) -> int:
        sizes = [op.state_bytes for op in self.operators]
        whole = sum(sizes)
        if whole == 0:
            return self.total // max(len(self.operators), 1)
        return int(self.total * operator.state_bytes / whole)

    def close(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)


def _remove_abandoned(parent: Path) -> None:
    """Spill directories of runs that ended without removing theirs (killed): their process is gone."""
    for stale in parent.glob(f"{SPILL_PREFIX}*"):
        pid = stale.name[len(SPILL_PREFIX) :].split("-")[0]
        if pid.isdigit() and int(pid) != os.getpid() and not Path(f"/proc/{pid}").exists():
            shutil.rmtree(stale, ignore_errors=True)


class _Cold:
    """A part on disk: its frames' files, and their sizes (what it would hold in memory)."""

    def __init__(self, files: dict[str, Path], rows: dict[str, int], state_rows: int, timers: bool) -> None:
        self.files, self.rows, self.state_rows, self.timers = files, rows, state_rows, timers


class _RangeLoader:
    """A state table's live rows at a version, loaded for a range of parts at a time (as many as fit in the
    operator's share of the budget): each part's view takes its rows from the range holding it."""

    #: a rough size of a logged row's column in memory, to decide how many ranges to read the log in
    COLUMN_BYTES = 16

    def __init__(self, table: StateTable, owner: pl.Expr) -> None:
        self.table, self.owner = table, owner
        self.span = PARTS
        self.cached: tuple[int, pl.DataFrame] | None = None

    def plan(self, share: int) -> None:
        guess = self.table.log_rows * len(self.table.schema) * self.COLUMN_BYTES
        ranges = 1
        while ranges < PARTS and guess / ranges > share:
            ranges *= 2
        self.span, self.cached = PARTS // ranges, None

    def rows(self, index: int, version: int) -> pl.DataFrame:
        start = index - index % self.span
        if self.cached is None or self.cached[0] != start:
            self.cached = None
            if self.table.path is None:
                log = pl.concat([pl.DataFrame(schema=self.table.schema), *self.table.memory[:version]]).lazy()
            else:
                log = delta_tables.scan(self.table.path, version=version)
            owned = self.owner.is_between(start, start + self.span - 1)
            if by_key(owned, self.table.keys):  # filtered before resolving: see StateTable.load
                live = resolve(log.filter(owned), self.table.keys)
            else:  # (OVER's rows are owned by partition, its tombstones carry only their number: the whole log)
                live = resolve(log, self.table.keys).filter(owned)
            self.cached = (start, live.drop("_epoch", "_deleted").collect())
        return self.cached[1].filter(self.owner == index)


class _PartView(StateTable):
    """A part's read-only view of the operator's table: its rows come from the range loader."""

    def __init__(
        self, table: StateTable, key_types: dict[str, pl.DataType], owned: pl.Expr, loader: _RangeLoader, index: int
    ) -> None:
        super().__init__(table.path, table.keys, table.values, table.app_id, key_types, owned)
        self.loader, self.index = loader, index

    def load(self, version: int | None) -> pl.DataFrame:
        if version is None:
            return super().load(None)
        live = self.loader.rows(self.index, version)
        self.live_rows = live.height
        return live.cast({k: v for k, v in self.schema.items() if k in live.columns})  # type: ignore[arg-type]


class SpilledOperator(StatefulOperator):
    def __init__(
        self, kind: type[StatefulOperator], node: Node, settings: OperatorSettings | None, budget: MemoryBudget
    ) -> None:
        self.kind = kind
        super().__init__(node, settings)
        self.budget = budget
        budget.operators.append(self)
        self.parts = [kind(node, settings) for _ in range(PARTS)]
        self.cold: dict[int, _Cold] = {}
        self.sizes = [0] * PARTS  # each part's state in bytes, in memory or not, as of when it last ran
        self.directory = budget.directory / node.state_id.replace("/", "_")

    def table_specs(self, node: Any) -> list[TableSpec]:  # type: ignore[override]
        return self.kind.table_specs(node)

    def input_key_group(self, index: int) -> pl.Expr | None:
        return self.parts[0].input_key_group(index)

    # -- opening and restoring ------------------------------------------------------------------
    def attach(self, tables: Mapping[str, StateTable | LateRows]) -> None:
        """The operator commits the tables; each part gets a read-only view of its key groups (late-rows tables
        are shared: the parts' late rows are committed with the operator's)."""
        super().attach(tables)
        for table in self.state_tables.values():
            table.compact_parts = PARTS
        self.loaders = {name: _RangeLoader(table, self._owner(name)) for name, table in self.state_tables.items()}
        for index, part in enumerate(self.parts):
            views: dict[str, StateTable | LateRows] = dict(self.late_tables)
            for name, table in self.state_tables.items():
                key_types = {k: t for k, t in table.schema.items() if k not in table.values and k not in BOOKKEEPING}
                views[name] = _PartView(table, key_types, self._owner(name) == index, self.loaders[name], index)
            part.attach(views)

    def _owner(self, name: str) -> pl.Expr:
        """The part owning each row of state table `name`."""
        return (self.parts[0].state_key_group(name).cast(pl.Int64) * PARTS // KEY_GROUPS).cast(pl.Int32)

    def restore(self, versions: Mapping[str, int], watermark: dt.datetime | None) -> None:
        """Each part loads its key groups at the checkpoint, and goes to disk at once if it does not fit: the log is
        read a range of parts at a time (a scan filtered by key group), never whole unless it fits."""
        for name, table in self.state_tables.items():
            table.count_log(versions.get(self.specs[name].qualified(self.node.state_id)))
        self.cold.clear()
        shutil.rmtree(self.directory, ignore_errors=True)
        share = self.budget.total // max(len(self.budget.operators), 1)
        for loader in self.loaders.values():
            loader.plan(share)
        for index, part in enumerate(self.parts):
            self.cold.pop(index, None)  # whatever was on disk, the checkpoint decides
            part.restore(versions, watermark)
            self.sizes[index] = part.state_bytes
            self._settle(index, share)
        for loader in self.loaders.values():
            loader.cached = None
        self.last_watermark = watermark

    def frames(self) -> dict[str, pl.DataFrame]:
        """The whole live state (cold parts read back): for inspection, never on the epoch's path."""
        names = self.parts[0].frames()
        return {name: pl.concat([self._frames(i)[name] for i in range(len(self.parts))]) for name in names}

    def set_frame(self, name: str, frame: pl.DataFrame) -> None:
        for index, part in enumerate(self.parts):
            self._thaw(index)
            part.set_frame(name, frame.filter(self._owner(name) == index))

    # -- per epoch -----------------------------------------------------------------------------
    def process(self, inputs: list[pl.DataFrame], ctx: EpochContext) -> pl.DataFrame:
        split: list[dict[Any, pl.DataFrame]] = []
        for index, frame in enumerate(inputs):
            groups = self.input_key_group(index)
            assert groups is not None, "a kind without key groups keeps no state to spill"
            part = (groups.cast(pl.Int64) * PARTS // KEY_GROUPS).cast(pl.Int32).alias("__part")
            split.append(
                frame.with_columns(part).partition_by("__part", as_dict=True, include_key=False, maintain_order=True)
            )
        outputs = []
        share = self.budget.share(self)
        for index, part in enumerate(self.parts):
            own = [parts.get((index,), frame.head(0)) for parts, frame in zip(split, inputs, strict=True)]
            self._thaw(index)
            outputs.append(part.process(own, ctx))
            self.sizes[index] = part.state_bytes
            self._settle(index, share)
        return pl.concat(outputs, how="vertical_relaxed")

    def timer_due(self, now: dt.datetime) -> bool:
        """A cold part keeps its timers on disk: one that had any when it went cold is read back to be asked."""
        for index, part in enumerate(self.parts):
            cold = self.cold.get(index)
            if cold is not None and cold.timers:
                self._thaw(index)
                due = part.timer_due(now)
                self._settle(index, self.budget.share(self))
            else:
                due = cold is None and part.timer_due(now)
            if due:
                return True
        return False

    # -- memory ---------------------------------------------------------------------------------
    def _hot_bytes(self) -> int:
        return sum(size for i, size in enumerate(self.sizes) if i not in self.cold)

    def _settle(self, index: int, share: int) -> None:
        """After part `index` ran: while the hot parts hold more than `share` (this operator's share of the
        budget), write parts out, the one that just ran first, then the others from the last."""
        # A cold part running needs room besides the hot ones: read back, then rebuilt as it changes (about
        # twice its size at once), so the largest part's twice is kept free.
        share = max(share - 2 * max(self.sizes), 0)
        hot = self._hot_bytes()
        for victim in [index, *(i for i in reversed(range(len(self.parts))) if i != index)]:
            if hot <= share:
                break
            if victim not in self.cold and self.sizes[victim] > 0:  # (an empty part, or one not restored yet)
                hot -= self.sizes[victim]
                self._freeze(victim)

    def _freeze(self, index: int) -> None:
        part = self.parts[index]
        frames = dict(part.frames())  # a copy: a kind may hand out its own dict, which set_frame changes
        # Written whenever it goes cold: a kind may change its frames in place (counts in a numpy array), so
        # an unchanged frame object does not prove unchanged rows.
        folder = self.directory / f"part-{index:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        files = {}
        for name, frame in frames.items():
            files[name] = folder / f"{name or 'state'}.arrow"
            frame.write_ipc(files[name], compression="uncompressed")
        rows = {name: frame.height for name, frame in frames.items()}
        cold = _Cold(files, rows, part.state_rows, part.timer_due(LAST_INSTANT))
        faults.point("spill.written")
        self.cold[index] = cold
        for name, frame in frames.items():
            part.set_frame(name, frame.clear())
        del frames

    def _thaw(self, index: int) -> None:
        cold = self.cold.pop(index, None)
        if cold is None:
            return
        frames = {name: _read(path) for name, path in cold.files.items()}
        for name, frame in frames.items():
            self.parts[index].set_frame(name, frame)

    def _frames(self, index: int) -> dict[str, pl.DataFrame]:
        if (cold := self.cold.get(index)) is not None:
            return {name: _read(path) for name, path in cold.files.items()}
        return self.parts[index].frames()

    # -- checkpoints -----------------------------------------------------------------------------
    def detach(self, epoch: int) -> Callable[[], None]:
        """The parts' staged changes, in part order, committed once into the operator's tables."""
        for name, table in self.state_tables.items():
            for part in self.parts:
                if (changes := part.state_tables[name].take_staged()) is not None:
                    table.add_staged(changes)
        return super().detach(epoch)

    def live_rows(self) -> dict[str, int]:
        rows: dict[str, int] = {}
        for index, part in enumerate(self.parts):
            cold = self.cold.get(index)
            for name, count in (cold.rows if cold is not None else part.live_rows()).items():
                rows[name] = rows.get(name, 0) + count
        return rows

    @property
    def state_rows(self) -> int:
        return sum(
            cold.state_rows if (cold := self.cold.get(i)) is not None else part.state_rows
            for i, part in enumerate(self.parts)
        )

    @property
    def state_bytes(self) -> int:
        """The state's size in memory, whether it is there now or on disk (as of each part's last run)."""
        return sum(self.sizes)

    @property
    def memory_bytes(self) -> int:
        return self._hot_bytes()


def _read(path: Path) -> pl.DataFrame:
    """A spilled frame, read into memory (never memory-mapped: the file is rewritten when the part goes cold
    again, under frames that might still share its pages)."""
    with pa.OSFile(str(path)) as file:
        table = pa.ipc.open_file(file).read_all()
    return pl.DataFrame(pl.from_arrow(table))
