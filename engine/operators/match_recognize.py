"""MATCH_RECOGNIZE (complex event processing), as Flink's CEP operator runs it for SQL.

Rows wait in state until the watermark passes their time; then, per partition, in event-time order (ties by
arrival), they are matched against the pattern (engine/operators/match_nfa.py) and each match gives one row:
the partition columns and the MEASURES (append-only). Rows behind the watermark when they arrive are late
(`late/`). State, in two typed tables:

    state/  one row per input row still needed: __seq (arrival number), the input columns, _kg
            (rows the watermark has not passed yet, and released rows from the first undecided start row on)
    runs/   the open partial matches: per run (__start: the __seq of its first row, __path: its rank among the
            runs from that row) one row per bound row (__pos), with the row's __seq and its variable (__var)

Restoring loads both; the runs are a function of the rows and the watermark (matching recomputes them), kept so
that the state at any checkpoint shows which partial matches were open. DEFINE conditions that read only the
current row and PREV are evaluated vectorised over a partition's released rows; other conditions, per row.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import polars as pl

from engine.errors import UserError
from engine.operators.base import OperatorSettings, StatefulOperator, TableSpec, behind_watermark, visible
from engine.operators.context import END_OF_TIME, EpochContext
from engine.operators.match_nfa import Found, Matcher, resolve
from engine.operators.over import KG_SEQS, SEQ, arrival_numbers
from engine.state_store import key_group, tidy
from sql.plan import WATERMARK_COLUMN, MatchRecognize, Navigation

TIME = "__time"  # the time attribute's values, under a name no input column has
RUN_KEYS = {"__start": pl.Int64(), "__path": pl.Int32(), "__pos": pl.Int32()}
MS = pl.Datetime("ms", "UTC")
ONE_MS = dt.timedelta(milliseconds=1)
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


class MatchRecognizeOperator(StatefulOperator):
    def __init__(self, node: MatchRecognize, settings: OperatorSettings | None = None) -> None:
        super().__init__(node, settings)
        self.columns = list(_stored(node))
        self.partition = node.partition
        self.rows, self.runs = self.specs[""].empty(), self.specs["runs"].empty()
        self.nav_schema = {f"__nav{i}": n.dtype for i, n in enumerate(node.navigations)}
        self.uses = {var: _navs(expr) for var, expr in node.defines.items()}
        # DEFINE conditions that read the current row and PREV only: evaluated for all rows at once, valid for a
        # row at least `gap` rows after the match's first row (PREV reaches no further back)
        self.fast: dict[str, int] = {}
        for var, used in self.uses.items():
            navs = [node.navigations[i] for i in used]
            if all(n.var in (None, var) and (n.kind == "PREV" or (n.kind == "LAST" and n.offset == 0)) for n in navs):
                self.fast[var] = max([n.offset for n in navs if n.kind == "PREV"], default=0)

    @classmethod
    def table_specs(cls, node: MatchRecognize) -> list[TableSpec]:
        schema = _stored(node)
        partition = {p: schema[p] for p in node.partition}
        return [
            TableSpec("", "state", [SEQ], {SEQ: pl.Int64()}, schema),
            TableSpec("runs", "runs", list(RUN_KEYS), RUN_KEYS, {**partition, SEQ: pl.Int64(), "__var": pl.String()}),
            TableSpec("late", "late", role="late", columns=visible(schema)),
        ]

    def input_key_group(self, index: int) -> pl.Expr | None:
        return key_group(self.partition)

    def state_key_group(self, name: str) -> pl.Expr:
        return pl.col("_kg")

    def frames(self) -> dict[str, pl.DataFrame]:
        return {"": self.rows, "runs": self.runs}

    def set_frame(self, name: str, frame: pl.DataFrame) -> None:
        if name:
            self.runs = frame
        else:
            self.rows = frame

    # -- per epoch -----------------------------------------------------------------------------
    def process(self, inputs: list[pl.DataFrame], ctx: EpochContext) -> pl.DataFrame:
        (rows,) = inputs
        previous = self.last_watermark
        self.last_watermark = ctx.watermark
        time = self.node.time
        fresh_rows = False
        if rows.height:
            late = behind_watermark(pl.col(time), previous)
            fresh = self.late.split(rows, late, "arrived behind the watermark").select(self.columns)
            fresh = fresh.with_columns(arrival_numbers(self.partition, ctx.epoch))
            if fresh.get_column(SEQ).null_count():
                raise UserError(
                    f"operator '{self.node.state_id}': more than {KG_SEQS:,} rows of one key group of its "
                    "PARTITION BY in one epoch; run with smaller epochs (--max-epoch-rows)"
                )
            fresh = fresh.with_columns(key_group(self.partition).alias("_kg")).select(self.rows.columns)
            fresh_rows = fresh.height > 0
            self.rows = tidy(pl.concat([self.rows, fresh], how="vertical_relaxed"))
            self.table.stage(fresh, fresh.head(0).select(SEQ, "_kg"))
        watermark = ctx.watermark
        if watermark is None or (not fresh_rows and watermark == previous):
            return self.empty_output()
        released = self.rows.filter(pl.col(time) <= pl.lit(watermark).cast(MS)).sort([*self.partition, time, SEQ])
        if released.height == 0:
            return self.empty_output()
        return self._match(released, watermark)

    def _match(self, released: pl.DataFrame, watermark: dt.datetime) -> pl.DataFrame:
        node = self.node
        final = watermark >= END_OF_TIME
        within = None if node.within is None else node.within // ONE_MS
        wm_ms = (watermark - EPOCH) // ONE_MS  # integer arithmetic: a float timestamp can be 1 ms off
        released = self._with_fast_conditions(released)
        matches: list[tuple[dict[str, Any], Found]] = []
        dropped: list[int] = []
        runs: list[dict[str, Any]] = []
        cache: dict[tuple[str, tuple[Any, ...]], bool] = {}
        parts = released.partition_by(self.partition, maintain_order=True) if self.partition else [released]
        for part in parts:
            values = {c: part.get_column(c).to_list() for c in [*self.columns, SEQ]}
            values[TIME] = values[node.time]
            times = part.get_column(node.time).cast(MS).dt.epoch("ms").to_list()
            fast = {var: part.get_column(f"__ok_{var}").to_list() for var in self.fast}
            conditions = _Conditions(self, values, fast, cache)
            matcher = Matcher(node.pattern, conditions.holds, times, within, wm_ms, final)
            found, first_open = resolve(matcher, node.after)
            matches += [(values, f) for f in found]
            seqs = values[SEQ]
            dropped += seqs[:first_open]
            key = {p: values[p][0] for p in self.partition}
            for start in range(first_open, len(times)):
                for path, labels in enumerate(matcher.open_runs(start)):
                    for pos, var in enumerate(labels):
                        runs.append(
                            {
                                **key,
                                "__start": seqs[start],
                                "__path": path,
                                "__pos": pos,
                                SEQ: seqs[start + pos],
                                "__var": var,
                            }
                        )
        self._keep(released, dropped, runs)
        return self._output(matches)

    def _with_fast_conditions(self, released: pl.DataFrame) -> pl.DataFrame:
        """Per vectorised DEFINE, a column `__ok_<var>`: whether each released row satisfies it, PREV reading the
        rows before it in the partition (the caller uses it only where those rows belong to the match)."""
        navs: dict[str, pl.Expr] = {}
        for var in self.fast:
            for i in self.uses[var]:
                nav = self.node.navigations[i]
                column = pl.col(nav.column)  # type: ignore[arg-type]
                if nav.kind == "PREV":
                    column = column.shift(nav.offset)
                    column = column.over(self.partition) if self.partition else column
                navs[f"__nav{i}"] = column.cast(nav.dtype)
        if not self.fast:
            return released
        conditions = [self.node.defines[var].fill_null(False).alias(f"__ok_{var}") for var in self.fast]
        return released.with_columns(**navs).with_columns(conditions).drop(list(navs))

    def _keep(self, released: pl.DataFrame, dropped: list[int], runs: list[dict[str, Any]]) -> None:
        """Rows no later match can use leave the state; the open runs of the matched partitions are replaced."""
        if dropped:
            gone = self.rows.filter(pl.col(SEQ).is_in(pl.Series(dropped, dtype=pl.Int64).implode()))
            self.rows = self.rows.join(gone.select(SEQ), on=SEQ, how="anti")
            self.table.stage(self.rows.head(0), gone.select(SEQ, "_kg"))
        touched = released.select(self.partition).unique() if self.partition else None
        old = self.runs if touched is None else self.runs.join(touched, on=self.partition, how="semi", nulls_equal=True)
        new = pl.DataFrame(runs, schema={k: v for k, v in self.runs.schema.items() if k != "_kg"}, orient="row")
        new = new.with_columns(key_group(self.partition).alias("_kg")).select(self.runs.columns)
        keys = list(RUN_KEYS)
        removed = old.join(new.select(keys), on=keys, how="anti")
        added = new.join(old, on=list(new.columns), how="anti", nulls_equal=True)
        self.runs = tidy(pl.concat([self.runs.join(removed.select(keys), on=keys, how="anti"), added]))
        self.runs = self.runs.unique(keys, keep="last", maintain_order=True)
        self.state_tables["runs"].stage(added, removed.select(*keys, "_kg"))

    def _output(self, matches: list[tuple[dict[str, Any], Found]]) -> pl.DataFrame:
        node = self.node
        if not matches:
            return self.empty_output()
        matches.sort(key=lambda m: (m[0][node.time][m[1].end - 1], m[0][SEQ][m[1].start]))
        nav_rows = [
            [_navigate(nav, values, found.start, found.end - 1, found.labels) for nav in node.navigations]
            for values, found in matches
        ]
        frame = pl.DataFrame(nav_rows, schema=self.nav_schema, orient="row")
        keys = pl.DataFrame(
            [[values[p][found.start] for p in self.partition] for values, found in matches],
            schema={p: self.rows.schema[p] for p in self.partition},
            orient="row",
        )
        ends = pl.Series(WATERMARK_COLUMN, [values[node.time][found.end - 1] for values, found in matches])
        out = pl.concat([keys, frame], how="horizontal").select(
            *self.partition,
            *[expr for _, expr in node.measures],
            (ends.cast(MS) - dt.timedelta(milliseconds=1)).alias(WATERMARK_COLUMN),
        )
        return out.cast(node.schema)  # type: ignore[arg-type]


class _Conditions:
    """DEFINE conditions of one partition's released rows, asked by the matcher for one row of one binding."""

    def __init__(
        self,
        op: MatchRecognizeOperator,
        values: dict[str, list[Any]],
        fast: dict[str, list[bool]],
        cache: dict[tuple[str, tuple[Any, ...]], bool],
    ) -> None:
        self.op = op
        self.values = values
        self.fast = fast
        self.cache = cache  # shared by the epoch's partitions

    def holds(self, var: str, start: int, pos: int, labels: tuple[str, ...]) -> bool:
        node = self.op.node
        condition = node.defines.get(var)
        if condition is None:
            return True  # a variable without DEFINE matches every row
        gap = self.op.fast.get(var)
        if gap is not None and pos - start >= gap:
            return bool(self.fast[var][pos])
        bound = (*labels, var)
        used = self.op.uses[var]
        values = tuple(_navigate(node.navigations[i], self.values, start, pos, bound) for i in used)
        # the condition is a function of the values it reads: evaluated once per distinct tuple of them
        key = (var, values)
        if key not in self.cache:
            schema = {f"__nav{i}": self.op.nav_schema[f"__nav{i}"] for i in used}
            row = {name: [value] for name, value in zip(schema, values, strict=True)}
            frame = pl.DataFrame(row, schema=schema) if used else pl.DataFrame({"__one": [1]})
            self.cache[key] = bool(frame.select(condition.fill_null(False)).item())
        return self.cache[key]


def _navigate(nav: Navigation, values: dict[str, list[Any]], start: int, last: int, labels: tuple[str, ...]) -> Any:
    """The value `nav` reads from the match rows start..last, bound to `labels`."""
    if nav.kind == "MATCH_ROWTIME":
        return values[TIME][last]
    bound = [start + i for i, label in enumerate(labels) if nav.var is None or label == nav.var]
    column = values[nav.column] if nav.column is not None else None
    if nav.kind == "LAST":
        return column[bound[-1 - nav.offset]] if len(bound) > nav.offset else None  # type: ignore[index]
    if nav.kind == "FIRST":
        return column[bound[nav.offset]] if len(bound) > nav.offset else None  # type: ignore[index]
    if nav.kind == "PREV":
        if not bound:
            return None
        target = bound[-1] - nav.offset
        return column[target] if target >= start else None  # type: ignore[index]
    if column is None:  # COUNT(*) / COUNT(A.*)
        return len(bound)
    present = [column[i] for i in bound if column[i] is not None]
    if nav.kind == "COUNT":
        return len(present)
    if not present:
        return None
    if nav.kind == "SUM":
        return _wrapped(sum(present), nav.dtype)
    if nav.kind == "AVG":
        return sum(present) / len(present)
    return min(present) if nav.kind == "MIN" else max(present)


def _wrapped(total: Any, dtype: pl.DataType) -> Any:
    """An integer sum wrapped to its SQL type's width, as Flink's (Java's) integer arithmetic and the vectorised SUM
    do: Python's unbounded int would not fit the column, which stopped the pipeline."""
    if not isinstance(total, int) or not dtype.is_integer():
        return total
    bits = _BITS.get(type(dtype), 64)
    span = 1 << bits
    if dtype.is_signed_integer():
        return (total + span // 2) % span - span // 2
    return total % span


_BITS: dict[type, int] = {pl.Int8: 8, pl.Int16: 16, pl.Int32: 32, pl.UInt8: 8, pl.UInt16: 16, pl.UInt32: 32}


def _navs(expr: pl.Expr) -> list[int]:
    return sorted({int(name[5:]) for name in expr.meta.root_names() if name.startswith("__nav")})


def _stored(node: MatchRecognize) -> dict[str, pl.DataType]:
    """The input columns a row keeps in state."""
    return {n: t for n, t in node.inputs[0].schema.items() if n != WATERMARK_COLUMN}
