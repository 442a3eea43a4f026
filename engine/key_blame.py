"""Blame a key: every epoch that changed one key's state, the value before and after, and the input it read.

    engine.blame("state/", "totals", key={"cust": 7})                 # one row per checkpoint that changed it
    changes, rows = engine.blame("state/", "totals", {"cust": 7}, rows=True, sql="pipeline.sql")

How the changes are found without reading the state at every checkpoint: an operator's state table is an
append-only change log (`engine.state_store`) where every checkpoint appends one row per changed key, stamped
with its `_epoch`, and a compaction now and then overwrites the log with the live rows only. So the versions
just before each commit that removed rows (a compaction, a rollback's restore, a restart's discard) together
with the cut's own version hold every row ever appended up to the cut: the same versions retention keeps
(`retention._protecting`). Each is read filtered by the key (Polars pushes the filter into the Parquet
scan), and the rows are deduplicated on the key and `_epoch` (a compaction copies live rows with their epoch).

Only epochs on the line that leads to the cut count: a rollback abandons the epochs after its target, whose
rows stay in the log (the epochs after it are numbered past them, `engine.versioning`). The line is read from
the manifest: each checkpoint descends from the resumable row current when it was committed.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from engine import delta_tables
from engine.blame_edits import EDIT, edits_on_line, with_edits
from engine.delta_tables import before_removals
from engine.errors import UserError
from engine.history import BOOKKEEPING, At, History, state_keys
from engine.manifest import checkpoint_line, cut_epoch
from engine.offset_log import OffsetLog
from engine.storage import Location
from sql import types
from sql.values import parse_text

#: commits that remove no rows: the version before them need not be read


class BlameError(UserError, LookupError):
    """A key that cannot be blamed as given: an unknown column, a value of the wrong type."""


@dataclass
class Blamed:
    """The answer: `changes` (one row per checkpoint that changed the key, oldest first) and what it took."""

    changes: pl.DataFrame
    keys: list[str]
    values: list[str]
    complete: bool  # False: older changes may be missing (`why`)
    line: dict[int, list[int]] = field(default_factory=dict)  # checkpoint epoch -> the epochs it covers
    why: str | None = None  # why older changes may be missing


def blame(
    state: str | Location,
    operator: str,
    key: Mapping[str, Any] | str,
    rows: bool = False,
    storage_options: Mapping[str, str] | None = None,
    at: At = None,
    sql: str | Path | None = None,
) -> pl.DataFrame | tuple[pl.DataFrame, pl.DataFrame]:
    """Every checkpoint that changed the state of `key` in `operator` (a state table as history names it:
    `totals`, `join/left`), oldest first: `epoch`, `change` (`inserted`, `updated`, `deleted`), the key
    columns, `<col>_before` / `<col>_after` for every value column, `epochs` (the epochs the checkpoint
    covers) and `input` (JSON: per covered epoch, each source's slice from the offset log).

    `key` names key columns (a subset: every key that matches is blamed); values may be text, converted to the
    column's type, None is SQL NULL; or a string as `--key` takes it (`"cust=a,day=2026-01-01"`). `at`: blame
    up to that point instead of the current cut. With `rows=True`, also the input
    rows of the key that those slices held (needs `sql`, the pipeline's SQL file, which defines the sources):
    returns `(changes, rows)`."""
    if isinstance(key, str):  # "col=value[,col=value]", as --key takes it
        key = parse_key([key])
    elif not isinstance(key, Mapping):
        raise BlameError(f"key= takes a dict of key columns to values, or 'COLUMN=VALUE[,COLUMN=VALUE]', not {key!r}")
    history = History(state, storage_options)
    found = find_changes(history, operator, key, at)
    if not rows:
        return found.changes
    if sql is None:
        raise BlameError(
            "the input rows need the pipeline's SQL (sql= in Python, --sql FILE on the command line): "
            "the state directory records each source's slices, not where its files are"
        )
    from engine.blame_input import input_rows

    return found.changes, input_rows(history, operator, found, key_filter(history, operator, at), sql)


def key_filter(history: History, operator: str, at: At) -> dict[str, Any]:
    """What the input rows are matched with besides the key: the operator's window (its time attribute)."""
    record = json.loads(history.row(at)["operators"] or "{}").get(operator.split("/")[0], {})
    return {"window": record.get("window")}


def typed_key(
    key: Mapping[str, Any], schema: Mapping[str, pl.DataType], keys: list[str], operator: str
) -> dict[str, Any]:
    """The key's values in its columns' types; unknown columns and values of another type refused."""
    if not key and any(not k.startswith("__") for k in keys):  # `__all`: an aggregate without GROUP BY
        raise BlameError(f"say which key to blame: --key COLUMN=VALUE (key columns of {operator}: {', '.join(keys)})")
    typed: dict[str, Any] = {}
    for column, value in key.items():
        name = next((k for k in keys if k.lower() == str(column).lower()), None)
        if name is None:
            raise BlameError(f"'{column}' is not a key column of {operator}; key columns: {', '.join(keys)}")
        dtype = schema[name]
        if value is None:
            typed[name] = None
            continue
        text = value if isinstance(value, str) else None
        series = (
            pl.select(parse_text(pl.lit(text), dtype).alias("v")).to_series()
            if text is not None
            else pl.Series("v", [value]).cast(dtype, strict=False)
        )
        if series[0] is None:
            raise BlameError(f"{column}={value!r} is not a {types.sql_name(dtype)} (the type of {operator}.{name})")
        typed[name] = series[0]
    return typed


def find_changes(history: History, operator: str, key: Mapping[str, Any], at: At = None) -> Blamed:
    rows = history.manifest_rows()
    cut = history.row(at, rows)
    entry = history.table_entry(cut, operator, ("state",))
    keys = state_keys(entry)
    head = delta_tables.delta(entry.path)
    schema = dict(delta_tables.scan(entry.path, version=entry.version).collect_schema())
    typed = typed_key(key, schema, keys, operator)
    values = [c for c in schema if c not in keys and c not in (*BOOKKEEPING, "_kg")]
    conditions = [pl.col(k).is_null() if v is None else pl.col(k) == pl.lit(v, schema[k]) for k, v in typed.items()]
    match = pl.all_horizontal(conditions) if conditions else pl.lit(True)

    versions, complete = _versions_holding_every_change(head, entry.version)
    why = None if complete else "retention freed older versions of the state: earlier changes may be missing"
    if (branch := _branched(rows)) is not None:
        # A branch starts from a copy of its parent's state: its earlier changes are the parent's to tell.
        complete = False
        why = f"a branch of {branch.get('parent')} at epoch {branch.get('epoch')}: blame the parent for earlier changes"
    frames = []
    for version in sorted(versions):
        try:
            frames.append(delta_tables.scan(entry.path, version=version).filter(match).collect())
        except Exception:  # retention freed this version's files: its rows are in no later version either
            if version == entry.version:
                raise  # the cut itself is readable (History.row checked): this is another failure
            complete, why = False, "retention freed older versions of the state: earlier changes may be missing"
    log = pl.concat(frames, how="vertical_relaxed") if frames else pl.DataFrame(schema=schema)
    line = checkpoint_line(rows, cut)
    edits = edits_on_line(rows, cut, line)
    log = with_edits(log, edits, history, operator, match, keys)
    # The newest version's row of a (key, epoch) wins: a restart may have discarded a crashed run's commit of it.
    log = log.unique([*keys, "_epoch", "__order"], keep="last", maintain_order=True).sort("_epoch", "__order")

    kept = _on_line(rows, cut, line, log.get_column("_epoch").unique().to_list())
    log = log.filter(pl.col("_epoch").is_in(kept))
    changed = sorted(kept)
    ranges, guessed = _ranges(line, changed, _freed_before(rows), _recorded_starts(rows))
    if branch is not None:  # the epochs before the branch's first checkpoint ran in the parent: its to tell
        ranges |= {e: [e] for e in changed if e not in line}
        guessed = [e for e in guessed if e in line]
    if guessed:
        complete = False
        bounded = (
            f"retention deleted the manifest rows of the checkpoints before epoch {_freed_before(rows)}: the epochs "
            f"of checkpoint{'s' if len(guessed) > 1 else ''} {', '.join(map(str, guessed))} are bounded by the "
            f"latest change or checkpoint still known before {'each' if len(guessed) > 1 else 'it'}, and may span "
            "checkpoints that did not change the key"
        )
        why = f"{why}; {bounded}" if why else bounded
    audits = {e.epoch: json.dumps([{"epoch": e.epoch, "edit": e.audit}]) for e in edits}  # as `input` lists reads
    return Blamed(_changes(log, keys, values, ranges, history, audits), keys, values, complete, line, why)


def _recorded_starts(rows: pl.DataFrame) -> dict[int, int]:
    """Where the epochs of a checkpoint retention kept start, as the pass recorded it (`retention.covered_from`):
    the row of the checkpoint before it is gone."""
    starts: dict[int, int] = {}
    for metrics in rows.filter(pl.col("kind") == "retention").get_column("metrics").to_list():
        for epoch, start in json.loads(metrics or "{}").get("covered_from", {}).items():
            starts[int(epoch)] = max(int(start), starts.get(int(epoch), 0))
    return starts


def _freed_before(rows: pl.DataFrame) -> int:
    """Retention deleted the manifest rows of the epochs below this (savepoints' excepted); 0: none."""
    passes = rows.filter(pl.col("kind") == "retention").get_column("metrics").to_list()
    return max((int(json.loads(m or "{}").get("oldest_epoch", 0)) for m in passes), default=0)


def _ranges(
    line: dict[int, list[int]], changed: list[int], freed_before: int, recorded: dict[int, int]
) -> tuple[dict[int, list[int]], list[int]]:
    """The epochs each changing checkpoint covers, and the checkpoints whose range is bounded, not known.

    A checkpoint covers the epochs after the checkpoint before it. When retention deleted the manifest row of
    that one (or of checkpoints between them), the line's range reaches too far back, and a change whose own
    row went has none: the range then starts after the latest checkpoint still known before it (on the line,
    or a change in the log), so no two ranges overlap, and it is reported as bounded; unless the retention pass
    that deleted the row recorded where the range starts (the oldest checkpoint it kept, and savepoints)."""
    ranges: dict[int, list[int]] = {}
    guessed: list[int] = []
    known = sorted(set(line) | set(changed))
    for epoch in changed:
        covers = line.get(epoch)
        if epoch in recorded:  # the pass saw the row before it (`changed` holds no abandoned epoch)
            ranges[epoch] = list(range(max(recorded[epoch], covers[0] if covers else 0), epoch + 1))
            continue
        if covers is not None and not covers[0] < min(epoch, freed_before):
            ranges[epoch] = covers  # no checkpoint before it was deleted: the manifest's range is exact
            continue
        lower = max([covers[0] - 1 if covers else 0, *(e for e in known if e < epoch)])
        ranges[epoch] = list(range(lower + 1, epoch + 1))
        guessed.append(epoch)
    return ranges, guessed


def _versions_holding_every_change(table: Any, cut_version: int) -> tuple[set[int], bool]:
    """The cut's version, and the version before each commit up to it that may have removed rows (an overwrite
    by compaction, a restore): together they hold every row the log ever had up to the cut. And whether the
    log still lists every commit (retention deletes the entries of freed versions)."""
    commits = table.history()
    listed = {int(c["version"]) for c in commits}
    return {cut_version} | before_removals(commits, 0, cut_version), 0 in listed


def _branched(rows: pl.DataFrame) -> dict[str, Any] | None:
    """What a branch's first manifest row says of its parent (None: not a branch)."""
    if rows.is_empty():
        return None
    branch = json.loads(rows.row(0, named=True)["metrics"] or "{}").get("branch")
    return dict(branch) if isinstance(branch, dict) else None


def _on_line(rows: pl.DataFrame, cut: dict[str, Any], line: dict[int, list[int]], epochs: list[int]) -> list[int]:
    """Of the epochs the log names, those on the line. An epoch older than the line's oldest checkpoint whose
    manifest row retention deleted is taken as on the line unless a rollback abandoned it (an epoch after the
    rollback's target, up to the rollback's number)."""
    oldest = min(line) if line else cut_epoch(cut) + 1  # no row left on the line: the cut's own was deleted
    known = set(rows.filter(pl.col("kind") == "epoch").get_column("epoch").to_list())
    # Retention deletes the rows below its oldest epoch but a savepoint's: so also older than that epoch (up to
    # the cut; a rollback cut's number is past its target, the epochs between are abandoned, left out below).
    oldest = max(oldest, min(_freed_before(rows), int(cut["epoch"]) + 1))
    abandoned: list[tuple[int, int]] = []
    for row in rows.filter(pl.col("kind") == "rollback").iter_rows(named=True):
        target = json.loads(row["metrics"] or "{}").get("rollback", {}).get("to_epoch")
        if target is not None:
            abandoned.append((int(target), int(row["epoch"])))
    return [
        e
        for e in epochs
        if e in line or (e < oldest and e not in known and not any(lo < e <= hi for lo, hi in abandoned))
    ]


def _changes(
    log: pl.DataFrame,
    keys: list[str],
    values: list[str],
    line: dict[int, list[int]],
    history: History,
    edits: dict[int, str],
) -> pl.DataFrame:
    """One row per (checkpoint, key) from the key's change-log rows: before (the previous row's values unless
    it was a tombstone), after, the kind of change, the epochs covered and the input they read. A state edit's
    change (engine.blame_edits) is `edited`, after its epoch's own, with the edit as its input."""

    def before(expr: pl.Expr) -> pl.Expr:  # the key's previous change-log row (the log is sorted by epoch)
        return expr.shift(1).over(keys) if keys else expr.shift(1)

    was_absent = before(pl.col("_deleted")).fill_null(True)  # no earlier row, or a tombstone
    frame = log.sort("_epoch", "__order").with_columns(
        *(pl.when(was_absent).then(None).otherwise(before(pl.col(v))).alias(f"{v}_before") for v in values),
        *(pl.when(pl.col("_deleted")).then(None).otherwise(pl.col(v)).alias(f"{v}_after") for v in values),
        pl.when(pl.col("__order") == EDIT)
        .then(pl.lit("edited"))
        .when(pl.col("_deleted"))
        .then(pl.lit("deleted"))
        .when(was_absent)
        .then(pl.lit("inserted"))
        .otherwise(pl.lit("updated"))
        .alias("change"),
        was_absent.alias("__absent"),
    )
    # A tombstone with no earlier row stays: the key entered and left the state within that checkpoint (a window
    # opened and fired in one epoch: only its last change, the tombstone, was committed), or retention freed
    # the versions holding its earlier rows. `deleted` with nothing before says so.
    epochs = frame.get_column("_epoch").unique().to_list()
    covered = {e: line.get(e, [e]) for e in epochs}
    offsets = OffsetLog(history.dir.offsets)
    registrations = _registrations(offsets, max((max(c) for c in covered.values()), default=0))
    per_epoch = pl.DataFrame(
        {
            "epoch": epochs,
            "epochs": [covered[e] for e in epochs],
            "input": [json.dumps(describe_input(offsets, covered[e], registrations)) for e in epochs],
        },
        schema={"epoch": pl.Int64, "epochs": pl.List(pl.Int64), "input": pl.String},
    )
    columns = [c for v in values for c in (f"{v}_before", f"{v}_after")]
    edited = pl.col("__order") == EDIT
    return (
        frame.rename({"_epoch": "epoch"})
        .join(per_epoch, on="epoch", how="left")
        .with_columns(
            pl.when(edited).then(pl.lit([], pl.List(pl.Int64))).otherwise(pl.col("epochs")).alias("epochs"),
            pl.when(edited).then(pl.col("epoch").replace_strict(edits, default=None)).otherwise("input").alias("input"),
        )
        .sort("epoch", "__order", *keys, nulls_last=True)
        .select("epoch", "change", *keys, *columns, "epochs", "input")
    )


# -- the input an epoch read ------------------------------------------------------------------------------------


def describe_input(
    offsets: OffsetLog, epochs: list[int], registrations: dict[str, list[dict[str, Any]]]
) -> list[dict[str, Any]]:
    """Per epoch, each source's slice as the offset log has it, with a filesystem source's files and record
    ranges resolved: `{"epoch", "sources": {name: slice}}`, or `{"epoch", "freed": true}` once retention
    folded the epoch's file away."""
    out: list[dict[str, Any]] = []
    for epoch in epochs:
        logged = offsets.read(epoch)
        if logged is None:
            out.append({"epoch": epoch, "freed": True})
            continue
        sources = {
            name: describe_slice(piece, registrations.get(name, []))
            for name, piece in sorted(logged.get("sources", {}).items())
        }
        out.append({"epoch": epoch, "sources": sources})
    return out


def _registrations(offsets: OffsetLog, until: int) -> dict[str, list[dict[str, Any]]]:
    """Each filesystem source's registrations up to epoch `until`, in order: an index in a slice's
    `start`/`end` names the same registration forever (the list only grows)."""
    return {
        name: [f for piece in pieces for f in piece.get("files_added", [])]
        for name, pieces in offsets.history(until).items()
    }


def describe_slice(piece: dict[str, Any], files: list[dict[str, Any]]) -> dict[str, Any]:
    """A slice for people: a filesystem slice as the files and records it read, a Kafka slice as partitions and
    offsets, any other as its `start` and `end`."""
    if "ranges" in piece:  # kafka, upsert-kafka
        return {
            "partitions": [
                {"topic": t, "partition": int(p), "start_offset": int(a), "end_offset": int(b)}
                for t, p, a, b in piece["ranges"]
            ]
        }
    if "files_added" not in piece:
        return {"start": piece.get("start"), "end": piece.get("end")}
    (first, skip), (last, stop) = piece["start"], piece["end"]
    gone = {f["skip"] for f in files if "skip" in f}
    read = []
    for index in range(first, min(last, len(files) - 1) + 1):
        f = files[index]
        if "records" not in f or index in gone:
            continue  # a skip or a refusal (a dead letter), or a segment skipped
        lo, hi = (skip if index == first else 0), (stop if index == last else f["records"])
        if hi > lo:
            read.append(
                {
                    "file": f["path"],
                    "bytes": [f["start"], f["end"]],
                    "records": [f["first"] + lo, f["first"] + hi],
                }
            )
    return {"start": piece["start"], "end": piece["end"], "files": read}


def parse_key(items: list[str]) -> dict[str, str | None]:
    """`--key` values: `k=v`, repeated or comma-separated (`k=a,ws=2026-01-01 00:00:10`); a comma inside a
    value is kept when what follows it is not `name=`. The value is kept exactly as typed after `=` (spaces
    are part of a string key); an unquoted `NULL` (any case) is SQL NULL, the string 'NULL' is blamed from
    Python (`key={"k": "NULL"}`). A column named twice is refused: which value was meant is not known."""
    key: dict[str, str | None] = {}
    for item in items:
        for part in re.split(r",(?=\s*[A-Za-z_][A-Za-z0-9_]*\s*=)", item):
            name, sep, value = part.partition("=")
            name = name.strip()
            if not sep or not name:
                raise BlameError(f"--key takes COLUMN=VALUE, not '{part}'")
            if any(k.lower() == name.lower() for k in key):
                raise BlameError(f"--key names {name} twice: give each key column once")
            key[name] = None if value.upper() == "NULL" else value
    return key
