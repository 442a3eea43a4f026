"""`'connector' = 'filesystem'`: JSON lines, CSV or Parquet files in a folder, each record read once; or lines of
changes ('format' = 'debezium-json' or 'canal-json', decoded by engine.formats), whose rows carry `__op`.

Files are named by their path relative to the folder, registered when first seen, and taken in discovery order
(within one discovery, in path order); a position is (registration, record). Lines appended to a registered file
are registered as a new segment of it; a last line without its newline waits until the file has not changed for
`'source.partial-line-timeout'` (or the run drains). A registered file that is deleted, truncated or rewritten
before it is read is an error, or with `'source.missing-files' = 'skip'` a dead letter (and a rewritten file is
then read as a new one). Names starting with `.` or `_` are skipped as in-progress; a symlink leading outside the
allowed roots is a dead letter, never read. `file_registry` describes the registrations the offset log keeps.

Each byte is read from disk once: planning reads a new segment's bytes to count its records (the slice is logged
before it is read), and keeps them for `read`, which then checks nothing on disk but the allowed roots. What is
kept is bounded: the planned slice, and segments beyond it up to `PLANNED_BYTES` (the others are read again when
their epoch comes). A replay, or a run after a restart, reads the logged bytes from disk and checks them against
their registration.
"""

from __future__ import annotations

import io
import time
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow.parquet as pq

from engine import paths
from engine.formats import FormatError, make_format
from engine.sources.base import (
    DEAD_LETTER_RAW_LIMIT,
    DEAD_LETTER_SCHEMA,
    MAX_RECORD_BYTES,
    ConnectorError,
    Source,
    SourceBatch,
    SourceFileError,
    dead_letters,
    empty_dead_letters,
    typed_from_frame,
    typed_from_text,
    unread_columns,
)
from engine.sources.csv_lines import csv_header, parse_csv_fields, utf8_or_none
from engine.sources.file_registry import (
    Entry,
    Found,
    cut_spans,
    fingerprint,
    fingerprint_of,
    migrate,
    read_range,
    walk,
)
from engine.sources.json_lines import Parsed, parse_json
from engine.sources.text_slices import Lines, read_csv, read_json
from engine.storage import Location, ObjectPath
from sql import durations
from sql.plan import OP_COLUMN

#: the changelog formats, read line by line through engine.formats: rows carry their row kind in `__op`
CHANGELOG_FORMATS = ("debezium-json", "canal-json")
FORMATS = ("json", "csv", "parquet", *CHANGELOG_FORMATS)
MISSING_FILES = ("fail", "skip")
PARTIAL_LINE_TIMEOUT = "10 s"
#: bytes read at planning and kept for later epochs, beyond the planned slice (which is always kept)
PLANNED_BYTES = 64 * 1024 * 1024


class FileSource(Source):
    def __init__(self, table: Any, base_dir: Path) -> None:
        super().__init__(table, base_dir)
        self.root = self.resolve(self.option("path"))
        self.format = self.option("format", "json").lower()
        if self.format not in FORMATS:
            raise ConnectorError(f"table '{table.name}': format '{self.format}' is not one of {', '.join(FORMATS)}")
        self.header = self.option("csv.header", "false").lower() == "true"
        self.codec = None
        if self.format in CHANGELOG_FORMATS:
            try:
                self.codec = make_format(self.format, self.schema, table.options)
            except FormatError as err:
                raise ConnectorError(f"table '{table.name}': {err}") from None
        limit = self.option("scan.max-record-bytes", str(MAX_RECORD_BYTES))
        try:
            self.max_record_bytes = int(limit) if limit.strip().isdigit() else durations.parse_size(limit)
        except ValueError:
            raise ConnectorError(
                f"table '{table.name}': 'scan.max-record-bytes' must be a size such as '16 MB', not '{limit}'"
            ) from None
        self.missing = self.option("source.missing-files", "fail").strip().lower()
        if self.missing not in MISSING_FILES:
            raise ConnectorError(
                f"table '{table.name}': 'source.missing-files' must be 'fail' or 'skip', not '{self.missing}'"
            )
        timeout = self.option("source.partial-line-timeout", PARTIAL_LINE_TIMEOUT)
        try:
            self.partial_timeout = durations.parse_duration(timeout)
        except ValueError:
            raise ConnectorError(
                f"table '{table.name}': 'source.partial-line-timeout' must be a duration such as '10 s', "
                f"not '{timeout}'"
            ) from None
        # A NULL event time cannot be placed in time: such a record is a dead letter, never a silent drop.
        watermark = table.watermark
        self.required = (watermark.column,) if watermark is not None and watermark.column in self.schema else ()
        self.delimiter = self.option("csv.field-delimiter", ",")
        self.files: list[Entry] = []  # every registration, in order: an index always names the same one
        self.segments: dict[str, list[int]] = {}  # a file's segments, oldest first
        self.gone: set[int] = set()  # segments whose unread records were skipped
        self.refused: set[str] = set()
        self.observed: dict[str, tuple[int, int]] = {}  # (size, mtime) when last looked at, to skip unchanged files
        self.cursor = (0, 0)
        self._cache: tuple[tuple[str, int, int], Lines] | None = None
        #: segments' bytes as planning read them, by (path, start, end), in registration order
        self._planned: dict[tuple[str, int, int], Lines] = {}
        self._base: Location | None = None  # on an object store: as the last listing found it

    @property
    def base(self) -> Location:
        """The folder that file names are relative to (the file's folder when `path` names one file)."""
        if isinstance(self.root, ObjectPath):
            if self._base is None:  # a replay before the first discovery: one LIST (and a HEAD) decide
                named_file = not self.root.is_dir() and (self.root.name in self.segments or self.root.is_file())
                self._base = self.root.parent if named_file else self.root
            return self._base
        if self.root.is_dir():
            return self.root
        return self.root.parent if self.root.is_file() or self.root.name in self.segments else self.root

    def empty(self) -> pl.DataFrame:
        frame = super().empty()
        return frame.with_columns(pl.lit(None, pl.String).alias(OP_COLUMN)) if self.codec is not None else frame

    # -- position ------------------------------------------------------------------------------
    def restore(self, position: Any, history: list[dict[str, Any]]) -> None:
        entries = [entry for piece in history for entry in piece.get("files_added", [])]
        # Older versions recorded [absolute path, size, records]: one segment, named relative to the folder.
        names = migrate([e[0] for e in entries if isinstance(e, list)], self.base)
        self._register(
            [
                Entry(names[e[0]], 0, int(e[1]), 0, int(e[2])) if isinstance(e, list) else Entry.from_json(e)
                for e in entries
            ]
        )
        self.cursor = tuple(position["cursor"]) if position else (0, 0)  # type: ignore[assignment]

    @property
    def position(self) -> Any:
        return {"cursor": list(self.cursor), "files": len(self.files)}

    def _register(self, entries: list[Entry]) -> None:
        for entry in entries:
            if entry.segment:
                self.segments.setdefault(entry.path, []).append(len(self.files))
            elif entry.skip is not None:
                self.gone.add(entry.skip)
            else:
                self.refused.add(entry.path)
            self.files.append(entry)

    def advance(self, piece: dict[str, Any]) -> None:
        self._register([Entry.from_json(e) for e in piece["files_added"]])
        self.cursor = tuple(piece["end"])  # type: ignore[assignment]

    # -- planning ------------------------------------------------------------------------------
    def plan(self, max_rows: int | None) -> dict[str, Any] | None:
        added = self._discover()
        files = self.files + added
        gone = self.gone | {e.skip for e in added if e.skip is not None}
        index, record = self.cursor
        budget = max_rows if max_rows is not None else float("inf")
        while index < len(files):
            count = files[index].records if index not in gone and files[index].segment else 0
            if record >= count:  # read, empty, skipped, or not a segment: passed without cost
                index, record = index + 1, 0
                continue
            if budget <= 0:
                break
            take = int(min(count - record, budget))
            record += take
            budget -= take
        end = (index, record)
        self._keep_planned(files, index)
        if end == tuple(self.cursor) and not added:
            return None
        return {"files_added": [e.to_json() for e in added], "start": list(self.cursor), "end": list(end)}

    def _keep_planned(self, files: list[Entry], last: int) -> None:
        """Keep the planned bytes of segments up to `last` (the slice), and of later ones within PLANNED_BYTES."""
        if not self._planned:
            return
        first = self.cursor[0]
        wanted = {(e.path, e.start, e.end): i for i, e in enumerate(files[first:], first) if e.segment}
        budget = PLANNED_BYTES
        for key in list(self._planned):
            index = wanted.get(key)
            if index is not None and index <= last:
                continue
            if index is not None and len(self._planned[key].data) <= budget:
                budget -= len(self._planned[key].data)
                continue
            del self._planned[key]

    def _discover(self) -> list[Entry]:
        with paths.reaching(self.table.name, self.root):
            found, outside, base = walk(self.root)
        if isinstance(self.root, ObjectPath):
            self._base = base
        added: list[Entry] = []
        now = time.time()
        for name, real in sorted(outside.items()):
            if name not in self.refused:
                added.append(Entry(name, refused=str(real), reason="leads outside the allowed roots"))
        for name, stat in sorted(found.items()):
            if name in self.refused:
                continue
            path = stat.path
            observed = stat.observed
            known = self.segments.get(name)
            if known is None:
                segment = self._segment(name, stat, 0, 0, now)
                if segment is not None:
                    added.append(segment)
                    self.observed[name] = observed
                continue
            latest = self.files[known[-1]]
            if self.observed.get(name) == observed and (stat.size == latest.end or not self._due(stat.mtime_ns, now)):
                continue  # unchanged, or a last line still waiting for its newline
            change = self._change(path, latest, stat.size)
            if change is not None:
                added += self._gone(name, change)
                if self.missing == "fail":  # read to its end, then rewritten: still not what was registered
                    raise SourceFileError(
                        f"table '{self.table.name}': input file {path} {change} after it was read; its new "
                        "content is not read. Write new input to new files, or set 'source.missing-files' = "
                        "'skip' to read a rewritten file as a new one"
                    )
                segment = self._segment(name, stat, 0, 0, now)  # only under 'skip': a new file from the start
            else:
                segment = self._segment(name, stat, latest.end, latest.first + latest.records, now)
            if segment is not None:
                added.append(segment)
            self.observed[name] = observed
        for name in sorted(set(self.segments) - set(found)):
            self.observed.pop(name, None)
            if name not in outside:
                added += self._gone(name, "was deleted")
        return added

    def _due(self, mtime_ns: int, now: float) -> bool:
        """Whether a last line without its newline is complete: the run drains, or the file has been left alone
        for 'source.partial-line-timeout'."""
        return self.end_of_input or now - mtime_ns / 1e9 >= self.partial_timeout

    def _change(self, path: Location, latest: Entry, size: int) -> str | None:
        """How a registered file's registered part changed (None: it did not; appended bytes are no change)."""
        if size < latest.end:
            return f"was truncated from {latest.end:,} to {size:,} bytes"
        if self.format == "parquet" and size != latest.end:
            return "was rewritten"
        now = fingerprint(path, latest.end)
        if latest.fingerprint is None:  # registered by an older version: its fingerprint is taken now
            latest.fingerprint = now
        elif now != latest.fingerprint:
            return "was rewritten"
        return None

    def _gone(self, name: str, what: str) -> list[Entry]:
        """Skips for the unread records of `name`'s segments; under 'fail', the error naming the file."""
        unread = []
        ci, cr = self.cursor
        for i in self.segments.get(name, []):
            entry = self.files[i]
            start = cr if i == ci else 0
            if i not in self.gone and i >= ci and entry.records > start:
                unread.append((i, start))
        if not unread:
            return []
        count = sum(self.files[i].records - start for i, start in unread)
        if self.missing == "fail":
            raise SourceFileError(
                f"table '{self.table.name}': input file {self.base / name} {what} before all of it was read "
                f"({count:,} records not read); restore it, or set 'source.missing-files' = 'skip' to skip what "
                "is gone (recorded as dead letters)"
            )
        return [Entry(name, skip=i, unread=start, reason=what) for i, start in unread]

    def _segment(self, name: str, found: Found, start: int, first: int, now: float) -> Entry | None:
        """The registration of a file's bytes from `start`: complete records only, unless the last is due."""
        path = found.path
        try:
            if self.format == "parquet":
                size = found.size
                return Entry(name, 0, size, 0, self._parquet_rows(path), fingerprint(path, size))
            if isinstance(path, ObjectPath):  # the bytes the listing saw, by one ranged GET
                data, mtime_ns = read_range(path, start, found.size), found.mtime_ns
            else:  # to the file's end, then its time: a line appended meanwhile makes it look fresh, not due
                data = read_range(path, start, None)
                mtime_ns = path.stat().st_mtime_ns
        except OSError:
            return None
        end = start + len(data)
        if data and not data.endswith(b"\n") and not self._due(mtime_ns, now):
            end = start + data.rfind(b"\n") + 1
        if end == start and (start > 0 or data):
            return None  # nothing new, or only the start of a line (an empty file is registered, with no records)
        data = data[: end - start]
        # kept for `read`: the same bytes, not read again, with the line bounds found once here
        lines = self._planned[(name, start, end)] = Lines(data, start == 0)
        return Entry(name, start, end, first, lines.count, fingerprint_of(path, start, data))

    def _parquet_rows(self, path: Location) -> int:
        try:
            return int(pq.ParquetFile(_local_or_bytes(path)).metadata.num_rows)
        except Exception:  # an unreadable file becomes one dead letter
            return 1

    # -- reading -------------------------------------------------------------------------------
    def _spans(self, piece: dict[str, Any]) -> tuple[list[Entry], list[tuple[int, int, int]]]:
        """The known files with the piece's additions, and the record ranges it reads: (file index, lo, hi)."""
        added = [Entry.from_json(e) for e in piece["files_added"]]
        files = self.files + added
        gone = self.gone | {e.skip for e in added if e.skip is not None}
        (fi, ri), (fj, rj) = piece["start"], piece["end"]
        spans = []
        for index in range(fi, min(fj, len(files) - 1) + 1):
            entry = files[index]
            if index in gone or not entry.segment:
                continue
            lo = ri if index == fi else 0
            hi = rj if index == fj else entry.records
            if hi > lo:
                spans.append((index, lo, hi))
        return files, spans

    def split(self, piece: dict[str, Any], shares: int) -> list[dict[str, Any] | None]:
        """By record ranges, in file order (a share may end inside a file); the first share also reports the
        skips and refusals the piece registered."""
        _files, spans = self._spans(piece)
        cuts = cut_spans(spans, list(piece["start"]), list(piece["end"]), shares)
        return [{**piece, "start": a, "end": b, "notes": i == 0} for i, (a, b) in enumerate(cuts)]

    def read(self, piece: dict[str, Any]) -> SourceBatch:
        added = [Entry.from_json(e) for e in piece["files_added"]]
        files, spans = self._spans(piece)
        noted = self._noted(added, files) if piece.get("notes", True) else empty_dead_letters()
        parts: list[SourceBatch] = [SourceBatch(self.empty(), noted)]
        for index, lo, hi in spans:
            parts.append(self._read_segment(files[index], lo, hi))
        return SourceBatch(
            pl.concat([p.rows for p in parts], how="vertical_relaxed"),
            pl.concat([p.dead_letters for p in parts]),
        )

    def _noted(self, added: list[Entry], files: list[Entry]) -> pl.DataFrame:
        """Dead letters for the skips and refusals registered in this slice (no content: nothing was read)."""
        rows = []
        for entry in added:
            if entry.refused is not None:
                reason = f"{entry.reason} (to {entry.refused}): not read"
                rows.append({"file": str(self.base / entry.path), "position": None, "raw": None, "reason": reason})
            elif entry.skip is not None:
                segment = files[entry.skip]
                lo, hi = segment.first + entry.unread, segment.first + segment.records - 1
                reason = (
                    f"the file {entry.reason} before it was read: records {lo} to {hi} ({hi - lo + 1:,}) skipped "
                    "('source.missing-files' = 'skip')"
                )
                rows.append({"file": str(self.base / entry.path), "position": lo, "raw": None, "reason": reason})
        return pl.DataFrame(rows, schema=DEAD_LETTER_SCHEMA)

    def _read_segment(self, entry: Entry, lo: int, hi: int) -> SourceBatch:
        path = self.base / entry.path
        key = (entry.path, entry.start, entry.end)
        if self._cache is None or self._cache[0] != key:
            lines, problem = self._load(path, entry, self._planned.pop(key, None))
            if problem is not None:
                return self._unreadable(path, entry, lo, hi, problem)
            self._cache = (key, lines)
        if self.format == "parquet":
            return self._read_parquet(path, lo, hi)
        lines = self._cache[1]
        # A header in this segment is taken from the bytes already read, not from the file again.
        header = lines.line(0) if entry.start == 0 and lines.count else None
        fast = self._read_fast(path, entry, lines, lo, hi, header)
        if fast is not None:
            return fast
        return self._read_lines(path, entry, lines.as_list(lo, hi), lo, header)

    def _read_fast(
        self, path: Location, entry: Entry, lines: Lines, lo: int, hi: int, header: bytes | None
    ) -> SourceBatch | None:
        """The slice read whole by Polars (engine.sources.text_slices), or None: it takes the line-by-line path."""
        if self.codec is not None:
            return None
        common = (self.schema, self.required, self.max_record_bytes, str(path), entry.first)
        if self.format == "json":
            return read_json(lines, lo, hi, *common)
        names = self._header(path, header) if self.header else list(self.schema)
        skip = 1 if self.header and entry.first + lo == 0 else 0
        return read_csv(lines, lo + skip, hi, *common, names, self.delimiter)

    def _load(self, path: Location, entry: Entry, planned: Lines | None) -> tuple[Lines, str | None]:
        """A segment's lines exactly as registered, or what happened to its file. `planned`: its bytes as the
        registration read them (in this run), when they were kept."""
        at_start = entry.start == 0
        if (real := paths.outside_roots(path)) is not None:
            return Lines(b"", at_start), f"now leads outside the allowed roots (to {real}): not read"
        if planned is not None:
            return planned, None
        try:
            data = b"" if self.format == "parquet" else read_range(path, entry.start, entry.end)
        except OSError:
            return Lines(b"", at_start), "was deleted after it was registered"
        now = fingerprint(path, entry.end)
        if (entry.fingerprint is not None and now != entry.fingerprint) or (
            self.format != "parquet" and len(data) != entry.end - entry.start
        ):
            return Lines(b"", at_start), "changed after it was registered"
        lines = Lines(data, at_start)
        if self.format != "parquet" and lines.count != entry.records:
            return lines, "changed after it was registered"
        return lines, None

    def _unreadable(self, path: Location, entry: Entry, lo: int, hi: int, problem: str) -> SourceBatch:
        if self.missing == "fail" and "outside the allowed roots" not in problem:
            raise SourceFileError(
                f"table '{self.table.name}': input file {path} {problem}, before records "
                f"{entry.first + lo} to {entry.first + hi - 1} were read; restore it, or set "
                "'source.missing-files' = 'skip' to skip what is gone (recorded as dead letters)"
            )
        reason = f"the file {problem}: records {entry.first + lo} to {entry.first + hi - 1} ({hi - lo:,}) skipped"
        row = {"file": str(path), "position": entry.first + lo, "raw": None, "reason": reason}
        return SourceBatch(self.empty(), pl.DataFrame([row], schema=DEAD_LETTER_SCHEMA))

    def _read_lines(
        self, path: Location, entry: Entry, lines: list[bytes], lo: int, header: bytes | None = None
    ) -> SourceBatch:
        positions = list(range(entry.first + lo, entry.first + lo + len(lines)))
        if self.format == "csv" and self.header and entry.first + lo == 0:
            lines, positions = lines[1:], positions[1:]
        text = pl.Series("raw", lines, dtype=pl.Binary)
        oversized = text.bin.size() > self.max_record_bytes
        if oversized.any():  # kept with their first bytes; the file and position point at the whole record
            text = pl.select(pl.when(oversized).then(pl.lit(b"", dtype=pl.Binary)).otherwise(text)).to_series()
        try:
            decoded = text.cast(pl.String)
        except pl.exceptions.ComputeError:  # slow path, only for files holding invalid UTF-8
            decoded = pl.Series("raw", [utf8_or_none(line) for line in text], dtype=pl.String)
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
        if self.codec is not None:
            batch = self._decode_changes(context)
            dead = pl.concat(
                [
                    dead_letters(invalid),
                    pl.DataFrame(too_long, schema=DEAD_LETTER_SCHEMA),
                    batch.dead_letters,
                ]
            )
            return SourceBatch(batch.rows, dead.sort("position"))
        raw = parse_json(context, self.schema) if self.format == "json" else self._parse_csv(context, path, header)
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

    def _decode_changes(self, context: pl.DataFrame) -> SourceBatch:
        """A changelog format's lines (debezium-json, canal-json): rows with `__op`, and the dead letters at the
        lines they came from."""
        assert self.codec is not None
        decoded = self.codec.decode(context.get_column("raw").cast(pl.Binary), self.required)
        lines = context.with_row_index("record").with_columns(pl.col("record").cast(pl.Int64))
        dead = decoded.dead.join(lines, on="record", how="left").sort("record")
        return SourceBatch(decoded.rows, dead_letters(dead))

    def _parse_csv(self, context: pl.DataFrame, path: Location, header: bytes | None) -> Parsed:
        parsed = self._parse_csv_fields(context, self._header(path, header) if self.header else list(self.schema))
        present = set(parsed.rows.columns)
        # With a header, columns are matched by name: extra ones are ignored, missing ones are NULL.
        parsed.rows = parsed.rows.select(
            pl.col(n) if n in present else pl.lit(None, dtype=pl.String).alias(n) for n in self.schema
        )
        return parsed

    def _header(self, path: Location, line: bytes | None) -> list[str]:
        return csv_header(path, line, self.max_record_bytes, self.delimiter)

    def _parse_csv_fields(self, context: pl.DataFrame, names: list[str]) -> Parsed:
        return parse_csv_fields(context, names, self.delimiter)

    def _read_parquet(self, path: Location, lo: int, hi: int) -> SourceBatch:
        try:
            lazy = pl.scan_parquet(_local_or_bytes(path))
            stored = lazy.collect_schema()
            # Only the declared columns the plan reads and the slice's rows are read (projection and slice
            # pushdown); an unread column is NULL (`typed_from_frame`), where reading it could not matter.
            unread = unread_columns(dict(stored), self.schema, self.read_columns, self.required)
            frame = (
                lazy.select([n for n in self.schema if n in stored and n not in unread]).slice(lo, hi - lo).collect()
            )
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
        context = lambda: _parquet_context(path, lo, lo + frame.height)  # built only when a value needs it
        return typed_from_frame(frame, self.schema, context, self.required)


def _local_or_bytes(path: Location) -> Path | io.BytesIO:
    """What Parquet readers open: a local path, or an object's bytes (one GET)."""
    return io.BytesIO(path.read_bytes()) if isinstance(path, ObjectPath) else path


def _parquet_context(path: Location, lo: int, hi: int) -> pl.DataFrame:
    return pl.DataFrame({"file": [str(path)] * (hi - lo), "position": list(range(lo, hi))}).with_columns(
        raw=pl.lit(None, dtype=pl.String)
    )
