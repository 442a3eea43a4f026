"""JSON lines: one object per line, read the same way whatever slice a line falls in.

Two readers parse a slice: Polars' vectorised JSON reader (the fast path) and `json.loads` line by line (the exact
path, taken when a slice holds a line the fast reader rejects or might read differently). Results must not depend
on epoch size, so every line is read as the exact path reads it:

- a number is text in the fast reader's form (shortest round-trip digits, no exponent, no `.0`);
- a key given twice in an object takes its last value (as `json.loads`, Jackson and JavaScript do);
- `NaN`, `Infinity` and numbers beyond DOUBLE's range are not JSON: the record is a dead letter;
- a record nested deeper than `MAX_DEPTH` levels, or holding a lone UTF-16 surrogate (`"\\ud800"`), is a dead letter.

Lines that could meet the last three rules or repeat a declared key are found with vectorised string tests and
send their slice to the exact path; every other line reads the same on both paths.
"""

from __future__ import annotations

import json
import math
import re
from decimal import Decimal
from typing import Any

import polars as pl

from engine.sources.base import DEAD_LETTER_SCHEMA

#: deeper records are dead letters; `json.loads` recurses once per level, within Python's recursion limit
MAX_DEPTH = 500

_OPENERS = r"[\[{]"
_HIGH = r"\\u[dD][89abAB][0-9a-fA-F]{2}"
_LOW = r"\\u[dD][c-fC-F][0-9a-fA-F]{2}"
_PAIR = _HIGH + _LOW
#: a `\u` escape inside an object key: the key may spell a declared name another way
_ESCAPED_KEY = r'\\u[0-9a-fA-F]{4}(?:[^"\\]|\\.)*"\s*:'
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_BRACKETS = re.compile(r"[\[\]{}]")
_LONE = re.compile(f"{_HIGH}(?!{_LOW})|(?<!{_HIGH}){_LOW}")

_JSON_NUMBER = r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?"


class Parsed:
    def __init__(self, rows: pl.DataFrame, ok: pl.Series, dead: pl.DataFrame | None = None) -> None:
        self.rows = rows
        self.ok = ok
        self.dead = dead if dead is not None else pl.DataFrame(schema=DEAD_LETTER_SCHEMA)


def parse_json(context: pl.DataFrame, schema: dict[str, pl.DataType]) -> Parsed:
    """The declared fields of each line of `context["raw"]` as text; lines that are not records are dead letters."""
    names = list(schema)
    text = quote_decimals(context.get_column("raw"), schema)
    if not _needs_exact_path(text, names):
        try:
            decoded = text.str.json_decode(pl.Struct({n: pl.String for n in names}))
            if decoded.null_count():
                raise ValueError("non-object line")
            return Parsed(
                decoded.struct.unnest() if names else pl.DataFrame(),
                pl.Series([True] * context.height, dtype=pl.Boolean),
            )
        except (pl.exceptions.PolarsError, ValueError):
            pass
    # The exact path, taken only for slices with bad or unusual records: they are read one by one.
    rows: list[dict[str, str | None]] = []
    ok: list[bool] = []
    dead: list[dict[str, Any]] = []
    for record, line in zip(context.iter_rows(named=True), text, strict=True):
        reason = None
        try:
            value = loads(line)
        except ValueError as err:
            reason = f"malformed JSON: {err}"
        else:
            if not isinstance(value, dict):
                reason = "malformed JSON: the record is not a JSON object"
        if reason is not None:
            ok.append(False)
            dead.append({**record, "reason": reason})
            continue
        ok.append(True)
        rows.append({n: as_text(value.get(n)) for n in names})
    frame = pl.DataFrame(rows, schema={n: pl.String for n in names}) if names else pl.DataFrame()
    return Parsed(frame, pl.Series(ok, dtype=pl.Boolean), pl.DataFrame(dead, schema=DEAD_LETTER_SCHEMA))


def _needs_exact_path(text: pl.Series, names: list[str]) -> bool:
    """Whether a line of `text` might be read differently by the fast reader (see the module's rules). Cheap
    literal tests come first, so that usual slices pay little for the rare ones."""
    if text.is_empty():
        return False
    if (text.str.len_bytes() >= MAX_DEPTH).any() and (text.str.count_matches(_OPENERS) >= MAX_DEPTH).any():
        return True
    escapes = text.str.contains("\\u", literal=True)
    if escapes.any():
        escaped = text.filter(escapes)
        pairs = escaped.str.count_matches(_PAIR)
        if (
            (escaped.str.count_matches(_HIGH) != pairs).any()
            or (escaped.str.count_matches(_LOW) != pairs).any()
            or escaped.str.contains(_ESCAPED_KEY).any()
        ):
            return True
    for name in names:
        # `"name":` cannot occur inside a JSON string (its quotes would be escaped), but can in a nested object. A
        # name beyond ASCII is looked for as written (a key spelled with `\u` escapes takes the exact path anyway).
        quoted = json.dumps(name, ensure_ascii=False)
        twice = text.str.count_matches(quoted, literal=True) >= 2
        if twice.any() and (text.filter(twice).str.count_matches(re.escape(quoted) + r"\s*:") >= 2).any():
            return True
    return False


def loads(line: str) -> Any:
    """`json.loads` under the rules of this module: ValueError for what they refuse."""
    if line.count("[") + line.count("{") >= MAX_DEPTH and _depth(line) > MAX_DEPTH:
        raise ValueError(f"nested deeper than {MAX_DEPTH} levels")
    try:
        value = json.loads(line, parse_constant=_no_constant, parse_float=_finite_float)
    except RecursionError:
        raise ValueError(f"nested deeper than {MAX_DEPTH} levels") from None
    if "\\u" in line and _LONE.search(line) and _has_lone_surrogate(value):
        raise ValueError("a lone UTF-16 surrogate (\\ud800-\\udfff) is not a character")
    return value


def _no_constant(name: str) -> float:
    raise ValueError(f'{name} is not a JSON number (write it as a string, "{name}", for a DOUBLE column)')


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"the number {text[:40]} is out of DOUBLE's range")
    return value


def _depth(line: str) -> int:
    depth = deepest = 0
    for bracket in _BRACKETS.findall(_STRING.sub('""', line)):
        depth += 1 if bracket in "[{" else -1
        deepest = max(deepest, depth)
    return deepest


def _has_lone_surrogate(value: Any) -> bool:
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def as_text(value: Any) -> str | None:
    """A parsed JSON value as the text the fast reader gives for it."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        # Shortest round-trip digits, positional: 1.0 -> "1", 1e20 -> "100000000000000000000", 1.5e-7 -> "0.00000015"
        return format(Decimal(repr(value)).normalize(), "f")
    if isinstance(value, dict | list):
        return json.dumps(value)
    return str(value)


def quote_decimals(raw: pl.Series, schema: dict[str, pl.DataType]) -> pl.Series:
    """The JSON lines with the bare numbers of DECIMAL columns quoted: JSON readers turn numbers into floats,
    which would round 1234567890123456.01; as text they convert to DECIMAL exactly. `"name":` cannot occur
    inside a JSON string (its quotes would be escaped), so only that field's values are rewritten."""
    for name, dtype in schema.items():
        if isinstance(dtype, pl.Decimal):
            key = re.escape(json.dumps(name, ensure_ascii=False))
            raw = raw.str.replace_all(f"({key}\\s*:\\s*)({_JSON_NUMBER})", '${1}"${2}"')
    return raw
