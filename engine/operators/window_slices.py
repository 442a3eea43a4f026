"""Slice-based HOP and CUMULATE aggregation (Flink's slicing windows): each row updates one slice, not every
window it belongs to, and a window is combined from its slices when it fires.

HOP(slide L, size S) cuts time into slices of L (the planner requires S to be a multiple of L, so
gcd(S, L) = L); CUMULATE(step s, size S) into slices of s. A slice belongs to every window that covers it: HOP
windows ending at slice_end, slice_end + L, ..., slice_start + S; CUMULATE windows starting at the cumulation
period's start and ending at slice_end, slice_end + s, ..., period start + S. The state keeps one row per
(group key, slice) with the partial aggregates, instead of one per (group key, window): S/L times fewer rows to
merge, store and checkpoint for HOP. A slice leaves the state when the last window covering it fires.

Lateness stays per window: a row counts in the windows that had not closed when it arrived. A row that is on
time for every window of its slice goes to the slice. A row that arrives when some, not all, of its windows
have closed (a straggler) cannot go to the slice, which also feeds the closed windows: it is added to each
still-open window separately, as a row [window_start, window_end) of the same table whose width exceeds a slice
(a window remainder, fired with its window and then dropped).

State table (main table of such an aggregation):
    <group keys> slice_start slice_end __rows <partial-state columns> _kg _epoch _deleted
where `slice_end - slice_start` is one slice for a slice row and a whole window for a window remainder. To read
a window's value from the state, combine (sum, min, max) the rows of the key whose interval lies in the window.

Aggregations that cannot be combined from slices keep one row per window (`sliceable`): COUNT(DISTINCT) and
other kinds that keep every value, user-defined aggregates, windows of a cascaded aggregation (already one row
per window), processing-time windows, TUMBLE (a slice is the window) and SESSION.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager

import polars as pl

from engine.errors import UserError
from engine.operators.aggregates import AggState
from sql.plan import WATERMARK_COLUMN, WindowSpec

SLICE_BOUNDS = ["slice_start", "slice_end"]
UTC_MS = pl.Datetime("ms", "UTC")


def _ms(delta: dt.timedelta | None) -> int:
    assert delta is not None
    return int(delta.total_seconds() * 1000)


def sliceable(window: WindowSpec | None, states: list[AggState]) -> bool:
    """Whether the aggregation keeps slices: HOP or CUMULATE over event time, every partial state mergeable."""
    if window is None or window.kind not in ("HOP", "CUMULATE") or window.attached or window.proctime:
        return False
    if _ms(window.size) % _ms(window.slide) != 0:
        return False
    return all(
        not s.needs_values and (s.merge_many is not None or all(c.combine in ("sum", "min", "max") for c in s.columns))
        for s in states
    )


def _timestamp(millis: pl.Expr) -> pl.Expr:
    return millis.cast(pl.Datetime("ms")).dt.replace_time_zone("UTC")


def slice_of(window: WindowSpec) -> list[pl.Expr]:
    """slice_start and slice_end of each row's slice (rows with a NULL time have none)."""
    t = pl.col(window.time_col).dt.epoch("ms")
    step = _ms(window.slide)
    start = t - (t - _ms(window.offset)) % step
    return [_timestamp(start).alias("slice_start"), _timestamp(start + step).alias("slice_end")]


def on_time(window: WindowSpec) -> pl.Expr:
    """A row (with its slice) that no window of its slice had closed for: the first of them ends at slice_end,
    and a window is closed for a row when window_end - 1 ms <= the row's watermark (`__wm`)."""
    first_end = pl.col("slice_end").dt.epoch("ms")
    return ((first_end - 1) > pl.col(WATERMARK_COLUMN).dt.epoch("ms")).fill_null(True)


def due(
    state: pl.DataFrame, window: WindowSpec, fired_before: dt.datetime | None, watermark: dt.datetime
) -> tuple[pl.DataFrame, pl.Series]:
    """The (state row, window) pairs of the windows that close at `watermark` and had not at `fired_before`, with
    the window's bounds as window_start / window_end; and the mask of the state rows whose last window closes."""
    size, step = _ms(window.size), _ms(window.slide)
    start, end = pl.col("slice_start").dt.epoch("ms"), pl.col("slice_end").dt.epoch("ms")
    is_slice = (end - start) == step
    if window.kind == "HOP":
        windows = pl.lit(size // step, pl.Int64)
        window_start = pl.col("__end") - size
    else:  # CUMULATE: the period's windows from this slice's end to the period's end
        period = start - (start - _ms(window.offset)) % size
        windows = (period + size - end) // step + 1
        window_start = start - (start - _ms(window.offset)) % size
    count = pl.when(is_slice).then(windows).otherwise(1)
    last_end = end + (count - 1) * step
    # window ends are end + i * step; a window closes at watermark w when window_end - 1 <= w
    upper = _millis(watermark) + 1
    first = pl.lit(0, pl.Int64) if fired_before is None else ((_millis(fired_before) + 2 - end) // -step * -1).clip(0)
    last = pl.min_horizontal((upper - end) // step, count - 1)
    marked = state.with_columns(first.alias("__first"), last.alias("__last"), (last_end <= upper).alias("__gone"))
    pairs = (
        marked.filter(pl.col("__last") >= pl.col("__first"))
        .with_columns(pl.int_ranges(pl.col("__first"), pl.col("__last") + 1).alias("__i"))
        .explode("__i")
        .with_columns((end + pl.col("__i") * step).alias("__end"))
        .with_columns(_timestamp(window_start).alias("window_start"), _timestamp(pl.col("__end")).alias("window_end"))
        .drop("__first", "__last", "__gone", "__i", "__end")
    )
    return pairs, marked.get_column("__gone")


def _millis(moment: dt.datetime) -> int:
    return int(pl.Series([moment]).cast(UTC_MS).dt.epoch("ms")[0])


@contextmanager
def layout_guard(state_id: str, sliced: bool) -> Iterator[None]:
    """Loading state written by another layout of the same SQL: before slices, HOP and CUMULATE kept a row per
    window (window_start, window_end), and the reverse holds for an engine that predates this one. Neither can be
    read as the other (a window's row cannot be cut into slices), so the restore is refused in one line."""
    try:
        yield
    except pl.exceptions.ColumnNotFoundError as err:
        if ("slice_start" if sliced else "window_start") not in str(err):
            raise
        earlier = "one row per window" if sliced else "one row per slice"
        raise UserError(
            f"state of {state_id} was written by an engine that kept HOP/CUMULATE windows as {earlier}; "
            "finish it with that engine (drain), or start this query from an empty state directory"
        ) from err
