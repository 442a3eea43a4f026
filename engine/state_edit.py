"""Repair state with SQL: a new savepoint whose operator state differs from a cut by exactly some statements.

    engine.edit_state("state/", ["UPDATE totals SET n = 7 WHERE cust = 3"], savepoint="before", as_savepoint="fixed")

Each statement is an UPDATE, DELETE or INSERT on operator state tables, named as `h.operators()` and
`timelapse state` name them (`totals`, `"j/left"`). The live state of each named table at the cut (its change
log resolved, `state_store.resolve`) is copied into an in-memory DuckDB table typed as the Delta table is, the
statements run there (on a connection that cannot reach files, `history.confine`), and the result is checked
against what the operator's state means (`check_state`): keys unique, types held, bookkeeping columns
untouched, an aggregate's partial columns edited together, state derived from another table (COUNT(DISTINCT)
counts) left alone. Any failure is one line and nothing is written.

The new version of each edited table is one overwrite commit of the whole live state with the edits applied:
appending the edits to the change log would tie on `_epoch` with the cut's own rows, and a rollback or branch
renumbers later epochs. The table's head may be past the cut: the running line is not disturbed, because its
next run puts every state table back at the version its latest manifest row names
(`state_store.discard_uncommitted`), and the savepoint row names the edit's version, which a rollback or branch
restores. The savepoint row copies the cut's row (offsets, watermark, operators) with the new versions and the
audit (who, why, from where, the statements, rows changed per table) in its metrics.
"""

from __future__ import annotations

import contextlib
import dataclasses
import getpass
import json
import re
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import duckdb
import polars as pl
import sqlglot
from deltalake import CommitProperties
from sqlglot import exp

from engine import delta_tables
from engine.delta_tables import NO_CLEANUP, to_arrow
from engine.errors import VersioningError
from engine.history import confine
from engine.manifest import STATE, Manifest, TableEntry, checkpoint_from_row, cut_row, live_savepoints, rows_of
from engine.operators.aggregates import ROWS, state_prefixes
from engine.state_checks import (
    EditRefused,
    cast_back,
    check_duplicates,
    check_partials,
    check_shape,
    valid_savepoint_name,
)
from engine.state_dir import StateDir
from engine.state_store import key_group, resolve
from engine.storage import location

BOOKKEEPING = ("_kg", "_epoch", "_deleted")
ROW_ID = "__rowid"
#: functions whose result is their first partial column alone: SUM's count only says whether a value was seen
ALONE = {"SUM": "sum"}


@dataclasses.dataclass
class Edited:
    """One state table of the cut: its manifest entry, keys, live rows before and after the statements."""

    entry: TableEntry
    keys: list[str]
    before: pl.DataFrame  # live rows with bookkeeping columns and ROW_ID
    after: pl.DataFrame | None = None
    target: bool = False  # a statement writes it (others are only read)
    set_columns: set[str] = dataclasses.field(default_factory=set)  # columns an UPDATE assigns
    inserted_columns: list[list[str]] = dataclasses.field(default_factory=list)


def edit_state(
    state: str | Path,
    statements: str | Sequence[str],
    *,
    savepoint: str | None = None,
    epoch: int | None = None,
    as_savepoint: str,
    reason: str | None = None,
    user: str | None = None,
) -> dict[str, Any]:
    """Apply `statements` to the state of the cut at `savepoint` (or `epoch`) and record the result as the new
    savepoint `as_savepoint`. Returns `{savepoint, epoch, from, tables: {name: {inserted, updated, deleted}}}`."""
    if savepoint is not None and epoch is not None:
        raise VersioningError("give savepoint or epoch, not both")
    if savepoint is None and epoch is None:
        raise VersioningError("say which cut to edit: a savepoint or an epoch")
    if savepoint is not None and not isinstance(savepoint, str):
        raise VersioningError(f"savepoint must be a name (str), not {type(savepoint).__name__} {savepoint!r}")
    if epoch is not None and (isinstance(epoch, bool) or not isinstance(epoch, int)):
        raise VersioningError(f"epoch must be an int, not {type(epoch).__name__} {epoch!r}")
    valid_savepoint_name(as_savepoint)
    directory = StateDir(location(state))
    with directory.lock():  # refused beside a running pipeline
        return _edit_locked(directory, statements, savepoint, epoch, as_savepoint, reason, user)


def _edit_locked(
    directory: StateDir,
    statements: str | Sequence[str],
    savepoint: str | None,
    epoch: int | None,
    as_savepoint: str,
    reason: str | None,
    user: str | None,
) -> dict[str, Any]:
    rows = rows_of(directory)
    live = live_savepoints(rows)
    if as_savepoint in live:
        raise VersioningError(f"savepoint '{as_savepoint}' already exists")
    if savepoint is not None:
        if savepoint not in live:
            raise VersioningError(f"no savepoint named '{savepoint}'")
        epoch = int(live[savepoint]["epoch"])
    assert epoch is not None
    row = cut_row(rows, epoch, savepoint)
    parsed = parse_statements(statements)
    state_tables = {t.name.lower(): t for t in checkpoint_from_row(row).tables if t.role == STATE}
    named = _named_tables(parsed, state_tables)
    tables = {name: _load(state_tables[name]) for name in named}
    operators = json.loads(row["operators"] or "{}")
    averages = {name: _averages(t.entry, operators.get(t.entry.name.split("/")[0], {})) for name, t in tables.items()}
    _run(parsed, tables, averages)
    changes, written = check_state(tables, state_tables, operators, epoch)
    if not any(sum(c.values()) for c in changes.values()):
        raise EditRefused("the statements change no row: no savepoint written")
    origin = {"savepoint": savepoint} if savepoint is not None else {"epoch": epoch}
    versions = {name: _overwrite(state_tables[name], frame, as_savepoint) for name, frame in written.items()}
    new_tables = [
        # by role and name: a STATE_ID may name a sink too
        dataclasses.replace(t, version=versions[t.name.lower()])
        if t.role == STATE and t.name.lower() in versions
        else t
        for t in checkpoint_from_row(row).tables
    ]
    audit = {
        "from": origin,
        "statements": [s.sql(dialect="duckdb") for s in parsed],
        "tables": {state_tables[name].name: counts for name, counts in changes.items()},
    }
    metrics = {"savepoint": as_savepoint, "user": user or getpass.getuser(), "reason": reason, "edit": audit}
    Manifest(directory.manifest).commit(
        dataclasses.replace(
            checkpoint_from_row(row), kind="savepoint", committed_at=None, tables=new_tables, metrics=metrics
        )
    )
    return {"savepoint": as_savepoint, "epoch": epoch, "from": origin, "tables": audit["tables"]}


# -- parsing ------------------------------------------------------------------------------------------------


def parse_statements(statements: str | Sequence[str]) -> list[exp.Expression]:
    """UPDATE, DELETE and INSERT statements (several may share a string, separated by `;`)."""
    texts = [statements] if isinstance(statements, str) else list(statements)
    parsed: list[exp.Expression] = []
    for number, text in enumerate(texts, 1):
        try:
            found = sqlglot.parse(text, dialect="duckdb")
        except sqlglot.errors.ParseError as err:
            first = err.errors[0] if err.errors else {}
            where = f" at line {first.get('line')}, column {first.get('col')}" if first else ""
            what = str(first.get("description") or err).splitlines()[0]
            what = re.sub(r"<Token token_type: [\w.]+, text: ([^,]*),.*?>", r"'\1'", what)  # not its internals
            raise EditRefused(f"cannot parse statement {number}{where}: {what}{_name_hint(text)}") from None
        except sqlglot.errors.SqlglotError as err:  # the tokenizer's errors dump its tokens: say where instead
            place = re.search(r"[Ll]ine (\d+), [Cc]ol(?:umn)?:? (\d+)", str(err))
            where = f" at line {place.group(1)}, column {place.group(2)}" if place else ""
            raise EditRefused(f"cannot parse statement {number}{where}{_name_hint(text)}") from None
        texts_of = _statement_texts(text, len(found))
        for index, tree in enumerate(found):
            if tree is None:
                continue
            if not isinstance(tree, exp.Update | exp.Delete | exp.Insert):
                kind = tree.key.upper()
                quoted = (texts_of[index] if texts_of else tree.sql())[:80]
                raise EditRefused(f"only UPDATE, DELETE and INSERT edit state, not {kind}: {quoted}")
            parsed.append(tree)
    if not parsed:
        raise EditRefused("no statement to apply")
    return parsed


def _name_hint(text: str) -> str:
    """Names with `-` or `/` (`join-3f2a/left`) must be double-quoted; say so when one is written bare."""
    if re.search(r'(?<!["\w-])[A-Za-z_][\w]*(?:-[\w]+)*/\w+', text) or re.search(r"(?<![\"'\w])\w+-\w+", text):
        return '; double-quote table names with - or / in them: "join-3f2a/left"'
    return ""


def _statement_texts(text: str, count: int) -> list[str] | None:
    """The user's text of each statement (split at the tokenizer's semicolons), to quote it as written."""
    try:
        tokens = sqlglot.tokenize(text, read="duckdb")
    except sqlglot.errors.SqlglotError:
        return None
    cuts = [t.start for t in tokens if t.token_type == sqlglot.tokens.TokenType.SEMICOLON]
    pieces, start = [], 0
    for cut in cuts:
        pieces.append(text[start:cut])
        start = cut + 1
    pieces.append(text[start:])
    pieces = [p.strip() for p in pieces]
    if pieces and not pieces[-1] and len(pieces) > count:
        pieces.pop()
    return pieces if len(pieces) == count else None


def _target(tree: exp.Expression) -> exp.Table:
    target = tree.this
    if isinstance(target, exp.Schema):  # INSERT INTO t (a, b)
        target = target.this
    assert isinstance(target, exp.Table)
    return target


def _named_tables(parsed: list[exp.Expression], state_tables: dict[str, TableEntry]) -> list[str]:
    """The state tables the statements read or write; refuses anything else (files, table functions, other
    schemas) and the bookkeeping columns."""
    named: list[str] = []
    for tree in parsed:
        ctes = {c.alias_or_name.lower() for c in tree.find_all(exp.CTE)}
        for table in tree.find_all(exp.Table):
            name = table.name.lower()
            if not isinstance(table.this, exp.Identifier) or table.args.get("db") or table.args.get("catalog"):
                raise EditRefused(f"statements read only state tables, not {table.sql(dialect='duckdb')}")
            if name in ctes:
                continue
            if name not in state_tables:
                known = ", ".join(sorted(t.name for t in state_tables.values())) or "none"
                raise EditRefused(f"'{table.name}' is not a state table of this cut (state tables: {known})")
            if name not in named:
                named.append(name)
        for column in tree.find_all(exp.Column):
            if column.name in BOOKKEEPING:
                raise EditRefused(
                    f"column {column.name} is bookkeeping (key group, epoch, tombstone), not editable: "
                    "the engine sets it"
                )
        for function in tree.find_all(exp.Func):
            if isinstance(function, exp.ReadCSV | exp.ReadParquet) or type(function).__name__.startswith("Read"):
                raise EditRefused(f"statements read only state tables, not {function.sql(dialect='duckdb')}")
    for tree in parsed:
        if _target(tree).name.lower() not in state_tables:
            raise EditRefused(f"'{_target(tree).name}' is not a state table of this cut")
    return named


# -- applying -----------------------------------------------------------------------------------------------


def state_keys(entry: TableEntry) -> list[str]:
    from engine.history import state_keys

    return state_keys(entry)


def _load(entry: TableEntry) -> Edited:
    keys = state_keys(entry)
    log = delta_tables.scan(entry.path, version=entry.version)
    live = resolve(log, keys).collect()
    return Edited(entry, keys, live.with_row_index(ROW_ID).with_columns(pl.col(ROW_ID).cast(pl.Int64)))


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _run(
    parsed: list[exp.Expression], tables: dict[str, Edited], averages: dict[str, dict[str, tuple[str, str]]]
) -> None:
    """Run the statements over in-memory copies; `after` of each table gains the rows (ROW_ID: DuckDB's rowid,
    kept by UPDATE and DELETE, new for inserted rows)."""
    con = duckdb.connect()
    with contextlib.suppress(duckdb.Error):  # without ICU, timestamps with a zone are UTC anyway
        con.execute("SET TimeZone = 'UTC'")
    for table in tables.values():
        visible = table.before.sort(ROW_ID).drop(ROW_ID, *BOOKKEEPING)
        con.register("__source", to_arrow(visible))
        con.execute(f"CREATE TABLE {_quote(table.entry.name)} AS SELECT * FROM __source")
        con.unregister("__source")
    confine(con)  # no files, no extensions: the statements see the state tables only
    for number, written in enumerate(parsed, 1):
        target = tables[_target(written).name.lower()]
        tree, averaged = _rewrite_averages(written.copy(), averages.get(_target(written).name.lower(), {}), target)
        target.set_columns |= averaged
        text = tree.sql(dialect="duckdb")
        target.target = True
        if isinstance(tree, exp.Update):
            target.set_columns |= {eq.this.name for eq in tree.expressions}
        if isinstance(tree, exp.Insert):
            listed = tree.this.expressions if isinstance(tree.this, exp.Schema) else []
            target.inserted_columns.append([c.name for c in listed])
        try:
            con.execute(text)
        except duckdb.ConversionException as err:
            raise EditRefused(f"statement {number}: {_type_error(err, tree, target)}") from None
        except duckdb.InvalidInputException as err:  # error() of a rewritten average: our own message
            raise EditRefused(f"statement {number}: {str(err).splitlines()[0].split('Error: ', 1)[-1]}") from None
        except duckdb.Error as err:
            raise EditRefused(f"statement {number} failed: {str(err).splitlines()[0]}") from None
    for table in tables.values():
        frame = con.sql(f"SELECT rowid AS {ROW_ID}, * FROM {_quote(table.entry.name)}").pl()
        table.after = frame.with_columns(pl.col(ROW_ID).cast(pl.Int64))


def _averages(entry: TableEntry, record: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """The AVG calls of an aggregate's state, by the name of their result (`avg_x` for `avg_x__sum` and
    `avg_x__count`): statements may read and set the average as if it were a column."""
    found = {}
    for _sql, function, distinct, columns in _calls(entry, record):
        total = next((c for c in columns if c.endswith("__sum")), None)
        count = next((c for c in columns if c.endswith("__count")), None)
        if function == "AVG" and not distinct and total and count:
            found[total.removesuffix("__sum")] = (total, count)
    return found


def _rewrite_averages(
    tree: exp.Expression, averages: dict[str, tuple[str, str]], table: Edited
) -> tuple[exp.Expression, set[str]]:
    """`SET avg_x = v` as `SET avg_x__sum = v * avg_x__count` (the count kept, the sum adjusted), and every read
    of `avg_x` as `avg_x__sum / avg_x__count`; returns the statement and the partial columns it sets so."""
    virtual = {name: parts for name, parts in averages.items() if name not in table.before.columns}
    assigned: set[str] = set()
    if not virtual:
        return tree, assigned
    if isinstance(tree, exp.Update):
        targets = {eq.this.name for eq in tree.expressions}
        for eq in tree.expressions:
            if eq.this.name not in virtual:
                continue
            total, count = virtual[eq.this.name]
            if {total, count} & targets:
                raise EditRefused(f"set {eq.this.name} (the average) or {total} and {count}, not both")
            average = eq.this.name
            eq.set("this", exp.column(total))
            # A group that counted no value has no average to set: its count would keep the sum at 0.
            refusal = exp.Anonymous(
                this="error",
                expressions=[
                    exp.Literal.string(
                        f"{average} is NULL where {count} = 0 (no value counted): it cannot be set; "
                        f"set {total} and {count} together"
                    )
                ],
            )
            scaled = exp.Mul(this=exp.Paren(this=eq.expression), expression=exp.column(count))
            eq.set(
                "expression",
                exp.Case(ifs=[exp.If(this=exp.column(count).eq(0), true=refusal)], default=scaled),
            )
            assigned |= {total, count}
    for column in list(tree.find_all(exp.Column)):
        if column.name in virtual:
            total, count = virtual[column.name]
            # NULL, as AVG is, for a group that counted no value (not NaN from 0/0)
            nullif = exp.Nullif(this=exp.column(count), expression=exp.Literal.number(0))
            column.replace(exp.Paren(this=exp.Div(this=exp.column(total), expression=nullif)))
    return tree, assigned


def _type_error(err: duckdb.Error, tree: exp.Expression, table: Edited) -> str:
    """DuckDB's conversion error, with the column whose type the value does not fit."""
    text = str(err).splitlines()[0].removeprefix("Conversion Error: ")
    value = re.search(r"'([^']*)'", text) or re.search(r"[Vv]alue (\S+?)(?: to | can't|$)", text)
    needle = value.group(1) if value else None
    column = None
    if needle is not None and isinstance(tree, exp.Update):
        column = next((eq.this.name for eq in tree.expressions if needle in eq.expression.sql()), None)
    elif needle is not None and isinstance(tree, exp.Insert) and isinstance(tree.expression, exp.Values):
        listed = [c.name for c in tree.this.expressions] if isinstance(tree.this, exp.Schema) else None
        names = listed or [c for c in table.before.columns if c not in (ROW_ID, *BOOKKEEPING)]
        for row in tree.expression.expressions:
            for index, item in enumerate(row.expressions):
                if needle in item.sql() and index < len(names):
                    column = names[index]
    if column is None and isinstance(tree, exp.Update):  # the value as DuckDB computed it: match by type
        wanted = re.search(r" to ([A-Z0-9(), ]+?)$", text)
        from sql.types import sql_name

        fits = [
            eq.this.name
            for eq in tree.expressions
            if eq.this.name in table.before.schema
            and (
                wanted is None
                or sql_name(table.before.schema[eq.this.name]).replace(" ", "") == wanted.group(1).replace(" ", "")
            )
        ]
        column = fits[0] if len(fits) == 1 else None
    if column is None:
        return f"type error: {text}"
    from sql.types import sql_name

    dtype = table.before.schema[column]
    return f"type error: column {column} ({sql_name(dtype)}) cannot hold '{needle}': {text}"


# -- checking -----------------------------------------------------------------------------------------------


def _calls(entry: TableEntry, record: dict[str, Any]) -> list[tuple[str, str, bool, list[str]]]:
    """An aggregate's calls as (sql, function, distinct, partial columns), from the manifest's descriptor."""
    if not str(record.get("kind", "")).endswith("aggregate") or "/" in entry.name:
        return []
    sqls = [str(s).rsplit(": ", 1)[0] for s in record.get("state") or []]
    names = [SimpleNamespace(sql=s, function=s.split("(")[0].strip().upper()) for s in sqls]
    prefixes = state_prefixes(names)  # type: ignore[arg-type]
    columns = list(json.loads(entry.schema or "{}").get("columns", {}))
    calls = []
    for call, prefix in zip(names, prefixes, strict=True):
        inside = call.sql.split("(", 1)[1] if "(" in call.sql else ""
        distinct = inside.strip().upper().startswith("DISTINCT")
        calls.append((call.sql, call.function, distinct, [c for c in columns if c.startswith(prefix)]))
    return calls


def check_state(
    tables: dict[str, Edited], state_tables: dict[str, TableEntry], operators: dict[str, Any], epoch: int
) -> tuple[dict[str, dict[str, int]], dict[str, pl.DataFrame]]:
    """Refuse edits that break what the state means; returns the rows changed per table and the new live rows
    (with bookkeeping) of every table to write, derived tables whose groups were deleted included."""
    changes: dict[str, dict[str, int]] = {}
    written: dict[str, pl.DataFrame] = {}
    for name, table in tables.items():
        assert table.after is not None
        if not table.target:  # only read by the statements
            continue
        entry, keys = table.entry, table.keys
        operator = entry.name.split("/")[0]
        record = operators.get(operator, {})
        derived_tables = sorted(t for t in state_tables if t.startswith(f"{operator.lower()}/distinct_"))
        if "/distinct_" in name:
            raise EditRefused(
                f"{entry.name} holds the values an aggregate's DISTINCT (or retractable MIN/MAX, COLLECT) counts; "
                f"it is derived from the input, edit or delete the group in {operator} instead"
            )
        before, after = table.before, table.after
        after = cast_back(after, before, keys, entry.name)
        check_duplicates(after, keys, entry.name, edited=True)
        if not keys and after.height > 1:
            raise EditRefused(f"{entry.name} holds one row (a global aggregate), not {after.height}")
        joined = after.join(before, on=ROW_ID, how="inner", suffix="__before")
        rekeyed = pl.any_horizontal(~pl.col(k).eq_missing(pl.col(f"{k}__before")) for k in keys) if keys else False
        changed = pl.any_horizontal(~pl.col(c).eq_missing(pl.col(f"{c}__before")) for c in after.columns[1:])
        updated = joined.filter(changed)
        inserted = after.join(before.select(ROW_ID), on=ROW_ID, how="anti")
        deleted = before.join(after.select(ROW_ID), on=ROW_ID, how="anti")
        calls = _calls(entry, record)
        check_shape(entry, table, record, inserted, updated)
        _check_aggregate(entry, table, calls, derived_tables, inserted, updated.filter(rekeyed) if keys else None)
        if ROWS in after.columns and calls and (bad := after.filter(pl.col(ROWS).fill_null(0) <= 0)).height:
            raise EditRefused(
                f"{entry.name}: {ROWS} counts a group's input rows and must stay above 0 "
                f"({bad.height} rows would not); delete the group instead"
            )
        after = check_partials(after, calls, keys, entry.name)
        # _kg for new and re-keyed rows; the others keep theirs and the epoch that wrote them
        kg = _key_group(entry, record, before) if inserted.height or (keys and updated.filter(rekeyed).height) else None
        fresh = pl.col(ROW_ID).is_in(pl.concat([inserted.get_column(ROW_ID), updated.get_column(ROW_ID)]).implode())
        rows = after.join(before.select(ROW_ID, *BOOKKEEPING), on=ROW_ID, how="left").with_columns(
            pl.when(fresh).then(pl.lit(epoch, pl.Int64)).otherwise(pl.col("_epoch")).alias("_epoch"),
            pl.lit(False).alias("_deleted"),
        )
        if kg is not None:
            rows = rows.with_columns(pl.when(fresh).then(kg).otherwise(pl.col("_kg")).cast(pl.Int32).alias("_kg"))
        changes[name] = {"inserted": inserted.height, "updated": updated.height, "deleted": deleted.height}
        written[name] = rows.select(before.drop(ROW_ID).columns).cast(before.drop(ROW_ID).schema)
        # A deleted group takes its counted values along, or a group inserted later would count them again.
        if deleted.height and derived_tables and keys:
            for derived in derived_tables:
                values_table = _load(state_tables[derived])
                kept = values_table.before.join(deleted.select(keys), on=keys, how="anti", nulls_equal=True)
                removed = values_table.before.height - kept.height
                if removed:
                    changes[derived] = {"inserted": 0, "updated": 0, "deleted": removed}
                    written[derived] = kept.drop(ROW_ID)
    return changes, written


def _check_aggregate(
    entry: TableEntry,
    table: Edited,
    calls: list[tuple[str, str, bool, list[str]]],
    derived_tables: list[str],
    inserted: pl.DataFrame,
    rekeyed: pl.DataFrame | None,
) -> None:
    """An aggregate's partial columns: edited together, and never those derived from a values table."""
    operator = entry.name.split("/")[0]
    for index, (sql, function, distinct, columns) in enumerate(calls):
        assigned = [c for c in columns if c in table.set_columns]
        derived = f"{operator.lower()}/distinct_{index}" in derived_tables
        if assigned and derived:
            kind = "the number of distinct values kept" if distinct else "recomputed from the values kept"
            raise EditRefused(
                f"{entry.name}: {', '.join(assigned)} of {sql} is {kind} in {operator}/distinct_{index}; "
                "it cannot be edited (delete the group instead)"
            )
        alone = ALONE.get(function)
        if alone is not None and assigned == [c for c in columns if c.endswith("__" + alone)]:
            continue  # SUM's result is its sum
        if assigned and len(assigned) < len(columns):
            missing = [c for c in columns if c not in assigned]
            raise EditRefused(
                f"{entry.name}: {sql} keeps its partial state in {', '.join(columns)}; set them together "
                f"(also {', '.join(missing)}), e.g. SET {', '.join(f'{c} = ...' for c in columns)}"
            )
    if derived_tables and inserted.height:
        raise EditRefused(
            f"{entry.name}: its groups count values kept in {', '.join(derived_tables)}; a group cannot be "
            "inserted without them (bootstrap the state, or delete and let the input rebuild it)"
        )
    if derived_tables and rekeyed is not None and rekeyed.height:
        raise EditRefused(
            f"{entry.name}: its groups' values are kept by key in {', '.join(derived_tables)}; keys cannot change"
        )
    if calls and inserted.height:
        for listed in table.inserted_columns:
            everything = [c for c in table.before.columns if c not in (ROW_ID, *BOOKKEEPING)]
            if listed and (missing := [c for c in everything if c not in listed]):
                raise EditRefused(
                    f"{entry.name}: an inserted group needs every state column; missing {', '.join(missing)}"
                )


def _key_group(entry: TableEntry, record: dict[str, Any], before: pl.DataFrame) -> pl.Expr:
    """How the operator computes `_kg` from a row, checked against the rows it wrote: an aggregate hashes its
    GROUP BY keys (not window bounds), typed as its state schema records them; a join its join key columns
    (`__k0`, ...); other kinds their state keys."""
    described = json.loads(entry.schema or "{}").get("columns", {})
    keys = state_keys(entry)
    candidates = []
    if str(record.get("kind", "")).endswith("aggregate") and "/" not in entry.name:
        candidates.append([k for k in record.get("key") or []] or ["__all"])
    candidates.append([k for k in keys if re.fullmatch(r"__k\d+", k)])  # a join's state: its join key columns
    candidates.append(keys)
    for columns in candidates:
        exprs = [_typed(c, described.get(c), before) for c in columns]
        if any(e is None for e in exprs):
            continue
        expr = key_group([e for e in exprs if e is not None])
        sample = before.head(1000)
        if sample.height == 0 or sample.select((expr == pl.col("_kg")).all()).item():
            return expr
    raise EditRefused(
        f"{entry.name}: cannot tell how its key groups are computed, so rows cannot be inserted or re-keyed"
    )


def _typed(column: str, described: str | None, before: pl.DataFrame) -> pl.Expr | None:
    """A key column as the operator hashed it: Delta reads timestamps back in microseconds, the state may keep
    milliseconds."""
    if column == "__all":
        return pl.lit(0, pl.Int32).alias("__all")
    if column not in before.columns:
        return None
    found = re.match(r"Datetime\(time_unit='(\w+)', time_zone=(?:'([^']*)'|None)\)", described or "")
    if found:
        return pl.col(column).cast(pl.Datetime(found.group(1), found.group(2))).alias(column)  # type: ignore[arg-type]
    return pl.col(column)


# -- writing ------------------------------------------------------------------------------------------------


def _overwrite(entry: TableEntry, rows: pl.DataFrame, savepoint: str) -> int:
    """One overwrite commit of the edited live state (as `StateTable.compact` writes); returns its version."""
    table = delta_tables.delta(entry.path)  # a fresh handle at the head: an overwrite removes what it sees
    delta_tables.write(  # through delta_tables: encrypted columns stay encrypted
        table,
        to_arrow(rows),
        mode="overwrite",
        commit_properties=CommitProperties(custom_metadata={"timelapse.state_edit": savepoint}),
        post_commithook_properties=NO_CLEANUP,
    )
    return int(delta_tables.delta(entry.path).version())
