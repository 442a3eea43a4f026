"""CSV lines of the filesystem source, read line by line (the path for slices that `text_slices.read_csv` leaves):
the header's column names, and each line's fields. An empty field is NULL; a line with another number of fields
than the columns is a dead letter."""

from __future__ import annotations

import csv
import io
from typing import Any

import polars as pl

from engine.sources.base import DEAD_LETTER_SCHEMA
from engine.sources.file_registry import read_range, split_lines
from engine.sources.json_lines import Parsed
from engine.storage import Location, ObjectPath


def csv_header(path: Location, line: bytes | None, limit: int, delimiter: str) -> list[str]:
    """The column names in line 0 of the file (`line`, or read from the file when it lies in an earlier
    segment than the slice)."""
    if line is None and isinstance(path, ObjectPath):
        line = _first_line(path, limit)
    elif line is None:
        with open(path, "rb") as handle:
            line = handle.readline(limit)
    lines = split_lines(line, True)
    first = utf8_or_none(lines[0]) if lines else None
    return [name.strip() for name in next(csv.reader([first], delimiter=delimiter))] if first else []


def parse_csv_fields(context: pl.DataFrame, names: list[str], delimiter: str) -> Parsed:
    rows: list[dict[str, str | None]] = []
    ok: list[bool] = []
    dead: list[dict[str, Any]] = []
    raw = context.get_column("raw")
    lines = raw.to_list()
    try:
        frame = (
            pl.read_csv(
                io.StringIO("\n".join(lines)),
                has_header=False,
                new_columns=names,
                separator=delimiter,
                schema={n: pl.String for n in names},
            )
            if lines
            else pl.DataFrame(schema={n: pl.String for n in names})
        )
        quoted = raw.str.contains('"', literal=True).any()
        counts_ok = quoted or bool((raw.str.count_matches(delimiter, literal=True) + 1 == len(names)).all())
        if frame.height == len(lines) and counts_ok:
            return Parsed(frame, pl.Series([True] * len(lines), dtype=pl.Boolean))
    except pl.exceptions.PolarsError:
        pass
    for record in context.iter_rows(named=True):
        fields = next(csv.reader([record["raw"]], delimiter=delimiter))
        if len(fields) != len(names):
            ok.append(False)
            dead.append({**record, "reason": f"expected {len(names)} fields, found {len(fields)}"})
            continue
        ok.append(True)
        rows.append({n: (f if f != "" else None) for n, f in zip(names, fields, strict=True)})
    return Parsed(
        pl.DataFrame(rows, schema={n: pl.String for n in names}),
        pl.Series(ok, dtype=pl.Boolean),
        pl.DataFrame(dead, schema=DEAD_LETTER_SCHEMA),
    )


def _first_line(path: ObjectPath, limit: int) -> bytes:
    """An object's first line (at most `limit` bytes), by ranged GETs of growing size."""
    size = 64 * 1024
    while True:
        data = read_range(path, 0, min(size, limit))
        cut = data.find(b"\n")
        if cut >= 0 or len(data) < min(size, limit) or size >= limit:
            return data[: cut + 1] if cut >= 0 else data
        size *= 4


def utf8_or_none(line: bytes) -> str | None:
    try:
        return line.decode("utf-8")
    except UnicodeDecodeError:
        return None
