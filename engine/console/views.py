"""What the pages and the API show, computed from a state directory's history (pure reads, JSON-able).

Tables (operator state, diffs, late rows, dead letters, SQL results) go out as `{columns: [{name, type}], rows:
[[value, ...], ...]}`: each row a list in the order of `columns`. Values are made JSON-able by Polars, column by
column (times as ISO text, decimals as text, binary as hex, NaN as null); integers stay integers, however big.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Mapping
from typing import Any

import polars as pl

from engine.history import At, History
from engine.manifest import RESUMABLE, live_savepoints
from engine.storage import Location

MAX_LIMIT = 1000


# -- values ------------------------------------------------------------------------------------------------------
def parse_at(text: str | None) -> At:
    """A point in time as the API takes it: digits are an epoch, anything else a savepoint name or an ISO time
    (what `History.row` accepts); empty is the current cut."""
    if text is None or not text.strip():
        return None
    text = text.strip()
    return int(text) if text.lstrip("-").isdigit() else text


def iso(value: Any) -> Any:
    return value.isoformat() if isinstance(value, dt.datetime | dt.date | dt.time) else value


def _plain(column: str, dtype: pl.DataType) -> pl.Expr:
    """`column` as JSON-able values, vectorised."""
    col = pl.col(column)
    if isinstance(dtype, pl.Datetime):
        pattern = "%Y-%m-%dT%H:%M:%S%.f" + ("%:z" if dtype.time_zone else "")
        return col.dt.to_string(pattern)
    if isinstance(dtype, pl.Date | pl.Time | pl.Decimal | pl.Duration | pl.Categorical | pl.Enum | pl.Object):
        return col.cast(pl.String)
    if isinstance(dtype, pl.Binary):
        return col.bin.encode("hex")
    if isinstance(dtype, pl.Float32 | pl.Float64):
        return col.fill_nan(None)
    return col


def table(frame: pl.DataFrame) -> dict[str, Any]:
    """`{columns: [{name, type}], rows: [[...], ...]}` of a frame."""
    columns = [{"name": name, "type": str(dtype)} for name, dtype in frame.schema.items()]
    plain = frame.select(_plain(name, dtype) for name, dtype in frame.schema.items()) if frame.width else frame
    return {"columns": columns, "rows": [list(row) for row in plain.rows()]}


def records(frame: pl.DataFrame) -> list[dict[str, Any]]:
    """A frame as a list of JSON-able dicts (small frames: checkpoints, savepoints)."""
    plain = frame.select(_plain(name, dtype) for name, dtype in frame.schema.items()) if frame.width else frame
    return plain.to_dicts()


def matching(frame: pl.DataFrame, q: str | None) -> pl.DataFrame:
    """The rows where any column's text contains `q` (case-insensitive), vectorised."""
    if not q or not frame.width:
        return frame
    texts = []
    for name, dtype in frame.schema.items():
        text = _plain(name, dtype)
        if isinstance(dtype, pl.Struct):
            text = pl.col(name).struct.json_encode()
        elif isinstance(dtype, pl.List | pl.Array):
            text = pl.col(name).cast(pl.List(pl.String), strict=False).list.join(",")
        texts.append(text.cast(pl.String, strict=False).str.to_lowercase().str.contains(q.lower(), literal=True))
    return frame.filter(pl.any_horizontal(texts).fill_null(False))


def page(frame: pl.DataFrame, q: str | None, offset: int, limit: int) -> dict[str, Any]:
    """One page of `frame` after `q`: `{columns, total, offset, limit, rows}`."""
    kept = matching(frame, q)
    limit = max(0, min(limit, MAX_LIMIT))
    offset = max(0, offset)
    shown = table(kept.slice(offset, limit))
    return {"columns": shown["columns"], "total": kept.height, "offset": offset, "limit": limit, "rows": shown["rows"]}


def metrics_of(row: Mapping[str, Any]) -> dict[str, Any]:
    return json.loads(row.get("metrics") or "{}")


def _seconds(a: dt.datetime | None, b: dt.datetime | None) -> float | None:
    return None if a is None or b is None else (a - b).total_seconds()


def _rate(rows: int, seconds: float | None) -> float | None:
    return round(rows / seconds, 3) if seconds and seconds > 0 else None


# -- pipelines ---------------------------------------------------------------------------------------------------
def holder_of(path: Location) -> dict[str, Any] | None:
    """The running writer: host, pid and heartbeat (never the lease's token)."""
    from engine.control import holder

    found = holder(path)
    if found is None:
        return None
    heartbeat = found.get("heartbeat")
    return {
        "host": found.get("host"),
        "pid": found.get("pid"),
        "heartbeat": iso(dt.datetime.fromtimestamp(float(heartbeat), dt.UTC)) if heartbeat else None,
    }


def pipeline_summary(name: str, path: Location, history: History | None = None) -> dict[str, Any]:
    """One line of the Pipelines page: running or not (the lease heartbeat), last epoch, watermark and its lag,
    rows per second (of the last checkpoint, over the time since the one before)."""
    from engine.branching import branch_info

    held = holder_of(path)
    summary: dict[str, Any] = {
        "name": name,
        "path": str(path),
        "running": held is not None,
        "holder": held,
        "last_epoch": None,
        "committed_at": None,
        "watermark": None,
        "watermark_lag_s": None,
        "rows_in_per_s": None,
        "rows_out_per_s": None,
        "branch_of": None,
    }
    try:
        info = branch_info(path)  # type: ignore[arg-type]
    except (OSError, ValueError):  # an unreadable branch.json does not hide the pipeline
        info = None
    if info:
        summary["branch_of"] = info.get("parent")
    if history is None:
        return summary
    resumable = history.manifest_rows().filter(pl.col("kind").is_in(list(RESUMABLE)))
    if resumable.is_empty():
        return summary
    last = resumable.row(-1, named=True)
    # rates from the last two epoch rows (a rollback row carries no counts)
    epochs = resumable.filter(pl.col("kind") == "epoch").tail(2).select("committed_at", "metrics").rows()
    seconds = _seconds(epochs[1][0], epochs[0][0]) if len(epochs) == 2 else None
    metrics = json.loads(epochs[-1][1] or "{}") if epochs else {}
    summary.update(
        last_epoch=last["epoch"],
        committed_at=iso(last["committed_at"]),
        watermark=iso(last["watermark"]),
        watermark_lag_s=_seconds(last["committed_at"], last["watermark"]),
        rows_in_per_s=_rate(sum(metrics.get("rows_in", {}).values()), seconds),
        rows_out_per_s=_rate(sum(metrics.get("rows_out", {}).values()), seconds),
    )
    return summary


def pipeline_detail(name: str, path: Location, history: History) -> dict[str, Any]:
    """The summary, plus the operators (state id, kind, key, what each keeps), sources, sinks and savepoints."""
    summary = pipeline_summary(name, path, history)
    try:
        row = history.row()
    except LookupError:
        return {**summary, "operators": [], "sources": [], "sinks": [], "savepoints": []}
    operators = [
        {**o, "key": json.loads(o["key"] or "null"), "state": json.loads(o["state"] or "null")}
        for o in history.operators().to_dicts()
    ]
    offsets = json.loads(row.get("source_offsets") or "{}")
    metrics = metrics_of(row)
    totals = metrics.get("totals") or {}
    sources = [
        {
            "name": source,
            "watermark": position.get("watermark") if isinstance(position, dict) else None,
            "rows_in": (totals.get("rows_in") or {}).get(source),
            "dead_letters": (totals.get("dead_letters") or {}).get(source),
        }
        for source, position in offsets.items()
    ]
    sinks = [
        {
            "name": t["name"],
            "path": t["path"],
            "version": t["version"],
            "rows_out": (totals.get("rows_out") or {}).get(t["name"]),
        }
        for t in row["tables"] or []
        if t["role"] == "sink"
    ]
    # Sinks that are not Delta tables (print, Kafka) have no table entry: their output counts name them.
    tabled = {sink["name"] for sink in sinks}
    outputs = {**(totals.get("rows_out") or {}), **metrics.get("rows_out", {}), **metrics.get("sink_positions", {})}
    sinks += [
        {"name": sink, "path": None, "version": None, "rows_out": (totals.get("rows_out") or {}).get(sink)}
        for sink in sorted(set(outputs) - tabled)
    ]
    return {
        **summary,
        "plan_fingerprint": row.get("plan_fingerprint"),
        "operators": operators,
        "sources": sources,
        "sinks": sinks,
        "savepoints": savepoints(history),
        "totals": totals or None,
    }


def savepoints(history: History) -> list[dict[str, Any]]:
    live = live_savepoints(history.manifest_rows())
    return [{**sp, "created_at": iso(sp["created_at"])} for sp in sorted(live.values(), key=lambda s: s["epoch"])]


def checkpoints(history: History) -> list[dict[str, Any]]:
    return records(history.checkpoints())


def series(history: History, limit: int = 200) -> list[dict[str, Any]]:
    """Per checkpoint row (the last `limit`), what the charts plot."""
    rows = history.manifest_rows().filter(pl.col("kind") == "epoch")
    limit = max(1, min(limit, MAX_LIMIT))
    tail = rows.tail(limit + 1).select("epoch", "committed_at", "watermark", "metrics").to_dicts()
    out = []
    for previous, row in zip([None, *tail[:-1]], tail, strict=True):
        metrics = metrics_of(row)
        first, last = (metrics.get("epochs") or [row["epoch"], row["epoch"]])[:2]
        epochs = max(1, int(last) - int(first) + 1)
        seconds = _seconds(row["committed_at"], previous["committed_at"]) if previous else None
        rows_in = sum(metrics.get("rows_in", {}).values())
        rows_out = sum(metrics.get("rows_out", {}).values())
        duration = metrics.get("duration_ms")
        out.append(
            {
                "epoch": row["epoch"],
                "committed_at": iso(row["committed_at"]),
                "rows_in": rows_in,
                "rows_out": rows_out,
                "rows_in_per_s": _rate(rows_in, seconds),
                "rows_out_per_s": _rate(rows_out, seconds),
                "epoch_ms": round(duration / epochs, 3) if duration is not None else None,
                "checkpoint_ms": metrics.get("checkpoint_ms"),
                "watermark_lag_s": _seconds(row["committed_at"], row["watermark"]),
                "late_rows": sum(metrics.get("late_rows", {}).values()),
                "dead_letters": sum(metrics.get("dead_letters", {}).values()),
                "state_rows": metrics.get("state_rows", {}),
                "state_bytes": metrics.get("state_bytes", {}),
            }
        )
    return out[-limit:]


# -- the version tree --------------------------------------------------------------------------------------------
def tree(path: Location, served: Callable[[str], str | None]) -> dict[str, Any]:
    """The version tree from `engine.versioning.history`: runs of epochs are `run` nodes on a lane; a rollback starts
    a new lane from its target epoch; savepoints, drains, retention and branches are nodes; edges join consecutive
    nodes of a lane and a rollback's target to the lane it starts. `served` maps a branch's path to its console
    name (None when not served)."""
    from engine import versioning

    nodes: list[dict[str, Any]] = []
    edges: list[dict[str, str]] = []
    lane = 0
    last_of_lane: dict[int, str] = {}

    def add(kind: str, label: str, **fields: Any) -> dict[str, Any]:
        node = {
            "id": f"n{len(nodes)}",
            "kind": kind,
            "label": label,
            "epoch": None,
            "first": None,
            "last": None,
            "at": None,
            "lane": lane,
            "user": None,
            "reason": None,
            "pipeline": None,
            **fields,
        }
        if node["lane"] in last_of_lane:
            edges.append({"from": last_of_lane[node["lane"]], "to": node["id"]})
        last_of_lane[node["lane"]] = node["id"]
        nodes.append(node)
        return node

    for event in versioning.history(path):  # type: ignore[arg-type]
        kind = event["kind"]
        if kind == "epochs":
            first, last = event["first"], event["last"]
            label = f"epoch {first}" if first == last else f"epochs {first}-{last}"
            add(
                "run",
                label,
                epoch=last,
                first=first,
                last=last,
                at=event["since"],
                until=event["until"],
                rows_in=event["rows_in"],
                rows_out=event["rows_out"],
            )
            if event.get("drained") is not None:
                add("drain", f"drained at epoch {event['drained']}", epoch=event["drained"], at=event["until"])
        elif kind == "rollback":
            target = event.get("to_epoch")
            source = next(
                (n for n in reversed(nodes) if n["kind"] == "run" and n["first"] <= (target or 0) <= n["last"]), None
            )
            lane = max(last_of_lane, default=-1) + 1
            node = add(
                "rollback",
                f"rollback {event.get('from_epoch')} -> {target}",
                epoch=target,
                at=event["at"],
                user=event.get("user"),
                reason=event.get("reason"),
                from_epoch=event.get("from_epoch"),
            )
            if source is not None:
                edges.append({"from": source["id"], "to": node["id"]})
        elif kind == "branched_from":
            add(
                "branched_from",
                f"branched from {event.get('parent')} at epoch {event.get('epoch')}",
                epoch=event.get("epoch"),
                at=event["at"],
                parent=event.get("parent"),
                savepoint=event.get("savepoint"),
                pipeline=served(event["parent"]) if event.get("parent") else None,
            )
        elif kind == "branch":
            origin = f"savepoint '{event['savepoint']}'" if event.get("savepoint") else f"epoch {event.get('epoch')}"
            add(
                "branch",
                f"branch {event.get('path')} from {origin}",
                epoch=event.get("epoch"),
                at=event["at"],
                user=event.get("user"),
                path=event.get("path"),
                savepoint=event.get("savepoint"),
                pipeline=served(event["path"]) if event.get("path") else None,
            )
        elif kind == "retention":
            add(
                "retention",
                f"retention: epochs before {event.get('oldest_epoch')} freed",
                epoch=event.get("oldest_epoch"),
                at=event["at"],
                user=event.get("user"),
                reason=event.get("reason"),
                policy=event.get("policy"),
            )
        else:
            deleted = kind != "savepoint"
            add(
                "savepoint",
                f"savepoint '{event.get('name')}'" + (" deleted" if deleted else ""),
                epoch=event.get("epoch"),
                at=event["at"],
                user=event.get("user"),
                reason=event.get("reason"),
                name=event.get("name"),
                deleted=deleted,
            )
    return {"nodes": nodes, "edges": edges}


# -- the plan ----------------------------------------------------------------------------------------------------
def plan(history: History) -> dict[str, Any]:
    """The plan graph of the current cut, from `plans/<fingerprint>.json` (written by the runner)."""
    row = history.row()
    fingerprint = row.get("plan_fingerprint") or ""
    path = history.dir.plan_file(fingerprint)
    try:
        recorded = json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(
            f"no plan recorded for fingerprint '{fingerprint}': the directory was last run by a version that did "
            "not keep plans; run it again to record one"
        ) from None
    if isinstance(recorded, list):
        recorded = {"nodes": recorded}
    return {**recorded, "fingerprint": recorded.get("fingerprint", fingerprint)}
