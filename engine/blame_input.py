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
    covered = {int(e): list(c) for e, c in zip(found.changes["epoch"], found.changes["epochs"], strict=True)}
    if not covered:
        return _empty()
    # The full keys each checkpoint changed (a part of the key given blames every key it matches): a row is
    # matched against those, so a window's row is matched against the bounds of the window that changed.
    keys = {cp: found.changes.filter(pl.col("epoch") == cp).select(found.keys).unique().to_dicts() for cp in covered}
    registered = offsets.history(max(max(c) for c in covered.values()))
    sources: dict[str, Source] = {}
    frames: list[pl.DataFrame] = []
    unmatched: set[str] = set()
    for checkpoint, epochs in sorted(covered.items()):
        for epoch in epochs:
            logged = offsets.read(epoch)
            if logged is None:
                continue  # freed by retention: the changes frame says so in `input`
            for name, piece in sorted(logged.get("sources", {}).items()):
                if name not in scans:
                    continue
                if name not in sources:
                    sources[name] = make_source(scans[name], pipeline.base_dir)
                    # Every registration: indexes in a slice name the same registration forever.
                    sources[name].restore(None, registered.get(name, []))
                for file, rows in _read(sources[name], piece):
                    condition, missed = _any_key(keys[checkpoint], match.get("window"), dict(rows.schema))
                    unmatched |= missed
                    if condition is None:
                        continue  # the source has none of the key's columns: none of its rows is this key's
                    kept = rows.filter(condition)
                    if kept.height:
                        frames.append(
                            kept.select(
                                pl.lit(checkpoint, pl.Int64).alias("epoch"),
                                pl.lit(epoch, pl.Int64).alias("read_in"),
                                pl.lit(name).alias("source"),
                                pl.lit(file, pl.String).alias("file"),
                                pl.all(),
                            )
                        )
    for source in sources.values():
        source.close()
    out = pl.concat(frames, how="diagonal_relaxed") if frames else _empty()
    return out.with_columns(pl.lit(sorted(unmatched), pl.List(pl.String)).alias("unmatched"))


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


def _any_key(
    keys: list[dict[str, Any]], window: str | None, columns: dict[str, pl.DataType]
) -> tuple[pl.Expr | None, set[str]]:
    """The filter keeping a source's rows of any of `keys`, and the key columns it cannot compare."""
    conditions, missed = [], set()
    for key in keys:
        condition, columns_missed = _condition(key, window, columns)
        missed |= columns_missed
        if condition is not None:
            conditions.append(condition)
    return (pl.any_horizontal(conditions) if conditions else None), missed


def _condition(
    key: dict[str, Any], window: str | None, columns: dict[str, pl.DataType]
) -> tuple[pl.Expr | None, set[str]]:
    """The filter a source's rows of one key are kept by, and the key columns it cannot compare; None: nothing
    to compare (the source has none of the key's columns: its rows are not this key's)."""
    parts: list[pl.Expr] = []
    missed: set[str] = set()
    lowered = {c.lower(): c for c in columns}
    time = _time_attribute(window)
    for name, value in key.items():
        if name == GLOBAL_KEY:
            parts.append(pl.lit(True))  # an aggregate without GROUP BY: every row is its key's
            continue
        column = lowered.get(name.lower())
        if column is not None:
            parts.append(pl.col(column).is_null() if value is None else pl.col(column) == pl.lit(value))
        elif name in ("window_start", "window_end") and time is not None and time.lower() in lowered:
            t = pl.col(lowered[time.lower()])
            parts.append(t >= pl.lit(value) if name == "window_start" else t < pl.lit(value))
        else:
            missed.add(name)
    if not parts:
        return None, missed
    return pl.all_horizontal(parts), missed


def _time_attribute(window: str | None) -> str | None:
    """The time column of an operator's window as the manifest records it: `TUMBLE(ts, 0:00:10)` -> `ts`."""
    found = re.match(r"\s*\w+\(\s*([^,)\s]+)", window or "")
    return found.group(1).strip('`"') if found else None


def _read(source: Source, piece: dict[str, Any]) -> list[tuple[str | None, pl.DataFrame]]:
    """A slice's rows; a filesystem slice file by file (its records ranges as logged), so each row has its file."""
    if isinstance(source, FileSource):
        files, spans = source._spans(piece)
        return [(files[i].path, source._read_segment(files[i], lo, hi).rows) for i, lo, hi in spans]
    return [(None, source.read(piece).rows)]
