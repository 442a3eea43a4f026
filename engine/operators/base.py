"""The stateful-operator contract: what the runner (or a worker holding some key groups) may ask of an operator.

Life of an operator, in the spirit of Flink's `open` / `processElement` / `processWatermark` / `snapshotState`:

- built from its plan node alone (`create`): nothing is opened, nothing read, no runner object is needed;
- `table_specs(node)`: its state tables as a pure description, with the kind's `LAYOUT_VERSION`;
- `open(store, versions, watermark)`: opens its tables (Delta under a directory, or in memory) and loads the
  state the checkpoint names (`restore`);
- `process(inputs, ctx)`: one epoch's input rows in, output rows out; timers and the watermark arrive with the
  context (`ctx.watermark`, `ctx.proctime`), `timer_due` asks whether an epoch without rows must still run;
- `commit(epoch)`: appends the staged changes of the epochs since the last checkpoint (the snapshot);
  `detach(epoch)` takes them at once and returns the call that appends them, which may run in a thread while
  the next epochs run (a checkpoint written in the background, engine/checkpoints.py);
- `tables()`, `state_rows`, `state_bytes`, `late_count`: what the manifest and the metrics record.

Live state is a set of DataFrames by table name (`frames()`); the change log of each lives in a `StateTable`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import polars as pl

from engine.operators.context import EpochContext
from engine.operators.late import LateRows
from engine.state_store import BOOKKEEPING, StateTable, describe
from sql.plan import DELETE, OP_COLUMN, UPDATE_BEFORE, WATERMARK_COLUMN, Node

UTC_MS = pl.Datetime("ms", "UTC")
#: name -> (role, path, version, schema as JSON for state tables): what the manifest records of each table
TableEntries = dict[str, tuple[str, Path | None, int, str | None]]


@dataclass(frozen=True)
class TableSpec:
    """One table an operator keeps, known from the plan node alone."""

    name: str  # under the operator's state id in the manifest ("" for its main table)
    directory: str  # its folder in the operator's directory
    keys: list[str] = field(default_factory=list)
    key_types: dict[str, pl.DataType] = field(default_factory=dict)
    values: dict[str, pl.DataType] = field(default_factory=dict)
    role: str = "state"  # state | late
    columns: list[str] = field(default_factory=list)  # late: the input columns a late row keeps

    def qualified(self, state_id: str) -> str:
        return f"{state_id}/{self.name}" if self.name else state_id

    def empty(self) -> pl.DataFrame:
        """The live state before anything is loaded: key and value columns, and the key group."""
        return pl.DataFrame(schema={**self.key_types, **self.values, "_kg": pl.Int32()})

    def describe(self) -> str:
        """What the manifest records of a state table: its key columns and every column's type (JSON)."""
        return describe(self.keys, {**self.key_types, **self.values, **BOOKKEEPING})


class StateStore:
    """Where an operator's tables live: Delta tables under `directory`, or in memory when it is None."""

    def __init__(self, directory: Path | None, app_prefix: str = "memory") -> None:
        self.directory = directory
        self.app_prefix = app_prefix  # the pipeline id: transaction markers are `<pipeline>/<table name>`

    def path(self, spec: TableSpec) -> Path | None:
        return None if self.directory is None else self.directory / spec.directory

    def open(self, state_id: str, spec: TableSpec) -> StateTable | LateRows:
        app_id = f"{self.app_prefix}/{spec.qualified(state_id)}"
        if spec.role == "late":
            return LateRows(self.path(spec), app_id, spec.columns)
        return StateTable(self.path(spec), spec.keys, spec.values, app_id, spec.key_types)


@dataclass(frozen=True)
class OperatorSettings:
    """What an operator may be told besides its plan node."""

    base_dir: Path = Path(".")  # where relative connector paths (a lookup join's dimension) start
    parallelism: int = 1  # worker threads for kinds that split their key groups
    #: this process's index among the workers of a scaled-out run, and their number: a kind that numbers its
    #: rows (OVER) interleaves the numbers so that no two workers give the same one
    worker: int = 0
    workers: int = 1


class StatefulOperator:
    """Base of every stateful operator; subclasses define `table_specs`, `frames`, `set_frame` and `process`."""

    #: bumped when the physical layout of the kind's state changes under the same SQL; recorded in the manifest
    LAYOUT_VERSION: ClassVar[int] = 1

    @classmethod
    def layout_version(cls, node: Any) -> int:
        """The physical layout this node's state is kept in (a kind may keep some of its nodes another way)."""
        return cls.LAYOUT_VERSION

    def __init__(self, node: Any, settings: OperatorSettings | None = None) -> None:
        self.node = node
        self.settings = settings or OperatorSettings()
        self.specs = {spec.name: spec for spec in self.table_specs(node)}
        self.state_tables: dict[str, StateTable] = {}
        self.late_tables: dict[str, LateRows] = {}
        self.last_watermark: dt.datetime | None = None

    @classmethod
    def create(cls, node: Node, settings: OperatorSettings | None = None) -> StatefulOperator:
        return cls(node, settings)

    @classmethod
    def table_specs(cls, node: Any) -> list[TableSpec]:
        raise NotImplementedError

    # -- opening and restoring -----------------------------------------------------------------
    def table_paths(self, store: StateStore) -> list[Path]:
        return [path for spec in self.specs.values() if (path := store.path(spec)) is not None]

    def open(self, store: StateStore, versions: Mapping[str, int], watermark: dt.datetime | None) -> None:
        """Open the tables and load the state at the checkpoint's `versions` (by manifest name)."""
        self.attach({name: store.open(self.node.state_id, spec) for name, spec in self.specs.items()})
        self.restore(versions, watermark)

    def attach(self, tables: Mapping[str, StateTable | LateRows]) -> None:
        """Take opened tables (workers sharing one set of tables are each given the same ones)."""
        self.state_tables = {n: t for n, t in tables.items() if isinstance(t, StateTable)}
        self.late_tables = {n: t for n, t in tables.items() if isinstance(t, LateRows)}

    @property
    def table(self) -> StateTable:
        """The main state table (most kinds keep one, named "")."""
        return self.state_tables[""]

    @property
    def late(self) -> LateRows:
        """The late-rows table of a kind with one input."""
        return self.late_tables["late"]

    def restore(self, versions: Mapping[str, int], watermark: dt.datetime | None) -> None:
        for name, table in self.state_tables.items():
            self.set_frame(name, table.load(versions.get(self.specs[name].qualified(self.node.state_id))))
        self.last_watermark = watermark

    def frames(self) -> dict[str, pl.DataFrame]:
        """The live state, by table name."""
        raise NotImplementedError

    def set_frame(self, name: str, frame: pl.DataFrame) -> None:
        raise NotImplementedError

    # -- per epoch -----------------------------------------------------------------------------
    def process(self, inputs: list[pl.DataFrame], ctx: EpochContext) -> pl.DataFrame:
        raise NotImplementedError

    def plan_epoch(self) -> Any:
        """What the epoch reads besides its sources (logged before reading, so a replay reads the same)."""
        return None

    # -- partitioning by key group (the Ray executor runs each key group's rows in one worker) -------------
    def input_key_group(self, index: int) -> pl.Expr | None:
        """The key group (0..127) of a row of input `index`: the worker owning it runs the row. It must equal
        `state_key_group` of the state rows the input row reads or changes, so that a worker that loads the
        state of its key groups, whatever the number of workers, holds all its rows need. None: the row may
        run in any worker (a kind without state). Default: every row in key group 0, so one worker runs all."""
        return pl.lit(0, pl.Int32)

    def state_key_group(self, name: str) -> pl.Expr:
        """The key group of a row of state table `name`: its `_kg` column, where the kind stores it so."""
        return pl.col("_kg")

    def timer_due(self, now: dt.datetime) -> bool:
        """Whether a processing-time timer fires at `now`, so that an epoch without rows must still run."""
        return False

    # -- checkpoints -----------------------------------------------------------------------------
    def live_rows(self) -> dict[str, int]:
        return {name: frame.height for name, frame in self.frames().items()}

    def commit(self, epoch: int) -> None:
        """Append the changes staged since the last checkpoint as epoch `epoch`, late rows first."""
        self.detach(epoch)()

    def detach(self, epoch: int) -> Callable[[], None]:
        """Take what `commit` would append, now; the returned call appends it. The next epochs may run (and
        stage their own changes) before that call, which touches only the operator's Delta tables."""
        late = [table.detach(epoch) for table in self.late_tables.values()]
        rows = self.live_rows()
        state = [table.detach(epoch, rows[name]) for name, table in self.state_tables.items()]

        def append() -> None:
            for job in [*late, *state]:
                job()

        return append

    def tables(self) -> TableEntries:
        entries: TableEntries = {}
        for name, table in self.state_tables.items():
            entries[self.specs[name].qualified(self.node.state_id)] = (
                "state",
                table.path,
                table.version(),
                self.specs[name].describe(),
            )
        for name, late in self.late_tables.items():
            entries.update(late.entry(self.specs[name].qualified(self.node.state_id)))  # type: ignore[arg-type]
        return entries

    @property
    def state_rows(self) -> int:
        return sum(self.live_rows().values())

    @property
    def state_bytes(self) -> int:
        return sum(int(frame.estimated_size()) for frame in self.frames().values())

    @property
    def late_count(self) -> int:
        return sum(late.count for late in self.late_tables.values())

    def empty_output(self) -> pl.DataFrame:
        """No rows, in the output's schema: built once (a frame is never changed in place here, so it is shared;
        building one costs as much as a small epoch's join)."""
        if (empty := getattr(self, "_empty", None)) is None:
            empty = self._empty = pl.DataFrame(schema=self.node.schema)
        return empty


# -- helpers shared by the operators ------------------------------------------------------------
def visible(columns: Iterable[str]) -> list[str]:
    """The columns a user sees (late-rows tables keep these): hidden planner columns start with `__`."""
    return [c for c in columns if not c.startswith("__")]


def changelog_sign(columns: list[str] | Mapping[str, Any]) -> pl.Expr:
    """+1 for an insert or update-after, -1 for a retraction (-U, -D); +1 for every row of an append-only input."""
    if OP_COLUMN in columns:
        return pl.when(pl.col(OP_COLUMN).is_in([UPDATE_BEFORE, DELETE])).then(-1).otherwise(1).cast(pl.Int64)
    return pl.lit(1, pl.Int64)


def clock(ttl: object, ctx: EpochContext) -> dt.datetime | None:
    """The clock a state TTL runs on: the epoch's processing time, or the watermark."""
    if ttl is None:
        return None
    return ctx.watermark if getattr(ttl, "time", "processing") == "event" else ctx.proctime


def expire(
    frame: pl.DataFrame, ttl: Any, now: dt.datetime | None, touched: str = "_touched"
) -> tuple[pl.DataFrame, pl.DataFrame] | None:
    """Split state into (kept, expired) rows by the state TTL: unchanged for longer than it. None: nothing expired."""
    if ttl is None or now is None or frame.height == 0:
        return None
    # Rows stored before the clock was known (no watermark yet) count from the first time it is.
    stale = pl.col(touched).fill_null(pl.lit(now, UTC_MS)) < pl.lit(now - ttl.duration, UTC_MS)
    expired = frame.filter(stale)
    if expired.height == 0:
        return None
    return frame.filter(~stale), expired


def behind_watermark(time: pl.Expr, floor: dt.datetime | None = None) -> pl.Expr:
    """A row is late when its time is behind the watermark in force before it (`__wm`), never below `floor`."""
    own = pl.col(WATERMARK_COLUMN)
    if floor is not None:
        own = pl.max_horizontal(own, pl.lit(floor, UTC_MS))
    return time < own
