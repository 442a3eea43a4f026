"""What operator state must hold, checked before `state edit` or `state bootstrap` writes it.

The engine keeps an aggregate's partial state in columns it alone maintains; an edit or a bootstrap that breaks
their relations (a negative count, a sum missing while values were counted) makes every later result wrong
without any error. These checks refuse such rows in one line naming the column, the key and the value; they are
vectorised filters over the rows the edit changed (or every row a bootstrap loads).
"""

from __future__ import annotations

import contextlib
import re
from typing import Any

import polars as pl

from engine.errors import VersioningError
from engine.operators.aggregates import ROWS

#: calls whose partial columns the checks understand: COUNT's count, SUM's and AVG's sum and count
CHECKED = ("COUNT", "SUM", "AVG")
#: the window bounds a window TVF adds to a windowed operator's keys
WINDOW_BOUNDS = ("window_start", "window_end", "window_time", "slice_start", "slice_end")


class EditRefused(VersioningError):
    """A state edit or bootstrap that would leave the state inconsistent, or that reaches beyond the state
    tables."""


StateInconsistent = EditRefused


def valid_savepoint_name(name: Any) -> str:
    """The rule `savepoint create` applies: a name, not empty."""
    if not isinstance(name, str) or not name.strip():
        raise VersioningError(f"a savepoint needs a name, not {name!r}")
    return name


def describe_key(row: dict[str, Any], keys: list[str]) -> str:
    return ", ".join(f"{k}={_show(row[k])}" for k in keys) if keys else "the one group"


def _show(value: Any) -> str:
    return (
        repr(value)
        if isinstance(value, str) or value is None
        else f"'{value}'"
        if hasattr(value, "year")
        else str(value)
    )


def check_duplicates(frame: pl.DataFrame, keys: list[str], where: str, edited: bool) -> None:
    """Keys unique: names the first repeated key and how many rows hold it."""
    if not keys:
        return
    counted = frame.group_by(keys, maintain_order=True).len(name="__n").filter(pl.col("__n") > 1)
    if counted.height:
        row = counted.row(0, named=True)
        verb, be = ("stay", "would be") if edited else ("be", "is")
        raise EditRefused(f"{where}: keys must {verb} unique, but {describe_key(row, keys)} {be} in {row['__n']} rows")


def check_partials(
    frame: pl.DataFrame, calls: list[tuple[str, str, bool, list[str]]], keys: list[str], where: str
) -> pl.DataFrame:
    """Refuse rows whose partial aggregates no input could produce; returns `frame` with the NULL sums of groups
    that counted no value stored as the engine stores them (0: a NULL value adds 0 to the sum).

    Every COUNT/SUM/AVG count is >= 0 and <= `__rows` (a group's input rows); a SUM/AVG sum is not NULL once a
    value is counted."""
    fixes = []
    for sql, function, distinct, columns in calls:
        if function not in CHECKED or distinct:
            continue
        count = next((c for c in columns if c.endswith("__count")), None)
        total = next((c for c in columns if c.endswith("__sum")), None)
        if count is None or count not in frame.columns:
            continue
        bad = pl.col(count).is_null() | (pl.col(count) < 0)
        if ROWS in frame.columns:
            bad = bad | (pl.col(count) > pl.col(ROWS))
        _refuse(frame, bad, count, keys, where, f"{sql} counts values of the group's {ROWS} input rows: 0..{ROWS}")
        if total is not None and total in frame.columns:
            missing = pl.col(total).is_null() & (pl.col(count) > 0)
            _refuse(frame, missing, total, keys, where, f"{sql} counted values ({count} > 0), so its sum is not NULL")
            # what the engine stores for a group that counted no value: 0 (each NULL value adds 0)
            if not frame.schema[total].is_float():  # a DOUBLE sum may keep rounding residue after retractions
                stray = (pl.col(count) == 0) & pl.col(total).is_not_null() & (pl.col(total) != 0)
                _refuse(frame, stray, total, keys, where, f"{sql} counted no value ({count} = 0), so its sum is 0")
            fixes.append(
                pl.when(pl.col(total).is_null() & (pl.col(count) == 0))
                .then(pl.lit(0).cast(frame.schema[total]))
                .otherwise(pl.col(total))
                .alias(total)
            )
    return frame.with_columns(fixes) if fixes else frame


def _refuse(frame: pl.DataFrame, bad: pl.Expr, column: str, keys: list[str], where: str, rule: str) -> None:
    found = frame.filter(bad.fill_null(True))
    if found.height:
        row = found.row(0, named=True)
        others = f" (and {found.height - 1} more rows)" if found.height > 1 else ""
        raise StateInconsistent(f"{where}: {column} = {row[column]!r} at {describe_key(row, keys)}{others}; {rule}")


def lossless_cast(frame: pl.DataFrame, expected: dict[str, pl.DataType], where: str) -> pl.DataFrame:
    """`frame` cast to `expected`, column by column; a value that does not fit or would change (a decimal
    rounded to fewer digits) is refused naming the column and the value."""
    columns = []
    for name, dtype in expected.items():
        given = frame.get_column(name)
        cast = given.cast(dtype, strict=False)
        lost = given.is_not_null() & cast.is_null()
        if not lost.any() and given.dtype != dtype and given.dtype != pl.Null():
            # a type that does not cast back (a timestamp's zone): the strict cast below decides
            with contextlib.suppress(pl.exceptions.PolarsError):
                lost = lost | (cast.cast(given.dtype, strict=False) != given).fill_null(True) & given.is_not_null()
        if lost.any():
            value = given.filter(lost).item(0)
            raise StateInconsistent(
                f"{where}: column {name} cannot hold {value!r} as {_type_name(dtype)} without changing it"
            )
        try:
            columns.append(given.cast(dtype, strict=True))
        except pl.exceptions.PolarsError as err:
            raise StateInconsistent(f"{where}: column {name}: {str(err).splitlines()[0]}") from None
    return pl.DataFrame(columns)


def _type_name(dtype: pl.DataType) -> str:
    from sql import types

    try:
        return str(types.sql_name(dtype))
    except Exception:  # a type SQL has no name for: Polars'
        return str(dtype)


def derived_columns(columns: list[str]) -> list[str]:
    """A join's hidden derived key columns (`__k0`, ...) and a multiplicity (`__count`), which only the
    operator computes correctly from a row."""
    return [c for c in columns if re.fullmatch(r"__k\d+", c) or c == "__count"]


def window_bounds(keys: list[str], record: dict[str, Any]) -> list[str]:
    """The window bounds among a windowed operator's state keys."""
    if not record.get("window") and "window" not in str(record.get("kind", "")):
        return []
    return [k for k in keys if k in WINDOW_BOUNDS]


def cast_back(after: pl.DataFrame, before: pl.DataFrame, keys: list[str], name: str) -> pl.DataFrame:
    """The edited rows typed as the table is; a value that does not fit is refused naming column and key."""
    casts = []
    for column in after.columns:
        if column not in before.schema or after.schema[column] == before.schema[column]:
            continue
        dtype, given = before.schema[column], after.get_column(column)
        lost = after.filter(given.is_not_null() & given.cast(dtype, strict=False).is_null())
        if lost.height:
            from sql.types import sql_name

            row = lost.row(0, named=True)
            raise StateInconsistent(
                f"{name}: type error: column {column} ({sql_name(dtype)}) cannot hold {row[column]!r} "
                f"(at {describe_key(row, keys)})"
            )
        casts.append(pl.col(column).cast(dtype, strict=True))
    try:
        return after.with_columns(casts) if casts else after
    except pl.exceptions.PolarsError as err:
        raise EditRefused(f"{name}: type error: {str(err).splitlines()[0]}") from None


def check_shape(entry: Any, table: Any, record: dict[str, Any], inserted: pl.DataFrame, updated: pl.DataFrame) -> None:
    """Rows only the operator can make: a join's (derived join keys, multiplicities) and a window's bounds.
    `entry` and `table` are state_edit's TableEntry and Edited."""
    hidden = derived_columns(list(table.before.columns))
    if hidden and (inserted.height or updated.height):
        raise EditRefused(
            f"{entry.name}: a join's rows carry derived join keys and multiplicities ({', '.join(hidden)}); "
            "delete rows, or let the input change them"
        )
    bounds = window_bounds(table.keys, record)
    if bounds and inserted.height:
        raise EditRefused(
            f"{entry.name}: an edit may change a window's values or delete it, not create windows "
            "(only the window function makes bounds that match its size and alignment)"
        )
    if bounds and updated.height and (moved := [b for b in bounds if b in table.set_columns]):
        raise EditRefused(
            f"{entry.name}: an edit may change a window's values or delete it, not move it "
            f"(it sets {', '.join(moved)}: a window bound)"
        )
