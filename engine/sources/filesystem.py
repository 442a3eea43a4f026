"""`'connector' = 'filesystem'`: JSON lines, CSV or Parquet files in a directory, each processed once.

A file is registered when first seen, with its size and record count at that moment; bytes appended later
are not read (write files elsewhere and move them in, as with Flink and Spark). Files are taken in
discovery order, and within one discovery in lexicographic path order; a position is (file, record).
Hidden files and names starting with `_` or `.` are skipped as in-progress.
"""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow.parquet as pq

from engine.sources.base import (
    DEAD_LETTER_RAW_LIMIT,
    DEAD_LETTER_SCHEMA,
    MAX_RECORD_BYTES,
    ConnectorError,
    Source,
    SourceBatch,
    dead_letters,
    in_range,
    typed_from_text,
)
from sql import durations

FORMATS = ("json", "csv", "parquet")


class FileSource(Source):
    def __init__(self, table: Any, base_dir: Path) -> None:
        super().__init__(table, base_dir)
        self.root = self.resolve(self.option("path"))
        self.format = self.option("format", "json").lower()
        if self.format not in FORMATS:
            raise ConnectorError(f"table '{table.name}': format '{self.format}' is not one of {', '.join(FORMATS)}")
        self.header = self.option("csv.header", "false").lower() == "true"
        limit = self.option("scan.max-record-bytes", str(MAX_RECORD_BYTES))
        try:
            self.max_record_bytes = int(limit) if limit.strip().isdigit() else durations.parse_size(limit)
        except ValueError:
            raise ConnectorError(
                f"table '{table.name}': 'scan.max-record-bytes' must be a size such as '16 MB', not '{limit}'"
            ) from None
        # A NULL event time cannot be placed in time: such a record is a dead letter, never a silent drop.
        watermark = table.watermark
        self.required = (watermark.column,) if watermark is not None and watermark.column in self.schema else ()
        self.delimiter = self.option("csv.field-delimiter", ",")
        self.files: list[tuple[str, int, int]] = []  # (path, size at discovery, records)
        self.known: set[str] = set()
        self.cursor = (0, 0)
        self._cache: tuple[str, list[bytes]] | None = None

    # -- position ------------------------------------------------------------------------------
    def restore(self, position: Any, history: list[dict[str, Any]]) -> None:
        for piece in history:
            self._register(piece.get("files_added", []))
        self.cursor = tuple(position["cursor"]) if position else (0, 0)  # type: ignore[assignment]

    @property
    def position(self) -> Any:
        return {"cursor": list(self.cursor), "files": len(self.files)}

    def _register(self, added: list[list[Any]]) -> None:
        for path, size, records in added:
            if path not in self.known:
                self.known.add(path)
                self.files.append((path, int(size), int(records)))

    def advance(self, piece: dict[str, Any]) -> None:
        self._register(piece["files_added"])
        self.cursor = tuple(piece["end"])  # type: ignore[assignment]

    # -- planning ------------------------------------------------------------------------------
    def _discover(self) -> list[list[Any]]:
        if not self.root.exists():
            return []
        candidates = (
            sorted(
                p
                for p in (self.root.rglob("*") if self.root.is_dir() else [self.root])
                if p.is_file() and not any(part.startswith((".", "_")) for part in p.relative_to(self.root).parts)
            )
            if self.root.is_dir()
            else [self.root]
        )
        added = []
        for path in candidates:
            key = str(path)
            if key in self.known:
                continue
            size = path.stat().st_size
            added.append([key, size, self._count_records(path, size)])
        return added

    def _count_records(self, path: Path, size: int) -> int:
        if self.format == "parquet":
            try:
                return int(pq.ParquetFile(path).metadata.num_rows)
            except Exception:  # an unreadable file becomes one dead letter
                return 1
        return len(_lines(path, size))

    def plan(self, max_rows: int | None) -> dict[str, Any] | None:
        added = self._discover()
        files = self.files + [(p, s, r) for p, s, r in added]
        file_index, record = self.cursor
        budget = max_rows if max_rows is not None else float("inf")
        while file_index < len(files) and budget > 0:
            remaining = files[file_index][2] - record
            take = int(min(remaining, budget))
            record += take
            budget -= take
            if record >= files[file_index][2]:
                file_index, record = file_index + 1, 0
        # Empty files are consumed without costing budget.
        while file_index < len(files) and files[file_index][2] == 0 and record == 0:
            file_index += 1
        end = (file_index, record)
        if end == tuple(self.cursor) and not added:
            return None
        return {"files_added": added, "start": list(self.cursor), "end": list(end)}

    # -- reading -------------------------------------------------------------------------------
    def read(self, piece: dict[str, Any]) -> SourceBatch:
        files = self.files + [tuple(f) for f in piece["files_added"] if f[0] not in self.known]
        (fi, ri), (fj, rj) = piece["start"], piece["end"]
        parts: list[SourceBatch] = []
        for index in range(fi, min(fj, len(files) - 1) + 1):
            path, size, records = files[index]
            lo = ri if index == fi else 0
            hi = rj if index == fj else records
            if hi > lo:
                parts.append(self._read_file(Path(str(path)), int(size), lo, hi))
        if not parts:
            return SourceBatch(self.empty())
        return SourceBatch(
            pl.concat([p.rows for p in parts], how="vertical_relaxed"),
            pl.concat([p.dead_letters for p in parts]),
        )

    def _read_file(self, path: Path, size: int, lo: int, hi: int) -> SourceBatch:
        if self.format == "parquet":
            return self._read_parquet(path, lo, hi)
        if self._cache is None or self._cache[0] != str(path):
            self._cache = (str(path), _lines(path, size))
        lines = self._cache[1][lo:hi]
        positions = list(range(lo, hi))
        if self.format == "csv" and self.header and lo == 0:
            lines, positions = lines[1:], positions[1:]
        text = pl.Series("raw", lines, dtype=pl.Binary)
        oversized = text.bin.size() > self.max_record_bytes
        if oversized.any():  # kept with their first bytes; the file and position point at the whole record
            text = pl.select(pl.when(oversized).then(pl.lit(b"", dtype=pl.Binary)).otherwise(text)).to_series()
        try:
            decoded = text.cast(pl.String)
        except pl.exceptions.ComputeError:  # slow path, only for files holding invalid UTF-8
            decoded = pl.Series("raw", [_utf8_or_none(line) for line in text], dtype=pl.String)
        context = pl.DataFrame({"file": [str(path)] * len(lines), "position": positions, "raw": decoded})
        bad_utf8 = decoded.is_null()
        blank = (decoded.str.strip_chars().str.len_bytes().fill_null(1) == 0) & ~oversized
        invalid = context.filter(bad_utf8).with_columns(
            raw=text.filter(bad_utf8).map_elements(lambda b: b.decode("utf-8", "replace"), return_dtype=pl.String),
            reason=pl.lit("invalid UTF-8"),
            raw_bytes=text.filter(bad_utf8),
        )
        # Only the oversized lines are visited (rare), never every line of the slice.
        too_long = [
            {
                "file": str(path),
                "position": positions[i],
                "raw": lines[i][:DEAD_LETTER_RAW_LIMIT].decode("utf-8", "replace"),
                "reason": f"record of {len(lines[i]):,} bytes is longer than 'scan.max-record-bytes' "
                f"({self.max_record_bytes:,}); the first {DEAD_LETTER_RAW_LIMIT:,} are kept here",
            }
            for i in oversized.arg_true().to_list()
        ]
        context = context.filter(~bad_utf8 & ~blank & ~oversized)
        raw = self._parse_json(context) if self.format == "json" else self._parse_csv(context, path)
        batch = typed_from_text(raw.rows, self.schema, context.filter(raw.ok), self.required)
        dead = pl.concat(
            [
                dead_letters(invalid),
                pl.DataFrame(too_long, schema=DEAD_LETTER_SCHEMA),
                dead_letters(raw.dead),
                batch.dead_letters,
            ]
        )
        return SourceBatch(batch.rows, dead.sort("position"))

    def _parse_json(self, context: pl.DataFrame) -> _Parsed:
        names = list(self.schema)
        struct = pl.Struct({n: pl.String for n in names})
        text = _quote_decimals(context.get_column("raw"), self.schema)
        try:
            decoded = text.str.json_decode(struct)
            if decoded.null_count():
                raise ValueError("non-object line")
            return _Parsed(
                decoded.struct.unnest() if names else pl.DataFrame(),
                pl.Series([True] * context.height, dtype=pl.Boolean),
            )
        except (pl.exceptions.PolarsError, ValueError):
            pass
        # Slow path, taken only for files with bad records: find them one by one.
        rows: list[dict[str, str | None]] = []
        ok: list[bool] = []
        dead: list[dict[str, Any]] = []
        for record, line in zip(context.iter_rows(named=True), text, strict=True):
            try:
                value = json.loads(line)
                if not isinstance(value, dict):
                    raise ValueError("the record is not a JSON object")
            except ValueError as err:
                ok.append(False)
                dead.append({**record, "reason": f"malformed JSON: {err}"})
                continue
            ok.append(True)
            rows.append({n: _as_text(value.get(n)) for n in names})
        frame = pl.DataFrame(rows, schema={n: pl.String for n in names}) if names else pl.DataFrame()
        return _Parsed(frame, pl.Series(ok, dtype=pl.Boolean), pl.DataFrame(dead, schema=DEAD_LETTER_SCHEMA))

    def _parse_csv(self, context: pl.DataFrame, path: Path) -> _Parsed:
        parsed = self._parse_csv_fields(context, self._header(path) if self.header else list(self.schema))
        present = set(parsed.rows.columns)
        # With a header, columns are matched by name: extra ones are ignored, missing ones are NULL.
        parsed.rows = parsed.rows.select(
            pl.col(n) if n in present else pl.lit(None, dtype=pl.String).alias(n) for n in self.schema
        )
        return parsed

    def _header(self, path: Path) -> list[str]:
        assert self._cache is not None and self._cache[0] == str(path)
        lines = self._cache[1]
        first = _utf8_or_none(lines[0]) if lines else None
        return [name.strip() for name in next(csv.reader([first], delimiter=self.delimiter))] if first else []

    def _parse_csv_fields(self, context: pl.DataFrame, names: list[str]) -> _Parsed:
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
                    separator=self.delimiter,
                    schema={n: pl.String for n in names},
                )
                if lines
                else pl.DataFrame(schema={n: pl.String for n in names})
            )
            quoted = raw.str.contains('"', literal=True).any()
            counts_ok = quoted or bool((raw.str.count_matches(self.delimiter, literal=True) + 1 == len(names)).all())
            if frame.height == len(lines) and counts_ok:
                return _Parsed(frame, pl.Series([True] * len(lines), dtype=pl.Boolean))
        except pl.exceptions.PolarsError:
            pass
        for record in context.iter_rows(named=True):
            fields = next(csv.reader([record["raw"]], delimiter=self.delimiter))
            if len(fields) != len(names):
                ok.append(False)
                dead.append({**record, "reason": f"expected {len(names)} fields, found {len(fields)}"})
                continue
            ok.append(True)
            rows.append({n: (f if f != "" else None) for n, f in zip(names, fields, strict=True)})
        return _Parsed(
            pl.DataFrame(rows, schema={n: pl.String for n in names}),
            pl.Series(ok, dtype=pl.Boolean),
            pl.DataFrame(dead, schema=DEAD_LETTER_SCHEMA),
        )

    def _read_parquet(self, path: Path, lo: int, hi: int) -> SourceBatch:
        try:
            lazy = pl.scan_parquet(path)
            stored = lazy.collect_schema()
            # Only the declared columns and the slice's rows are read (projection and slice pushdown).
            frame = lazy.select([n for n in self.schema if n in stored]).slice(lo, hi - lo).collect()
        except Exception as err:
            dead = pl.DataFrame(
                [
                    {
                        "file": str(path),
                        "position": lo,
                        "raw": None,
                        "reason": f"unreadable Parquet file (records {lo} to {hi - 1}): {err}",
                    }
                ],
                schema=DEAD_LETTER_SCHEMA,
            )
            return SourceBatch(self.empty(), dead)
        if all(_lossless(frame.schema[n], dtype) for n, dtype in self.schema.items() if n in frame.columns):
            # Typed columns that convert without loss cannot fail: no detour through text, no dead letters,
            # unless an event time is NULL or a timestamp is out of range.
            typed = frame.select(
                _convert(pl.col(n), frame.schema[n], dtype).alias(n)
                if n in frame.columns
                else pl.lit(None, dtype=dtype).alias(n)
                for n, dtype in self.schema.items()
            )
            if self._valid(typed):
                return SourceBatch(typed)
        text = frame.select(
            [
                pl.col(n).cast(pl.String) if n in frame.columns else pl.lit(None, dtype=pl.String).alias(n)
                for n in self.schema
            ]
        )
        context = pl.DataFrame({"file": [str(path)] * frame.height, "position": list(range(lo, hi))}).with_columns(
            raw=pl.lit(None, dtype=pl.String)
        )
        return typed_from_text(text, self.schema, context, self.required)

    def _valid(self, typed: pl.DataFrame) -> bool:
        checks = [pl.col(n).is_not_null().all() for n in self.required]
        checks += [
            (in_range(pl.col(n)).is_not_null() | pl.col(n).is_null()).all()
            for n, dtype in self.schema.items()
            if isinstance(dtype, pl.Datetime)
        ]
        return not checks or all(typed.select(c.alias(f"check{i}") for i, c in enumerate(checks)).row(0))


def _lossless(stored: pl.DataType, declared: pl.DataType) -> bool:
    """Whether every value of a Parquet column of type `stored` converts to `declared` without a possible failure."""
    if stored == declared:
        return True
    if isinstance(stored, pl.Datetime) and isinstance(declared, pl.Datetime):
        return True  # a naive time is read as UTC, like timestamps in text
    if stored.is_integer() and declared.is_integer():
        return _wider(stored, declared)
    if stored.is_float() and declared.is_float():
        return declared == pl.Float64 or stored == pl.Float32
    return isinstance(stored, pl.String) and isinstance(declared, pl.String)


_WIDTHS = {pl.Int8: 8, pl.Int16: 16, pl.Int32: 32, pl.Int64: 64, pl.UInt8: 8, pl.UInt16: 16, pl.UInt32: 32}


def _wider(stored: pl.DataType, declared: pl.DataType) -> bool:
    signed = {pl.Int8, pl.Int16, pl.Int32, pl.Int64}
    if type(declared) not in signed:
        return False
    return _WIDTHS.get(type(stored), 64) < _WIDTHS[type(declared)] or type(stored) is type(declared)


def _convert(column: pl.Expr, stored: pl.DataType, declared: pl.DataType) -> pl.Expr:
    if isinstance(stored, pl.Datetime) and isinstance(declared, pl.Datetime) and stored.time_zone is None:
        column = column.dt.replace_time_zone("UTC")
    return column.cast(declared)


_JSON_NUMBER = r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?"


def _quote_decimals(raw: pl.Series, schema: dict[str, pl.DataType]) -> pl.Series:
    """The JSON lines with the bare numbers of DECIMAL columns quoted: JSON readers turn numbers into floats,
    which would round 1234567890123456.01; as text they convert to DECIMAL exactly. `"name":` cannot occur
    inside a JSON string (its quotes would be escaped), so only that field's values are rewritten."""
    for name, dtype in schema.items():
        if isinstance(dtype, pl.Decimal):
            key = re.escape(json.dumps(name))
            raw = raw.str.replace_all(f"({key}\\s*:\\s*)({_JSON_NUMBER})", '${1}"${2}"')
    return raw


class _Parsed:
    def __init__(self, rows: pl.DataFrame, ok: pl.Series, dead: pl.DataFrame | None = None) -> None:
        self.rows = rows
        self.ok = ok
        self.dead = dead if dead is not None else pl.DataFrame(schema=DEAD_LETTER_SCHEMA)


def _as_text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return json.dumps(value)
    return str(value)


def _utf8_or_none(line: bytes) -> str | None:
    try:
        return line.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _lines(path: Path, size: int) -> list[bytes]:
    with open(path, "rb") as handle:
        data = handle.read(size)
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    return [line[:-1] if line.endswith(b"\r") else line for line in lines]
