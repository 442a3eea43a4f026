"""GROUP BY aggregation, unbounded or over windows. Stateful: its state is a Delta table it owns.

State schema (one row per group; for windows, per group and window):
    <group keys> [window_start, window_end] __rows <partial-state columns> _kg _epoch _deleted
HOP and CUMULATE whose aggregates combine (window_slices.sliceable) keep a row per group and slice instead:
    <group keys> slice_start slice_end __rows <partial-state columns> _kg _epoch _deleted
COUNT(DISTINCT x) also keeps, per aggregate, a table of the distinct values with their counts:
    <group keys> [window_start, window_end] __value __count _kg _epoch _deleted
Late rows (whose window had closed when they arrived) go to a late-rows table:
    <input columns> _epoch _watermark _reason

Unbounded aggregation emits a changelog per epoch: +I for a new group, -U/+U when its row changes, -D when
it disappears (its rows were retracted, or HAVING stopped holding). Window aggregation emits each window's
final row once the watermark passes the window's end, then purges the window from state.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

import polars as pl

from engine.operators.aggregate_changes import changelog
from engine.operators.aggregates import (
    ROWS,
    SIGN,
    AggState,
    agg_state,
    from_values,
    merge_grouped,
    merge_pairwise,
    state_prefixes,
)
from engine.operators.base import (
    OperatorSettings,
    StatefulOperator,
    TableSpec,
    changelog_sign,
    clock,
    expire,
    visible,
)
from engine.operators.collect import collect, collect_all
from engine.operators.context import END_OF_TIME, EpochContext
from engine.operators.decimals import overflow_guard
from engine.operators.distinct_values import (
    COUNT,
    NEW_COUNT,
    OLD_COUNT,
    VALUE,
    DistinctValues,
    epoch_pairs,
    pairs_of,
)
from engine.operators.late import LateRows
from engine.operators.window_slices import SLICE_BOUNDS, due, layout_guard, on_time, slice_of, sliceable
from engine.operators.windows import ONE_MS, assign
from engine.state_store import KEY_GROUPS, StateTable, key_group, tidy
from sql.plan import WATERMARK_COLUMN, Aggregate, Node

Frame = TypeVar("Frame", pl.DataFrame, pl.LazyFrame)
OLD = "__old"
TOUCHED = "_touched"
WINDOW_BOUNDS = ["window_start", "window_end"]


@dataclass(frozen=True)
class _Shape:
    """What the plan node fixes: group keys, partial states, and the state tables' columns."""

    key_exprs: list[tuple[str, pl.Expr]]
    keys: list[str]
    groups: list[str]
    states: list[AggState]
    group_types: dict[str, pl.DataType]
    values: dict[str, pl.DataType]

    @staticmethod
    def of(node: Aggregate) -> _Shape:
        # A global aggregate (no GROUP BY keys) is one group under a constant key.
        key_exprs = node.keys or [("__all", pl.lit(0, pl.Int32).alias("__all"))]
        keys = [name for name, _ in key_exprs]
        retracting = node.inputs[0].changelog == "retract"
        prefixes = state_prefixes(node.aggs)
        states = [agg_state(c, p, retracting) for c, p in zip(node.aggs, prefixes, strict=True)]
        key_types = pl.LazyFrame(schema=dict(node.inputs[0].schema)).select([e for _, e in key_exprs]).collect_schema()
        bounds = SLICE_BOUNDS if sliceable(node.window, states) else WINDOW_BOUNDS
        windows = {w: pl.Datetime("ms", "UTC") for w in bounds} if node.window else {}
        values = {ROWS: pl.Int64(), **{c.name: c.dtype for s in states for c in s.columns}}
        if node.ttl is not None:
            values[TOUCHED] = pl.Datetime("ms", "UTC")
        groups = keys + (bounds if node.window else [])
        return _Shape(key_exprs, keys, groups, states, {**dict(key_types), **windows}, values)


class AggregateOperator(StatefulOperator):
    def __init__(self, node: Aggregate, settings: OperatorSettings | None = None) -> None:
        super().__init__(node, settings)
        shape = _Shape.of(node)
        self.window = node.window
        self.key_exprs, self.keys, self.groups, self.states = shape.key_exprs, shape.keys, shape.groups, shape.states
        self.sliced = sliceable(node.window, self.states)  # HOP / CUMULATE state per slice (window_slices.py)
        self.now: dt.datetime | None = None
        self.epoch_rows = 0  # the input rows of the epoch running
        self.fired_watermark: dt.datetime | None = None  # the highest watermark windows fired at
        self.state = self.specs[""].empty()
        self.distinct_state: dict[int, DistinctValues] = {}
        self.input_schema = dict(node.inputs[0].schema)
        self.visible_input = visible(self.input_schema)

    @classmethod
    def layout_version(cls, node: Aggregate) -> int:
        """HOP/CUMULATE kept as slices (window_slices.py) are one layout beyond the kind's: state a manifest
        records as one row per window is reported as incompatible by the upgrade check, not misread."""
        return cls.LAYOUT_VERSION + (1 if sliceable(node.window, _Shape.of(node).states) else 0)

    @classmethod
    def create(cls, node: Node, settings: OperatorSettings | None = None) -> StatefulOperator:
        if settings is not None and settings.parallelism > 1:
            return ParallelAggregate(node, settings)
        return cls(node, settings)

    @classmethod
    def table_specs(cls, node: Aggregate) -> list[TableSpec]:
        shape = _Shape.of(node)
        specs = [TableSpec("", "state", shape.groups, shape.group_types, shape.values)]
        for i, state in enumerate(shape.states):
            if state.needs_values:
                specs.append(
                    TableSpec(
                        f"distinct_{i}",
                        f"distinct_{i}" if state.distinct else f"values_{i}",
                        [*shape.groups, VALUE],
                        {**shape.group_types, VALUE: state.call.arg_types[0]},
                        {COUNT: pl.Int64()},
                    )
                )
        return [*specs, TableSpec("late", "late", role="late", columns=visible(node.inputs[0].schema))]

    def input_key_group(self, index: int) -> pl.Expr | None:
        return key_group([expr.alias(name) for name, expr in self.key_exprs])

    @property
    def distinct(self) -> dict[int, StateTable]:
        return {int(n.split("_")[1]): t for n, t in self.state_tables.items() if n.startswith("distinct_")}

    def frames(self) -> dict[str, pl.DataFrame]:
        return {"": self.state, **{f"distinct_{i}": v.frame() for i, v in self.distinct_state.items()}}

    def live_rows(self) -> dict[str, int]:
        return {"": self.state.height, **{f"distinct_{i}": v.live for i, v in self.distinct_state.items()}}

    @property
    def state_bytes(self) -> int:
        return int(self.state.estimated_size()) + sum(v.nbytes for v in self.distinct_state.values())

    def restore(self, versions: Mapping[str, int], watermark: dt.datetime | None) -> None:
        with layout_guard(self.node.state_id, self.sliced):
            super().restore(versions, watermark)
        self.fired_watermark = watermark  # windows closed at it have fired (the sliced path's only record of it)

    def set_frame(self, name: str, frame: pl.DataFrame) -> None:
        if name:
            self.distinct_state[int(name.split("_")[1])] = DistinctValues(frame)
        else:
            self.state = frame

    @property
    def state_rows(self) -> int:
        return self.state.height  # the groups (or windows): distinct values are not counted

    def timer_due(self, now: dt.datetime) -> bool:
        """Whether a processing-time window would close at `now`, so an epoch without rows must still run."""
        if self.window is None or not self.window.proctime or self.state.height == 0:
            return False
        earliest = self.state.get_column("window_end").min()
        return earliest is not None and earliest - ONE_MS <= now  # type: ignore[operator]

    def _late_mask(self, window_end: pl.Expr) -> pl.Expr:
        if self.window is not None and self.window.proctime:
            return pl.lit(False)
        return (window_end - ONE_MS <= pl.col(WATERMARK_COLUMN)).fill_null(False)

    def _record_late(self, rows: pl.DataFrame, flagged: pl.DataFrame) -> None:
        late_rows = flagged.filter(pl.col("__late")).get_column("__row").unique()
        if late_rows.len() == 0:  # the usual case: no grouping over every (row, window) pair
            return
        per_row = (
            flagged.filter(pl.col("__row").is_in(late_rows.implode()))
            .group_by("__row")
            .agg(
                pl.col("__late").sum().alias("late"),
                pl.len().alias("windows"),
                pl.col("window_end").filter(pl.col("__late")).max().alias("closed_end"),
            )
            .filter(pl.col("late") > 0)
        )
        if per_row.height == 0:
            return
        late_rows = rows.with_row_index("__row").join(per_row, on="__row").sort("__row")
        reason = pl.format(
            "{} of {} window(s) already closed (latest closed window ends {}); watermark was {}",
            pl.col("late"),
            pl.col("windows"),
            pl.col("closed_end"),
            pl.col(WATERMARK_COLUMN),
        )
        self.late.add(late_rows, reason)

    # -- per epoch -----------------------------------------------------------------------------
    def process(self, inputs: list[pl.DataFrame], ctx: EpochContext) -> pl.DataFrame:
        with overflow_guard(self.node.aggs, self.node.state_id, ctx.epoch):
            return self._process(inputs, ctx)

    def _process(self, inputs: list[pl.DataFrame], ctx: EpochContext) -> pl.DataFrame:
        (rows,) = inputs
        self.epoch_rows = rows.height
        if self.window is None:
            self.now = clock(self.node.ttl, ctx)
            self._expire()  # an expired group starts afresh, as in Flink
            return self._unbounded(rows)
        output = self._sessions(rows, ctx) if self.window.unassigned_session else self._windows(rows, ctx)
        self.last_watermark = ctx.watermark
        return output

    # -- unbounded GROUP BY --------------------------------------------------------------------
    def _unbounded(self, rows: pl.DataFrame) -> pl.DataFrame:
        if rows.height == 0:
            return self.empty_output()
        signed = rows.lazy().with_columns(changelog_sign(rows.columns).alias(SIGN), *[e for _, e in self.key_exprs])
        old, new = self._merge(signed)
        # The rest is one query: the new state, what to stage, and the changelog (a small epoch pays for one call).
        live = new.lazy().filter(pl.col(ROWS) > 0)
        gone = (
            new.lazy()
            .filter(pl.col(ROWS) <= 0)
            .join(old.lazy().select(self.groups), on=self.groups, how="semi", nulls_equal=True)
        )
        keys = [f"__g_{g}" for g in self.groups]
        values = [name for name, _ in self.node.projections]
        changes = changelog(self._outputs(old.lazy()), self._outputs(live), keys, values, list(self.node.schema))
        return self._replace(new, live, gone, changes)

    # -- TUMBLE, HOP, CUMULATE ------------------------------------------------------------------
    def _with_row_watermarks(self, rows: Frame, columns: list[str]) -> Frame:
        """Each row is judged against the watermark of its own source before it (`__wm`). Never below the
        watermark this operator last fired at, though: a window that has fired is never reopened. That floor
        only matters for rows that carry no watermark (a join's output) and after an idle source resumes; otherwise
        it is never above the row's own watermark, so results stay a function of each source's order. `columns`:
        the rows' columns (a lazy frame's, known without resolving its schema)."""
        # Slices know only the highest watermark fired at: a row must not feed a window that fired below it.
        last = self.fired_watermark if self.sliced else self.last_watermark
        floor = pl.lit(last, pl.Datetime("ms", "UTC"))
        if WATERMARK_COLUMN not in columns:
            return rows.with_columns(floor.alias(WATERMARK_COLUMN))
        if last is None:
            return rows
        return rows.with_columns(pl.max_horizontal(pl.col(WATERMARK_COLUMN), floor).alias(WATERMARK_COLUMN))

    def _windows(self, rows: pl.DataFrame, ctx: EpochContext) -> pl.DataFrame:
        assert self.window is not None
        if rows.height:
            watermarked = self._with_row_watermarks(rows.lazy(), rows.columns)
            indexed = watermarked.with_row_index("__row").with_columns(*[e for _, e in self.key_exprs])
            if self.sliced:
                counted = self._slices(watermarked, collect(indexed, rows.height))
            else:
                # A cascaded window aggregation groups by the windows its input carries (see WindowSpec.attached).
                attached = self.window.attached
                assigned = self._attached(indexed) if attached else assign(indexed, self.window)
                counted = self._judge(watermarked, assigned)
            if counted.height:
                _, new = self._merge(counted.lazy().with_columns(pl.lit(1, pl.Int64).alias(SIGN)))
                self._replace(new, new.lazy(), new.lazy().head(0))
        return self._fire(ctx)

    def _judge(self, rows: pl.LazyFrame, assigned: pl.LazyFrame) -> pl.DataFrame:
        """The (row, window) pairs whose window was open when the row arrived; the other rows go to `late`."""
        flagged = collect(assigned.with_columns(self._late_mask(pl.col("window_end")).alias("__late")), self.epoch_rows)
        late = flagged.get_column("__late")
        if not late.any():  # the usual case
            return flagged.drop("__late")
        self._record_late(collect(rows, self.epoch_rows), flagged)
        return flagged.filter(~late).drop("__late")

    def _slices(self, rows: pl.LazyFrame, indexed: pl.DataFrame) -> pl.DataFrame:
        """Rows keyed by the state row they update: their slice, or for a straggler each window still open."""
        assert self.window is not None
        timed = indexed.filter(pl.col(self.window.time_col).is_not_null()).with_columns(slice_of(self.window))
        timely = on_time(self.window)
        stragglers = timed.filter(~timely).drop(SLICE_BOUNDS)
        if stragglers.height == 0:  # the usual case: every row on time for all its windows
            return timed
        remainders = self._judge(rows, assign(stragglers.lazy(), self.window))
        remainders = remainders.drop("window_time").rename(dict(zip(WINDOW_BOUNDS, SLICE_BOUNDS, strict=True)))
        return pl.concat([timed.filter(timely), remainders.select(timed.columns)], how="vertical_relaxed")

    def _attached(self, rows: pl.LazyFrame) -> pl.LazyFrame:
        """The input's own window columns, under the names the state uses."""
        assert self.window is not None
        bounds = {"window_start": self.window.start_col, "window_end": self.window.end_col}
        return rows.with_columns(pl.col(column).alias(role) for role, column in bounds.items() if column != role)

    def _fire(self, ctx: EpochContext) -> pl.DataFrame:
        # Processing-time windows close on the epoch's clock (its logged planning time, so replays agree).
        watermark = ctx.proctime if self.window is not None and self.window.proctime else ctx.watermark
        if ctx.drain:
            watermark = END_OF_TIME
        if watermark is None:
            return self.empty_output()
        fired_before = self.fired_watermark
        self.fired_watermark = watermark if fired_before is None else max(fired_before, watermark)
        if self.state.height == 0:
            return self.empty_output()
        if self.sliced:
            return self._fire_slices(fired_before, watermark)
        earliest = self.state.get_column("window_end").min()
        if earliest is not None and earliest - ONE_MS > watermark:  # type: ignore[operator]
            return self.empty_output()  # nothing closes: no filtering of the state (most small epochs)
        due = pl.col("window_end") - ONE_MS <= pl.lit(watermark).cast(pl.Datetime("ms", "UTC"))
        fired = self.state.filter(due)
        if fired.height == 0:
            return self.empty_output()
        self.state = self.state.filter(~due)
        self.table.stage(fired.head(0), fired.select([*self.groups, "_kg"]))
        for i, table in self.distinct.items():
            closed = self.distinct_state[i].remove_groups(fired.select(self.groups))
            table.stage(closed.head(0), closed.select([*self.groups, VALUE, "_kg"]))
        return self._emit(collect(self._outputs(fired.lazy()), fired.height))

    def _fire_slices(self, fired_before: dt.datetime | None, watermark: dt.datetime) -> pl.DataFrame:
        """Combine the slices (and window remainders) of each window that closes now; drop the state rows whose
        last window closes."""
        assert self.window is not None
        pairs, gone = due(self.state, self.window, fired_before, watermark)
        if gone.any():
            closed = self.state.filter(gone)
            self.state = self.state.filter(~gone)
            self.table.stage(closed.head(0), closed.select([*self.groups, "_kg"]))
        if pairs.height == 0:
            return self.empty_output()
        windows = [*self.keys, *WINDOW_BOUNDS]
        combined = pairs.group_by(windows).agg(pl.col(ROWS).sum(), *merge_grouped(self.states))
        return self._emit(collect(self._outputs(combined.lazy(), windows), combined.height))

    def _emit(self, out: pl.DataFrame) -> pl.DataFrame:
        """Fired windows in the order of their end, then keys."""
        out = out.sort("__g_window_end", *[f"__g_{k}" for k in self.keys], nulls_last=True)
        # A fired row carries the last watermark at which its window was still open (window_time - 1 ms): a
        # function of the window alone, so a downstream window (a cascade) judges it the same in every epoch
        # split, and never late, since a downstream window holding window_time ends no earlier.
        emitted_at = (pl.col("__g_window_end") - 2 * ONE_MS).alias(WATERMARK_COLUMN)
        return (
            out.with_columns(emitted_at)
            .select([c for c in out.columns if not c.startswith("__g_")] + [WATERMARK_COLUMN])
            .select(list(self.node.schema))
        )

    # -- SESSION -------------------------------------------------------------------------------
    def _sessions(self, rows: pl.DataFrame, ctx: EpochContext) -> pl.DataFrame:
        assert self.window is not None and self.window.gap is not None
        if rows.height:
            time_col = self.window.time_col
            gap = self.window.gap
            rows = self._with_row_watermarks(rows.filter(pl.col(time_col).is_not_null()), rows.columns)
            late = self._late_mask(pl.col(time_col) + gap)
            flagged = rows.with_columns(late.alias("__late"))
            late_rows = flagged.filter(pl.col("__late"))
            if late_rows.height:
                self.late.add(
                    late_rows,
                    pl.format(
                        "its session (gap {}) had closed; watermark was {}", pl.lit(str(gap)), pl.col(WATERMARK_COLUMN)
                    ),
                )
            on_time = flagged.filter(~pl.col("__late")).with_columns(
                pl.lit(1, pl.Int64).alias(SIGN), *[e for _, e in self.key_exprs]
            )
            if on_time.height:
                self._merge_sessions(on_time, time_col, gap)
        return self._fire(ctx)

    def _merge_sessions(self, rows: pl.DataFrame, time_col: str, gap: dt.timedelta) -> None:
        partial = (
            rows.group_by([*self.keys, time_col])
            .agg(pl.col(SIGN).sum().alias(ROWS), *[p for s in self.states for p in s.partial])
            .with_columns(
                pl.col(time_col).cast(pl.Datetime("ms", "UTC")).alias("window_start"),
                (pl.col(time_col) + gap).cast(pl.Datetime("ms", "UTC")).alias("window_end"),
            )
            .drop(time_col)
        )
        touched = partial.select(self.keys).unique()
        old = self.state.join(touched, on=self.keys, how="semi", nulls_equal=True)
        columns = [*self.groups, ROWS, *[c.name for s in self.states for c in s.columns]]
        combined = pl.concat([old.select(columns), partial.select(columns)], how="vertical_relaxed").sort(
            [*self.keys, "window_start"], nulls_last=True
        )
        previous_end = pl.col("window_end").cum_max().shift(1).over(self.keys)
        combined = combined.with_columns(
            (previous_end.is_null() | (pl.col("window_start") > previous_end)).cast(pl.Int64).alias("__new")
        )
        combined = combined.with_columns(pl.col("__new").cum_sum().over(self.keys).alias("__session"))
        merged = (
            combined.group_by([*self.keys, "__session"])
            .agg(
                pl.col("window_start").min(),
                pl.col("window_end").max(),
                pl.col(ROWS).sum(),
                *merge_grouped(self.states),
            )
            .drop("__session")
            .with_columns(key_group(self.keys).alias("_kg"))
        )
        replaced = old.join(merged.select(self.groups), on=self.groups, how="anti", nulls_equal=True)
        self.state = tidy(
            pl.concat(
                [
                    self.state.join(touched, on=self.keys, how="anti", nulls_equal=True),
                    merged.select(self.state.columns),
                ],
                how="vertical_relaxed",
            )
        )
        self.table.stage(merged.select(self.state.columns), replaced.select([*self.groups, "_kg"]))

    # -- shared machinery ----------------------------------------------------------------------
    def _merge(self, rows: pl.LazyFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
        """Combine the new rows' partial states with the stored ones: (old rows, new rows) of touched groups."""
        aggs = [pl.col(SIGN).sum().alias(ROWS), *[p for s in self.states for p in s.partial]]
        partial = rows.group_by(self.groups).agg(aggs)
        if self.distinct:
            calls = {i: self.states[i].call for i in self.distinct}
            eager_partial, *counted = collect_all(
                [partial, *epoch_pairs(rows, calls, self.groups, SIGN)], self.epoch_rows
            )
            for i in self.distinct:
                eager_partial = self._distinct_delta(i, pairs_of(counted, i, self.groups), eager_partial)
            partial = eager_partial.lazy()
        old = self.state.lazy().join(partial.select(self.groups), on=self.groups, how="semi", nulls_equal=True)
        joined = partial.join(old, on=self.groups, how="left", suffix=OLD, nulls_equal=True)
        new = joined.select(
            *self.groups,
            (pl.col(ROWS + OLD).fill_null(0) + pl.col(ROWS)).alias(ROWS),
            *merge_pairwise(self.states, OLD),
            key_group(self.keys).alias("_kg"),
            *([pl.lit(self.now, pl.Datetime("ms", "UTC")).alias(TOUCHED)] if self.node.ttl is not None else []),
        )
        old_rows, new_rows = collect_all([old, new], self.epoch_rows)
        return old_rows, new_rows

    def _expire(self) -> None:
        """Forget groups unchanged for longer than the state TTL; they leave the table as tombstones."""
        if (split := expire(self.state, self.node.ttl, self.now, TOUCHED)) is not None:
            self.state, expired = split
            self.table.stage(expired.head(0), expired.select([*self.groups, "_kg"]))
            for i, table in self.distinct.items():  # a group that comes back counts its values afresh
                gone = self.distinct_state[i].remove_groups(expired.select(self.groups))
                table.stage(gone.head(0), gone.select([*self.groups, VALUE, "_kg"]))

    def _replace(
        self, touched: pl.DataFrame, live: pl.LazyFrame, gone: pl.LazyFrame, output: pl.LazyFrame | None = None
    ) -> pl.DataFrame:
        """The groups in `touched` now hold `live` (`gone`: removed); stage both, and compute `output` with them
        (one query). Returns the output (empty without one)."""
        columns = self.state.columns
        kept = self.state.lazy().join(touched.lazy().select(self.groups), on=self.groups, how="anti", nulls_equal=True)
        state = pl.concat([kept, live.select(columns)], how="vertical_relaxed")
        queries = [state, live.select(columns), gone.select([*self.groups, "_kg"])]
        outputs = [output] if output is not None else []
        state_rows, upserts, deletes, *out = collect_all([*queries, *outputs], touched.height)
        self.state = tidy(state_rows)
        self.table.stage(upserts, deletes)
        return out[0] if out else self.empty_output()

    def _distinct_delta(self, index: int, counts: pl.DataFrame, partial: pl.DataFrame) -> pl.DataFrame:
        """Apply the epoch's (group, value) counts of aggregate `index`; `partial` with its column set."""
        state = self.states[index]
        call = state.call
        values = self.distinct_state[index]
        pairs = values.apply(counts, key_group(self.keys))
        keys = [*self.groups, VALUE]
        present = pairs.filter(pl.col(NEW_COUNT) > 0).select(*keys, pl.col(NEW_COUNT).alias(COUNT), "_kg")
        absent = pairs.filter((pl.col(NEW_COUNT) <= 0) & (pl.col(OLD_COUNT) > 0)).select(*keys, "_kg")
        self.distinct[index].stage(present, absent)
        column = state.columns[0].name
        if not state.distinct:  # MIN/MAX over retractions, COLLECT...: recomputed from the values still present
            live = values.live_of(partial.select(self.groups))
            best = live.group_by(self.groups).agg(from_values(call).alias("__best"))
            return (
                partial.join(best, on=self.groups, how="left", nulls_equal=True)
                .with_columns(pl.col("__best").cast(state.columns[0].dtype).alias(column))
                .drop("__best")
            )
        presence = (pl.col(NEW_COUNT) > 0).cast(pl.Int64) - (pl.col(OLD_COUNT) > 0).cast(pl.Int64)
        change = pairs.group_by(self.groups).agg(presence.sum().alias("__chg"))
        return (
            partial.join(change, on=self.groups, how="left", nulls_equal=True)
            .with_columns(pl.col("__chg").fill_null(0).alias(column))
            .drop("__chg")
        )

    def _outputs(self, groups: pl.LazyFrame, group_columns: list[str] | None = None) -> pl.LazyFrame:
        """The SELECT list (plus group keys as __g_ columns) for groups that pass HAVING."""
        group_columns = group_columns or self.groups
        frame = groups.with_columns(*[s.finish for s in self.states])
        if self.window is not None:
            frame = frame.with_columns((pl.col("window_end") - ONE_MS).alias("window_time"))
        if self.node.having is not None:
            frame = frame.filter(self.node.having)
        return frame.select(
            *[pl.col(g).alias(f"__g_{g}") for g in group_columns], *[e for _, e in self.node.projections]
        )


class ParallelAggregate(StatefulOperator):
    """A GROUP BY run by several workers (threads), each owning a range of the 128 key groups.

    Every key's state lives in the one key group its key hashes to (`_kg`), so the work splits by key group:
    each epoch's input rows go to the worker owning their key group, and the workers run side by side
    (Polars releases the GIL). They share one set of state tables and commit once, as one operator: the
    table, its markers and its change log do not depend on the number of workers. Restoring with another
    number of workers reassigns the key groups: each worker takes the rows of its new range.
    """

    def __init__(self, node: Aggregate, settings: OperatorSettings) -> None:
        super().__init__(node, settings)
        self.workers = [AggregateOperator(node, settings) for _ in range(settings.parallelism)]
        self.pool = ThreadPoolExecutor(max_workers=settings.parallelism, thread_name_prefix=f"agg-{node.state_id}")

    @classmethod
    def table_specs(cls, node: Aggregate) -> list[TableSpec]:
        return AggregateOperator.table_specs(node)

    def _owner(self, key_groups: pl.Expr) -> pl.Expr:
        return (key_groups * len(self.workers) // KEY_GROUPS).cast(pl.Int32)

    def _split(self, frame: pl.DataFrame) -> list[pl.DataFrame]:
        owners = frame.get_column("_kg") * len(self.workers) // KEY_GROUPS
        return [frame.filter(owners == i) for i in range(len(self.workers))]

    def attach(self, tables: Mapping[str, StateTable | LateRows]) -> None:
        super().attach(tables)
        for worker in self.workers:  # one set of tables, staged into by every worker
            worker.attach(tables)

    def frames(self) -> dict[str, pl.DataFrame]:
        names = self.workers[0].frames()
        return {name: pl.concat([w.frames()[name] for w in self.workers]) for name in names}

    def live_rows(self) -> dict[str, int]:
        rows: dict[str, int] = {}
        for worker in self.workers:
            for name, count in worker.live_rows().items():
                rows[name] = rows.get(name, 0) + count
        return rows

    def set_frame(self, name: str, frame: pl.DataFrame) -> None:
        for worker, part in zip(self.workers, self._split(frame), strict=True):
            worker.set_frame(name, part)

    @property
    def state_rows(self) -> int:
        return sum(w.state_rows for w in self.workers)

    @property
    def state_bytes(self) -> int:
        return sum(w.state_bytes for w in self.workers)

    def timer_due(self, now: dt.datetime) -> bool:
        return any(w.timer_due(now) for w in self.workers)

    def restore(self, versions: Mapping[str, int], watermark: dt.datetime | None) -> None:
        with layout_guard(self.node.state_id, self.workers[0].sliced):
            super().restore(versions, watermark)
        for worker in self.workers:
            worker.last_watermark = worker.fired_watermark = watermark

    def process(self, inputs: list[pl.DataFrame], ctx: EpochContext) -> pl.DataFrame:
        (rows,) = inputs
        first = self.workers[0]
        key_groups = key_group([expr.alias(name) for name, expr in first.key_exprs])
        owned = rows.with_columns(self._owner(key_groups).alias("__owner"))  # broadcasts a constant key, too
        parts = [owned.filter(pl.col("__owner") == i).drop("__owner") for i in range(len(self.workers))]
        work = zip(self.workers, parts, strict=True)
        outputs = list(self.pool.map(lambda pair: pair[0].process([pair[1]], ctx), work))
        return pl.concat(outputs, how="vertical_relaxed")
