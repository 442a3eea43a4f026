"""Bootstrap state: a savepoint a new pipeline starts from, with an operator's state loaded from a table.

    engine.bootstrap_state("state/", "totals", "backfill.parquet", "pipeline.sql")

As Flink's State Processor API bootstraps a savepoint from a batch job, the table holds what a batch GROUP BY
over a backfill computed: one row per key, with the operator's partial-state columns (what `timelapse state`
shows of a running pipeline's state, bookkeeping aside). The pipeline's SQL is planned as the runner plans it,
and the operator's own code creates its state tables and stages the rows (`StatefulOperator.open`,
`StateTable.stage`, `commit`), so the tables, the manifest row (epoch 0, no source offsets: the sources start
from their beginning) and its descriptors and plan fingerprint are those a real checkpoint writes, and
`timelapse run PIPELINE.sql --state DIR` continues from them with no upgrade check complaining.

A state directory that has run epochs is refused: its state is changed with `timelapse state edit`. Several
operators are bootstrapped one at a time; each bootstrap writes a new epoch-0 row naming all of them so far.
"""

from __future__ import annotations

import dataclasses
import getpass
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import polars as pl

from engine.errors import VersioningError
from engine.manifest import SAVEPOINT_KINDS, Checkpoint, Manifest, TableEntry, entries
from engine.manifest import read_checkpoints as read_rows
from engine.operators import stateful, stateful_operators
from engine.operators.aggregates import ROWS
from engine.operators.base import StateStore
from engine.state_checks import EditRefused, check_duplicates, check_partials, lossless_cast, valid_savepoint_name
from engine.state_dir import StateDir
from engine.state_edit import BOOKKEEPING
from engine.state_store import discard_uncommitted, key_group
from engine.storage import location, remove_tree
from sql.plan import Aggregate
from sql.state_descriptors import state_descriptor


def bootstrap_state(
    state: str | Path,
    operator: str,
    source: str | Path,
    sql: str | Path,
    *,
    as_savepoint: str = "bootstrap",
    reason: str | None = None,
    user: str | None = None,
    udfs: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Load `operator`'s state from the Delta table or Parquet file `source` into the state directory `state`
    for the pipeline `sql`; returns `{savepoint, operator, rows, tables}`."""
    from engine.pipeline import Pipeline

    valid_savepoint_name(as_savepoint)
    text = str(sql)
    looks_like_file = "\n" not in text and ";" not in text and text.strip().lower().endswith(".sql")
    if (isinstance(sql, Path) or looks_like_file) and not Path(sql).is_file():
        raise VersioningError(f"{sql}: no such SQL file")
    directory = StateDir(location(state))
    plan = Pipeline.from_sql(sql, state, udfs).plan
    nodes = {n.state_id: n for n in plan.nodes if n.stateful}  # type: ignore[attr-defined]
    if operator not in nodes:
        raise VersioningError(f"the pipeline has no stateful operator '{operator}'; operators: {', '.join(nodes)}")
    node = nodes[operator]
    frame = _read(source)
    created = not directory.root.exists()
    directory.root.mkdir(parents=True, exist_ok=True)
    try:
        return _bootstrap_locked(directory, plan, node, operator, frame, source, state, as_savepoint, reason, user)
    except BaseException:
        if created:  # a refused bootstrap into a new directory leaves nothing behind
            remove_tree(directory.root)
        raise


def _bootstrap_locked(
    directory: StateDir,
    plan: Any,
    node: Any,
    operator: str,
    frame: pl.DataFrame,
    source: str | Path,
    state: str | Path,
    as_savepoint: str,
    reason: str | None,
    user: str | None,
) -> dict[str, Any]:
    with directory.lock():
        rows = read_rows(directory.manifest) if directory.manifest.exists() else None
        previous = _previous_bootstrap(rows)
        if previous is not None and any(t.name.split("/")[0] == operator for t in entries(previous)):
            raise VersioningError(f"'{operator}' is already bootstrapped in {state}; start from a new directory")
        op = stateful(node)
        if not isinstance(node, Aggregate) or "" not in op.specs:
            raise EditRefused(
                f"'{operator}' is a {descriptor_kind(node)}: bootstrap loads the state of GROUP BY aggregations"
            )
        window = state_descriptor(node).get("window")
        if window:
            raise EditRefused(
                f"'{operator}' aggregates per window ({window}): its windows' bounds come from the window function "
                "alone, so a windowed aggregate cannot be bootstrapped; bootstrap a GROUP BY without a window"
            )
        main = op.specs[""]
        others = [s for name, s in op.specs.items() if name and s.role != "late"]
        if others:
            listing = ", ".join(f"{operator}/{s.name}" for s in others)
            raise EditRefused(
                f"'{operator}' also keeps {listing} (the values a DISTINCT or retractable aggregate counts); "
                "it cannot be bootstrapped from one table"
            )
        expected = {**main.key_types, **main.values}
        loaded = _conform(frame, expected, main.keys, operator)
        calls = [(a.call.sql, a.call.function, a.call.distinct, [c.name for c in a.columns]) for a in op.states]
        loaded = check_partials(loaded, calls, main.keys, operator)
        keys_hashed = getattr(op, "keys", main.keys)  # an aggregate hashes its GROUP BY keys, not window bounds
        loaded = loaded.with_columns(key_group(keys_hashed).alias("_kg"))
        store = StateStore(directory.operator(operator), directory.pipeline_id())
        for path in op.table_paths(store):  # what a bootstrap cut short left behind, as a restarted run does
            discard_uncommitted(path, None)
        op.open(store, {}, None)
        op.set_frame("", loaded)
        op.table.stage(loaded, loaded.head(0).select(*main.keys, "_kg"))
        op.commit(0)
        tables = [
            TableEntry(name, role, str(path), version, schema)
            for name, (role, path, version, schema) in op.tables().items()
        ]
        kept = [t for t in entries(previous)] if previous is not None else []
        descriptors = stateful_operators(plan)
        records = {sid: {**d, "directory": str(directory.operator(sid))} for sid, d in descriptors.items()}
        who = user or getpass.getuser()
        audit = {"operator": operator, "from": str(source), "rows": loaded.height, "user": who, "reason": reason}
        manifest = Manifest(directory.manifest)
        epoch_row = Checkpoint(
            epoch=0,
            source_offsets={},
            watermark=None,
            tables=[*kept, *tables],
            plan_fingerprint=plan.fingerprint,
            metrics={"bootstrap": audit, "state_rows": {operator: loaded.height}},
            operators=records,
        )
        manifest.commit(epoch_row)
        if rows is not None and _live(rows, as_savepoint):
            if not _live(rows, as_savepoint).get("bootstrap"):
                raise VersioningError(f"savepoint '{as_savepoint}' already exists")
            manifest.commit(
                dataclasses.replace(
                    epoch_row, kind="savepoint_deleted", metrics={"savepoint": as_savepoint, "user": who}
                )
            )
        metrics = {"savepoint": as_savepoint, "user": who, "reason": reason, "bootstrap": audit}
        manifest.commit(dataclasses.replace(epoch_row, kind="savepoint", metrics=metrics))
    return {"savepoint": as_savepoint, "operator": operator, "rows": loaded.height, "tables": [t.name for t in tables]}


def descriptor_kind(node: Any) -> str:
    return str(state_descriptor(node).get("kind", type(node).__name__))


def _previous_bootstrap(rows: pl.DataFrame | None) -> dict[str, Any] | None:
    """The epoch-0 row of earlier bootstraps; refuses a directory that has run epochs."""
    if rows is None or rows.is_empty():
        return None
    ran = rows.filter((pl.col("kind") == "rollback") | ((pl.col("kind") == "epoch") & (pl.col("epoch") > 0)))
    if ran.height:
        raise VersioningError(
            "this state directory has run epochs: bootstrap only starts a new one; change its state with "
            '`timelapse state edit DIR --from epoch N --as NAME "INSERT INTO op ..."`'
        )
    zero = rows.filter((pl.col("kind") == "epoch") & (pl.col("epoch") == 0))
    return None if zero.is_empty() else zero.row(-1, named=True)


def _live(rows: pl.DataFrame, name: str) -> dict[str, Any] | None:
    """The metrics of the live savepoint `name`, if there is one."""
    found = None
    for row in rows.filter(pl.col("kind").is_in(list(SAVEPOINT_KINDS))).iter_rows(named=True):
        info = json.loads(row["metrics"] or "{}")
        if info.get("savepoint") == name:
            found = info if row["kind"] == "savepoint" else None
    return found


def _read(source: str | Path) -> pl.DataFrame:
    where = location(source)
    if (where / "_delta_log").is_dir():
        from engine import delta_tables

        return delta_tables.read(where)
    if not where.exists():
        raise FileNotFoundError(f"{source}: no such Delta table or Parquet file")
    try:
        return pl.read_parquet(str(where))
    except Exception as err:  # not Parquet: say what is expected
        raise EditRefused(f"{source} is neither a Delta table nor Parquet ({str(err).splitlines()[0]})") from None


def _conform(frame: pl.DataFrame, expected: dict[str, pl.DataType], keys: list[str], operator: str) -> pl.DataFrame:
    """The table's columns as the operator's state types them; refuses missing, extra and mistyped columns and
    rows that break what the state means (repeated keys, groups without rows)."""
    if "__all" in expected and "__all" not in frame.columns:  # a global aggregate's constant key
        frame = frame.with_columns(pl.lit(0, pl.Int32).alias("__all"))
    listing = ", ".join(f"{name} {_sql_type(dtype)}" for name, dtype in expected.items())
    given = [c for c in frame.columns if c not in BOOKKEEPING]
    missing = [c for c in expected if c not in given]
    extra = [c for c in given if c not in expected]
    extra += [f"{c} (bookkeeping: the engine's)" for c in frame.columns if c in BOOKKEEPING]
    if missing or extra:
        what = "; ".join(
            [*([f"missing {', '.join(missing)}"] if missing else []), *(["extra " + ", ".join(extra)] if extra else [])]
        )
        raise EditRefused(f"{operator}'s state has the columns {listing}; {what}")
    for name, dtype in expected.items():
        if not _compatible(frame.schema[name], dtype):
            raise EditRefused(
                f"column {name} is {_sql_type(frame.schema[name])}, expected {_sql_type(dtype)}; "
                f"{operator}'s state has the columns {listing}"
            )
    typed = lossless_cast(frame, expected, operator)
    check_duplicates(typed, keys, operator, edited=False)
    if ROWS in typed.columns and (bad := typed.filter(pl.col(ROWS).fill_null(0) <= 0)).height:
        raise EditRefused(f"{operator}: {ROWS} counts each group's input rows and must be above 0 ({bad.height} rows)")
    return typed


def _compatible(given: pl.DataType, wanted: pl.DataType) -> bool:
    """Whether a column may be cast to the state's type without changing what it means."""
    if given == wanted or given == pl.Null():
        return True
    if wanted.is_integer():
        return given.is_integer() or (isinstance(given, pl.Decimal) and given.scale == 0)
    if wanted.is_float():
        return given.is_numeric()
    if isinstance(wanted, pl.Decimal):
        return given.is_integer() or isinstance(given, pl.Decimal)
    if isinstance(wanted, pl.Datetime):
        return isinstance(given, pl.Datetime)
    return type(given) is type(wanted)


def _sql_type(dtype: pl.DataType) -> str:
    from sql import types

    try:
        return str(types.sql_name(dtype))
    except Exception:  # a type SQL has no name for: Polars'
        return str(dtype)
