"""The input rows of a blamed key: exactly the slices the offset log records for the blamed epochs, read again
through the pipeline's own sources (so typed and parsed as the run read them), kept where they hold the key.

The state directory records each source's slices but not the source's definition (its folder, format, schema,
brokers): those come from the pipeline's SQL, planned here without running anything.

A row holds the key when every key column it has equals the key's value. A window aggregate's key has
`window_start` / `window_end`, computed from the time attribute: a row matches when its time attribute falls
in `[window_start, window_end)` (the bounds given). A key column computed otherwise (`GROUP BY UPPER(k) AS u`)
and absent from the source is not matched (reported in `unmatched`): the source's rows are then filtered by
the other key columns only.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import polars as pl

from engine.errors import UserError
from engine.history import History
from engine.offset_log import OffsetLog
from engine.sources import Source, make_source
from engine.sources.filesystem import FileSource

#: the key column of an aggregate without GROUP BY (its one group)
GLOBAL_KEY = "__all"
#: a window aggregate's key columns computed from the time attribute
WINDOW_BOUNDS = ("window_start", "window_end")


def input_rows(history: History, operator: str, found: Any, match: dict[str, Any], sql: str | Path) -> pl.DataFrame:
    """`epoch` (the blamed checkpoint), `read_in` (the epoch that read the row), `source`, `file` (filesystem
    sources), then the source's columns; `unmatched` lists key columns no source row could be compared on."""
    from engine.pipeline import Pipeline

    script = Path(sql)
    if not script.is_file():
        raise UserError(f"no SQL file {sql}: give the pipeline's SQL (--sql FILE) to read its input rows")
    pipeline = Pipeline.from_sql(script, state=history.dir.root)
    scans = _scans_of(pipeline.plan, operator)
    offsets = OffsetLog(history.dir.offsets)
    # (an edit's change covers no epoch: engine.blame_edits)
    covered = {int(e): list(c) for e, c in zip(found.changes["epoch"], found.changes["epochs"], strict=True) if len(c)}
    if not covered:
        return _empty()
    # The full keys each checkpoint changed (a part of the key given blames every key it matches): a row is
    # matched against those, so a window's row is matched against the bounds of the window that changed.
    keys = {cp: found.changes.filter(pl.col("epoch") == cp).select(found.keys).unique() for cp in covered}
    registered = offsets.history(max(max(c) for c in covered.values()))
    sources: dict[str, Source] = {}
    frames: list[pl.DataFrame] = []
    used: set[str] = set()  # key columns some source's rows were filtered by
    unfiltered: set[str] = set()  # key columns a source whose rows are listed was not filtered by
    try:
        for checkpoint, epochs in sorted(covered.items()):
            for epoch in epochs:
                logged = offsets.read(epoch)
                if logged is None:
                    continue  # freed by retention: the changes frame says so in `input`
                for name, piece in sorted(logged.get("sources", {}).items()):
                    if name not in scans:
                        continue  # a source that does not feed the operator
                    if name not in sources:
                        sources[name] = make_source(scans[name], pipeline.base_dir)
                        # Every registration: indexes in a slice name the same registration forever.
                        sources[name].restore(None, registered.get(name, []))
                    for file, rows in _read(sources[name], piece, epoch):
                        kept, missed = _keep(rows, keys[checkpoint], match.get("window"))
                        used |= set(keys[checkpoint].columns) - missed
                        if kept is not None:
                            unfiltered |= missed
                        if kept is not None and kept.height:
                            frames.append(_labelled(kept, checkpoint, epoch, name, file))
    finally:
        for source in sources.values():
            source.close()
    out = pl.concat(frames, how="diagonal_relaxed") if frames else _empty()
    # Not matched: a key column no source could be filtered by, or one that rows listed were not filtered by
    # (a source without any key column lists no rows, so it leaves nothing unmatched).
    every = {k for k in found.keys if k != GLOBAL_KEY}
    unmatched = (every - used) | unfiltered
    return out.with_columns(pl.lit(sorted(unmatched), pl.List(pl.String)).alias("unmatched"))


def _labelled(rows: pl.DataFrame, checkpoint: int, epoch: int, source: str, file: str | None) -> pl.DataFrame:
    return rows.select(
        pl.lit(checkpoint, pl.Int64).alias("epoch"),
        pl.lit(epoch, pl.Int64).alias("read_in"),
        pl.lit(source).alias("source"),
        pl.lit(file, pl.String).alias("file"),
        pl.all(),
    )


def _empty() -> pl.DataFrame:
    return pl.DataFrame(
        schema={"epoch": pl.Int64, "read_in": pl.Int64, "source": pl.String, "file": pl.String}
    ).with_columns(pl.lit([], pl.List(pl.String)).alias("unmatched"))


def _scans_of(plan: Any, operator: str) -> dict[str, Any]:
    """The source tables upstream of the operator's state table (`op/left`: the join's left input)."""
    from sql.plan import Scan

    root, _, part = operator.partition("/")
    node = next((n for n in plan.nodes if n.stateful and getattr(n, "state_id", None) == root), None)
    if node is None:
        raise UserError(f"the SQL given has no stateful operator '{root}': is it the pipeline that wrote the state?")
    inputs = {"left": node.inputs[:1], "right": node.inputs[1:2]}.get(part, [node])
    return {n.table.name: n.table for i in inputs for n in i.walk() if isinstance(n, Scan)}


def _keep(rows: pl.DataFrame, keys: pl.DataFrame, window: str | None) -> tuple[pl.DataFrame | None, set[str]]:
    """The rows of any of `keys` (one row per full key), as a join, and the key columns the rows cannot be
    compared on; None: the rows have none of the key's columns (no row of theirs is one of these keys')."""
    lowered = {c.lower(): c for c in rows.columns}
    time = _time_attribute(window)
    time = lowered.get(time.lower()) if time else None
    equal = {k: lowered[k.lower()] for k in keys.columns if k != GLOBAL_KEY and k.lower() in lowered}
    bounds = [k for k in keys.columns if k in WINDOW_BOUNDS and k not in equal and time is not None]
    missed = {k for k in keys.columns if k != GLOBAL_KEY and k not in equal and k not in bounds}
    if not equal and not bounds:
        return (rows if GLOBAL_KEY in keys.columns else None), missed
    # The keys in the rows' types, named apart from the rows' columns.
    wanted = keys.select(
        *(pl.col(k).cast(rows.schema[c]).alias(f"__key_{k}") for k, c in equal.items()),
        *(pl.col(k).cast(rows.schema[time]).alias(f"__key_{k}") for k in bounds),  # type: ignore[index]
    ).unique()
    if not bounds:
        return rows.join(
            wanted, left_on=list(equal.values()), right_on=[f"__key_{k}" for k in equal], how="semi", nulls_equal=True
        ), missed
    assert time is not None
    conditions = [pl.col(c) == pl.col(f"__key_{k}") for k, c in equal.items()]
    conditions += [
        pl.col(time) >= pl.col(f"__key_{k}") if k == "window_start" else pl.col(time) < pl.col(f"__key_{k}")
        for k in bounds
    ]
    # A row may fall in several of the keys' windows (HOP): each row once, in input order.
    numbered = rows.with_row_index("__row")
    joined = numbered.join_where(wanted, *conditions).select(numbered.columns).unique("__row").sort("__row")
    return joined.drop("__row"), missed


def _changed_since(source: FileSource, entry: Any, lo: int, hi: int, epoch: int) -> UserError:
    """A file that no longer holds what the epoch read: the records cannot be read again as they were."""
    _, problem = source._load(source.base / entry.path, entry, None)
    what = {
        "was deleted after it was registered": "was deleted",
        "changed after it was registered": "was rewritten",
    }.get(problem or "", problem or "changed")
    return UserError(
        f"the input epoch {epoch} read cannot be read again: {entry.path} {what} since epoch {epoch} read its "
        f"records {entry.first + lo} to {entry.first + hi - 1}, so they are no longer there as they were read "
        "(blame without --rows still shows the slice)"
    )


def _time_attribute(window: str | None) -> str | None:
    """The time column of an operator's window as the manifest records it: `TUMBLE(ts, 0:00:10)` -> `ts`."""
    found = re.match(r"\s*\w+\(\s*([^,)\s]+)", window or "")
    return found.group(1).strip('`"') if found else None


def _read(source: Source, piece: dict[str, Any], epoch: int) -> list[tuple[str | None, pl.DataFrame]]:
    """A slice's rows; a filesystem slice file by file (its records ranges as logged), so each row has its file."""
    if isinstance(source, FileSource):
        files, spans = source._spans(piece)
        out = []
        for i, lo, hi in spans:
            try:
                out.append((files[i].path, source._read_segment(files[i], lo, hi).rows))
            except UserError:
                raise _changed_since(source, files[i], lo, hi, epoch) from None
        return out
    try:
        return [(None, source.read(piece).rows)]
    except UserError as err:  # a file changed or gone since, a topic compacted: say which epoch's input
        raise UserError(f"the input epoch {epoch} read cannot be read again: {err}") from None
