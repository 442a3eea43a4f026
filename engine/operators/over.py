"""OVER aggregates: `agg(x) OVER (PARTITION BY p ORDER BY t {ROWS n | RANGE interval | UNBOUNDED} PRECEDING)`.

Rows wait in state until the watermark passes their time; then, in event-time order, each gets the aggregates
of its frame and is emitted (append-only). Rows behind the watermark when they arrive are late (`late/`).
State table, keyed by an arrival number `__seq`:
    __seq  <input columns, with hidden __p* (partition), __o0 (time), __a* (arguments)>  __emitted  _kg ...
Waiting rows have `__emitted = false`; emitted rows stay only as long as a later frame can reach them
(the last n per partition, or those within the RANGE of the watermark). UNBOUNDED frames keep running
aggregates per partition instead, in a second table `totals/`.
"""

from __future__ import annotations

import datetime as dt

import polars as pl

from engine.errors import UserError
from engine.operators.base import OperatorSettings, StatefulOperator, TableSpec, behind_watermark, visible
from engine.operators.context import EpochContext
from engine.operators.decimals import (
    average,
    frame_sum,
    from_unscaled,
    is_decimal,
    overflow_guard,
    unscaled,
)
from engine.state_store import KEY_GROUPS, StateTable, key_group, tidy
from sql.plan import WATERMARK_COLUMN, AggCall, OverAggregate
from sql.types import sum_type

SEQ, EMITTED, HISTORY = "__seq", "__emitted", "__history"
#: arrival numbers per epoch, and per partition key group within one
EPOCH_SEQS = 1_000_000_000
KG_SEQS = EPOCH_SEQS // KEY_GROUPS
START, END, FIRST, ROW = "__frame_start", "__frame_end", "__frame_first", "__frame_row"
BOUNDS = [START, END, FIRST, ROW]


class OverOperator(StatefulOperator):
    def __init__(self, node: OverAggregate, settings: OperatorSettings | None = None) -> None:
        super().__init__(node, settings)
        self.columns = list(_stored(node))
        self.visible = visible(self.columns)
        self.partition = node.partition
        self.unbounded = node.rows is None and node.range is None
        self.rows, self.totals = self.specs[""].empty(), self.specs["totals"].empty()

    @classmethod
    def table_specs(cls, node: OverAggregate) -> list[TableSpec]:
        schema = _stored(node)
        totals = {f"__t{i}_{part}": dtype for i, call in enumerate(node.aggs) for part, dtype in _totals(call)}
        return [
            TableSpec("", "state", [SEQ], {SEQ: pl.Int64()}, {**schema, EMITTED: pl.Boolean()}),
            TableSpec("totals", "totals", node.partition, {p: schema[p] for p in node.partition}, totals),
            TableSpec("late", "late", role="late", columns=visible(schema)),
        ]

    @property
    def totals_table(self) -> StateTable:
        return self.state_tables["totals"]

    def input_key_group(self, index: int) -> pl.Expr | None:
        return key_group(self.partition)

    def state_key_group(self, name: str) -> pl.Expr:
        return pl.col("_kg") if name else key_group(self.partition)  # rows store the key group of their __seq

    def frames(self) -> dict[str, pl.DataFrame]:
        return {"": self.rows, "totals": self.totals}

    def set_frame(self, name: str, frame: pl.DataFrame) -> None:
        if name:
            self.totals = frame
        else:
            self.rows = frame

    # -- per epoch -----------------------------------------------------------------------------
    def process(self, inputs: list[pl.DataFrame], ctx: EpochContext) -> pl.DataFrame:
        with overflow_guard(self.node.aggs, self.node.state_id, ctx.epoch):
            return self._process(inputs, ctx)

    def _process(self, inputs: list[pl.DataFrame], ctx: EpochContext) -> pl.DataFrame:
        (rows,) = inputs
        previous = self.last_watermark
        self.last_watermark = ctx.watermark
        time = self.node.time
        if rows.height:
            # Judged by the row's own source's watermark; never below the one this operator last emitted by
            # (which only matters after an idle source resumes).
            late = behind_watermark(pl.col(time), previous)
            fresh = self.late.split(rows, late, "arrived behind the watermark").select(self.columns)
            fresh = fresh.with_columns(arrival_numbers(self.partition, ctx.epoch), pl.lit(False).alias(EMITTED))
            if fresh.get_column(SEQ).null_count():
                raise UserError(
                    f"operator '{self.node.state_id}': more than {KG_SEQS:,} rows of one key group of its "
                    "PARTITION BY in one epoch; run with smaller epochs (--max-epoch-rows)"
                )
            fresh = fresh.with_columns(key_group([SEQ]).alias("_kg")).select(self.rows.columns)
            self.rows = tidy(pl.concat([self.rows, fresh], how="vertical_relaxed"))
            self.table.stage(fresh, fresh.head(0).select(SEQ, "_kg"))
        watermark = ctx.watermark
        empty = pl.DataFrame(schema=self.node.schema)
        if watermark is None:
            return empty
        wm = pl.lit(watermark).cast(pl.Datetime("ms", "UTC"))
        ready = self.rows.filter(~pl.col(EMITTED) & (pl.col(time) <= wm))
        if ready.height == 0:
            return empty
        touched = ready.select(self.partition).unique()
        order = [*self.partition, time, SEQ]
        if self.unbounded:
            out = self._unbounded(ready.sort(order))
            gone = ready
            self.rows = self.rows.join(ready.select(SEQ), on=SEQ, how="anti")
        else:
            history = self.rows.filter(pl.col(EMITTED)).join(touched, on=self.partition, how="semi", nulls_equal=True)
            frame = pl.concat(
                [history.with_columns(pl.lit(True).alias(HISTORY)), ready.with_columns(pl.lit(False).alias(HISTORY))]
            ).sort(order)
            number = pl.int_range(pl.len(), dtype=pl.Int64)  # END becomes the frame's end: ROW stays the row's
            numbered = frame.with_columns(number.alias(END), number.alias(ROW))
            computed = numbered.with_columns(self._frame_bounds()).with_columns(self._frame_aggs()).drop(*BOUNDS)
            out = computed.filter(~pl.col(HISTORY))
            keep = self._still_needed(frame, wm)
            kept = keep.with_columns(pl.lit(True).alias(EMITTED)).select(self.rows.columns)
            gone = history.join(kept.select(SEQ), on=SEQ, how="anti")
            promoted = ready.join(kept.select(SEQ), on=SEQ, how="semi")
            self.rows = tidy(
                pl.concat([self.rows.join(frame.select(SEQ), on=SEQ, how="anti"), kept], how="vertical_relaxed")
            )
            self.table.stage(
                promoted.with_columns(pl.lit(True).alias(EMITTED)).select(self.rows.columns),
                pl.DataFrame(schema={SEQ: pl.Int64, "_kg": pl.Int32}),
            )
            gone = pl.concat(
                [gone.select(SEQ, "_kg"), ready.join(kept.select(SEQ), on=SEQ, how="anti").select(SEQ, "_kg")]
            )
        self.table.stage(pl.DataFrame(schema=self.table.schema).drop("_epoch", "_deleted"), gone.select(SEQ, "_kg"))
        result = out.sort(time, SEQ).select(
            *self.visible,
            *[pl.col(c.output) for c in self.node.aggs],
            # emitted once the watermark reached the row's time: it was open up to 1 ms before (see aggregate)
            (pl.col(time).cast(pl.Datetime("ms", "UTC")) - dt.timedelta(milliseconds=1)).alias(WATERMARK_COLUMN),
        )
        return result.select(list(self.node.schema))

    def _roll(self, expr: pl.Expr, how: str) -> pl.Expr:
        if self.node.rows is not None:
            rolled = getattr(expr, f"rolling_{how}")(window_size=self.node.rows + 1, min_samples=1)
        else:
            assert self.node.range is not None
            size = f"{int(self.node.range.total_seconds() * 1000)}ms"
            rolled = getattr(expr, f"rolling_{how}_by")(self.node.time, window_size=size, closed="both")
        return rolled.over(self.partition)

    def _frame_bounds(self) -> list[pl.Expr]:
        """Each row's frame as row numbers of the sorted frame (first row, last row, the partition's first row),
        for the exact decimal sums, which are differences of prefix sums (Polars has no rolling decimal sums)."""
        row = pl.col(END)  # the row numbers, added first: an int_range inside .over() would count per partition
        first = row.first().over(self.partition)
        if self.node.rows is not None:
            return [pl.max_horizontal(row - self.node.rows, first).alias(START), row.alias(END), first.alias(FIRST)]
        # RANGE: the frame ends at the current row's last peer and holds as many rows as the rolling count.
        end = row.last().over([*self.partition, self.node.time])
        size = self._roll(pl.col(SEQ).is_not_null().cast(pl.Int64), "sum")
        return [(end - size + 1).alias(START), end.alias(END), first.alias(FIRST)]

    def _frame_aggs(self) -> list[pl.Expr]:
        exprs = []
        for call in self.node.aggs:
            arg = call.args[0] if call.args else None
            present = arg.is_not_null().cast(pl.Int64) if arg is not None else pl.lit(1, pl.Int64)
            count = self._roll(present, "sum")
            decimal = arg is not None and is_decimal(call.arg_types[0])
            if call.function == "COUNT":
                result = count
            elif call.function in ("FIRST_VALUE", "LAST_VALUE"):
                assert arg is not None
                result = self._first_or_last(call.function, arg)
            elif decimal and call.function in ("SUM", "AVG"):
                assert arg is not None
                scale = call.arg_types[0].scale  # type: ignore[attr-defined]
                bounds = pl.col(START), pl.col(END), pl.col(FIRST)
                total = frame_sum(arg, *bounds, self.partition, scale)
                result = total if call.function == "SUM" else average(total, count, scale, call.dtype.scale)  # type: ignore[attr-defined]
                result = pl.when(count > 0).then(result)
            elif decimal:  # MIN, MAX: on the unscaled integers, which Polars can roll
                assert arg is not None
                extreme = self._roll(unscaled(arg), call.function.lower())
                result = from_unscaled(pl.when(count > 0).then(extreme), call.dtype.scale)  # type: ignore[attr-defined]
            elif call.function in ("SUM", "AVG"):
                assert arg is not None
                total = self._roll(arg.cast(pl.Float64 if call.function == "AVG" else call.dtype).fill_null(0), "sum")
                result = total if call.function == "SUM" else total / count
                result = pl.when(count > 0).then(result)
            else:
                assert arg is not None
                numeric = arg.cast(pl.Float64)
                fill = float("inf") if call.function == "MIN" else float("-inf")
                extreme = self._roll(numeric.fill_null(fill), call.function.lower())
                result = pl.when(count > 0).then(extreme)
            exprs.append(result.cast(call.dtype).alias(call.output))
        return exprs

    def _first_or_last(self, function: str, arg: pl.Expr) -> pl.Expr:
        """The frame's first or last non-NULL value: the row number of the nearest non-NULL value from the
        frame's start on (up to its end, a RANGE frame's being the current row's last peer), if it lies in the
        frame. Row numbers (START, END) count over the whole sorted frame: a value is taken from its row by
        number."""
        here = pl.when(arg.is_not_null()).then(pl.col(ROW))
        if function == "LAST_VALUE":
            at = here.forward_fill().over(self.partition).gather(pl.col(END))
            return pl.when(at >= pl.col(START)).then(arg.gather(at.fill_null(0)))
        at = here.backward_fill().over(self.partition).gather(pl.col(START))
        return pl.when(at <= pl.col(END)).then(arg.gather(at.fill_null(0)))

    def _still_needed(self, frame: pl.DataFrame, wm: pl.Expr) -> pl.DataFrame:
        """Emitted rows a later frame may still reach: the last n per partition, or those within the RANGE."""
        if self.node.rows is not None:
            if self.node.rows == 0:
                return frame.head(0)
            position = pl.int_range(pl.len(), dtype=pl.Int64).over(self.partition)
            size = pl.len().cast(pl.Int64).over(self.partition)  # UInt32 would wrap below n rows: keep it signed
            return frame.filter(position >= size - self.node.rows)
        assert self.node.range is not None
        return frame.filter(pl.col(self.node.time) >= wm - self.node.range)

    def _unbounded(self, ready: pl.DataFrame) -> pl.DataFrame:
        names = [f"__t{i}_{part}" for i, call in enumerate(self.node.aggs) for part, _ in _totals(call)]
        prior = (
            ready.select(self.partition)
            .unique()
            .join(self.totals.drop("_kg"), on=self.partition, how="left", nulls_equal=True)
        )
        frame = ready.join(prior, on=self.partition, how="left", nulls_equal=True)
        cumulative = []
        for i, call in enumerate(self.node.aggs):
            arg = call.args[0] if call.args else None
            present = arg.is_not_null().cast(pl.Int64) if arg is not None else pl.lit(1, pl.Int64)
            cumulative.append(
                (present.cum_sum().over(self.partition) + pl.col(f"__t{i}_n").fill_null(0)).alias(f"__c{i}_n")
            )
            value_type = _totals(call)[-1][1]
            if call.function in ("SUM", "AVG"):
                assert arg is not None
                cumulative.append(
                    (
                        arg.cast(value_type).fill_null(0).cum_sum().over(self.partition)
                        + pl.col(f"__t{i}_v").fill_null(0)
                    ).alias(f"__c{i}_v")
                )
            elif call.function in ("FIRST_VALUE", "LAST_VALUE"):
                assert arg is not None  # the stored value came first; the last non-NULL one so far is the last
                seen = arg.drop_nulls().first().over(self.partition) if call.function == "FIRST_VALUE" else None
                running = (
                    pl.when(arg.is_not_null().cum_sum().over(self.partition) > 0).then(seen)
                    if seen is not None
                    else arg.forward_fill().over(self.partition)
                )
                stored = pl.col(f"__t{i}_v")
                both = [stored, running] if call.function == "FIRST_VALUE" else [running, stored]
                cumulative.append(pl.coalesce(both).alias(f"__c{i}_v"))
            elif call.function in ("MIN", "MAX") and is_decimal(value_type):
                assert arg is not None  # exact: no detour through Float64; NULLs keep the extreme before them
                running = getattr(arg, f"cum_{call.function.lower()}")().forward_fill().over(self.partition)
                merge = pl.min_horizontal if call.function == "MIN" else pl.max_horizontal
                cumulative.append(merge(running, pl.col(f"__t{i}_v")).alias(f"__c{i}_v"))
            elif call.function in ("MIN", "MAX"):
                assert arg is not None
                fill = float("inf") if call.function == "MIN" else float("-inf")
                running = getattr(arg.cast(pl.Float64).fill_null(fill), f"cum_{call.function.lower()}")().over(
                    self.partition
                )
                previous = pl.col(f"__t{i}_v").fill_null(fill)
                combined = (
                    pl.min_horizontal(running, previous)
                    if call.function == "MIN"
                    else pl.max_horizontal(running, previous)
                )
                cumulative.append(combined.alias(f"__c{i}_v"))
        frame = frame.with_columns(cumulative)
        if self.node.frame_kind == "RANGE":
            # RANGE frames include the current row's peers: every row with the same time.
            peers = [c for c in frame.columns if c.startswith("__c")]
            frame = frame.with_columns(pl.col(c).last().over([*self.partition, self.node.time]) for c in peers)
        results = []
        for i, call in enumerate(self.node.aggs):
            count = pl.col(f"__c{i}_n")
            if call.function == "COUNT":
                value = count
            elif call.function == "SUM":
                value = pl.when(count > 0).then(pl.col(f"__c{i}_v"))
            elif call.function == "AVG" and is_decimal(call.dtype):
                total_scale = _totals(call)[-1][1].scale  # type: ignore[attr-defined]
                value = average(pl.col(f"__c{i}_v"), count, total_scale, call.dtype.scale)  # type: ignore[attr-defined]
            elif call.function == "AVG":
                value = pl.when(count > 0).then(pl.col(f"__c{i}_v") / count)
            else:
                value = pl.when(count > 0).then(pl.col(f"__c{i}_v"))
            results.append(value.cast(call.dtype).alias(call.output))
        frame = frame.with_columns(results)
        latest = (
            frame.group_by(self.partition, maintain_order=True)
            .last()
            .select(*self.partition, *[pl.col(n.replace("__t", "__c", 1)).alias(n) for n in names])
        )
        latest = latest.with_columns(key_group(self.partition).alias("_kg")).select(self.totals.columns)
        self.totals = tidy(
            pl.concat(
                [
                    self.totals.join(latest.select(self.partition), on=self.partition, how="anti", nulls_equal=True),
                    latest,
                ],
                how="vertical_relaxed",
            )
        )
        self.totals_table.stage(latest, latest.head(0).select(*self.partition, "_kg"))
        return frame


def _totals(call: AggCall) -> list[tuple[str, pl.DataType]]:
    """The running totals an UNBOUNDED frame keeps per partition: a count and, but for COUNT, a value. Decimals
    keep exact values (DECIMAL(38, s) sums, the input type for MIN/MAX); other numbers a DOUBLE, as before."""
    function = call.function
    if function == "COUNT":
        return [("n", pl.Int64())]
    arg_type = call.arg_types[0]
    if function in ("FIRST_VALUE", "LAST_VALUE"):
        return [("n", pl.Int64()), ("v", arg_type)]
    if is_decimal(arg_type):
        return [("n", pl.Int64()), ("v", sum_type(arg_type) if function in ("SUM", "AVG") else arg_type)]
    return [("n", pl.Int64()), ("v", pl.Float64())]


def _stored(node: OverAggregate) -> dict[str, pl.DataType]:
    """The input columns a waiting row keeps in state."""
    return {n: t for n, t in node.inputs[0].schema.items() if n != WATERMARK_COLUMN}


def arrival_numbers(partition: list[str], epoch: int) -> pl.Expr:
    """Each row's `__seq`: the epoch, the key group of its partition, and its arrival rank among the epoch's rows
    of that key group. Rows of one partition keep their arrival order (it breaks ties in time), and the number
    does not depend on how many workers run the operator: every row of a key group reaches one worker, in the
    order the single-process run sees them, so the state tables are the same whatever the worker count."""
    kg = key_group(partition).cast(pl.Int64)
    rank = pl.int_range(pl.len(), dtype=pl.Int64).over(kg)
    return pl.when(rank < KG_SEQS).then(epoch * EPOCH_SEQS + kg * KG_SEQS + rank).otherwise(None).alias(SEQ)
