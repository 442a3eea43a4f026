"""Joins: regular (both sides kept), interval (rows kept until the watermark passes their bound) and lookup.

State schema, one table per input side (`left/`, `right/` under `state/operators/<id>/`):
    __k0.. (the join key values)  <the side's columns>  __count  [__matched | __partners]  _kg _epoch _deleted
Rows are kept with their multiplicity (`__count`); an interval join also remembers whether each row found a
partner (`__matched`), so an outer join can emit the row padded with NULLs when it leaves the state; the outer
side of a regular outer join with a residual condition keeps each row's partner count (`__partners`).

- Regular INNER join of append-only inputs emits inserts; over updating inputs the multiplicities carry signs.
- Regular LEFT/RIGHT/FULL joins emit a changelog: a row without a partner is emitted padded (+I), retracted
  (-D) when its first partner arrives, and padded again when its last partner is retracted
  (`engine.operators.outer_join`). An epoch's changes are emitted retractions first.
- Interval joins emit inserts only: a padded row is emitted when the unmatched row is evicted. Rows behind
  the watermark when they arrive are late: they go to `late_left/` or `late_right/`.
- Lookup joins read the dimension table at its latest version through its source connector (the version each
  epoch used is logged, so a replay reads the same one); values that do not convert are dead letters of that table.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path
from typing import Any

import polars as pl

from engine.operators.base import (
    OperatorSettings,
    StatefulOperator,
    TableSpec,
    behind_watermark,
    changelog_sign,
    clock,
    expire,
)
from engine.operators.collect import collect_all
from engine.operators.context import EpochContext
from engine.operators.join_index import KeyIndex
from engine.operators.outer_join import PARTNERS, keeps_partners, net, outer_sides, padding
from engine.sources.lookup import LookupTable, dead_letters_due
from engine.state_store import StateTable, key_group, tidy
from sql.plan import DELETE, INSERT, OP_COLUMN, WATERMARK_COLUMN, Join

COUNT, MATCHED = "__count", "__matched"
TOUCHED = "_touched"
HASH = "__h"  # a hash of a stored row's key and columns (its state-table key): in memory only
#: a side with fewer rows is joined whole (building and keeping its key index would cost more than it saves)
#: (the environment can lower it, so that tests reach the index with little data)
INDEX_MIN_ROWS = int(os.environ.get("TIMELAPSE_JOIN_INDEX_MIN_ROWS", "50000"))
LEFT_ROW, RIGHT_ROW = "__il", "__ir"  # row numbers, while an interval join's epoch runs


class JoinOperator(StatefulOperator):
    def __init__(self, node: Join, settings: OperatorSettings | None = None) -> None:
        super().__init__(node, settings)
        self.keys = _key_names(node)
        self.left_cols = list(node.left_names)
        self.right_cols = list(node.right_names)
        self.output_cols = [c for c in node.schema if c != OP_COLUMN]
        self.dimension: _Dimension | None = None
        self.rows: dict[str, pl.DataFrame] = {}
        # Per side, the hash of each stored row (aligned with `rows`), so an epoch finds the rows it changes by
        # comparing hashes instead of whole rows; None until needed after the rows were replaced.
        self.hashes: dict[str, pl.Series | None] = {"left": None, "right": None}
        # Per side, the rows by key hash (regular joins), and whether the rows were reordered since last epoch.
        self.index: dict[str, KeyIndex | None] = {"left": None, "right": None}
        self.reordered = {"left": False, "right": False}
        self.now: dt.datetime | None = None
        if node.lookup:
            assert node.dimension is not None
            self.dimension = _Dimension(node, self.settings.base_dir)

    @classmethod
    def table_specs(cls, node: Join) -> list[TableSpec]:
        if node.lookup:
            return []
        keys = _key_names(node)
        key_types = (
            pl.LazyFrame(schema=dict(node.inputs[0].schema))
            .select([e.alias(k) for e, k in zip(node.left_keys, keys, strict=True)])
            .collect_schema()
        )
        specs = []
        for side, index, cols in (("left", 0, list(node.left_names)), ("right", 1, list(node.right_names))):
            values = {
                COUNT: pl.Int64(),
                **({MATCHED: pl.Boolean()} if node.bounds else {}),
                **({PARTNERS: pl.Int64()} if keeps_partners(node, side) else {}),
                **({TOUCHED: pl.Datetime("ms", "UTC")} if node.ttl else {}),
            }
            schema = node.inputs[index].schema
            # Right-side columns are stored under their output names, so both tables read as the join's result.
            names = cols if side == "left" else [node.right_names[c] for c in cols]
            types = {**dict(key_types), **{n: schema[c] for n, c in zip(names, cols, strict=True)}}
            specs.append(TableSpec(side, side, [*keys, *names], types, values))
            specs.append(TableSpec(f"late_{side}", f"late_{side}", role="late", columns=names))
        return specs

    def input_key_group(self, index: int) -> pl.Expr | None:
        if self.node.lookup:
            return None  # every worker reads the dimension: a row joins where it is
        exprs = self.node.left_keys if index == 0 else self.node.right_keys
        return key_group([e.alias(k) for e, k in zip(exprs, self.keys, strict=True)])

    @property
    def sides(self) -> dict[str, StateTable]:
        return self.state_tables

    def frames(self) -> dict[str, pl.DataFrame]:
        return self.rows

    def set_frame(self, name: str, frame: pl.DataFrame) -> None:
        self._replace(name, frame)

    def _replace(
        self, side: str, frame: pl.DataFrame, hashes: pl.Series | None = None, index: KeyIndex | None = None
    ) -> None:
        """New rows for a side, with their `hashes` when known. `index`: the key index when the rows kept their
        order (appended ones included); None: rows moved, the index is rebuilt when needed."""
        self.rows[side] = frame
        self.hashes[side] = hashes
        self.index[side] = index
        self.reordered[side] |= index is None

    def _stored(self, side: str, probe: list[pl.DataFrame]) -> pl.DataFrame:
        """The stored rows of a side that may join the probe rows: those sharing a key hash with them, found in
        the side's key index. A small side, or one reordered last epoch (retractions, expiry: rebuilding the
        index each epoch would cost more than it saves), is joined whole."""
        stored = self.rows[side]
        if self.index[side] is None:
            if stored.height < INDEX_MIN_ROWS or self.reordered[side]:
                self.reordered[side] = False
                return stored
            self.index[side] = KeyIndex.build(stored.select(self._key_hash()).to_series())
        keys = pl.concat([frame.select(self._key_hash()) for frame in probe]).to_series()
        return stored[self.index[side].candidates(keys)]

    def _key_hash(self) -> pl.Expr:
        return pl.struct(self.keys).hash(seed=0x302).alias("__kh")

    def _hashes(self, side: str) -> pl.Series:
        if (hashes := self.hashes[side]) is None:
            hashes = self.hashes[side] = self.rows[side].select(self._hash(side)).to_series()
        return hashes

    def _hash(self, side: str) -> pl.Expr:
        return pl.struct([*self.keys, *self._columns(side)]).hash(seed=0x301).alias(HASH)

    def plan_epoch(self) -> Any:
        """What the epoch will read besides its sources: the dimension version, logged before reading."""
        return self.dimension.latest() if self.dimension else None

    # -- per epoch -----------------------------------------------------------------------------
    def process(self, inputs: list[pl.DataFrame], ctx: EpochContext) -> pl.DataFrame:
        if self.node.lookup:
            return self._lookup(inputs[0], ctx)
        left, right = (self._prepare(frame, side) for frame, side in zip(inputs, ("left", "right"), strict=True))
        if self.node.bounds is not None:
            return self._interval(left, right, ctx)
        self.now = clock(self.node.ttl, ctx)
        for side in self.sides:  # expired rows are gone before the epoch's rows look for partners
            self._expire(side)
        output = self._regular(left, right)
        self._close_windows(ctx)
        return output

    def _close_windows(self, ctx: EpochContext) -> None:
        """Window join: drop rows whose window has closed; later rows all belong to later windows."""
        if self.node.window_ends is None or ctx.watermark is None:
            return
        closed = pl.lit(ctx.watermark).cast(pl.Datetime("ms", "UTC")) + dt.timedelta(milliseconds=1)
        left_end, right_end = self.node.window_ends
        for side, column in (("left", left_end), ("right", self.node.right_names[right_end])):
            stored = self.rows[side]
            done = pl.col(column) <= closed
            gone = stored.filter(done)
            if gone.height:
                self._replace(side, stored.filter(~done))
                self.sides[side].stage(gone.head(0), gone.select(*self.keys, *self._columns(side), "_kg"))

    def _prepare(self, frame: pl.DataFrame, side: str) -> pl.DataFrame:
        """Key columns, output column names, and the signed multiplicity of each distinct row."""
        exprs = self.node.left_keys if side == "left" else self.node.right_keys
        names = self.node.left_names if side == "left" else self.node.right_names
        keep = [WATERMARK_COLUMN] if self.node.bounds is not None and WATERMARK_COLUMN in frame.columns else []
        return frame.select(
            *[e.alias(k) for e, k in zip(exprs, self.keys, strict=True)],
            *[pl.col(c).alias(n) for c, n in names.items()],
            changelog_sign(frame.columns).alias(COUNT),
            *keep,
        )

    def _columns(self, side: str) -> list[str]:
        return self.left_cols if side == "left" else [self.node.right_names[c] for c in self.right_cols]

    def _collapse(self, frame: pl.DataFrame, side: str) -> pl.DataFrame:
        """One row per distinct row with its summed count, and its hash (`HASH`). Rows are hashed in the stored
        types, so that a row equal to a stored one has its hash. Most epochs' rows are distinct already: they
        are grouped only where two share a hash."""
        group = [*self.keys, *self._columns(side)]
        types = self.rows[side].schema
        frame = frame.with_columns(pl.col(c).cast(types[c]) for c in group if frame.schema[c] != types[c])
        frame = frame.with_columns(self._hash(side))
        twice = frame.get_column(HASH).is_duplicated()
        if twice.any():
            grouped = (
                frame.filter(twice).group_by(group, maintain_order=True).agg(pl.col(COUNT).sum(), pl.col(HASH).first())
            )
            frame = pl.concat([frame.filter(~twice), grouped.select(frame.columns)], how="vertical_relaxed")
        return frame.filter(pl.col(COUNT) != 0)

    def _pairs(self, *sides: tuple[pl.DataFrame, pl.DataFrame]) -> list[pl.DataFrame]:
        """The joined rows of each (left, right) pair, their counts multiplied, the residual condition and the
        time bounds applied: one query each, run together (a small epoch's joins cost their planning)."""
        conditions = [] if self.node.residual is None else [self.node.residual]
        if self.node.bounds is not None:
            for bound in self.node.bounds.all_conditions():
                gap = pl.col(self.node.right_names[bound.right]) - pl.col(bound.left)
                conditions.append(gap >= bound.constant if bound.op == ">=" else gap <= bound.constant)
        queries = []
        for left, right in sides:
            joined = (
                left.lazy()
                .drop(HASH, strict=False)
                .join(right.lazy().drop(HASH, strict=False), on=self.keys, how="inner", suffix="__r")
            )
            joined = joined.with_columns((pl.col(COUNT) * pl.col(COUNT + "__r")).alias(COUNT))
            queries.append(joined.filter(*conditions) if conditions else joined)
        return collect_all(queries, sum(left.height + right.height for left, right in sides))

    # -- regular joins -------------------------------------------------------------------------
    def _regular(self, left: pl.DataFrame, right: pl.DataFrame) -> pl.DataFrame:
        dl, dr = self._collapse(left, "left"), self._collapse(right, "right")
        # Only the stored rows sharing a key with the epoch's rows can join them or change who is padded.
        old_l, old_r = (self._stored(s, [dl, dr]).drop(TOUCHED, strict=False) for s in ("left", "right"))
        plain_l, plain_r = (old.drop("_kg", PARTNERS, strict=False) for old in (old_l, old_r))
        found = self._pairs((dl, plain_r), (plain_l, dr), (dl, dr))
        parts = [p.select(*self.output_cols, COUNT) for p in found]
        deltas = {"left": dl, "right": dr}
        updating = any(node.changelog != "append" for node in self.node.inputs)
        if not updating and not outer_sides(self.node.kind):  # inserts only: no order to keep, nothing to net
            out = self._emit(pl.concat(parts, how="vertical_relaxed"))
            self._apply(dl, "left")
            self._apply(dr, "right")
            return out
        stored = {"left": old_l.drop("_kg"), "right": old_r.drop("_kg")}
        plain = {"left": plain_l, "right": plain_r}
        for side in outer_sides(self.node.kind):
            other = "right" if side == "left" else "left"
            # from the epoch's rows as collapsed (`deltas[other]` may be the other side's restaged rows)
            epoch_other = dr if side == "left" else dl
            pad = padding(self, side, deltas[side], stored[side], epoch_other, plain[other])
            parts.append(pad.output)
            deltas[side] = pad.delta
        self._apply(deltas["left"], "left")
        self._apply(deltas["right"], "right")
        return self._emit(net(pl.concat(parts, how="vertical_relaxed"), self.output_cols, updating))

    def _pad(self, rows: pl.DataFrame, side: str) -> pl.DataFrame:
        other = "right" if side == "left" else "left"
        nulls = [pl.lit(None, self.node.schema[c]).alias(c) for c in self._columns(other)]
        return rows.with_columns(nulls).select(*self.output_cols, COUNT)

    def _emit(self, rows: pl.DataFrame) -> pl.DataFrame:
        """Rows with signed multiplicities -> that many +I (or -D) rows."""
        if rows.height == 0:
            return self.empty_output()
        if rows.get_column(COUNT).eq(1).all():  # the usual case (distinct inserts): one +I each, nothing to expand
            expanded = rows.with_columns(pl.lit(INSERT).alias(OP_COLUMN)).drop(COUNT)
            if OP_COLUMN not in self.node.schema:
                expanded = expanded.drop(OP_COLUMN)
            return expanded.select(list(self.node.schema))
        expanded = (
            rows.filter(pl.col(COUNT) != 0)
            .with_columns(
                pl.when(pl.col(COUNT) > 0).then(pl.lit(INSERT)).otherwise(pl.lit(DELETE)).alias(OP_COLUMN),
                pl.int_ranges(0, pl.col(COUNT).abs()).alias("__copy"),
            )
            .explode("__copy")
            .drop("__copy", COUNT)
        )
        if OP_COLUMN not in self.node.schema:
            expanded = expanded.drop(OP_COLUMN)
        return expanded.select(list(self.node.schema))

    def _apply(self, delta: pl.DataFrame, side: str) -> None:
        """Merge signed row counts (one row per distinct row, with its `HASH`: `_collapse`) into a side's state
        and stage the change for the checkpoint.

        Rows whose hash no stored row has are new: appended as they are. Only the stored rows sharing a hash
        with the epoch's rows (the same row again, a retraction, a hash collision) are merged with them, so an
        epoch of new rows costs what it holds, not what the state holds (the hashes are compared, not the rows).
        """
        if delta.height == 0:
            return
        group = [*self.keys, *self._columns(side)]
        stored = self.rows[side]
        extra = [c for c in (MATCHED, PARTNERS, TOUCHED) if c in stored.columns]
        if TOUCHED in extra:
            delta = delta.with_columns(pl.lit(self.now, pl.Datetime("ms", "UTC")).alias(TOUCHED))
        delta = delta.select(*group, COUNT, *extra, HASH)
        hashes = self._hashes(side)
        seen = delta.get_column(HASH).is_in(hashes.implode())
        if seen.any():
            fresh, again = delta.filter(~seen), delta.filter(seen)
        else:  # the usual case: every row is new
            fresh, again = delta, delta.head(0)
        fresh = fresh.with_columns(key_group(self.keys).alias("_kg"))
        # A new row retracted (an updating input's -D for a row this side never held) leaves nothing behind.
        if fresh.get_column(COUNT).gt(0).all():
            added, gone = fresh, fresh.head(0).select(*group, "_kg")
        else:
            added = fresh.filter(pl.col(COUNT) > 0)
            gone = fresh.filter(pl.col(COUNT) <= 0).select(*group, "_kg")
        kept, kept_hashes, merged = stored, hashes, added.head(0)
        if again.height:
            hit = hashes.is_in(again.get_column(HASH).implode())
            old = stored.filter(hit).with_columns(hashes.filter(hit).alias(HASH))
            kept, kept_hashes = stored.filter(~hit), hashes.filter(~hit)
            aggs = (
                [pl.col(COUNT).sum(), pl.col(HASH).first()]
                + ([pl.col(MATCHED).any()] if MATCHED in extra else [])
                + ([pl.col(PARTNERS).sum()] if PARTNERS in extra else [])  # the epoch's rows carry the change
                + ([pl.col(TOUCHED).max()] if TOUCHED in extra else [])
            )
            combined = (
                pl.concat([old.select(again.columns), again], how="vertical_relaxed")
                .group_by(group)
                .agg(aggs)
                .with_columns(key_group(self.keys).alias("_kg"))
            )
            merged = combined.filter(pl.col(COUNT) > 0)
            gone = pl.concat([gone, combined.filter(pl.col(COUNT) <= 0).select(gone.columns)])
        live = pl.concat([added, merged.select(added.columns)], how="vertical_relaxed") if merged.height else added
        index = self.index[side]
        if index is not None and kept is stored and live.height:  # rows appended: the index grows with them
            index = index.extend(live.select(self._key_hash()).to_series(), stored.height)
        self._replace(
            side,
            tidy(pl.concat([kept, live.select(stored.columns)], how="vertical_relaxed")),
            pl.concat([kept_hashes, live.get_column(HASH)]),
            index if kept is stored else None,
        )
        if kept is stored and index is None:
            self.reordered[side] = False  # appended: in order, though there is no index yet
        self.sides[side].stage(live.select(stored.columns), gone.select(*group, "_kg"))

    def _expire(self, side: str) -> None:
        """Forget rows unchanged for longer than the state TTL; they leave the table as tombstones."""
        if (split := expire(self.rows[side], self.node.ttl, self.now, TOUCHED)) is not None:
            kept, expired = split
            self._replace(side, kept)
            self.sides[side].stage(expired.head(0), expired.select(*self.keys, *self._columns(side), "_kg"))

    # -- interval joins ------------------------------------------------------------------------
    def _interval(self, left: pl.DataFrame, right: pl.DataFrame, ctx: EpochContext) -> pl.DataFrame:
        b = self.node.bounds
        assert b is not None
        right_time = self.node.right_names[b.right_time]
        left, right = self._drop_late(left, "left", b.left_time), self._drop_late(right, "right", right_time)
        # Rows are numbered (the epoch's and the stored ones), so the pairs tell exactly which rows found a partner.
        dl = self._collapse(left, "left").with_row_index(LEFT_ROW)
        dr = self._collapse(right, "right").with_row_index(RIGHT_ROW)
        old_l = self.rows["left"].drop("_kg", MATCHED).with_row_index(LEFT_ROW)
        old_r = self.rows["right"].drop("_kg", MATCHED).with_row_index(RIGHT_ROW)
        new_old, old_new, new_new = self._pairs((dl, old_r), (old_l, dr), (dl, dr))
        pairs = [p.select(*self.output_cols, COUNT) for p in (new_old, old_new, new_new)]
        out = [self._emit(pl.concat(pairs, how="vertical_relaxed"))]
        dl = _matched(dl, LEFT_ROW, new_old, new_new)
        dr = _matched(dr, RIGHT_ROW, old_new, new_new)
        self._remark("left", old_new.get_column(LEFT_ROW))
        self._remark("right", new_old.get_column(RIGHT_ROW))
        done: dict[str, pl.Expr] = {}
        if ctx.watermark is not None:
            wm = pl.lit(ctx.watermark).cast(pl.Datetime("ms", "UTC"))
            # A row whose bound is NULL can never match (the condition is unknown): it leaves at once.
            done["left"] = (pl.col(b.left_bound) + b.upper < wm).fill_null(True)
            done["right"] = (pl.col(self.node.right_names[b.right_bound]) - b.lower < wm).fill_null(True)
        pad = {"left": self.node.kind in ("LEFT", "FULL"), "right": self.node.kind in ("RIGHT", "FULL")}
        for side, delta in (("left", dl), ("right", dr)):
            if side in done:
                delta, padded = self._passing(delta, side, done[side], pad[side])
                out.append(padded)
            self._apply(delta, side)
        for side, expired in done.items():
            out.append(self._evict(side, expired, pad[side]))
        parts = [p for p in out if p.height]
        result = pl.concat(parts, how="vertical_relaxed") if parts else self.empty_output()
        return result.select(list(self.node.schema))

    def _passing(
        self, delta: pl.DataFrame, side: str, expired: pl.Expr, pad: bool
    ) -> tuple[pl.DataFrame, pl.DataFrame]:
        """The epoch's rows that leave in the epoch they came (the watermark passed their bound already, as for
        most of q4's bids): joined, padded if unmatched, and never stored, so that the state table does not log
        each of them twice (row, then tombstone). A row equal to a stored one is merged and evicted with it."""
        leaving = delta.select(expired).to_series()
        if not leaving.any():  # most epochs' rows stay: no need to compare them with the stored ones
            return delta, self.empty_output()
        leaving = leaving & ~delta.get_column(HASH).is_in(self._hashes(side).implode())
        if not leaving.any():
            return delta, self.empty_output()
        gone = delta.filter(leaving & ~delta.get_column(MATCHED)) if pad else delta.head(0)
        return delta.filter(~leaving), self._emit(self._pad(gone, side))

    def _drop_late(self, rows: pl.DataFrame, side: str, time_col: str) -> pl.DataFrame:
        if WATERMARK_COLUMN not in rows.columns:
            return rows
        late = self.late_tables[f"late_{side}"]
        on_time = late.split(rows, behind_watermark(pl.col(time_col)), "arrived behind the watermark")
        return on_time.drop(WATERMARK_COLUMN)

    def _remark(self, side: str, rows: pl.Series) -> None:
        """Stored rows (by number) that found a partner this epoch: an outer join will not pad them. The rows keep
        their order (and so their hashes)."""
        stored = self.rows[side]
        if rows.len() == 0 or stored.height == 0:
            return
        found = pl.int_range(pl.len(), dtype=pl.UInt32).is_in(rows.implode())
        newly = stored.select((found & ~pl.col(MATCHED)).alias("__newly")).to_series()
        if not newly.any():
            return
        updated = stored.filter(newly).with_columns(pl.lit(True).alias(MATCHED))
        self._replace(side, stored.with_columns(pl.col(MATCHED) | pl.lit(newly)), self.hashes[side], self.index[side])
        self.sides[side].stage(updated, updated.head(0).select(*self.keys, *self._columns(side), "_kg"))

    def _evict(self, side: str, expired: pl.Expr, pad: bool) -> pl.DataFrame:
        stored = self.rows[side]
        leaving = stored.select(expired.fill_null(False)).to_series()
        if not leaving.any():
            return self.empty_output()
        gone = stored.filter(leaving)
        group = [*self.keys, *self._columns(side)]
        hashes = self.hashes[side]
        self._replace(side, stored.filter(~leaving))
        if hashes is not None:  # the kept rows' hashes, in the same order
            self.hashes[side] = hashes.filter(~leaving)
        self.sides[side].stage(gone.head(0), gone.select(*group, "_kg"))
        if not pad:
            return self.empty_output()
        return self._emit(self._pad(gone.filter(~pl.col(MATCHED)), side))

    # -- lookup joins --------------------------------------------------------------------------
    def _lookup(self, rows: pl.DataFrame, ctx: EpochContext) -> pl.DataFrame:
        assert self.dimension is not None
        version = ctx.dimension_versions.get(self.node.state_id)
        batch = self.dimension.read(version)
        previous = ctx.previous_dimension_versions.get(self.node.state_id)
        if batch.dead_letters.height and dead_letters_due(version, previous):
            # Recorded by the first epoch that joins against this version (another join reading the same table
            # this epoch reads the same version: its records are recorded once).
            ctx.dead_letters.setdefault(self.dimension.name, batch.dead_letters)
        dim = batch.rows
        left = rows.with_columns([e.alias(k) for e, k in zip(self.node.left_keys, self.keys, strict=True)])
        right = dim.select(
            *[e.alias(k) for e, k in zip(self.node.right_keys, self.keys, strict=True)],
            *[pl.col(c).alias(n) for c, n in self.node.right_names.items()],
        )
        how = "left" if self.node.kind == "LEFT" else "inner"
        joined = left.join(right, on=self.keys, how=how)  # type: ignore[arg-type]
        if self.node.residual is not None:
            joined = joined.filter(self.node.residual)
        return joined.select(list(self.node.schema))


def _key_names(node: Join) -> list[str]:
    return [f"__k{i}" for i in range(len(node.left_keys))]


def _matched(rows: pl.DataFrame, number: str, *pairs: pl.DataFrame) -> pl.DataFrame:
    """The epoch's rows with MATCHED: whether their number is among those of the pairs found."""
    found = pl.concat([p.get_column(number) for p in pairs]).implode()
    return rows.with_columns(pl.col(number).is_in(found).alias(MATCHED)).drop(number)


class _Dimension(LookupTable):
    """The right side of a lookup join: a bounded table read whole through its source connector, again whenever
    it changes (`engine.sources.lookup`; the allowed-roots checks are made there, as `latest` lists the files)."""

    def __init__(self, node: Join, base_dir: Path) -> None:
        assert node.dimension is not None
        super().__init__(node.dimension, base_dir)
