"""Reading a state directory as of a committed epoch, with no engine running.

Every read goes through the manifest: the row of the chosen epoch names the Delta version of each table,
so what you read is a consistent cut.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl

from engine.manifest import RESUMABLE, read_checkpoints
from engine.state_dir import StateDir
from engine.state_store import resolve
from engine.versioning import expired_message, readable


def checkpoint(state: str | Path, epoch: int | None = None) -> dict[str, Any]:
    """The manifest row of `epoch`; by default the current cut (the latest epoch, or a later rollback)."""
    everything = rows = read_checkpoints(StateDir(Path(state)).manifest)
    if epoch is not None:
        rows = rows.filter((pl.col("kind") == "epoch") & (pl.col("epoch") == epoch))
    else:
        rows = rows.filter(pl.col("kind").is_in(list(RESUMABLE)))
    if rows.is_empty():
        raise KeyError(f"epoch {epoch} is not a committed epoch of {state}" if epoch else f"{state} has no epochs")
    row = rows.row(-1, named=True)
    if epoch is not None and not readable(everything, row):
        raise KeyError(expired_message(everything, epoch))
    return row


def state_at(state: str | Path, operator: str, epoch: int | None = None) -> pl.LazyFrame:
    """The live state of a stateful operator (by state id) as of `epoch`: one row per key."""
    row = checkpoint(state, epoch)
    entry = next((t for t in row["tables"] if t["name"] == operator and t["role"] == "state"), None)
    if entry is None:
        known = sorted(t["name"] for t in row["tables"] if t["role"] == "state")
        raise KeyError(f"no state table '{operator}' at epoch {row['epoch']}; operators: {', '.join(known)}")
    log = pl.scan_delta(entry["path"], version=entry["version"])
    bookkeeping = {"_kg", "_epoch", "_deleted"}
    keys = [c for c in _key_columns(entry) if c not in bookkeeping]
    return resolve(log, keys).drop("_epoch", "_deleted")


def _key_columns(entry: dict[str, Any]) -> list[str]:
    import json

    schema = json.loads(entry["schema"] or "{}")
    # Key columns come first in a state table, before __rows and the partial-state columns.
    keys = []
    for name in schema:
        if name == "__rows":
            break
        keys.append(name)
    return keys
