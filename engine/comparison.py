"""`engine.compare`: two state directories side by side: rows only in A, only in B and changed, and when.

    c = engine.compare("state/", "whatif/", sink="totals")        # or operator="totals", at=12, key=["cust"]
    c.only_a, c.only_b, c.changed, c.per_epoch                     # Polars DataFrames
    engine.compare("state/", "whatif/").summary                    # every sink and operator: counts only

Typically A is a pipeline and B a branch of it, or both are branches of one savepoint: an A/B test. Every read goes
through `engine.history`, so each side is a consistent cut (the Delta versions its manifest row names), also while
either pipeline runs.

- An operator's state is keyed by its key columns (the manifest's `tables[].schema`); `_kg` and the change log's
  bookkeeping are left out.
- A sink is keyed by its PRIMARY KEY (recorded in the manifest since compare exists) or by `key=[...]`; without a
  key, or when a declared key is not unique (an append sink that declared one), the two tables are compared as
  multisets of rows: `only_a` / `only_b` carry `count`, how many more copies of that row the side has.
- Only the columns both sides have are compared (a branch with changed SQL may have added or dropped some).
- `per_epoch`: one comparison per checkpoint epoch that both sides have, from their common origin on (the epoch
  a branch started from, `branch.json`), so its cost is (common epochs) x (reading both sides at that epoch).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections.abc import Mapping, Sequence
from typing import Any

import polars as pl

from engine.branching import branch_info
from engine.errors import UserError
from engine.history import At, History, HistoryError, state_keys
from engine.manifest import SINK, STATE, TableEntry, entries, live_savepoints
from engine.storage import Location, location

#: columns that say how a row was stored, not what it is
IGNORED = ("_epoch", "_kg", "_deleted")
COUNTS = {"only_a": pl.Int64, "only_b": pl.Int64, "changed": pl.Int64}


class CompareError(UserError, LookupError):
    """A sink, operator or point the two directories cannot be compared at."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


@dataclasses.dataclass
class Comparison:
    """What `compare` found. `kind` is "sink", "operator" or None (the summary over everything both have)."""

    a: str
    b: str
    kind: str | None
    name: str | None
    key: list[str]  # empty: compared as multisets of rows
    epoch_a: int
    epoch_b: int
    origin: dict[str, Any] | None  # {"parent": "a"|"b"|"common", "epoch": n}: where the two diverged from
    only_a: pl.DataFrame
    only_b: pl.DataFrame
    changed: pl.DataFrame
    per_epoch: pl.DataFrame  # epoch, only_a, only_b, changed
    summary: pl.DataFrame | None = None  # kind, name, present, key, only_a, only_b, changed
    note: str | None = None  # e.g. why a sink was compared as a multiset

    def counts(self) -> dict[str, int]:
        """Rows only in A, only in B, changed; for multisets every extra copy counts."""
        return dict(zip(COUNTS, tally((self.only_a, self.only_b, self.changed), self.key), strict=True))

    def to_dict(self, limit: int | None = None) -> dict[str, Any]:
        """One JSON-ready object; `limit` caps the rows of each frame (the counts stay whole)."""

        def rows(frame: pl.DataFrame | None) -> list[dict[str, Any]] | None:
            if frame is None:
                return None
            return json.loads(json.dumps((frame if limit is None else frame.head(limit)).to_dicts(), default=str))

        out: dict[str, Any] = {
            "a": self.a,
            "b": self.b,
            "kind": self.kind,
            "name": self.name,
            "key": self.key,
            "epoch_a": self.epoch_a,
            "epoch_b": self.epoch_b,
            "origin": self.origin,
            "note": self.note,
        }
        if self.summary is not None:
            return {**out, "summary": rows(self.summary)}
        return {
            **out,
            "counts": self.counts(),
            "only_a": rows(self.only_a),
            "only_b": rows(self.only_b),
            "changed": rows(self.changed),
            "per_epoch": rows(self.per_epoch),
        }


def compare(
    a: str | Location | History,
    b: str | Location | History,
    sink: str | None = None,
    operator: str | None = None,
    at: At = None,
    key: Sequence[str] | None = None,
    storage_options: Mapping[str, str] | None = None,
) -> Comparison:
    """Compare sink `sink` or operator `operator`'s state (or, with neither, count the differences of every sink
    and operator the two have in common) of state directories `a` and `b` as of `at` (an epoch, a savepoint name
    of either side, or a time; default each side's current cut)."""
    if sink is not None and operator is not None:
        raise CompareError("compare a sink or an operator, not both")
    ha = a if isinstance(a, History) else History(a, storage_options)
    hb = b if isinstance(b, History) else History(b, storage_options)
    point_a, point_b = _points(ha, hb, at)
    row_a, row_b = ha.row(point_a), hb.row(point_b)
    origin = _origin(ha, hb)
    base = {
        "a": str(ha.dir.root),
        "b": str(hb.dir.root),
        "epoch_a": int(row_a["epoch"]),
        "epoch_b": int(row_b["epoch"]),
        "origin": origin,
    }
    if sink is None and operator is None:
        return _summary(ha, hb, row_a, row_b, base)
    role, name = (SINK, sink) if sink is not None else (STATE, operator)
    assert name is not None
    entry_a, entry_b = _entry(ha, row_a, role, name, "A"), _entry(hb, row_b, role, name, "B")
    keys, note = _key(entry_a, entry_b, key)
    left, right = _read(ha, row_a, entry_a), _read(hb, row_b, entry_b)
    _check_keys(left, right, keys)
    if keys and note is None and key is None and role == SINK and not (_unique(left, keys) and _unique(right, keys)):
        note = f"sink '{name}' has more than one row per key ({', '.join(keys)}): compared as multisets of rows"
        keys = []
    elif keys and key is not None:
        for side, frame in (("A", left), ("B", right)):
            if not _unique(frame, keys):
                raise CompareError(
                    f"the key ({', '.join(keys)}) is not unique in {side}'s '{name}'; without a key the rows are "
                    "compared as multisets"
                )
    only_a, only_b, changed = diff(left, right, keys)
    if at is not None:
        per_epoch = _epoch_counts([(int(row_a["epoch"]), tally((only_a, only_b, changed), keys))])
    else:
        per_epoch = _per_epoch(ha, hb, role, entry_a.name, keys, origin)
    return Comparison(
        **base,
        kind="sink" if role == SINK else "operator",
        name=entry_a.name,
        key=keys,
        only_a=only_a,
        only_b=only_b,
        changed=changed,
        per_epoch=per_epoch,
        note=note,
    )


def diff(left: pl.LazyFrame, right: pl.LazyFrame, keys: Sequence[str]) -> tuple[pl.DataFrame, ...]:
    """(only_a, only_b, changed) of two frames: joined on `keys`, or as multisets of rows without keys. Only
    the columns both have are compared; B's are cast to A's types so that a widened column still joins."""
    keys = list(keys)
    common = _check_keys(left, right, keys)
    schema_a = left.collect_schema()
    left = left.select(common)
    right = right.select(common).cast({c: schema_a[c] for c in common}, strict=False)  # type: ignore[arg-type]
    if not keys:
        return (*_multiset(left, right, common), pl.DataFrame(schema={c: schema_a[c] for c in common}))
    values = [c for c in common if c not in keys]
    joined = (
        left.rename({v: f"{v}_a" for v in values})
        .with_columns(pl.lit(True).alias("__a"))
        .join(
            right.rename({v: f"{v}_b" for v in values}).with_columns(pl.lit(True).alias("__b")),
            on=keys,
            how="full",
            coalesce=True,
            nulls_equal=True,
        )
    )
    same = pl.all_horizontal(pl.col(f"{v}_a").eq_missing(pl.col(f"{v}_b")) for v in values) if values else pl.lit(True)
    joined = joined.with_columns(
        pl.when(pl.col("__b").is_null())
        .then(pl.lit("a"))
        .when(pl.col("__a").is_null())
        .then(pl.lit("b"))
        .when(~same)
        .then(pl.lit("changed"))
        .alias("__side")
    ).filter(pl.col("__side").is_not_null())
    found = joined.sort(keys, nulls_last=True).collect()
    only_a = found.filter(pl.col("__side") == "a").select(*keys, *(pl.col(f"{v}_a").alias(v) for v in values))
    only_b = found.filter(pl.col("__side") == "b").select(*keys, *(pl.col(f"{v}_b").alias(v) for v in values))
    changed = found.filter(pl.col("__side") == "changed").select(
        *keys, *(c for v in values for c in (f"{v}_a", f"{v}_b"))
    )
    return only_a, only_b, changed


def tally(found: Sequence[pl.DataFrame], keys: Sequence[str]) -> tuple[int, int, int]:
    """(only_a, only_b, changed) as numbers: rows, or for multisets (no keys) the copies (`count`)."""
    if keys:
        return found[0].height, found[1].height, found[2].height
    return int(found[0]["count"].sum()), int(found[1]["count"].sum()), 0


def _check_keys(left: pl.LazyFrame, right: pl.LazyFrame, keys: Sequence[str]) -> list[str]:
    """The columns both sides have (bookkeeping left out); an error naming them if a key column is not one."""
    schema_a, schema_b = left.collect_schema(), right.collect_schema()
    common = [c for c in schema_a.names() if c in schema_b and c not in IGNORED]
    missing = [k for k in keys if k not in common]
    if missing:
        raise CompareError(
            f"no column {', '.join(missing)} in both A and B to compare by; columns: {', '.join(common)}"
        )
    return common


def _multiset(left: pl.LazyFrame, right: pl.LazyFrame, columns: list[str]) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Rows A has more copies of than B (with `count`, how many more), and the other way round."""
    counted = (
        left.group_by(columns)
        .agg(pl.len().alias("__na"))
        .join(
            right.group_by(columns).agg(pl.len().alias("__nb")), on=columns, how="full", coalesce=True, nulls_equal=True
        )
        .with_columns(pl.col("__na", "__nb").fill_null(0).cast(pl.Int64))
        .filter(pl.col("__na") != pl.col("__nb"))
        .sort(columns, nulls_last=True)
        .collect()
    )
    only_a = counted.filter(pl.col("__na") > pl.col("__nb")).select(
        *columns, (pl.col("__na") - pl.col("__nb")).alias("count")
    )
    only_b = counted.filter(pl.col("__nb") > pl.col("__na")).select(
        *columns, (pl.col("__nb") - pl.col("__na")).alias("count")
    )
    return only_a, only_b


def _unique(frame: pl.LazyFrame, keys: list[str]) -> bool:
    counts = frame.select(pl.len().alias("rows"), pl.struct(keys).n_unique().alias("keys")).collect()
    return bool(counts.item(0, "rows") == counts.item(0, "keys"))


def _read(history: History, row: dict[str, Any], entry: TableEntry) -> pl.LazyFrame:
    """The table at the version the row names: a state table resolved to its live rows."""
    from engine import delta_tables

    if entry.role == STATE:
        return history.scan_state_of(row, entry.name)
    return history.unless_expired(row, lambda: delta_tables.read(entry.path, version=entry.version)).lazy()


def _entry(history: History, row: dict[str, Any], role: str, name: str, side: str) -> TableEntry:
    tables = [t for t in entries(row) if t.role == role]
    found = next((t for t in tables if t.name == name), None) or next(
        (t for t in tables if t.name.lower() == name.lower()), None
    )
    if found is None:
        what = "sink" if role == SINK else "operator"
        known = ", ".join(sorted(t.name for t in tables)) or "none"
        raise CompareError(
            f"no {what} '{name}' in {side} ({history.dir.root}) at epoch {row['epoch']}; {what}s: {known}"
        )
    return found


def _key(entry_a: TableEntry, entry_b: TableEntry, key: Sequence[str] | None) -> tuple[list[str], str | None]:
    """The columns to join on, and a note when there are none to join on."""
    if key is not None:
        return list(key), None
    keys_a, keys_b = _recorded_keys(entry_a), _recorded_keys(entry_b)
    if keys_a != keys_b:
        raise CompareError(
            f"'{entry_a.name}' is keyed by ({', '.join(keys_a)}) in A but by ({', '.join(keys_b)}) in B; "
            "give the columns to compare by with key=[...] (--key)"
        )
    if not keys_a:
        note = "no key recorded: compared as multisets of rows" if entry_a.role == SINK else None
        return [], note
    return keys_a, None


def _recorded_keys(entry: TableEntry) -> list[str]:
    if entry.role == STATE:
        return state_keys(entry)
    return list(json.loads(entry.schema or "{}").get("keys") or [])  # a sink's PRIMARY KEY, when declared


def _points(ha: History, hb: History, at: At) -> tuple[At, At]:
    """`at` for each side. A savepoint name that only one side has (a branch does not inherit its parent's
    savepoints) means that savepoint's epoch on both."""
    if not isinstance(at, str):
        return at, at
    for history in (ha, hb):
        found = live_savepoints(history.manifest_rows()).get(at)
        if found is not None:
            epoch = int(found["epoch"])
            return (at if history is ha else epoch), (at if history is hb else epoch)
    try:
        dt.datetime.fromisoformat(at)
    except ValueError:
        raise CompareError(
            f"no savepoint named '{at}' in A or B; --at takes an epoch, a savepoint or an ISO time"
        ) from None
    return at, at


def _origin(ha: History, hb: History) -> dict[str, Any] | None:
    """Where the two diverged: B a branch of A, A a branch of B, or both branches of one parent."""
    info_a, info_b = branch_info(ha.dir.root), branch_info(hb.dir.root)

    def same(parent: str, history: History) -> bool:
        return _real(parent) == _real(history.dir.root)

    if info_b is not None and same(info_b["parent"], ha):
        return {"parent": "a", "epoch": int(info_b["epoch"]), "savepoint": info_b.get("savepoint")}
    if info_a is not None and same(info_a["parent"], hb):
        return {"parent": "b", "epoch": int(info_a["epoch"]), "savepoint": info_a.get("savepoint")}
    if info_a is not None and info_b is not None and _real(info_a["parent"]) == _real(info_b["parent"]):
        # Both start from one parent; before the later branch point only one of them has checkpoints.
        return {"parent": "common", "epoch": max(int(info_a["epoch"]), int(info_b["epoch"])), "savepoint": None}
    return None


def _real(path: str | Location) -> str:
    try:
        return str(location(path).resolve())
    except OSError:
        return str(path)


def _epochs(history: History) -> set[int]:
    listed = history.checkpoints().filter((pl.col("kind") == "epoch") & pl.col("readable"))
    return set(listed.get_column("epoch").to_list())


def _per_epoch(
    ha: History, hb: History, role: str, name: str, keys: list[str], origin: dict[str, Any] | None
) -> pl.DataFrame:
    """The counts at every checkpoint epoch both sides have, from the origin on: one comparison each."""
    common = sorted(e for e in _epochs(ha) & _epochs(hb) if origin is None or e >= origin["epoch"])
    counts = []
    for epoch in common:
        row_a, row_b = ha.row(epoch), hb.row(epoch)
        tables_a = {t.name for t in entries(row_a) if t.role == role}
        tables_b = {t.name for t in entries(row_b) if t.role == role}
        if name not in tables_a or name not in tables_b:
            continue  # a sink or operator that one side did not have yet
        left = _read(ha, row_a, _entry(ha, row_a, role, name, "A"))
        right = _read(hb, row_b, _entry(hb, row_b, role, name, "B"))
        counts.append((epoch, tally(diff(left, right, keys), keys)))
    return _epoch_counts(counts)


def _epoch_counts(counts: list[tuple[int, tuple[int, int, int]]]) -> pl.DataFrame:
    return pl.DataFrame([(epoch, *c) for epoch, c in counts], schema={"epoch": pl.Int64, **COUNTS}, orient="row")


def _summary(
    ha: History, hb: History, row_a: dict[str, Any], row_b: dict[str, Any], base: dict[str, Any]
) -> Comparison:
    """Counts for every sink and operator state table either side has at its cut (names in one side only
    listed as such, with no counts)."""
    records = []
    for role, kind in ((SINK, "sink"), (STATE, "operator")):
        named_a = {t.name: t for t in entries(row_a) if t.role == role}
        named_b = {t.name: t for t in entries(row_b) if t.role == role}
        for name in sorted(named_a.keys() | named_b.keys()):
            record: dict[str, Any] = {"kind": kind, "name": name, "present": "both", "key": None}
            if name not in named_b or name not in named_a:
                record["present"] = "a only" if name in named_a else "b only"
                records.append(record)
                continue
            try:
                keys, _ = _key(named_a[name], named_b[name], None)
            except CompareError:  # keyed differently on the two sides: only the rows themselves can be compared
                keys = []
            left, right = _read(ha, row_a, named_a[name]), _read(hb, row_b, named_b[name])
            if keys and role == SINK and not (_unique(left, keys) and _unique(right, keys)):
                keys = []
            only_a, only_b, changed = tally(diff(left, right, keys), keys)
            record.update(key=",".join(keys) or None, only_a=only_a, only_b=only_b, changed=changed)
            records.append(record)
    schema = {"kind": pl.String, "name": pl.String, "present": pl.String, "key": pl.String, **COUNTS}
    empty = pl.DataFrame()
    return Comparison(
        **base,
        kind=None,
        name=None,
        key=[],
        only_a=empty,
        only_b=empty,
        changed=empty,
        per_epoch=_epoch_counts([]),
        summary=pl.DataFrame(records, schema=schema),
    )


__all__ = ["CompareError", "Comparison", "HistoryError", "compare", "diff"]
