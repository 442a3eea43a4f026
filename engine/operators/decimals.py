"""Exact DECIMAL arithmetic for aggregates, and the error an overflow beyond DECIMAL(38) raises.

Polars checks some DECIMAL additions (`+`, `cum_sum`, a column's `sum`) and raises on overflow, but its grouped
sums (`group_by().agg(sum)`, `rolling`) wrap silently, and it has no rolling sums over decimals. Grouped sums
and bounded OVER frames therefore work on the unscaled Int128 integers behind the decimals: Int128 arithmetic
wraps modulo 2**128, so a sum, or a difference of prefix sums, is exact whenever the true sum fits in Int128,
whatever the partial sums did on the way. A Float64 estimate catches the sums too large for Int128, and
converting back to DECIMAL(38, s) checks the 38 digits.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from decimal import Decimal

import polars as pl

from engine.errors import UserError
from sql.plan import AggCall
from sql.types import MAX_PRECISION
from sql.types import sql_name as types_name

# An unscaled frame sum at least this large (as a Float64 estimate) may have wrapped in Int128 (2**127 ~ 1.7e38).
_WRAP_GUARD = 1.5e38


class DecimalOverflow(UserError, ValueError):
    """A SUM or AVG of decimals does not fit DECIMAL(38, s): the epoch is not committed."""


def is_decimal(dtype: pl.DataType) -> bool:
    return isinstance(dtype, pl.Decimal)


def unscaled(expr: pl.Expr) -> pl.Expr:
    """The Int128 integer behind a decimal (1.25 as DECIMAL(p, 2) -> 125)."""
    return expr.to_physical().cast(pl.Int128)


def from_unscaled(value: pl.Expr, scale: int) -> pl.Expr:
    """DECIMAL(38, scale) from its unscaled Int128 integer. The strict cast of the integer part raises when the
    value needs more than 38 digits, so this is also the overflow check."""
    power = pl.lit(10**scale, pl.Int128)
    whole = value.abs() // power * value.sign()  # truncated toward zero: the fraction keeps the value's sign
    fraction = value - whole * power
    step = pl.lit(Decimal(1).scaleb(-scale), pl.Decimal(MAX_PRECISION, scale))
    return whole.cast(pl.Decimal(MAX_PRECISION, scale)) + fraction.cast(pl.Decimal(MAX_PRECISION, 0)) * step


def checked_sum(values: pl.Expr, scale: int) -> pl.Expr:
    """The sum of decimal `values` (an aggregation) as DECIMAL(38, scale), raising when it needs more digits.
    Polars' grouped decimal sum wraps silently, so the sum is taken on the unscaled Int128 integers (exact modulo
    2**128) and checked like a frame sum."""
    exact = unscaled(values).sum()
    estimate = values.cast(pl.Float64).sum()
    return _checked(exact, estimate, scale)


def _checked(exact: pl.Expr, estimate: pl.Expr, scale: int) -> pl.Expr:
    # A sum too large for Int128 is sent to a value the strict cast refuses, so it overflows visibly.
    too_large = estimate.abs() * 10.0**scale >= _WRAP_GUARD
    return from_unscaled(pl.when(too_large).then(pl.lit(10**MAX_PRECISION, pl.Int128)).otherwise(exact), scale)


def average(total: pl.Expr, count: pl.Expr, total_scale: int, scale: int) -> pl.Expr:
    """total / count as DECIMAL(38, scale), rounded half up like Flink's decimal division, exactly: on the
    unscaled integers, (q * 10^k) + round(r * 10^k / n), so no intermediate exceeds the result's size."""
    n = count.cast(pl.Int128)
    value = unscaled(total)
    magnitude = value.abs()
    quotient, remainder = magnitude // n, magnitude % n
    shift = pl.lit(10 ** (scale - total_scale), pl.Int128)
    rounded = quotient * shift + (remainder * shift * 2 + n) // (n * 2)
    return pl.when(count > 0).then(from_unscaled(rounded * value.sign(), scale))


def frame_sum(
    value: pl.Expr, start: pl.Expr, end: pl.Expr, first: pl.Expr, partition: list[str], scale: int
) -> pl.Expr:
    """The exact sum of decimal `value` over the rows start..end of a frame sorted by partition, as
    DECIMAL(38, scale); `start`, `end` and `first` (the partition's first row) are row numbers of the whole frame.
    NULLs count as 0. A sum beyond 38 digits makes the final cast raise."""

    def window(prefix: pl.Expr, zero: pl.Expr) -> pl.Expr:
        before = pl.when(start > first).then(prefix.gather((start - 1).clip(0))).otherwise(zero)
        return prefix.gather(end) - before

    exact = window(unscaled(value).fill_null(0).cum_sum().over(partition), pl.lit(0, pl.Int128))  # wraps: see above
    estimate = window(value.cast(pl.Float64).fill_null(0).cum_sum().over(partition), pl.lit(0.0))
    return _checked(exact, estimate, scale)


def is_overflow(err: BaseException) -> bool:
    """Whether a Polars error is a decimal overflow (a checked addition, or a strict cast to a decimal)."""
    text = str(err)
    return "overflow in decimal" in text or ("to `decimal[" in text and "failed" in text)


def overflow_error(calls: list[AggCall], what: str, epoch: int) -> DecimalOverflow:
    """The one-line error for an overflow in operator `what` during `epoch`, naming its decimal aggregates."""
    sums = [c for c in calls if c.function in ("SUM", "AVG") and is_decimal(c.dtype)]
    names = [c.sql or c.function for c in sums]
    types = sorted({types_name(c.dtype) for c in sums})
    listed = ", ".join(names) or "a decimal aggregate"
    return DecimalOverflow(
        f"{listed} in {what} overflowed its type ({', '.join(types)}) in epoch {epoch}; nothing of that epoch "
        "was committed. Move the input that overflows aside, or CAST the argument to DOUBLE or to fewer decimal "
        "places, then run again"
    )


@contextlib.contextmanager
def overflow_guard(calls: list[AggCall], state_id: str, epoch: int) -> Iterator[None]:
    """Turn a decimal overflow inside an operator's epoch into the one-line `DecimalOverflow`."""
    try:
        yield
    except (pl.exceptions.ComputeError, pl.exceptions.InvalidOperationError) as err:
        if is_overflow(err):  # a sum beyond DECIMAL(38): one clear line instead of a Polars trace
            raise overflow_error(calls, f"operator '{state_id}'", epoch) from None
        raise
