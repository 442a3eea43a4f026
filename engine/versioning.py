"""Savepoints and rollback: the manifest's epochs as a version history you can name and return to.

A rollback makes an earlier epoch's consistent cut current again, for everything at once:
- every Delta table the manifest names (sinks, operator state, late rows, dead letters) is restored to its
  version at that epoch, and tables created after it are emptied;
- the source offsets and watermarks go back with the manifest row the rollback appends.
Epoch numbers never go back: the rollback row keeps the latest number, so the epochs that run next get new
numbers and new transaction markers, and no table can skip them as already written (the trap Spark's Delta
sink falls into, delta-facts §2). Every rollback and savepoint change is a manifest row: who, when, why.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import getpass
import json
from pathlib import Path
from typing import Any

import polars as pl
from deltalake import CommitProperties

from engine import delta_tables, faults
from engine.branching import branches_of
from engine.checkpoints import SINK_POSITIONS
from engine.delta_tables import NO_CLEANUP, open_table, to_arrow
from engine.errors import VersioningError
from engine.manifest import (
    RESUMABLE,
    SINK,
    Checkpoint,
    Manifest,
    TableEntry,
    checkpoint_from_row,
    cut_row,
    entries,
    epoch_row,
    live_savepoints,
    rows_of,
)
from engine.manifest import (
    savepoints as savepoints,
)
from engine.offset_log import OffsetLog
from engine.state_dir import StateDir, write_atomic
from engine.storage import location


def _checkpoint(row: dict[str, Any], **changes: Any) -> Checkpoint:
    """A new manifest row made from an existing one; it gets its own commit time."""
    return dataclasses.replace(checkpoint_from_row(row), committed_at=None, **changes)


def create_savepoint(
    state: str | Path, name: str, epoch: int | None = None, reason: str | None = None, user: str | None = None
) -> dict[str, Any]:
    """Name an epoch's cut (default: the latest epoch). Refused while a pipeline runs on the directory (a running
    pipeline takes it itself: `engine.control.savepoint`)."""
    directory = StateDir(location(state))
    with directory.lock():
        return savepoint_locked(directory, name, epoch, reason=reason, user=user)


def savepoint_locked(
    directory: StateDir, name: str, epoch: int | None = None, reason: str | None = None, user: str | None = None
) -> dict[str, Any]:
    """`create_savepoint` for a caller that holds the directory's lease (the runner serving a request)."""
    rows = rows_of(directory)
    if name in live_savepoints(rows):
        raise VersioningError(f"savepoint '{name}' already exists")
    if epoch is None:
        resumable = rows.filter(pl.col("kind").is_in(list(RESUMABLE)))
        if resumable.is_empty():
            raise VersioningError("no epoch has been committed yet")
        epoch = int(resumable.row(-1, named=True)["epoch"])
        if resumable.row(-1, named=True)["kind"] == "rollback":
            raise VersioningError(
                "run an epoch after a rollback before taking a savepoint of it, or name the epoch with --epoch"
            )
    row = epoch_row(rows, epoch)
    faults.commit("savepoint.commit", directory.manifest)
    Manifest(directory.manifest).commit(
        _checkpoint(
            row, kind="savepoint", metrics={"savepoint": name, "user": user or getpass.getuser(), "reason": reason}
        )
    )
    return {"savepoint": name, "epoch": epoch}


def delete_savepoint(
    state: str | Path, name: str, reason: str | None = None, user: str | None = None
) -> dict[str, Any]:
    directory = StateDir(location(state))
    with directory.lock():
        return delete_savepoint_locked(directory, name, reason=reason, user=user)


def delete_savepoint_locked(
    directory: StateDir, name: str, reason: str | None = None, user: str | None = None
) -> dict[str, Any]:
    """`delete_savepoint` for a caller that holds the directory's lease."""
    rows = rows_of(directory)
    if name not in live_savepoints(rows):
        raise VersioningError(f"no savepoint named '{name}'")
    last = rows.row(-1, named=True)
    Manifest(directory.manifest).commit(
        _checkpoint(
            last,
            kind="savepoint_deleted",
            metrics={"savepoint": name, "user": user or getpass.getuser(), "reason": reason},
        )
    )
    return {"deleted": name}


def rollback(
    state: str | Path,
    to_epoch: int | None = None,
    savepoint: str | None = None,
    timestamp: dt.datetime | None = None,
    reason: str | None = None,
    force: bool = False,
    user: str | None = None,
) -> dict[str, Any]:
    """Make an earlier epoch's cut current: state, offsets and Delta sinks together. `user` is recorded in the
    audit (default: the OS user; the console passes its token's name)."""
    directory = StateDir(location(state))
    with directory.lock():
        return rollback_locked(directory, to_epoch, savepoint, timestamp, reason=reason, force=force, user=user)


def rollback_locked(
    directory: StateDir,
    to_epoch: int | None = None,
    savepoint: str | None = None,
    timestamp: dt.datetime | None = None,
    reason: str | None = None,
    force: bool = False,
    user: str | None = None,
) -> dict[str, Any]:
    """`rollback` for a caller that holds the directory's lease."""
    finish_interrupted(directory)
    plan = plan_rollback(directory, to_epoch, savepoint, timestamp)
    if plan["repeated_refusal"] and not force:
        raise VersioningError(plan["repeated_refusal"])
    if plan["missing"]:
        raise VersioningError(plan["missing"])
    intent = {
        "from_epoch": plan["from_epoch"],
        "to_epoch": plan["to_epoch"],
        "savepoint": savepoint,
        "reason": reason,
        "user": user or getpass.getuser(),
        "repeated_output": plan["repeated_output"],
        "compensate": plan["compensate"],
    }
    # The intent is durable before any table changes, so a crash part-way is finished by the next run.
    write_atomic(_intent_path(directory), json.dumps(intent).encode())
    faults.point("rollback.intent-written")
    return _apply(directory, intent)


def rollback_preview(
    state: str | Path,
    to_epoch: int | None = None,
    savepoint: str | None = None,
    timestamp: dt.datetime | None = None,
) -> dict[str, Any]:
    """What `rollback` would do, writing nothing: `{from_epoch, to_epoch, restored, emptied, repeated_output,
    compensated, refused}` (`refused`: the message it would raise without --force, or None)."""
    plan = plan_rollback(StateDir(location(state)), to_epoch, savepoint, timestamp)
    return {
        "from_epoch": plan["from_epoch"],
        "to_epoch": plan["to_epoch"],
        "restored": plan["restored"],
        "emptied": plan["emptied"],
        "repeated_output": plan["repeated_output"],
        "compensated": sorted(plan["compensate"]),
        "refused": plan["repeated_refusal"] or plan["missing"],
    }


def plan_rollback(
    directory: StateDir,
    to_epoch: int | None = None,
    savepoint: str | None = None,
    timestamp: dt.datetime | None = None,
) -> dict[str, Any]:
    """The planning half of a rollback (nothing is written): the target, what is restored, emptied, compensated
    and repeated, and the refusals (`repeated_refusal`: unless forced; `missing`: always)."""
    rows = rows_of(directory)
    epochs = rows.filter(pl.col("kind") == "epoch")
    if savepoint is not None:
        found = live_savepoints(rows).get(savepoint)
        if found is None:
            raise VersioningError(f"no savepoint named '{savepoint}'")
        to_epoch = int(found["epoch"])
    elif timestamp is not None:
        before = epochs.filter(pl.col("committed_at") <= timestamp)
        if before.is_empty():
            raise VersioningError(f"no epoch was committed at or before {timestamp.isoformat()}")
        to_epoch = int(before.row(-1, named=True)["epoch"])
    if to_epoch is None:
        raise VersioningError("say where to roll back to: an epoch, a savepoint or a timestamp")
    target = cut_row(rows, to_epoch, savepoint)  # a savepoint's own tables: an edited one names its own versions
    current = rows.filter(pl.col("kind").is_in(list(RESUMABLE))).row(-1, named=True)

    # Sinks that cannot be restored (print, an append Kafka topic) already showed what epochs after the target
    # produced. An upsert-kafka topic is taken back by compensating upserts and tombstones instead.
    # The target's own positions too: a crashed run may have written epochs after it that no row records.
    positions = {**_sink_positions_of(target), **_sink_positions(rows, target)}
    compensate = {
        name: {"target": _sink_positions_of(target).get(name), "current": position}
        for name, position in positions.items()
        if position.get("connector") == "upsert-kafka"
    }
    sinks = [t for t in [*entries(target), *entries(current)] if t.role == SINK]
    restorable = {t.name for t in sinks} | set(compensate)
    repeated: dict[str, int] = {}
    for row in epochs.filter(pl.col("committed_at") > target["committed_at"]).iter_rows(named=True):
        for sink, count in json.loads(row["metrics"] or "{}").get("rows_out", {}).items():
            if sink not in restorable and count:
                repeated[sink] = repeated.get(sink, 0) + count
    refusal = None
    if repeated:
        listing = ", ".join(
            _repeated(name, count, positions.get(name), to_epoch) for name, count in sorted(repeated.items())
        )
        refusal = (
            f"sinks that cannot be rolled back received output after epoch {to_epoch}: "
            f"{listing}; they would get it again. Pass --force to roll back anyway"
        )
    # A table the manifest names but that is not where it says (a state directory moved away from the sinks
    # beside it) would be left as it is: refuse before anything changes, naming it.
    missing = [t for t in entries(current) if not delta_tables.is_table(t.path)]
    missing_message = None
    if missing:
        listing = ", ".join(f"{t.role} '{t.name}' ({t.path})" for t in missing)
        missing_message = (
            f"cannot roll back: {listing} not found; move the sinks along with the state directory "
            "(keep them beside it), or run the pipeline once so that it records where its SQL writes them"
        )
    target_tables = {_labelled(t) for t in entries(target)}
    return {
        "from_epoch": int(current["epoch"]),
        "to_epoch": to_epoch,
        "restored": sorted(target_tables),
        "emptied": sorted({_labelled(t) for t in entries(current)} - target_tables),
        "repeated_output": repeated,
        "compensate": compensate,
        "repeated_refusal": refusal,
        "missing": missing_message,
    }


def _labelled(table: TableEntry) -> str:
    """A table as a preview names it: a sink, a state table and a source's dead letters may share a name."""
    return {"sink": "sink {}", "state": "state {}", "late": "late rows {}", "dead_letters": "dead letters of {}"}.get(
        table.role, "{}"
    ).format(table.name)


def _sink_positions_of(row: dict[str, Any]) -> dict[str, Any]:
    return dict(json.loads(row["metrics"] or "{}").get(SINK_POSITIONS, {}))


def _sink_positions(rows: pl.DataFrame, target: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The latest position each non-Delta sink recorded after `target` (Kafka sinks: topic, offsets, client)."""
    found: dict[str, dict[str, Any]] = {}
    later = rows.filter(pl.col("kind").is_in(list(RESUMABLE)) & (pl.col("committed_at") > target["committed_at"]))
    for row in later.iter_rows(named=True):
        found.update({n: p for n, p in _sink_positions_of(row).items() if isinstance(p, dict)})
    return found


def _repeated(name: str, count: int, position: dict[str, Any] | None, to_epoch: int) -> str:
    if position is not None and position.get("connector") == "kafka":
        return (
            f"'{name}' (Kafka topic '{position.get('topic')}': {count} messages after epoch {to_epoch} stay in the "
            "topic, and the epochs after the rollback write them again)"
        )
    return f"'{name}' ({count} rows)"


def _compensate(intent: dict[str, Any], positions: dict[str, Any]) -> dict[str, Any]:
    """Roll each upsert-kafka sink back: every key the pipeline wrote since the target gets its value there."""
    compensated: dict[str, Any] = {}
    for name, plan in sorted(intent.get("compensate", {}).items()):
        from engine.sinks.kafka_topic import compensate

        current = plan["current"]

        def fail(err: Any, name: str = name, current: dict[str, Any] = current) -> VersioningError:
            reason = err.str() if hasattr(err, "str") else str(err)
            missing = current.get("credentials_omitted")
            hint = f" (the state directory does not store its credentials: {', '.join(missing)})" if missing else ""
            return VersioningError(
                f"cannot roll back Kafka sink '{name}' (topic '{current.get('topic')}' at "
                f"{current.get('properties', {}).get('bootstrap.servers', '?')}){hint}: {reason}"
            )

        done = compensate(name, plan["target"], current, int(intent["to_epoch"]), fail)
        positions[name] = done["position"]
        compensated[name] = {"topic": current["topic"], "keys": done["keys"], "messages": done["messages"]}
    return compensated


def finish_interrupted(directory: StateDir) -> dict[str, Any] | None:
    """Complete a rollback that a crash interrupted (the caller holds the directory's lock)."""
    path = _intent_path(directory)
    if not path.exists():
        return None
    return _apply(directory, json.loads(path.read_text()))


def _intent_path(directory: StateDir) -> Path:
    return directory.rollback_intent


def _apply(directory: StateDir, intent: dict[str, Any]) -> dict[str, Any]:
    rows = rows_of(directory)
    current = rows.filter(pl.col("kind").is_in(list(RESUMABLE))).row(-1, named=True)
    latest_epoch = int(rows.filter(pl.col("kind") == "epoch").get_column("epoch").max())  # type: ignore[arg-type]
    # Sinks may hold epochs after the last manifest row (a crash before its commit), and restoring a table does
    # not take its markers back (delta-facts §2): the epochs after the rollback are numbered past every epoch
    # that was logged, and so past every epoch a sink may hold.
    latest_epoch = max([latest_epoch, *OffsetLog(directory.offsets).epochs()])
    to_epoch = int(intent["to_epoch"])
    done = json.loads(current["metrics"] or "{}").get("rollback") if current["kind"] == "rollback" else None
    if done and done["to_epoch"] == to_epoch and done["from_epoch"] == intent["from_epoch"]:
        _intent_path(directory).unlink(missing_ok=True)  # the crash came after the manifest row
        return {
            "rolled_back_to": to_epoch,
            "next_epoch": latest_epoch + 1,
            "tables": len(entries(current)),
            "repeated_output": intent["repeated_output"],
        }
    target = cut_row(rows, to_epoch, intent.get("savepoint"))
    marker = {"timelapse.rollback_to_epoch": str(to_epoch)}
    # By role and name: a STATE_ID may name a sink too (`/*+ STATE_ID('per_minute') */ ... INTO per_minute`).
    target_versions = {(t.role, t.name): t for t in entries(target)}
    restored: list[TableEntry] = []
    for entry in entries(current):
        table = open_table(location(entry.path))
        if table is None:
            continue
        keep = target_versions.get((entry.role, entry.name))
        if keep is not None:
            if int(table.version()) != keep.version:
                table.restore(
                    keep.version,
                    commit_properties=CommitProperties(custom_metadata=marker),
                    post_commithook_properties=NO_CLEANUP,
                )
        else:  # created after the target epoch: it held nothing then
            empty = to_arrow(delta_tables.scan(entry.path).head(0).collect())
            delta_tables.write(  # as written: sealed columns stay sealed (engine.encryption)
                table,
                empty,
                mode="overwrite",
                commit_properties=CommitProperties(custom_metadata=marker),
                post_commithook_properties=NO_CLEANUP,
            )
        table.update_incremental()
        restored.append(dataclasses.replace(entry, version=int(table.version())))
        faults.point("rollback.mid-restore")
    # Non-Delta sinks keep the positions they had (a restart looks for its epochs from there); compensated
    # upsert-kafka sinks start after their compensation.
    positions = _sink_positions_of(current)
    compensated = _compensate(intent, positions)
    faults.point("rollback.before-manifest")
    audit = {k: v for k, v in intent.items() if k != "compensate"} | (
        {"compensated": compensated} if compensated else {}
    )
    metrics: dict[str, Any] = {"rollback": audit}
    # Cumulative counters survive the rollback (Prometheus counters never go back): the current row's totals.
    if (totals := json.loads(current["metrics"] or "{}").get("totals")) is not None:
        metrics["totals"] = totals
    if positions:
        metrics[SINK_POSITIONS] = positions
    Manifest(directory.manifest).commit(
        _checkpoint(target, kind="rollback", epoch=latest_epoch, tables=restored, metrics=metrics)
    )
    _intent_path(directory).unlink(missing_ok=True)
    return {
        "rolled_back_to": to_epoch,
        "next_epoch": latest_epoch + 1,
        "tables": len(restored),
        "repeated_output": intent["repeated_output"],
        **({"compensated": compensated} if compensated else {}),
    }


def history(state: str | Path) -> list[dict[str, Any]]:
    """The manifest as events: runs of epochs (compressed into ranges), savepoints and rollbacks, oldest first."""
    events: list[dict[str, Any]] = []
    base = None  # the epoch a run of epochs continues from, after a rollback
    for row in rows_of(StateDir(location(state))).iter_rows(named=True):
        info = json.loads(row["metrics"] or "{}")
        when = row["committed_at"].isoformat()
        if "branch" in info:
            events.append({"kind": "branched_from", "at": when, **info["branch"]})
            continue
        if "bootstrap" in info and row["kind"] == "epoch":
            events.append({"kind": "bootstrap", "at": when, "epoch": row["epoch"], **info["bootstrap"]})
            continue
        if "export" in info and row["kind"] == "epoch":  # a savepoint export (engine.savepoint_export)
            events.append({"kind": "exported_from", "at": when, **info["export"]})
            continue
        if row["kind"] == "epoch":
            last = events[-1] if events else None
            if last is not None and last["kind"] == "epochs" and last["last"] == row["epoch"] - 1:
                last.update(last=row["epoch"], until=when)
                last["rows_in"] += sum(info.get("rows_in", {}).values())
                last["rows_out"] += sum(info.get("rows_out", {}).values())
                if "drain" in info:
                    last["drained"] = info["drain"]
            else:
                events.append(
                    {
                        "kind": "epochs",
                        "first": row["epoch"],
                        "last": row["epoch"],
                        "since": when,
                        "until": when,
                        "continues_from": base,
                        "rows_in": sum(info.get("rows_in", {}).values()),
                        "rows_out": sum(info.get("rows_out", {}).values()),
                        **({"drained": info["drain"]} if "drain" in info else {}),
                    }
                )
        elif row["kind"] == "rollback":
            audit = info.get("rollback", {})
            base = audit.get("to_epoch")
            events.append({"kind": "rollback", "at": when, **audit})
        elif row["kind"] == "retention":
            events.append({"kind": "retention", "at": when, **info})
        else:
            events.append(
                {
                    "kind": row["kind"],
                    "name": info.get("savepoint"),
                    "epoch": row["epoch"],
                    "at": when,
                    "user": info.get("user"),
                    "reason": info.get("reason"),
                    **({"edit": info["edit"]} if "edit" in info else {}),
                }
            )
    for record in branches_of(location(state)):
        position = next(
            (i for i, e in enumerate(events) if (e.get("at") or e.get("since") or "") > record["created_at"]),
            len(events),
        )
        events.insert(position, {"kind": "branch", "at": record["created_at"], **record})
    return events


def render_history(events: list[dict[str, Any]]) -> str:
    lines = []
    for event in events:
        if event["kind"] == "epochs":
            span = (
                f"epoch {event['first']}"
                if event["first"] == event["last"]
                else (f"epochs {event['first']}-{event['last']}")
            )
            branch = f"  (continuing from epoch {event['continues_from']})" if event["continues_from"] else ""
            if event.get("drained"):
                branch += f"  drained at epoch {event['drained']}: every watermark at the end of time"
            indent = "└─ " if event["continues_from"] else ""
            lines.append(
                f"{indent}{span:<18} {event['since'][:19]} .. {event['until'][11:19]}  "
                f"in {event['rows_in']}, out {event['rows_out']}{branch}"
            )
        elif event["kind"] == "rollback":
            reason = f' "{event["reason"]}"' if event.get("reason") else ""
            compensated = "".join(
                f"; Kafka '{name}' (topic {done['topic']}): {done['keys']} keys compensated"
                for name, done in sorted(event.get("compensated", {}).items())
            )
            lines.append(
                f"rollback {event['from_epoch']} -> {event['to_epoch']}  {event['at'][:19]}  "
                f"{event.get('user') or ''}{reason}{compensated}"
            )
        elif event["kind"] == "branched_from":
            origin = f"savepoint '{event['savepoint']}' = " if event.get("savepoint") else ""
            lines.append(f"branched from {event['parent']} at {origin}epoch {event['epoch']}  {event['at'][:19]}")
        elif event["kind"] == "exported_from":
            lines.append(
                f"export of {event['origin']} at savepoint '{event['savepoint']}' = epoch {event['epoch']}  "
                f"(exported {event['created_at'][:19]} by {event['user']})"
            )
        elif event["kind"] == "branch":
            origin = f"savepoint '{event['savepoint']}' = " if event.get("savepoint") else ""
            lines.append(f"   ├─ branch {event['path']} from {origin}epoch {event['epoch']}  {event['at'][:19]}")
        elif event["kind"] == "retention":
            changed = (
                f", policy changed from {event['policy_changed_from']}" if event.get("policy_changed_from") else ""
            )
            lines.append(
                f"   retention: epochs before {event['oldest_epoch']} freed ({event['expired_epochs']} checkpoints;"
                f" {event.get('policy')}{changed})  {event['at'][:19]}  {_who(event)}"
            )
        elif event["kind"] == "savepoint":
            lines.append(
                f"   savepoint '{event['name']}' = epoch {event['epoch']}{_edited(event)}  {event['at'][:19]}  "
                f"{_who(event)}"
            )
        elif event["kind"] == "bootstrap":
            lines.append(
                f"bootstrap {event['operator']}: {event['rows']} rows from {event['from']}  {event['at'][:19]}  "
                f"{_who(event)}"
            )
        else:
            lines.append(f"   savepoint '{event['name']}' deleted  {event['at'][:19]}  {_who(event)}")
    return "\n".join(lines)


def _edited(event: dict[str, Any]) -> str:
    """What an edited savepoint changed (engine.state_edit), in a few words."""
    edit = event.get("edit")
    if not edit:
        return ""
    origin = f"savepoint '{edit['from']['savepoint']}'" if "savepoint" in edit["from"] else "the epoch"
    changed = "; ".join(
        f"{table} " + ", ".join(f"{n} {what}" for what, n in counts.items() if n)
        for table, counts in edit["tables"].items()
    )
    return f" (edited from {origin}: {changed})"


def _who(event: dict[str, Any]) -> str:
    """The audit trail of an event: who, and why when they said."""
    reason = f' "{event["reason"]}"' if event.get("reason") else ""
    return f"{event.get('user') or ''}{reason}".strip()
