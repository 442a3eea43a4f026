"""State edits on a blamed key's line: a run continued from an edited savepoint (`timelapse state edit`, then a
rollback to it) holds rows the edit wrote with the epoch of its cut. Blame shows them as what they are, an edit
(who, why, the statements) after that epoch's own change, not as the effect of that epoch's input."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import polars as pl

from engine import delta_tables
from engine.history import History
from engine.manifest import epoch_row
from engine.state_store import resolve

#: `__order` of a change-log row: the epoch's own change first, then the edit made at that epoch's cut
OWN, EDIT = 0, 1


@dataclass
class Edit:
    epoch: int
    savepoint: dict[str, Any]  # the edited savepoint's manifest row
    audit: dict[str, Any]  # who edited, why and how: savepoint, user, reason, statements


def edits_on_line(rows: pl.DataFrame, cut: dict[str, Any], line: dict[int, list[int]]) -> list[Edit]:
    """The edited savepoints the line continued from: a rollback to one, whose epochs after it are on the line
    (or which is the cut itself)."""
    latest: dict[str, dict[str, Any]] = {}
    found: list[Edit] = []
    for row in rows.iter_rows(named=True):
        metrics = json.loads(row["metrics"] or "{}")
        if row["kind"] == "savepoint":
            latest[metrics.get("savepoint")] = row
        if row["kind"] != "rollback":
            continue
        audit = metrics.get("rollback", {})
        saved = latest.get(audit.get("savepoint"))
        edit = json.loads(saved["metrics"] or "{}").get("edit") if saved is not None else None
        target = audit.get("to_epoch")
        if edit is None or target is None or int(target) not in line:
            continue
        continued = any(covers[0] == int(row["epoch"]) + 1 for covers in line.values())
        if continued or (cut["kind"] == "rollback" and cut["committed_at"] == row["committed_at"]):
            about = json.loads(saved["metrics"] or "{}")
            found.append(
                Edit(
                    int(target),
                    saved,
                    {
                        "savepoint": about.get("savepoint"),
                        "user": about.get("user"),
                        "reason": about.get("reason"),
                        "statements": edit.get("statements", []),
                    },
                )
            )
    return found


def with_edits(
    log: pl.DataFrame, edits: list[Edit], history: History, operator: str, match: pl.Expr, keys: list[str]
) -> pl.DataFrame:
    """The key's change-log rows with each edit's rows told apart (`__order` EDIT): the rows the edit wrote are
    taken out of the epoch's own, and the edit's effect (the state at the savepoint against the state at its
    epoch) added after them; a key the edit deleted gets a tombstone."""
    log = log.with_columns(pl.lit(OWN, pl.Int8).alias("__order"))
    rows = history.manifest_rows()
    for edit in edits:
        own_entry = history.table_entry(epoch_row(rows, edit.epoch), operator, ("state",))
        edited_entry = history.table_entry(edit.savepoint, operator, ("state",))
        if own_entry.version == edited_entry.version:
            continue  # the edit did not touch this table
        schema = {c: t for c, t in log.schema.items() if c != "__order"}
        own, edited = (_live(own_entry.path, v, match, keys, schema) for v in (own_entry.version, edited_entry.version))
        values = [c for c in schema if c not in (*keys, "_epoch", "_deleted", "_kg")]
        changed = edited.join(own, on=[*keys, *values], how="anti", nulls_equal=True)
        deleted = own.join(edited, on=keys, how="anti", nulls_equal=True)
        if changed.is_empty() and deleted.is_empty():
            continue
        # What the edit wrote carries the epoch of its cut: out of the epoch's own rows, in as the edit's.
        written = changed.filter(pl.col("_epoch") == edit.epoch)
        log = log.join(written, on=list(schema), how="anti", nulls_equal=True)
        tombstones = deleted.with_columns(
            *(pl.lit(None, schema[c]).alias(c) for c in values), pl.lit(True).alias("_deleted")
        )
        effect = pl.concat([changed, tombstones], how="vertical_relaxed").with_columns(
            pl.lit(edit.epoch, pl.Int64).alias("_epoch"), pl.lit(EDIT, pl.Int8).alias("__order")
        )
        log = pl.concat([log, effect.cast(log.schema)], how="vertical_relaxed")  # type: ignore[arg-type]
    return log


def _live(path: str, version: int, match: pl.Expr, keys: list[str], schema: dict[str, pl.DataType]) -> pl.DataFrame:
    """The key's live state rows at a version of its table."""
    scanned = delta_tables.scan(path, version=version).filter(match)
    return resolve(scanned, keys).collect().select(list(schema)).cast(schema)  # type: ignore[arg-type]
