"""Flink's temporal functions as Polars expressions. Times are UTC inside the engine (the session time zone).

The current time (CURRENT_TIMESTAMP, NOW(), CURRENT_DATE, CURRENT_ROW_TIMESTAMP(), UNIX_TIMESTAMP()) is the
epoch's processing time, which the engine logs when it plans the epoch, so that a replayed epoch sees the same
value. Only a computed column of CREATE TABLE can see it (as PROCTIME() does); anywhere else these functions are
refused, since a clock read at evaluation would differ between a run and its replay.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

import polars as pl
from sqlglot import exp

from sql import types
from sql.errors import SqlError, UnsupportedError, error_at
from sql.functions.common import Builder, arguments, double, integer, literal_string, null_if_any, refuse, string
from sql.values import java_to_strftime, parse_timestamp

if TYPE_CHECKING:
    from sql.expressions import ExprCompiler

#: unit -> Polars duration suffix (`offset_by`, `truncate`)
_UNITS = {
    "MILLISECOND": "ms",
    "SECOND": "s",
    "MINUTE": "m",
    "HOUR": "h",
    "DAY": "d",
    "WEEK": "w",
    "MONTH": "mo",
    "QUARTER": "q",
    "YEAR": "y",
}
_MILLIS = {"MILLISECOND": 1, "SECOND": 1000, "MINUTE": 60_000, "HOUR": 3_600_000, "DAY": 86_400_000}
_MILLIS["WEEK"] = 7 * _MILLIS["DAY"]
_MONTHS = {"MONTH": 1, "QUARTER": 3, "YEAR": 12}
#: Flink's TIMESTAMP range (years 0000 to 9999) in milliseconds since 1970. A value outside it becomes NULL: Polars
#: computes such a timestamp but panics when it converts or formats it (the Delta sink's microseconds, strftime),
#: which would stop the pipeline on one bad value.
MIN_MS, MAX_MS = -62_167_219_200_000, 253_402_300_799_999
#: the most of each unit that stays inside that range (10,000 years), so that `offset_by` never overflows
_MOST = {unit: 10_000 * 366 * 86_400_000 // ms for unit, ms in _MILLIS.items()} | {
    unit: 10_000 * 12 // months for unit, months in _MONTHS.items()
}
_DEFAULT_FORMAT = "yyyy-MM-dd HH:mm:ss"


def _unit(node: exp.Expr, allowed: dict[str, object], what: str) -> str:
    unit_node = node.args.get("unit") or node.args.get("to")
    unit = (unit_node.name if unit_node is not None else "").upper()
    unit = {"FRAC_SECOND": "MILLISECOND", "SQL_TSI_DAY": "DAY"}.get(unit, unit)
    if unit not in allowed:
        raise error_at(node, f"{what} does not support the unit {unit or '(none)'}", UnsupportedError)
    return unit


def _timestamp(c: ExprCompiler, node: exp.Expr) -> pl.Expr:
    value, dtype = c.typed(node)
    if isinstance(dtype, pl.Date):
        return value.cast(pl.Datetime("ms")).dt.replace_time_zone("UTC")
    if isinstance(dtype, pl.String):
        return c._temporal(node)
    if not isinstance(dtype, pl.Datetime):
        raise error_at(node, f"expected a TIMESTAMP or DATE, got {types.sql_name(dtype)}: {node.sql()}")
    return value


def _timestampadd(c: ExprCompiler, node: exp.Expr) -> pl.Expr:
    """TIMESTAMPADD(unit, n, t): calendar units keep the day where the month has it, else its last day."""
    unit = _unit(node, _UNITS, "TIMESTAMPADD")
    amount = integer(c, node.expression)
    value, dtype = c.typed(node.this)
    if not (isinstance(dtype, pl.Date) and unit in ("DAY", "WEEK", "MONTH", "QUARTER", "YEAR")):
        value = _timestamp(c, node.this)
    amount = pl.when(amount.abs() <= _MOST[unit]).then(amount)  # further is outside the range anyway
    return in_range(value.dt.offset_by(pl.concat_str([amount.cast(pl.String), pl.lit(_UNITS[unit])])))


def in_range(value: pl.Expr) -> pl.Expr:
    """A DATE or TIMESTAMP, NULL where it lies outside Flink's range (MIN_MS..MAX_MS)."""
    return pl.when(value.dt.epoch("ms").is_between(MIN_MS, MAX_MS)).then(value)


def _timestampdiff(c: ExprCompiler, node: exp.Expr) -> pl.Expr:
    """TIMESTAMPDIFF(unit, start, end): whole units from start to end, toward zero; months as Flink (Calcite)
    counts them: the most m with start + m months <= end."""
    unit = _unit(node, {**_MILLIS, **_MONTHS}, "TIMESTAMPDIFF")
    # sqlglot keeps TIMESTAMPDIFF(unit, start, end) as this=end, expression=start
    start, end = _timestamp(c, node.expression), _timestamp(c, node.this)
    if unit in _MILLIS:
        millis = (end - start).dt.total_milliseconds()
        whole = millis.abs() // _MILLIS[unit]
        return pl.when(millis < 0).then(-whole).otherwise(whole).cast(pl.Int32)
    low, high = pl.min_horizontal(start, end), pl.max_horizontal(start, end)
    estimate = (high.dt.year() - low.dt.year()).cast(pl.Int64) * 12 + (high.dt.month() - low.dt.month())
    landed = low.dt.offset_by(pl.concat_str([estimate.cast(pl.String), pl.lit("mo")]))
    months = pl.when(landed > high).then(estimate - 1).otherwise(estimate)
    signed = pl.when(end < start).then(-months).otherwise(months)
    whole = signed.abs() // _MONTHS[unit]
    return null_if_any(pl.when(signed < 0).then(-whole).otherwise(whole), start, end).cast(pl.Int32)


def floor_ceil(c: ExprCompiler, node: exp.Expr) -> pl.Expr:
    """FLOOR(t TO unit) / CEIL(t TO unit). WEEK is refused: where a week starts differs between engines."""
    allowed = {k: v for k, v in _UNITS.items() if k != "WEEK"}
    unit = _unit(node, allowed, f"{'FLOOR' if isinstance(node, exp.Floor) else 'CEIL'}(... TO unit)")
    value, dtype = c.typed(node.this)
    if not types.is_temporal(dtype):
        value = _timestamp(c, node.this)
    if isinstance(dtype, pl.Date) and unit in _MILLIS:
        return value  # a date is already whole days
    every = "1" + _UNITS[unit]
    floor = value.dt.truncate(every)
    if isinstance(node, exp.Floor):
        return floor
    return pl.when(floor == value).then(value).otherwise(floor.dt.offset_by(every))


def _java_format(node: exp.Expr | None, default: str) -> str:
    pattern = literal_string(node, "the date pattern") if node is not None else default
    try:
        return java_to_strftime(pattern)
    except SqlError as err:
        raise error_at(node, err.message) from None


def _to_date(c: ExprCompiler, node: exp.Expr) -> pl.Expr:
    args = arguments(node, 1, 2, name="TO_DATE")
    fmt = _java_format(args[1] if len(args) == 2 else None, "yyyy-MM-dd")
    return string(c, args[0]).str.to_date(fmt, strict=False)


def _unix_timestamp(c: ExprCompiler, node: exp.Expr) -> pl.Expr:
    """UNIX_TIMESTAMP(s [, pattern]): seconds since 1970 UTC; Long.MIN_VALUE when s does not parse (Flink)."""
    args = arguments(node, 0, 2, name="UNIX_TIMESTAMP")
    if not args:
        return _current(lambda now: now.dt.epoch("s"))(c, node)
    fmt = _java_format(args[1] if len(args) == 2 else None, _DEFAULT_FORMAT)
    text = string(c, args[0])
    parsed = text.str.to_datetime(fmt, strict=False, time_unit="ms", time_zone="UTC")
    return pl.when(text.is_null()).then(None).otherwise(parsed.dt.epoch("s").fill_null(-(2**63)))


def _from_unixtime(c: ExprCompiler, node: exp.Expr) -> pl.Expr:
    args = arguments(node, 1, 2, name="FROM_UNIXTIME")
    fmt = _java_format(args[1] if len(args) == 2 else None, _DEFAULT_FORMAT)
    millis = (double(c, args[0]) * 1000).floor()
    millis = pl.when(millis.is_between(MIN_MS, MAX_MS)).then(millis).cast(pl.Int64)  # NaN and inf: NULL too
    return pl.from_epoch(millis, time_unit="ms").dt.strftime(fmt)


def _zone(node: exp.Expr) -> str:
    zone = literal_string(node, "the time zone")
    try:
        pl.select(pl.lit(dt.datetime(2000, 1, 1)).dt.replace_time_zone(zone)).item()
    except (pl.exceptions.PolarsError, ValueError):
        raise error_at(node, f"unknown time zone '{zone}' (use an IANA name such as 'America/Los_Angeles')") from None
    return zone


def _convert_tz(c: ExprCompiler, node: exp.Expr) -> pl.Expr:
    """CONVERT_TZ(s, from, to): the wall-clock text s, read in zone `from`, as wall-clock text in zone `to`."""
    text_node, source_node, target_node = arguments(node, 3, name="CONVERT_TZ")
    source, target = _zone(source_node), _zone(target_node)
    wall = string(c, text_node).str.to_datetime("%Y-%m-%d %H:%M:%S", strict=False, time_unit="ms")
    moved = wall.dt.replace_time_zone(source, ambiguous="earliest", non_existent="null").dt.convert_time_zone(target)
    return moved.dt.strftime("%Y-%m-%d %H:%M:%S")


def _current(shape: object) -> Builder:
    def build(c: ExprCompiler, node: exp.Expr) -> pl.Expr:
        from sql.expressions import PROCTIME_COLUMN  # the compiler imports this package: import at call time

        if PROCTIME_COLUMN not in c.scope.schema:
            raise error_at(
                node,
                f"{node.sql()} is only allowed in a computed column of CREATE TABLE (`ts AS {node.sql()}`), "
                "where it is the epoch's logged processing time: evaluated anywhere else, a replayed epoch "
                "would read a different clock",
                UnsupportedError,
            )
        return shape(pl.col(PROCTIME_COLUMN))  # type: ignore[operator]

    return build


BY_NODE: dict[type, Builder] = {
    exp.TimestampAdd: _timestampadd,
    exp.TimestampDiff: _timestampdiff,
    exp.CurrentTimestamp: _current(lambda now: now),
    exp.CurrentDate: _current(lambda now: now.dt.date()),
}

BY_NAME: dict[str, Builder] = {
    "TO_DATE": _to_date,
    "UNIX_TIMESTAMP": _unix_timestamp,
    "FROM_UNIXTIME": _from_unixtime,
    "CONVERT_TZ": _convert_tz,
    "NOW": _current(lambda now: now),
    "CURRENT_ROW_TIMESTAMP": _current(lambda now: now),
    "CURRENT_WATERMARK": refuse(
        "watermarks advance per epoch and per operator here, not per row; filter late rows with the table's "
        "WATERMARK and the operators' lateness rules instead"
    ),
}

_NO_TIME = "there is no TIME type; use CURRENT_TIMESTAMP (in a computed column) and DATE_FORMAT"

#: bare words sqlglot reads as column names (the compiler asks here when no column has that name)
BARE_WORDS: dict[str, Builder] = {
    "LOCALTIMESTAMP": _current(lambda now: now),
    "CURRENT_TIME": refuse(_NO_TIME),
    "LOCALTIME": refuse(_NO_TIME),
}


# -- the first temporal functions (DATE_FORMAT, TO_TIMESTAMP_LTZ, TO_TIMESTAMP), named by sql/expressions.py ----
def date_format(c: ExprCompiler, node: exp.Expr, args: list[exp.Expr]) -> pl.Expr:
    if len(args) != 2 or not (isinstance(args[1], exp.Literal) and args[1].is_string):
        raise error_at(node, "DATE_FORMAT(timestamp, 'literal pattern') expected")
    try:
        fmt = java_to_strftime(args[1].this)
    except SqlError as err:
        raise error_at(args[1], err.message) from None
    return c._temporal(args[0]).dt.strftime(fmt)


def to_timestamp_ltz(c: ExprCompiler, node: exp.Expr, args: list[exp.Expr]) -> pl.Expr:
    literal = len(args) < 2 or (isinstance(args[1], exp.Literal) and args[1].this.isdigit())
    precision = (int(args[1].this) if len(args) > 1 else 3) if literal else -1
    if precision not in (0, 3):
        raise error_at(node, "TO_TIMESTAMP_LTZ precision must be 0 (seconds) or 3 (milliseconds)")
    value = c.compile(args[0]).cast(pl.Int64, strict=False)
    # bounded before scaling: seconds * 1000 could wrap around Int64 back into the range
    millis = pl.when(value.is_between(MIN_MS // 1000, MAX_MS // 1000)).then(value * 1000) if precision == 0 else value
    millis = pl.when(millis.is_between(MIN_MS, MAX_MS)).then(millis)
    return millis.cast(pl.Datetime("ms")).dt.replace_time_zone("UTC")


def to_timestamp(c: ExprCompiler, node: exp.Expr, args: list[exp.Expr]) -> pl.Expr:
    value = c._string_arg(args[0])
    if len(args) == 1:
        return parse_timestamp(value, types.timestamp(3))
    if not (isinstance(args[1], exp.Literal) and args[1].is_string):
        raise error_at(node, "TO_TIMESTAMP(string, 'literal pattern') expected")
    fmt = java_to_strftime(args[1].this)
    return value.str.to_datetime(fmt, strict=False, time_zone="UTC", time_unit="ms")
