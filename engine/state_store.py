"""Operator state as a Delta table: an append-only change log, compacted now and then.

Each stateful operator owns one table with typed columns: its key columns (window bounds included), its
partial-aggregate columns, and three bookkeeping columns:

- `_kg`: the key group, hash(key) mod 128, fixed for the life of the state, so work can be re-partitioned;
- `_epoch`: the epoch that wrote this version of the key;
- `_deleted`: a tombstone (the key left the state: window fired, group emptied, session merged away).

A checkpoint appends one row per key changed in the epoch, so its cost follows the changed keys, never the
total state (MERGE would rewrite every touched file: delta-facts §7). The state as of a Delta version is,
per key, its row with the highest `_epoch`, unless that row is a tombstone. When the log holds more rows
than the live state, it is compacted by an overwrite that keeps only the live rows; the old versions stay
readable, so time travel is unaffected.

A table built without a path lives in memory: the same change log, kept as a list of committed frames (version
n is the first n commits). Operators run on it in tests, without a state directory.
"""

from __future__ import annotations

import functools
import itertools
import json
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import polars as pl
import pyarrow as pa
from deltalake import CommitProperties, DeltaTable

from engine import delta_tables, encryption, faults
from engine.delta_tables import MAINTENANCE_OPERATIONS, NO_CLEANUP, AppendTable, ensure_table, open_table
from sql.plan import KEY_GROUPS

BOOKKEEPING = {"_kg": pl.Int32(), "_epoch": pl.Int64(), "_deleted": pl.Boolean()}
# Below this many change-log rows a table is never compacted. The environment can lower it, so that crash tests
# reach compaction with little data.
COMPACT_MIN_ROWS = int(os.environ.get("TIMELAPSE_COMPACT_MIN_ROWS", "10000"))


def key_group(keys: Sequence[str | pl.Expr]) -> pl.Expr:
    if not keys:
        return pl.lit(0, pl.Int32)
    return (pl.struct(keys).hash(seed=0x7A11) % KEY_GROUPS).cast(pl.Int32)


def key_group_ranges(parts: int) -> list[tuple[int, int]]:
    """The key groups [lo, hi) of each of `parts` contiguous ranges (`parts` divides KEY_GROUPS)."""
    size = KEY_GROUPS // parts
    return [(i * size, (i + 1) * size) for i in range(parts)]


def tidy(frame: pl.DataFrame) -> pl.DataFrame:
    """Operators rebuild their in-memory state by concatenation each epoch; merge the chunks now and then,
    or every later join pays for thousands of them."""
    return frame.rechunk() if frame.n_chunks() > 16 else frame


def resolve(frame: pl.LazyFrame, keys: list[str]) -> pl.LazyFrame:
    """Live state from change-log rows: the latest row per key, tombstones dropped."""
    if keys:
        latest = frame.filter(pl.col("_epoch") == pl.col("_epoch").max().over(keys))
    else:
        latest = frame.filter(pl.col("_epoch") == pl.col("_epoch").max())
    return latest.filter(~pl.col("_deleted"))


def by_key(owned: pl.Expr, keys: list[str]) -> bool:
    """Whether `owned` holds of a key's change-log rows alike (it reads only key columns and `_kg`, which every
    kind derives from the key): then filtering the log by it before resolving keeps each key whole."""
    return set(owned.meta.root_names()) <= {*keys, "_kg"}


#: below this many staged rows `last_per_key` deduplicates without looking first (cheap either way)
DEDUPLICATE_CHECK_ROWS = 10_000


def last_per_key(rows: pl.DataFrame, keys: list[str]) -> pl.DataFrame:
    """The staged changes with a key changed twice since the checkpoint (merged, then its window fired) keeping
    its last change only. Most commits hold no key twice: distinct hashes of the keys prove it (equal keys hash
    equally) for much less than `unique` over every key column costs on a large commit (a join's state is keyed
    by all its columns); a repeated hash, a repeated key or a collision, takes the exact path."""
    large = bool(keys) and rows.height >= DEDUPLICATE_CHECK_ROWS
    if large and rows.select(pl.struct(keys).hash(seed=0x5EED).n_unique()).item() == rows.height:
        return rows
    return rows.unique(keys, keep="last", maintain_order=True)


def discard_uncommitted(path: Path, version: int | None) -> bool:
    """Put a table back at the version the last checkpoint names (None: as created), undoing what a crashed run
    committed after it. Restoring writes a new version; the discarded ones stay in the log, unreferenced.

    Checkpoints need not fall on the same epochs in the run that replays (a time-based policy), so appending
    on top of a crashed run's commits, or skipping them, could double or lose changes.
    """
    table = open_table(path)
    if table is None:
        return False
    base = 0 if version is None else version
    head = int(table.version())
    if head <= base:
        return False
    later = [c for c in table.history(limit=head - base) if int(c["version"]) > base]
    if all(str(c.get("operation", "")) in MAINTENANCE_OPERATIONS for c in later):
        return False  # retention ran after the checkpoint: nothing to undo
    table.restore(
        base,
        commit_properties=CommitProperties(custom_metadata={"timelapse.discarded_after": str(base)}),
        post_commithook_properties=NO_CLEANUP,
    )
    return True


def describe(keys: list[str], schema: dict[str, pl.DataType]) -> str:
    """What the manifest records of a state table: its key columns and every column's type (JSON)."""
    return json.dumps({"keys": keys, "columns": {name: str(dtype) for name, dtype in schema.items()}})


class StateTable:
    def __init__(
        self,
        path: Path | None,
        keys: list[str],
        values: dict[str, pl.DataType],
        app_id: str,
        key_types: dict[str, pl.DataType],
        owned: pl.Expr | None = None,
    ) -> None:
        """`owned`: a view of some key groups (a Ray worker's, or a part of a memory-budgeted operator): read
        only, `load` keeps the live rows for which the expression (of the key columns or `_kg` only) holds, and
        the holder of the whole table commits what it stages."""
        self.path = path
        self.owned = owned
        self.keys = keys
        self.values = values
        self.app_id = app_id
        self.schema: dict[str, pl.DataType] = {**key_types, **values, **BOOKKEEPING}
        # None: in memory (`memory` holds the committed change-log frames)
        writable = path is not None and owned is None
        self.appends = AppendTable(ensure_table(path, self.schema), "state.commit") if writable else None
        self.memory: list[pl.DataFrame] = []
        self._pending: list[pl.DataFrame] = []
        self.log_rows = 0  # rows in the table since its last compaction
        self.live_rows = 0
        # Compaction resolves the log in this many ranges of key groups, one at a time (a memory budget).
        self.compact_parts = 1

    # -- reading -------------------------------------------------------------------------------
    def load(self, version: int | None) -> pl.DataFrame:
        """The live state at a Delta version (None: the empty state)."""
        if version is None:
            self.log_rows = 0
            return pl.DataFrame(schema={k: v for k, v in self.schema.items() if k not in ("_epoch", "_deleted")})
        if self.path is None:
            log = [pl.DataFrame(schema=self.schema), *self.memory[:version]]
            frame = pl.concat(log, how="vertical_relaxed").lazy()
        else:
            frame = delta_tables.scan(self.path, version=version)
        if self.owned is None:
            self.log_rows = int(frame.select(pl.len()).collect().item())
            live = resolve(frame, self.keys).drop("_epoch", "_deleted").collect()
        elif by_key(self.owned, self.keys):
            # A view's rows only, before resolving: what it owns follows from the key (a tombstone has the key
            # and `_kg` too), so the rows it does not own never decide its keys, and are never held.
            live = resolve(frame.filter(self.owned), self.keys).drop("_epoch", "_deleted").collect()
        else:  # after resolving: a tombstone's value columns are empty, so a filter on them must not see it
            live = resolve(frame, self.keys).drop("_epoch", "_deleted").filter(self.owned).collect()
        self.live_rows = live.height
        return live.cast({k: v for k, v in self.schema.items() if k in live.columns})  # type: ignore[arg-type]

    # -- writing -------------------------------------------------------------------------------
    def stage(self, upserts: pl.DataFrame, deletes: pl.DataFrame) -> None:
        """Record this epoch's changes: full new rows for changed keys, key rows for removed keys."""
        if upserts.height:
            self._pending.append(upserts.with_columns(pl.lit(False).alias("_deleted")))
        if deletes.height:
            blanks = [pl.lit(None, dtype).alias(name) for name, dtype in self.values.items()]
            self._pending.append(
                deletes.select(*self.keys, *blanks, "_kg").with_columns(pl.lit(True).alias("_deleted"))
            )

    def take_staged(self) -> pl.DataFrame | None:
        """The changes staged since the last checkpoint, in order, handed over (a worker's, to the coordinator)."""
        pending, self._pending = self._pending, []
        if len(pending) <= 1:
            return pending[0] if pending else None
        return pl.concat(pending, how="vertical_relaxed")

    def add_staged(self, changes: pl.DataFrame) -> None:
        """Stage changes another process staged (`take_staged`), to be committed here."""
        self._pending.append(changes)

    def count_log(self, version: int | None) -> None:
        """Count the change-log rows at `version` (what `load` does, without loading the live state), for a
        process that commits the table without holding its state (the Ray executor's coordinator)."""
        if version is None or self.path is None:
            self.log_rows = 0
            return
        self.log_rows = int(delta_tables.scan(self.path, version=version).select(pl.len()).collect().item())

    def commit(self, epoch: int, live_rows: int) -> int:
        """Append the staged changes as epoch `epoch` (once), compact if the log has grown; returns the version."""
        return self.detach(epoch, live_rows)()

    def detach(self, epoch: int, live_rows: int) -> Callable[[], int]:
        """Take the staged changes now; the returned call commits them as `commit` would. Between the two,
        the table's holder may stage the next epochs' changes (a checkpoint written behind them)."""
        staged = self.take_staged()
        return functools.partial(self._commit, epoch, live_rows, staged)

    def _commit(self, epoch: int, live_rows: int, staged: pl.DataFrame | None) -> int:
        self.live_rows = live_rows
        if staged is not None:
            rows = last_per_key(staged, self.keys)
            rows = rows.with_columns(pl.lit(epoch, pl.Int64).alias("_epoch"))
            rows = rows.select(list(self.schema)).cast(self.schema)  # type: ignore[arg-type]
            if self.appends is None:
                self.memory.append(rows)
                return len(self.memory)
            # No skip-if-present check: a restart has already discarded what a crashed run appended after the
            # checkpoint (`discard_uncommitted`), and checkpoints may fall on other epochs this time.
            self.appends.append(rows, self.app_id, epoch)
            self.log_rows += rows.height
        if self.appends is None:
            return len(self.memory)
        if self.log_rows > max(2 * self.live_rows, COMPACT_MIN_ROWS):
            self.compact()
        return int(self.table.version())

    @property
    def table(self) -> DeltaTable:
        assert self.appends is not None, "an in-memory state table has no Delta table"
        return self.appends.table

    def compact(self) -> None:
        self.table.update_incremental()
        log = delta_tables.scan(self.path, version=self.table.version())
        if self.compact_parts > 1:  # a memory budget: resolved and written a range of key groups at a time
            ranges = key_group_ranges(self.compact_parts)
            frames = (resolve(log.filter(pl.col("_kg").is_between(lo, hi - 1)), self.keys) for lo, hi in ranges)
            schema = self.table.schema()
            collected = (frame.collect().cast(self.schema) for frame in frames)  # type: ignore[arg-type]
            live, rows = _batches(collected, lambda table: encryption.seal_for(schema, table))
        else:
            whole = resolve(log, self.keys).collect().cast(self.schema)  # type: ignore[arg-type]
            live, rows = whole, [whole.height]
        faults.commit("compaction", self.path)
        delta_tables.write(  # through delta_tables: encrypted columns stay encrypted
            self.table, live, mode="overwrite", post_commithook_properties=NO_CLEANUP
        )
        self.table.update_incremental()
        faults.point("compaction.after")
        self.appends.committed()
        self.log_rows = sum(rows)

    def version(self) -> int:
        return len(self.memory) if self.appends is None else int(self.table.version())


def _batches(
    frames: Iterator[pl.DataFrame], seal: Callable[[pa.Table], pa.Table]
) -> tuple[pa.RecordBatchReader, list[int]]:
    """Frames, produced one at a time as the writer asks, as one stream of Arrow batches (and, once the stream
    is consumed, their row counts): the whole never sits in memory. Encrypted columns are sealed per batch."""
    counts: list[int] = []

    def tables() -> Iterator[pa.Table]:
        for frame in frames:
            counts.append(frame.height)
            yield seal(delta_tables.to_arrow(frame))

    stream = tables()
    first = next(stream)
    batches = (batch for table in itertools.chain([first], stream) for batch in table.to_batches())
    return pa.RecordBatchReader.from_batches(first.schema, batches), counts
