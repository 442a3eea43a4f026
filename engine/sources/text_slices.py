"""The fast path for JSON-lines and CSV slices of the filesystem source: a slice's bytes go to Polars' readers
whole, and the declared types come out of them, with no Python object per line.

A segment's bytes are indexed once (`Lines`: where each line starts, found by one vectorised scan), so a slice
`[lo, hi)` is one byte range. `read_json` and `read_csv` read it when cheap whole-buffer tests show that every line
reads there exactly as on the line-by-line path (engine.sources.json_lines' rules, the CSV field rules of
filesystem.py): no carriage return, BOM-free, valid UTF-8, no blank or oversized line, no `\\u` escape, no nesting
deep enough to matter, no declared key given twice, no quote in a CSV slice, every CSV line with the declared number
of fields. Anything else returns None and the slice takes the line-by-line path, which finds the bad lines and makes
them dead letters. Values that do not convert to their declared type are dead letters here too, with the same
reasons and line numbers as there.
"""

from __future__ import annotations

import json
import re

import numpy as np
import polars as pl
import pyarrow as pa

from engine.sources.base import SourceBatch, _from_text, dead_letters, in_range
from engine.sources.file_registry import UTF8_BOM, split_lines
from engine.sources.json_lines import MAX_DEPTH
from sql.types import sql_name

#: read by Polars' JSON reader straight into the declared type: it refuses (and the slice takes the exact path)
#: any JSON value that the text path would read differently (a string, a fraction, a boolean for an integer, ...)
DIRECT = (pl.Int64, pl.Float64, pl.Boolean, pl.String)
#: the text form of timestamps that most files hold: parsed in one pass when every value has it
COMMON_TIMESTAMP = "%Y-%m-%d %H:%M:%S%.f"


class Lines:
    """A segment's bytes (without a leading byte-order mark at a file's start) and its line bounds: line i is
    `data[bounds[i]:bounds[i + 1]]`, its newline included; a last line without one counts as a line."""

    def __init__(self, data: bytes, at_file_start: bool) -> None:
        if at_file_start and data.startswith(UTF8_BOM):
            data = data[len(UTF8_BOM) :]
        self.data = data
        newlines = np.flatnonzero(np.frombuffer(data, dtype=np.uint8) == 10)
        tail = [len(data)] if data and not data.endswith(b"\n") else []
        self.bounds = np.concatenate([[0], newlines + 1, tail]).astype(np.int64)

    @property
    def count(self) -> int:
        return len(self.bounds) - 1

    def chunk(self, lo: int, hi: int) -> bytes:
        return self.data[self.bounds[lo] : self.bounds[hi]]

    def as_list(self, lo: int, hi: int) -> list[bytes]:
        """Lines lo..hi as `split_lines` gives them (the line-by-line path)."""
        return split_lines(self.chunk(lo, hi), False)

    def line(self, index: int) -> bytes:
        return self.chunk(index, index + 1)

    def text(self, lo: int, hi: int) -> pl.Series | None:
        """Lines lo..hi as text, newlines removed, without copying them one by one; None if one is not UTF-8."""
        offsets = self.bounds[lo : hi + 1]
        array = pa.LargeBinaryArray.from_buffers(
            pa.large_binary(), hi - lo, [None, pa.py_buffer(offsets), pa.py_buffer(self.data)]
        )
        try:
            return pl.Series("raw", array).cast(pl.String).str.strip_suffix("\n")
        except pl.exceptions.PolarsError:
            return None

    def lengths(self, lo: int, hi: int) -> np.ndarray:
        return np.diff(self.bounds[lo : hi + 1])


def _plain(lines: Lines, lo: int, hi: int, limit: int) -> bytes | None:
    """The slice's bytes when no line is blank, oversized or ends in a carriage return."""
    lengths = lines.lengths(lo, hi)
    chunk = lines.chunk(lo, hi)
    # a length of 1 is a bare newline (a blank line); the line-by-line path skips blank lines
    # (a length counts the newline, which a last line may lack: a line of `limit` bytes takes the other path too)
    if not len(lengths) or lengths.min() <= 1 or lengths.max() > limit or b"\r" in chunk:
        return None
    return chunk


def read_json(
    lines: Lines,
    lo: int,
    hi: int,
    schema: dict[str, pl.DataType],
    required: tuple[str, ...],
    limit: int,
    file: str,
    first: int,
) -> SourceBatch | None:
    """Lines lo..hi (record numbers `first + lo` on) as typed rows and dead letters, or None: take the exact path."""
    names = list(schema)
    if not names or any(isinstance(t, pl.Decimal) or "Decimal" in str(t) for t in schema.values()):
        return None
    chunk = _plain(lines, lo, hi, limit)
    if chunk is None or b"\\u" in chunk:
        return None
    text = lines.text(lo, hi)  # (also the UTF-8 check)
    if text is None:
        return None
    if lines.lengths(lo, hi).max() >= MAX_DEPTH and (text.str.count_matches(r"[\[{]") >= MAX_DEPTH).any():
        return None
    direct = {n: t for n, t in schema.items() if isinstance(t, DIRECT)}
    try:
        frame = pl.read_ndjson(chunk, schema={n: direct.get(n, pl.String()) for n in names})
    except pl.exceptions.PolarsError:
        return None
    if frame.height != hi - lo:
        return None
    # (a nested column is read as its JSON text, which both paths give alike and `_from_text` reads)
    checks = [
        pl.col(n).str.starts_with("{") | pl.col(n).str.starts_with("[")
        for n in names
        if n not in direct and not isinstance(schema[n], pl.List | pl.Struct)
    ]
    checks += [
        pl.col(n).str.starts_with("{") | pl.col(n).str.starts_with("[") for n, t in direct.items() if t == pl.String
    ]
    checks += [pl.col(n).is_infinite() for n, t in direct.items() if t == pl.Float64]
    # a nested value read into text, or a number beyond DOUBLE's range: the exact path reads them
    if checks and frame.select(pl.any_horizontal(checks).any()).item():
        return None
    if _repeated_key(chunk, text, frame, names):
        return None
    return _typed(frame, schema, set(direct), required, text, file, first + lo)


def _repeated_key(chunk: bytes, text: pl.Series, frame: pl.DataFrame, names: list[str]) -> bool:
    """Whether a line might give a declared key twice (Polars takes the first value, the exact path the last).
    Each non-NULL value read needs its key once in its line; when all keys found number exactly those, no line
    repeats one. Otherwise the lines are counted one by one."""
    keys = [json.dumps(n, ensure_ascii=False) for n in names]
    present = sum(frame.height - frame.get_column(n).null_count() for n in names)
    # The usual file holds the declared keys only, each right before its colon: `":` counts them in one pass (a
    # key before white space and its colon, which that count would miss, shows as ` :` or a tab before `:`).
    buffer = np.frombuffer(chunk, dtype=np.uint8)
    before = buffer[np.flatnonzero(buffer[1:] == ord(":"))]  # the byte before each colon
    if (before == ord('"')).sum() == present and not ((before == ord(" ")) | (before == ord("\t"))).any():
        return False
    pattern = "(?:" + "|".join(re.escape(k) for k in keys) + r")\s*:"
    if text.str.count_matches(pattern).sum() == present:
        return False
    for key in keys:
        twice = text.str.count_matches(key, literal=True) >= 2
        if twice.any() and (text.filter(twice).str.count_matches(re.escape(key) + r"\s*:") >= 2).any():
            return True
    return False


def read_csv(
    lines: Lines,
    lo: int,
    hi: int,
    schema: dict[str, pl.DataType],
    required: tuple[str, ...],
    limit: int,
    file: str,
    first: int,
    names: list[str],
    delimiter: str,
) -> SourceBatch | None:
    """Lines lo..hi of a CSV file whose columns are `names` (the header's, or the declared ones), or None."""
    # (one column: a line of blanks would be a value here, and is skipped there)
    if hi <= lo or len(delimiter) != 1 or len(names) < 2:
        return None
    chunk = _plain(lines, lo, hi, limit)
    if chunk is None or b'"' in chunk:
        return None
    # Polars refuses a line with too many fields; with none too long, this total leaves none too short either.
    if chunk.count(delimiter.encode()) != (hi - lo) * (len(names) - 1):
        return None
    try:
        frame = pl.read_csv(
            chunk, has_header=False, new_columns=names, separator=delimiter, schema={n: pl.String for n in names}
        )
    except pl.exceptions.PolarsError:  # (invalid UTF-8, among others)
        return None
    if frame.height != hi - lo:
        return None
    present = set(names)
    frame = frame.select(pl.col(n) if n in present else pl.lit(None, dtype=pl.String).alias(n) for n in schema)
    return _typed(frame, schema, set(), required, None, file, first + lo, lines, lo)


def _typed(
    frame: pl.DataFrame,
    schema: dict[str, pl.DataType],
    direct: set[str],
    required: tuple[str, ...],
    text: pl.Series | None,
    file: str,
    position: int,
    lines: Lines | None = None,
    lo: int = 0,
) -> SourceBatch:
    """The text columns of `frame` (all but `direct`, read typed already) converted as `typed_from_text` does, with
    its reasons; a row with one is a dead letter at `position` + its index."""
    converted = {n: _convert(frame, n, t) for n, t in schema.items() if n not in direct}
    typed = {n: pl.col(f"{n}\x00typed") for n in converted}
    reasons = [
        pl.when(pl.col(n).is_not_null() & value.is_null()).then(
            pl.format(
                "column '{}': cannot read '{}' as {}",
                pl.lit(n),
                pl.col(n).str.slice(0, 80),
                pl.lit(sql_name(schema[n]) + (" (years 1-9999)" if isinstance(schema[n], pl.Datetime) else "")),
            )
        )
        for n, value in typed.items()
    ]
    reasons += [
        # (a text that does not convert has its own reason: only a missing one is reported here)
        pl.when(pl.col(n).is_null()).then(pl.lit(f"column '{n}' is NULL or missing, and it is the event time"))
        for n in required
    ]
    both = frame.with_columns(value.alias(f"{n}\x00typed") for n, value in converted.items())
    final = [typed[n].alias(n) if n in typed else pl.col(n) for n in schema]
    if not reasons:
        return SourceBatch(both.select(final))
    both = both.with_columns(pl.concat_str(reasons, separator="; ", ignore_nulls=True).alias("\x00reason"))
    bad = pl.col("\x00reason").is_not_null() & (pl.col("\x00reason") != "")
    rows = both.filter(~bad).select(final)
    if rows.height == frame.height:
        return SourceBatch(rows)
    failed = both.with_row_index("\x00index").filter(bad).select("\x00index", "\x00reason")
    index = failed.get_column("\x00index").cast(pl.Int64)
    if text is None:
        assert lines is not None
        text = lines.text(lo + int(index.min()), lo + int(index.max()) + 1)  # only the lines spanning the bad ones
        assert text is not None  # the slice was read as UTF-8
        raw = text.gather(index - index.min())
    else:
        raw = text.gather(index)
    dead = pl.DataFrame(
        {
            "file": [file] * failed.height,
            "position": index + position,
            "raw": raw,
            "reason": failed.get_column("\x00reason"),
        }
    )
    return SourceBatch(rows, dead_letters(dead))


def _convert(frame: pl.DataFrame, name: str, dtype: pl.DataType) -> pl.Series:
    """`_from_text` of a column; timestamps in their usual text form in one pass when every value has it (where
    that form reads a value, the full parse reads the same one: its normalisation changes nothing there)."""
    column = pl.col(name)
    if isinstance(dtype, pl.Datetime):
        common = frame.select(
            column.str.to_datetime(COMMON_TIMESTAMP, strict=False, time_zone="UTC", time_unit=dtype.time_unit)
        ).to_series()
        if common.null_count() == frame.get_column(name).null_count():
            return frame.select(in_range(pl.lit(common).cast(dtype))).to_series()
    return frame.select(_from_text(column, dtype)).to_series()
