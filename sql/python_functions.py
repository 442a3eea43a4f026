"""`CREATE FUNCTION f AS 'module.fn' LANGUAGE PYTHON`: what the imported object may be, and the UDF it becomes.

Importing is code loading, which `sql/` never does: the engine injects a `FunctionLoader` (engine/python_functions.py)
and the planner asks it for the object named by the class name; this module only judges that object:
- a function decorated with `@udf(<type>)` (its declared result type) -> a scalar UDF under the new name;
- an aggregate made by `udaf(...)` -> a UDAF under the new name;
- a plain function whose parameters and result carry type hints this module can map (int, float, str, bool,
  bytes, date, datetime, each optionally `| None`) -> a scalar UDF called once per row, as Flink calls a
  general (non-pandas) Python UDF; NULL arrives as None.
Anything else (a class, a module, a builtin without hints, a function over Series without `@udf`) is refused.
"""

from __future__ import annotations

import datetime as dt
import inspect
import re
import types as pytypes
import typing
from collections.abc import Callable, Sequence
from dataclasses import replace

import polars as pl

from sql.errors import SqlError
from sql.udf import UDF_ATTRIBUTE, AggregateUdf, ScalarUdf

#: (module, attribute) -> the object; raises LookupError with one line saying why it cannot be had
FunctionLoader = Callable[[str, str], object]

#: a dotted Python name: never a file path, so where the code comes from is the Python path's business
CLASS_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+$")

_HINTS: dict[object, pl.DataType] = {
    int: pl.Int64(),
    float: pl.Float64(),
    str: pl.String(),
    bool: pl.Boolean(),
    bytes: pl.Binary(),
    dt.date: pl.Date(),
    dt.datetime: pl.Datetime("us", "UTC"),
}


class NotAFunction(ValueError):
    """The imported object cannot be a SQL function; the message says why, in one line."""


def split_class_name(text: str) -> tuple[str, str]:
    """'pkg.module.fn' -> ('pkg.module', 'fn'); a path or a bare name is refused."""
    if not CLASS_NAME.match(text):
        raise NotAFunction(
            f"'{text}' is not a Python name of the form 'module.function' (a module on the Python path or in the "
            "pipeline's folder; file paths are not accepted)"
        )
    module, _, attribute = text.rpartition(".")
    return module, attribute


def as_function(name: str, obj: object, where: str) -> ScalarUdf | AggregateUdf:
    """The SQL function `name` made from `obj` (found at `where`, for messages)."""
    if isinstance(obj, AggregateUdf):
        return replace(obj, name=name)
    declared = getattr(obj, UDF_ATTRIBUTE, None)
    if isinstance(declared, ScalarUdf):
        return ScalarUdf(name, declared.function, declared.return_type)
    if not inspect.isfunction(obj):
        kind = "a class" if inspect.isclass(obj) else "a module" if inspect.ismodule(obj) else type(obj).__name__
        raise NotAFunction(
            f"'{where}' is {kind}, not a function: a Python function decorated with @udf(<result type>), an "
            "aggregate made by udaf(...), or a function with type hints"
        )
    return _hinted(name, obj, where)


def _hinted(name: str, fn: Callable[..., object], where: str) -> ScalarUdf:
    try:
        hints = typing.get_type_hints(fn)
    except Exception as err:  # an annotation that does not evaluate
        raise NotAFunction(f"'{where}': its type hints cannot be read ({type(err).__name__}: {err})") from None
    parameters = list(inspect.signature(fn).parameters.values())
    if not parameters or any(p.kind not in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in parameters):
        raise NotAFunction(f"'{where}' must take one or more positional parameters")
    if any(hints.get(p.name) is pl.Series for p in parameters) or hints.get("return") is pl.Series:
        raise NotAFunction(
            f"'{where}' works on Polars Series but declares no SQL result type: decorate it with @udf(<type>)"
        )
    for parameter in parameters:
        if _dtype(hints.get(parameter.name)) is None:
            raise NotAFunction(f"'{where}': parameter '{parameter.name}' needs a type hint ({_KNOWN})")
    result = _dtype(hints.get("return"))
    if result is None:
        raise NotAFunction(f"'{where}' needs a result type hint ({_KNOWN}), or @udf(<type>)")
    return ScalarUdf(name, _per_row(fn, result, name, where), result)


_KNOWN = "int, float, str, bool, bytes, date or datetime, optionally | None"


def _dtype(hint: object) -> pl.DataType | None:
    """The Polars type of a hint: `int`, `int | None`, `Optional[int]`."""
    if isinstance(hint, pytypes.UnionType) or typing.get_origin(hint) is typing.Union:
        rest = [a for a in typing.get_args(hint) if a is not type(None)]
        return _dtype(rest[0]) if len(rest) == 1 else None
    return _HINTS.get(hint)


def _per_row(fn: Callable[..., object], result: pl.DataType, name: str, where: str) -> Callable[..., pl.Series]:
    """A row-at-a-time function over whole Series (the user chose a per-row function; `@udf` is vectorised).

    An exception from the user's code, or a value of another type than its result hint, stops the pipeline (as a
    failing UDF fails a Flink job) with one line naming the function and the arguments, a user error (exit 2), not
    an "internal error" with the engine's traceback."""

    def call(*series: Sequence[object]) -> pl.Series:
        columns = [s.to_list() if isinstance(s, pl.Series) else list(s) for s in series]
        values = []
        for row in zip(*columns, strict=True):
            try:
                values.append(fn(*row))
            except Exception as err:
                raise SqlError(f"function {name} ('{where}') failed on {_shown(row)}: {_first_line(err)}") from None
        try:
            return pl.Series(values, dtype=result, strict=True)
        except (TypeError, OverflowError, pl.exceptions.PolarsError) as err:
            raise SqlError(
                f"function {name} ('{where}') returned a value that is not {result}: {_first_line(err)}"
            ) from None

    return call


def _first_line(err: Exception) -> str:
    text = str(err).strip()
    return f"{type(err).__name__}: {text.splitlines()[0]}" if text else type(err).__name__


def _shown(row: tuple[object, ...]) -> str:
    text = repr(row[0]) if len(row) == 1 else repr(row)
    return text if len(text) <= 200 else text[:200] + "..."
