"""The values a COUNT(DISTINCT x) (or a MIN/MAX over retractions) keeps per group, each with how many input rows
hold it: the in-memory form of the aggregate's `distinct_<i>` state tables.

An epoch must cost what its rows touch, not what the state holds (Nexmark q16 keeps millions of (channel, day,
bidder) values in each of eight such tables). So the stored pairs are never rewritten:
- the pairs' key columns (group keys, window bounds, `__value`, `_kg`) only grow: a new pair is appended;
- their counts live in a numpy array beside them, updated in place;
- a sorted index of the pairs' hashes (the join's `join_index.KeyIndex`) finds, by binary search, the stored
  rows an epoch's pairs may be; the join on the key columns over those candidates decides.
A pair whose count falls to 0 stays as a row with count 0 (absent: its tombstone is staged) and is reused if the
value comes back; once such rows outnumber the live ones, the frame is rebuilt without them. Removing whole
groups (a window fired) rebuilds it too: windowed state is bounded by the open windows.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from engine.operators.join_index import KeyIndex
from engine.state_store import tidy
from sql.plan import AggCall

VALUE, COUNT = "__value", "__count"
OLD_COUNT, NEW_COUNT = "__old_count", "__new_count"  # a pair's count before and after the epoch
_ROW = "__row"
_HASH_SEED = 0x3D15
#: absent rows (count 0) are dropped once they are more than the live ones and at least this many
REBUILD_MIN_ABSENT = 10_000


class DistinctValues:
    """Counted (group, value) pairs of one aggregate: `keys` are the group columns and `__value`."""

    def __init__(self, frame: pl.DataFrame) -> None:
        """`frame`: the live pairs as the state table holds them (keys, `__count`, `_kg`)."""
        self.keys = [c for c in frame.columns if c not in (COUNT, "_kg")]
        self.columns = frame.columns
        self.schema = frame.schema
        self.rows = frame.drop(COUNT)  # key columns and `_kg`, one row per pair ever stored since the last rebuild
        self.counts = np.array(frame.get_column(COUNT).to_numpy(), dtype=np.int64)  # capacity >= rows.height
        self.live = int(np.count_nonzero(self.counts > 0))
        self.index: KeyIndex | None = None  # built on first use: a restore does not pay for it
        self._frame: pl.DataFrame | None = frame  # the live pairs as a frame, until the next change

    @property
    def height(self) -> int:
        """Rows in the frame, absent ones included."""
        return self.rows.height

    @property
    def nbytes(self) -> int:
        return int(self.rows.estimated_size()) + 8 * self.height

    def frame(self) -> pl.DataFrame:
        """The live pairs (count above 0) in the state table's columns. The same object until the state changes,
        so a caller can tell an unchanged state by identity (a memory budget's spilled parts do)."""
        if self._frame is None:
            counts = pl.Series(COUNT, self.counts[: self.height].copy())  # a copy: the array changes in place
            frame = self.rows.with_columns(counts)
            if self.live < self.height:
                frame = frame.filter(pl.col(COUNT) > 0)
            self._frame = frame.select(self.columns)
        return self._frame

    def _hash(self) -> pl.Expr:
        return pl.struct(self.keys).hash(seed=_HASH_SEED)

    def apply(self, delta: pl.DataFrame, kg: pl.Expr) -> pl.DataFrame:
        """Add `delta` (one row per pair: keys and `__delta`, a signed row count) to the counts; returns, per pair,
        its keys, `__old_count` and `__new_count` (never below 0) and `_kg` (`kg` evaluated on the pair). New pairs are
        appended, stored ones updated in place."""
        casts = {k: self.schema[k] for k in self.keys if delta.schema[k] != self.schema[k]}
        delta = delta.cast(casts) if casts else delta  # type: ignore[arg-type]
        hashes = delta.select(self._hash()).to_series()
        index = self._index()
        candidates = index.candidates(hashes).to_numpy()
        if len(candidates):
            stored = self.rows.select(self.keys)[pl.Series(candidates)].with_columns(pl.Series(_ROW, candidates))
            joined = delta.with_columns(hashes.alias("__h")).join(stored, on=self.keys, how="left", nulls_equal=True)
        else:
            joined = delta.with_columns(hashes.alias("__h"), pl.lit(None, pl.Int64).alias(_ROW))
        found = joined.get_column(_ROW).fill_null(-1).to_numpy()
        stored_at = found >= 0
        old = np.zeros(joined.height, dtype=np.int64)
        old[stored_at] = self.counts[found[stored_at]]
        new = np.maximum(old + joined.get_column("__delta").to_numpy(), 0)  # a retraction never goes below absent
        self.counts[found[stored_at]] = new[stored_at]
        appended = ~stored_at & (new > 0)
        result = joined.with_columns(pl.Series(OLD_COUNT, old), pl.Series(NEW_COUNT, new), kg.alias("_kg"))
        if appended.any():
            added = result.filter(pl.Series(appended))
            start = self.height
            self.rows = tidy(pl.concat([self.rows, added.select(self.rows.columns)], how="vertical_relaxed"))
            self._grow(start + added.height)
            self.counts[start : self.height] = added.get_column(NEW_COUNT).to_numpy()
            self.index = index.extend(added.get_column("__h"), start)
        self.live += int(np.count_nonzero(new > 0)) - int(np.count_nonzero(old > 0))
        self._frame = None
        if self.height - self.live > max(self.live, REBUILD_MIN_ABSENT):
            self._rebuild(self.counts[: self.height] > 0)
        return result.drop("__h", _ROW)

    def live_of(self, groups: pl.DataFrame) -> pl.DataFrame:
        """The live pairs of the groups in `groups` (their group columns)."""
        on = list(groups.columns)
        return self.frame().join(groups, on=on, how="semi", nulls_equal=True)

    def remove_groups(self, groups: pl.DataFrame) -> pl.DataFrame:
        """Forget every pair of the groups in `groups` (their group columns); returns the live ones removed."""
        on = list(groups.columns)
        rows = self.rows.select(on).with_row_index(_ROW).join(groups, on=on, how="semi", nulls_equal=True)
        hit = rows.get_column(_ROW).to_numpy()
        if len(hit) == 0:
            return self.frame().head(0)
        removed = self.rows[pl.Series(hit)].with_columns(pl.Series(COUNT, self.counts[hit]))
        keep = np.ones(self.height, dtype=bool)
        keep[hit] = False
        self._rebuild(keep)
        return removed.filter(pl.col(COUNT) > 0).select(self.columns)

    def _index(self) -> KeyIndex:
        if self.index is None:
            self.index = KeyIndex.build(self.rows.select(self._hash()).to_series())
        return self.index

    def _grow(self, size: int) -> None:
        """Room for `size` counts: the array doubles, so appending costs what is appended (amortised)."""
        if size > len(self.counts):
            grown = np.zeros(max(size, 2 * len(self.counts)), dtype=np.int64)
            grown[: len(self.counts)] = self.counts
            self.counts = grown

    def _rebuild(self, keep: np.ndarray) -> None:
        """Keep only the rows where `keep` holds; the index is rebuilt when next needed."""
        self.rows = self.rows.filter(pl.Series(keep))
        self.counts = self.counts[: len(keep)][keep].copy()
        self.live = int(np.count_nonzero(self.counts > 0))
        self.index = None
        self._frame = None


def epoch_pairs(rows: pl.LazyFrame, calls: dict[int, AggCall], groups: list[str], sign: str) -> list[pl.LazyFrame]:
    """The epoch's (group, value) pairs with their signed row counts, per aggregate of `calls` (by index): one
    query per argument, whatever the FILTERs (Nexmark q16 counts four filtered COUNT(DISTINCT bidder)): a column
    `__delta_<i>` per aggregate. A pair is one aggregate's if its `__delta_<i>` is not 0 (`pairs_of`)."""
    shared: list[list[int]] = []
    for index, call in calls.items():
        same = next((s for s in shared if calls[s[0]].args[0].meta.eq(call.args[0])), None)
        if same is None:
            shared.append([index])
        else:
            same.append(index)
    queries = []
    for indices in shared:
        arg = calls[indices[0]].args[0]
        deltas = []
        for i in indices:
            mask = calls[i].filter.fill_null(False) if calls[i].filter is not None else pl.lit(True)
            deltas.append((pl.col(sign) * mask.cast(pl.Int64)).sum().alias(f"__delta_{i}"))
        queries.append(rows.filter(arg.is_not_null()).group_by([*groups, arg.alias(VALUE)]).agg(deltas))
    return queries


def pairs_of(counted: list[pl.DataFrame], index: int, groups: list[str]) -> pl.DataFrame:
    """Aggregate `index`'s pairs (keys and `__delta`) out of `epoch_pairs`' results. A pair whose count does not
    change (no row passed the FILTER, or as many came as left) changes nothing: left out."""
    delta = f"__delta_{index}"
    frame = next(f for f in counted if delta in f.columns)
    return frame.filter(pl.col(delta) != 0).select(*groups, VALUE, pl.col(delta).alias("__delta"))
