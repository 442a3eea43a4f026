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
- Only the columns both sides have are compared: a column only one side has is left out. A column of another
  type in B is cast to A's type when every value casts without loss, else both sides are compared as text (`note`
  names such columns).
- `per_epoch`: one comparison per pair of checkpoints, from the common origin on (where the two lines part:
  `branch.json`, followed up a branch of a branch to the common ancestor). Each side counts only the checkpoints
  on the line leading to its cut (a rollback abandons the epochs after its target), and the k-th checkpoint after
  the origin on A is paired with the k-th on B: `epoch_a` and `epoch_b` (equal unless a rollback renumbered one
  side's epochs). Its cost is (pairs) x (reading both sides at that point).
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
from engine.manifest import SINK, STATE, TableEntry, checkpoint_line, entries, live_savepoints
from engine.storage import Location, ObjectPath, location

#: columns that say how a row was stored, not what it is
IGNORED = ("_epoch", "_kg", "_deleted")
COUNTS = {"only_a": pl.Int64, "only_b": pl.Int64, "changed": pl.Int64}


class CompareError(UserError):
    """A comparison that cannot be done as asked (the console answers 400)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class CompareNotFound(CompareError, LookupError):
    """A sink, operator or point one of the directories does not have (the console answers 404)."""


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
    per_epoch: pl.DataFrame  # epoch_a, epoch_b, only_a, only_b, changed
    summary: pl.DataFrame | None = None  # kind, name, present, key, only_a, only_b, changed
    note: str | None = None  # e.g. why a sink was compared as a multiset

    def counts(self) -> dict[str, int]:
        """Rows only in A, only in B, changed; for multisets every extra copy counts. For the summary: the
        totals over every sink and operator both have."""
        if self.summary is not None:
            return {c: int(self.summary.get_column(c).fill_null(0).sum()) for c in COUNTS}
        return dict(zip(COUNTS, tally((self.only_a, self.only_b, self.changed), self.key), strict=True))

    def to_dict(self, limit: int | None = None) -> dict[str, Any]:
        """One JSON-ready object; `limit` caps the rows of each frame (the counts stay whole) and `more` says how
        many rows of each were left out."""
        more: dict[str, int] = {}

        def rows(label: str, frame: pl.DataFrame) -> list[dict[str, Any]]:
            more[label] = 0 if limit is None else max(frame.height - limit, 0)
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
            return {**out, "counts": self.counts(), "summary": rows("summary", self.summary), "more": more}
        return {
            **out,
            "counts": self.counts(),
            "only_a": rows("only_a", self.only_a),
            "only_b": rows("only_b", self.only_b),
            "changed": rows("changed", self.changed),
            "per_epoch": rows("per_epoch", self.per_epoch),
            "more": more,
        }


def compare(
    a: str | Location | History,
    b: str | Location | History,
    sink: str | None = None,
    operator: str | None = None,
    at: At | float = None,
    key: str | Sequence[str] | None = None,
    storage_options: Mapping[str, str] | None = None,
) -> Comparison:
    """Compare sink `sink` or operator `operator`'s state (or, with neither, count the differences of every sink
    and operator the two have in common) of state directories `a` and `b` as of `at` (an epoch, a savepoint name
    of either side, or a time; default each side's current cut).

    `key`: the columns that identify a row, a list or one string (`"cust"`, `"cust,day"`); None: the recorded
    key. An empty list is refused (leave `key` out for the recorded key). `at` as a number must be a whole one."""
    if sink is not None and operator is not None:
        raise CompareError("compare a sink or an operator, not both")
    key = _key_columns(key)
    at = _point(at)
    ha = a if isinstance(a, History) else History(a, storage_options)
    hb = b if isinstance(b, History) else History(b, storage_options)
    point_a, point_b = _points(ha, hb, at)
    row_a, row_b = _row(ha, point_a, "A"), _row(hb, point_b, "B")
    origin, lines = _origin(ha, hb)
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
    notes: list[str] = []
    only_a, only_b, changed = diff(left, right, keys, notes)
    note = "; ".join(n for n in (note, *notes) if n) or None
    if at is not None:
        found = tally((only_a, only_b, changed), keys)
        per_epoch = _epoch_counts([(int(row_a["epoch"]), int(row_b["epoch"]), found)])
    else:
        per_epoch = _per_epoch(ha, hb, row_a, row_b, role, entry_a.name, keys, origin, lines)
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


def _key_columns(key: str | Sequence[str] | None) -> list[str] | None:
    """`key` as column names: a string is one name or comma-separated names; an empty list is refused."""
    if key is None:
        return None
    names = [k.strip() for k in key.split(",")] if isinstance(key, str) else [str(k).strip() for k in key]
    names = [k for k in names if k]
    if not names:
        raise CompareError("key takes column names; leave it out to compare by the recorded key")
    return names


def _point(at: At | float) -> At:
    """`at` with a whole float taken as its epoch; other numbers refused rather than truncated."""
    if isinstance(at, bool):
        raise CompareError(f"at={at!r} is not an epoch, a savepoint name or a time")
    if isinstance(at, float):
        if not at.is_integer():
            raise CompareError(f"at={at!r}: an epoch is a whole number")
        return int(at)
    return at


def _row(history: History, at: At, side: str) -> dict[str, Any]:
    """The cut `at` names on one side; an error naming the side (and its oldest readable epoch) if none."""
    try:
        return history.row(at)
    except HistoryError as err:
        message = f"{side} ({history.dir.root}): {err}"
        epochs = _epochs(history)
        if isinstance(at, int) and epochs and at < min(epochs) and "oldest readable" not in message:
            message += f"; the oldest readable epoch there is {min(epochs)}"
        raise CompareNotFound(message) from None


def diff(
    left: pl.LazyFrame, right: pl.LazyFrame, keys: Sequence[str], notes: list[str] | None = None
) -> tuple[pl.DataFrame, ...]:
    """(only_a, only_b, changed) of two frames: joined on `keys`, or as multisets of rows without keys. Only
    the columns both have are compared (`_aligned`: of one type on both sides); `notes` gets what was done to
    columns of different types."""
    keys = list(keys)
    common = _check_keys(left, right, keys)
    left, right, note = _aligned(left.select(common), right.select(common))
    if note and notes is not None:
        notes.append(note)
    schema_a = left.collect_schema()
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


def _aligned(left: pl.LazyFrame, right: pl.LazyFrame) -> tuple[pl.LazyFrame, pl.LazyFrame, str | None]:
    """The two sides with each column of one type: B's cast to A's where every value casts and casts back to
    the same value (a narrowed column), else A's to B's likewise (a widened one), else both as text: no value
    becomes null (and so "equal") or is truncated on the way."""
    schema_a, schema_b = left.collect_schema(), right.collect_schema()
    cast_a: dict[str, pl.DataType] = {}
    cast_b: dict[str, pl.DataType] = {}
    texts: list[str] = []
    for column in (c for c in schema_a.names() if schema_a[c] != schema_b[c]):
        if _lossless(right, column, schema_a[column], schema_b[column]):
            cast_b[column] = schema_a[column]
        elif _lossless(left, column, schema_b[column], schema_a[column]):
            cast_a[column] = schema_b[column]
        else:
            texts.append(column)
    left, right = left.cast(cast_a), right.cast(cast_b)  # type: ignore[arg-type]
    as_text = [pl.col(c).cast(pl.String, strict=False) for c in texts]
    left, right = left.with_columns(as_text), right.with_columns(as_text)
    texts += [c for c, t in (cast_a | cast_b).items() if t == pl.String]  # one side was text already
    if not texts:
        return left, right, None
    names = ", ".join(c for c in schema_a.names() if c in texts)
    return left, right, f"compared as text, their types differ and their values do not all cast to one type: {names}"


def _lossless(frame: pl.LazyFrame, column: str, to: pl.DataType, back: pl.DataType) -> bool:
    """Whether every value of `column` casts (strictly) to `to` and back to the same value."""
    original = pl.col(column)
    try:
        check = frame.select(original.cast(to, strict=True).cast(back, strict=True).eq_missing(original).all())
        return bool(check.collect().item())
    except (pl.exceptions.PolarsError, TypeError, ValueError):
        return False


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
        raise CompareNotFound(
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
            "name the columns to compare by (key)"
        )
    if not keys_a:
        if entry_a.role != SINK:
            return [], None
        if entry_a.schema is None or entry_b.schema is None:  # written before sinks' keys were recorded
            return [], "no key recorded: compared as multisets of rows"
        return [], f"the sink '{entry_a.name}' declares no PRIMARY KEY: compared as multisets of rows"
    return keys_a, None


def _recorded_keys(entry: TableEntry) -> list[str]:
    if entry.role == STATE:
        return state_keys(entry)
    return list(json.loads(entry.schema or "{}").get("keys") or [])  # a sink's PRIMARY KEY, when declared


def _points(ha: History, hb: History, at: At) -> tuple[At, At]:
    """`at` for each side. A savepoint name is each side's own savepoint of that name; one that only one side
    has (a branch does not inherit its parent's savepoints) means that savepoint's epoch on the other."""
    if not isinstance(at, str):
        return at, at
    found_a = live_savepoints(ha.manifest_rows()).get(at)
    found_b = live_savepoints(hb.manifest_rows()).get(at)
    if found_a is not None and found_b is not None:
        return at, at
    if found_a is not None:
        return at, int(found_a["epoch"])
    if found_b is not None:
        return int(found_b["epoch"]), at
    try:
        dt.datetime.fromisoformat(at)
    except ValueError:
        raise CompareNotFound(
            f"no savepoint named '{at}' in A or B; a point is an epoch, a savepoint name or an ISO time"
        ) from None
    return at, at


#: one step of a directory's ancestry: (its real root, its location, the epoch the line below left it at,
#: the savepoint that branch was taken from)
Step = tuple[str, Location, int | None, str | None]


def _ancestry(history: History) -> list[Step]:
    """The directory and its ancestors (branch.json, followed upwards), nearest first."""
    root: Location = history.dir.root
    options = dict(root.options) if isinstance(root, ObjectPath) else None
    chain: list[Step] = [(_real(root), root, None, None)]
    while len(chain) < 64:  # a guard against a cycle of hand-edited branch.json files
        try:
            info = branch_info(root)  # type: ignore[arg-type]
        except (OSError, ValueError, KeyError):
            break
        if info is None:
            break
        root = location(info["parent"], options)
        real = _real(root)
        if any(real == step[0] for step in chain):
            break
        chain.append((real, root, int(info["epoch"]), info.get("savepoint")))
    return chain


def _origin(ha: History, hb: History) -> tuple[dict[str, Any] | None, tuple[list[Step], list[Step]]]:
    """Where the two lines part: B a branch (or a branch of a branch) of A, A one of B, or both of one ancestor
    (the earlier of the two epochs their lines leave it at). Also each side's steps up to that ancestor."""
    chain_a, chain_b = _ancestry(ha), _ancestry(hb)
    pairs = [(i, j) for i, sa in enumerate(chain_a) for j, sb in enumerate(chain_b) if sa[0] == sb[0]]
    if not pairs:
        return None, ([], [])
    i, j = min(pairs, key=lambda p: p[0] + p[1])
    steps_a, steps_b = chain_a[: i + 1], chain_b[: j + 1]
    # the epoch each side's line leaves the ancestor at: the earliest branch point on its way up
    leave_a = min((s[2] for s in steps_a[1:] if s[2] is not None), default=None)
    leave_b = min((s[2] for s in steps_b[1:] if s[2] is not None), default=None)
    if i == 0 and j == 0:
        return None, ([], [])  # one directory twice
    if i == 0:
        return {"parent": "a", "epoch": leave_b, "savepoint": chain_b[j][3]}, (steps_a, steps_b)
    if j == 0:
        return {"parent": "b", "epoch": leave_a, "savepoint": chain_a[i][3]}, (steps_a, steps_b)
    epoch = min(e for e in (leave_a, leave_b) if e is not None)
    same = leave_a == leave_b and chain_a[i][3] == chain_b[j][3]
    origin = {"parent": "common", "epoch": epoch, "savepoint": chain_a[i][3] if same else None}
    return {**origin, "ancestor": str(chain_a[i][1])}, (steps_a, steps_b)


def _real(path: str | Location) -> str:
    try:
        return str(location(path).resolve())
    except OSError:
        return str(path)


def _epochs(history: History) -> set[int]:
    listed = history.checkpoints().filter((pl.col("kind") == "epoch") & pl.col("readable"))
    return set(listed.get_column("epoch").to_list())


def _line(
    history: History, cut: dict[str, Any], after: int | None, until: int | None = None
) -> list[tuple[History, int]]:
    """The readable checkpoints on the line leading to `cut` (`manifest.checkpoint_line`: none a rollback
    abandoned), numbered after `after` and before `until`, oldest first."""
    readable = _epochs(history)
    return [
        (history, e)
        for e in checkpoint_line(history.manifest_rows(), cut)
        if e in readable and (after is None or e > after) and (until is None or e < until)
    ]


def _side_line(history: History, cut: dict[str, Any], steps: list[Step], origin: int) -> list[tuple[History, int]]:
    """One side's checkpoints after the origin, oldest first: those of the directories between it and the common
    ancestor (a branch of a branch), each up to where the next one branched from it, then its own."""
    line: list[tuple[History, int]] = []
    options = dict(history.dir.root.options) if isinstance(history.dir.root, ObjectPath) else None
    for k in range(len(steps) - 2, 0, -1):  # the intermediate directories, oldest first
        between = History(steps[k][1], options)
        until = steps[k][2]  # where the directory below branched from it
        assert until is not None
        line += _line(between, between.row(until), origin, until)
    return line + _line(history, cut, origin)


def _per_epoch(
    ha: History,
    hb: History,
    row_a: dict[str, Any],
    row_b: dict[str, Any],
    role: str,
    name: str,
    keys: list[str],
    origin: dict[str, Any] | None,
    steps: tuple[list[Step], list[Step]],
) -> pl.DataFrame:
    """The counts at each pair of checkpoints: the origin when both lines hold it, then the k-th checkpoint after
    it on A with the k-th on B (unrelated directories: the epochs both lines have). One comparison each."""
    if origin is None:
        line_a, line_b = _line(ha, row_a, None), _line(hb, row_b, None)
        numbers = {e for _, e in line_a} & {e for _, e in line_b}
        by_b = {e: (h, e) for h, e in line_b}
        pairs = [(p, by_b[p[1]]) for p in line_a if p[1] in numbers]
    else:
        start = int(origin["epoch"])
        at_origin_a = [p for p in _line(ha, row_a, start - 1, start + 1) if p[1] == start]
        at_origin_b = [p for p in _line(hb, row_b, start - 1, start + 1) if p[1] == start]
        pairs = list(zip(at_origin_a, at_origin_b, strict=False))
        pairs += list(zip(_side_line(ha, row_a, steps[0], start), _side_line(hb, row_b, steps[1], start), strict=False))
    counts = []
    for (side_a, epoch_a), (side_b, epoch_b) in pairs:
        cut_a, cut_b = side_a.row(epoch_a), side_b.row(epoch_b)
        tables_a = {t.name for t in entries(cut_a) if t.role == role}
        tables_b = {t.name for t in entries(cut_b) if t.role == role}
        if name not in tables_a or name not in tables_b:
            continue  # a sink or operator that one side did not have yet
        left = _read(side_a, cut_a, _entry(side_a, cut_a, role, name, "A"))
        right = _read(side_b, cut_b, _entry(side_b, cut_b, role, name, "B"))
        counts.append((epoch_a, epoch_b, tally(diff(left, right, keys), keys)))
    return _epoch_counts(counts)


def _epoch_counts(counts: list[tuple[int, int, tuple[int, int, int]]]) -> pl.DataFrame:
    schema = {"epoch_a": pl.Int64, "epoch_b": pl.Int64, **COUNTS}
    return pl.DataFrame([(ea, eb, *c) for ea, eb, c in counts], schema=schema, orient="row")


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


__all__ = ["CompareError", "CompareNotFound", "Comparison", "HistoryError", "compare", "diff"]
