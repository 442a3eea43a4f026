"""Top-N and deduplication: `ROW_NUMBER() OVER (PARTITION BY p ORDER BY o) AS rn ... WHERE rn <= n`.

Top-N keeps, per partition, the rows that can still rank (all rows over an updating input, only the top n over
an append-only one) and emits the changes of the top n: -D for a row that left it, +I for one that entered
(with the rank column, a row whose rank changed leaves and re-enters). Over an append-only input an epoch
re-ranks only the partitions a new row enters (`_top_n_append`); no margin beyond n is needed, since nothing
is ever retracted. State table:
    <input columns, with the hidden __p* partition and __o* order columns>  __count  _kg _epoch _deleted

Deduplication keeping the first row by event time (n = 1, ORDER BY a time attribute ASC) is append-only: a
partition's candidate is final once the watermark passes its time, since an earlier row would now be late.
State table: __p*  <input columns>  __emitted  _kg _epoch _deleted. Late rows go to `late/`.

Window Top-N and window deduplication (`node.window_end`) keep the Top-N state table and fire per window
(`engine/operators/window_top_n.py`). With a state TTL (`STATE_TTL` hint, `state.ttl`), a partition whose state
has not changed for the TTL leaves it (its rows become tombstones, through the normal checkpoint) and starts
afresh if rows come back, as Flink's rank operators do under table.exec.state.ttl (a row that does not change
the state, such as a duplicate after the first, does not refresh it). When each partition last changed is kept
in a second table, `touched/`: __p*  _touched  _kg _epoch _deleted.
"""

from __future__ import annotations

import datetime as dt

import polars as pl

from engine.operators import window_top_n
from engine.operators.base import (
    UTC_MS,
    OperatorSettings,
    StatefulOperator,
    TableSpec,
    behind_watermark,
    changelog_sign,
    clock,
    expire,
    visible,
)
from engine.operators.context import EpochContext
from engine.state_store import key_group, tidy
from sql.plan import DELETE, INSERT, OP_COLUMN, WATERMARK_COLUMN, TopN

COUNT, EMITTED, TOUCHED = "__count", "__emitted", "_touched"


class TopNOperator(StatefulOperator):
    def __init__(self, node: TopN, settings: OperatorSettings | None = None) -> None:
        super().__init__(node, settings)
        self.rows = self.specs[""].empty()  # the candidates (Top-N) or each key's first row (deduplication)
        self.partition = node.partition
        self.columns = list(_stored(node))
        self.visible = visible(self.columns)
        self.touched = self.specs["touched"].empty() if "touched" in self.specs else None
        self.now: dt.datetime | None = None  # the TTL's clock in this epoch
        self.stamped = False  # whether every partition restored has a stamp

    @classmethod
    def table_specs(cls, node: TopN) -> list[TableSpec]:
        schema = _stored(node)
        if node.first_by_time:
            rest = {n: t for n, t in schema.items() if n not in node.partition}
            state = TableSpec(
                "", "state", node.partition, {p: schema[p] for p in node.partition}, {**rest, EMITTED: pl.Boolean()}
            )
        else:
            state = TableSpec("", "state", list(schema), schema, {COUNT: pl.Int64()})
        specs = [state, TableSpec("late", "late", role="late", columns=visible(schema))]
        if node.ttl is not None and node.window_end is None:
            keys = {p: schema[p] for p in node.partition}
            specs.append(TableSpec("touched", "touched", node.partition, keys, {TOUCHED: UTC_MS}))
        return specs

    def input_key_group(self, index: int) -> pl.Expr | None:
        return key_group(self.partition)

    def state_key_group(self, name: str) -> pl.Expr:
        return key_group(self.partition)  # a Top-N stores the key group of the whole row in `_kg`

    def frames(self) -> dict[str, pl.DataFrame]:
        return {"": self.rows} if self.touched is None else {"": self.rows, "touched": self.touched}

    def set_frame(self, name: str, frame: pl.DataFrame) -> None:
        self.stamped = False
        if name == "touched":
            self.touched = frame
        else:
            self.rows = frame

    # -- per epoch -----------------------------------------------------------------------------
    def process(self, inputs: list[pl.DataFrame], ctx: EpochContext) -> pl.DataFrame:
        (rows,) = inputs
        if self.node.window_end is not None:
            return window_top_n.process(self, rows, ctx)
        if self.touched is not None:
            self.now = clock(self.node.ttl, ctx)
            self._expire()  # an expired partition starts afresh, as in Flink
        if self.node.first_by_time:
            return self._first(rows, ctx)
        return self._top_n(rows)

    def _stage(self, upserts: pl.DataFrame, deletes: pl.DataFrame) -> None:
        """Stage state changes; with a TTL, their partitions are stamped as changed now."""
        self.table.stage(upserts, deletes)
        if self.touched is None or upserts.height + deletes.height == 0:
            return
        changed = pl.concat([upserts.select(self.partition), deletes.select(self.partition)]).unique()
        self._touch(changed)

    def _touch(self, partitions: pl.DataFrame) -> None:
        assert self.touched is not None
        stamped = partitions.select(
            *self.partition, pl.lit(self.now, UTC_MS).alias(TOUCHED), key_group(self.partition).alias("_kg")
        ).select(self.touched.columns)
        kept = self.touched.join(partitions, on=self.partition, how="anti", nulls_equal=True)
        self.touched = tidy(pl.concat([kept, stamped], how="vertical_relaxed"))
        self.state_tables["touched"].stage(stamped, stamped.head(0).select(*self.partition, "_kg"))

    def _expire(self) -> None:
        """Forget partitions whose state has not changed for the TTL: their rows and stamps become tombstones."""
        assert self.touched is not None
        if self.now is None:
            return  # event time before the first watermark: nothing can expire yet
        # Rows kept before the TTL was set (checked once per restore), or stamped before the clock was known:
        # they count from now.
        unstamped = self.touched.filter(pl.col(TOUCHED).is_null()).select(self.partition)
        if not self.stamped:
            self.stamped = True
            partitions = self.rows.select(self.partition).unique()
            missing = partitions.join(self.touched, on=self.partition, how="anti", nulls_equal=True)
            unstamped = pl.concat([unstamped, missing])
        if unstamped.height:
            self._touch(unstamped)
        if (split := expire(self.touched, self.node.ttl, self.now, TOUCHED)) is None:
            return
        self.touched, expired = split
        if self.node.first_by_time:
            # a first row not yet emitted (the watermark has not passed it) stays until it is: it is the result
            pending = self.rows.filter(~pl.col(EMITTED)).select(self.partition)
            kept = expired.join(pending, on=self.partition, how="semi", nulls_equal=True)
            if kept.height:
                self.touched = tidy(pl.concat([self.touched, kept], how="vertical_relaxed"))
                expired = expired.join(pending, on=self.partition, how="anti", nulls_equal=True)
        self.state_tables["touched"].stage(expired.head(0), expired.select(*self.partition, "_kg"))
        gone = self.rows.join(expired, on=self.partition, how="semi", nulls_equal=True)
        self.rows = self.rows.join(expired, on=self.partition, how="anti", nulls_equal=True)
        self.table.stage(gone.head(0), gone.select(*self.table_keys, "_kg"))

    @property
    def table_keys(self) -> list[str]:
        return self.partition if self.node.first_by_time else self.columns

    def _top_n(self, rows: pl.DataFrame) -> pl.DataFrame:
        if rows.height == 0:
            return self.empty_output()
        if OP_COLUMN not in rows.columns and self.node.order:
            return self._top_n_append(rows)
        delta = (
            rows.select(*self.columns, changelog_sign(rows.columns).alias(COUNT))
            .group_by(self.columns, maintain_order=True)
            .agg(pl.col(COUNT).sum())
            .filter(pl.col(COUNT) != 0)
        )
        touched = delta.select(self.partition).unique()
        in_scope = self.rows.join(touched, on=self.partition, how="semi", nulls_equal=True)
        before = self._ranked(in_scope)
        merged = (
            pl.concat([in_scope.drop("_kg"), delta], how="vertical_relaxed")
            .group_by(self.columns)
            .agg(pl.col(COUNT).sum())
        )
        after = self._ranked(merged.filter(pl.col(COUNT) > 0))
        keep = merged.filter(pl.col(COUNT) > 0)
        if OP_COLUMN not in rows.columns:
            # Over an append-only input a row outside the top n can never rank again: forget it.
            kept_counts = after.group_by(self.columns).agg(pl.len().cast(pl.Int64).alias(COUNT))
            keep = kept_counts
        keep = keep.with_columns(key_group(self.columns).alias("_kg"))
        gone = in_scope.join(keep.select(self.columns), on=self.columns, how="anti", nulls_equal=True)
        changed = keep.join(
            in_scope.select(*self.columns, COUNT), on=[*self.columns, COUNT], how="anti", nulls_equal=True
        )
        outside = self.rows.join(touched, on=self.partition, how="anti", nulls_equal=True)
        self.rows = tidy(pl.concat([outside, keep.select(self.rows.columns)], how="vertical_relaxed"))
        self._stage(changed.select(self.rows.columns), gone.select(*self.columns, "_kg"))
        return self._diff(before, after)

    def _top_n_append(self, rows: pl.DataFrame) -> pl.DataFrame:
        """Over an append-only input the state holds each partition's top n (no row outside it can rank again).
        A new row can enter only if fewer than n new rows beat it on the first ORDER BY column: that cheap
        test, a ranking within the partition, drops most rows of busy partitions. The rest are sorted once with
        the stored rows of their partitions (every column breaks ties), which gives both the old ranks and the
        new; only the partitions a new row enters change, and only they are diffed and restaged."""
        limit = self.node.limit
        first, descending = self.node.order[0]
        # NULLs sort last and rank NULL: kept as candidates, the exact ranking decides
        beaten = pl.col(first).rank("min", descending=descending).over(self.partition)
        new = rows.select(self.columns).filter(beaten.fill_null(0) <= limit)
        touched = new.select(self.partition).unique()
        in_scope = self.rows.join(touched, on=self.partition, how="semi", nulls_equal=True)
        stored = in_scope.select(*self.columns, COUNT).with_columns(pl.int_ranges(0, pl.col(COUNT)).alias("__copy"))
        pool = pl.concat(
            [
                stored.explode("__copy").select(*self.columns, pl.lit(True).alias("__old")),
                new.with_columns(pl.lit(False).alias("__old")),
            ],
            how="vertical_relaxed",
        )
        # Sorted by partition first: a partition is a run of rows, so ranks are positions within runs (no hashing).
        boundary = pl.int_range(pl.len()) == 0
        for column in self.partition:
            boundary = boundary | pl.col(column).ne_missing(pl.col(column).shift(1))
        position, olds = pl.int_range(pl.len(), dtype=pl.Int64), pl.col("__old").cast(pl.Int64)
        ranked = (
            self._sorted(pool)
            .with_columns(boundary.alias("__start"), olds.cum_sum().alias("__olds"))
            .with_columns(
                (position - pl.when("__start").then(position).forward_fill() + 1).alias("__rank"),
                (pl.col("__olds") - pl.when("__start").then(pl.col("__olds") - olds).forward_fill()).alias("__was"),
            )
        )
        entering = ranked.filter(~pl.col("__old") & (pl.col("__rank") <= limit)).select(self.partition).unique()
        if entering.height == 0:
            return self.empty_output()
        ranked = ranked.join(entering, on=self.partition, how="semi", nulls_equal=True)
        before = ranked.filter(pl.col("__old")).select(*self.columns, pl.col("__was").alias("__rank"))
        after = ranked.filter(pl.col("__rank") <= limit).select(*self.columns, "__rank")
        # per distinct row: its copies stored before and kept now
        counts = ranked.group_by(self.columns).agg(
            pl.col("__old").sum().cast(pl.Int64).alias("__before"),
            (pl.col("__rank") <= limit).sum().cast(pl.Int64).alias(COUNT),
        )
        keep = counts.filter(pl.col(COUNT) > 0).with_columns(key_group(self.columns).alias("_kg"))
        changed = keep.filter(pl.col(COUNT) != pl.col("__before"))
        gone = counts.filter((pl.col(COUNT) == 0) & (pl.col("__before") > 0)).with_columns(
            key_group(self.columns).alias("_kg")
        )
        outside = self.rows.join(entering, on=self.partition, how="anti", nulls_equal=True)
        self.rows = tidy(pl.concat([outside, keep.select(self.rows.columns)], how="vertical_relaxed"))
        self._stage(changed.select(self.rows.columns), gone.select(*self.columns, "_kg"))
        return self._diff(before, after)

    def _sorted(self, rows: pl.DataFrame) -> pl.DataFrame:
        """Rows in ROW_NUMBER order within their partition: ORDER BY, then every other column (a total order, so
        ranks do not depend on arrival)."""
        order_cols = [c for c, _ in self.node.order]
        ties = [c for c in self.columns if c not in order_cols and c not in self.partition]
        return rows.sort(
            [*self.partition, *order_cols, *ties],
            descending=[False] * len(self.partition) + [d for _, d in self.node.order] + [False] * len(ties),
            nulls_last=True,
        )

    def _ranked(self, rows: pl.DataFrame) -> pl.DataFrame:
        """The top n rows of each partition, with their ROW_NUMBER."""
        if rows.height == 0:
            return pl.DataFrame(schema={**{c: self.rows.schema[c] for c in self.columns}, "__rank": pl.Int64})
        expanded = rows.with_columns(pl.int_ranges(0, pl.col(COUNT)).alias("__copy")).explode("__copy")
        ordered = self._sorted(expanded)
        ranked = ordered.with_columns((pl.int_range(pl.len()).over(self.partition) + 1).cast(pl.Int64).alias("__rank"))
        return ranked.filter(pl.col("__rank") <= self.node.limit).select(*self.columns, "__rank")

    def _diff(self, before: pl.DataFrame, after: pl.DataFrame) -> pl.DataFrame:
        rank = self.node.rank_column
        out = [*self.visible, *(["__rank"] if rank else [])]
        old = before.select(out).with_columns(pl.lit(1).alias("__n"))
        new = after.select(out).with_columns(pl.lit(1).alias("__n"))
        counts = (
            pl.concat([old.with_columns(pl.lit(-1).alias("__n")), new])
            .group_by(out, maintain_order=True)
            .agg(pl.col("__n").sum())
        )
        removed = counts.filter(pl.col("__n") < 0).with_columns(pl.lit(DELETE).alias(OP_COLUMN))
        added = counts.filter(pl.col("__n") > 0).with_columns(pl.lit(INSERT).alias(OP_COLUMN))
        changes = (
            pl.concat([removed, added])
            .with_columns(pl.int_ranges(0, pl.col("__n").abs()).alias("__copy"))
            .explode("__copy")
        )
        if rank:
            changes = changes.rename({"__rank": rank})
        return changes.select(list(self.node.schema))

    def _first(self, rows: pl.DataFrame, ctx: EpochContext) -> pl.DataFrame:
        time_col = self.node.order[0][0]
        if rows.height:
            emitted = self.rows.filter(pl.col(EMITTED)).select(self.partition)
            fresh = rows.join(emitted, on=self.partition, how="anti", nulls_equal=True)
            reason = "arrived behind the watermark before its key's first row was final"
            candidates = (
                self.late.split(fresh, behind_watermark(pl.col(time_col)), reason)
                .select(self.columns)
                .with_row_index("__arrival")
                .sort(time_col, "__arrival", nulls_last=True)
                .group_by(self.partition, maintain_order=True)
                .first()
                .drop("__arrival")
                .with_columns(pl.lit(False).alias(EMITTED))
            )
            stored = self.rows.filter(~pl.col(EMITTED)).join(
                candidates.select(self.partition), on=self.partition, how="semi", nulls_equal=True
            )
            best = (
                pl.concat(
                    [
                        stored.drop("_kg").with_columns(pl.lit(0).alias("__old")),
                        candidates.with_columns(pl.lit(1).alias("__old")),
                    ],
                    how="vertical_relaxed",
                )
                .sort(time_col, "__old", nulls_last=True)
                .group_by(self.partition, maintain_order=True)
                .first()
                .drop("__old")
                .with_columns(key_group(self.partition).alias("_kg"))
            )
            changed = best.join(
                stored.select(self.rows.columns), on=list(self.rows.columns), how="anti", nulls_equal=True
            )
            self.rows = tidy(
                pl.concat(
                    [
                        self.rows.join(best.select(self.partition), on=self.partition, how="anti", nulls_equal=True),
                        best.select(self.rows.columns),
                    ],
                    how="vertical_relaxed",
                )
            )
            self._stage(changed.select(self.rows.columns), changed.head(0).select(*self.partition, "_kg"))
        watermark = ctx.watermark
        if watermark is None:
            return self.empty_output()
        due = ~pl.col(EMITTED) & (pl.col(time_col) <= pl.lit(watermark).cast(pl.Datetime("ms", "UTC")))
        final = self.rows.filter(due)
        if final.height == 0:
            return self.empty_output()
        # Keep only the partition and the fact that it was emitted: later rows of the key are duplicates.
        marked = (
            final.select(*self.partition, "_kg")
            .with_columns(
                *[
                    pl.lit(None, self.rows.schema[c]).alias(c)
                    for c in self.rows.columns
                    if c not in (*self.partition, "_kg", EMITTED)
                ],
                pl.lit(True).alias(EMITTED),
            )
            .select(self.rows.columns)
        )
        self.rows = tidy(pl.concat([self.rows.filter(~due), marked], how="vertical_relaxed"))
        self._stage(marked, marked.head(0).select(*self.partition, "_kg"))
        out = final.sort(time_col).select(*self.visible)
        if self.node.rank_column:
            out = out.with_columns(pl.lit(1, pl.Int64).alias(self.node.rank_column))
        return out.select(list(self.node.schema))


def _stored(node: TopN) -> dict[str, pl.DataType]:
    """The input columns a row keeps in state."""
    return {n: t for n, t in node.inputs[0].schema.items() if n not in (WATERMARK_COLUMN, OP_COLUMN)}
