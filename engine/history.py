"""Reading a state directory as of any retained epoch, savepoint or time, with no engine running.

    h = engine.open("state/")             # or "s3://bucket/prefix", with storage_options={...} if needed
    h.checkpoints()                       # epochs, times, watermarks, rows, state sizes, savepoints, rollbacks
    h.state("totals", at=1234)            # an operator's state as of epoch 1234 (or a savepoint, or a time)
    h.diff("totals", 1230, 1234)          # keys inserted, deleted and changed, before and after
    h.sql("SELECT * FROM totals AS OF SAVEPOINT 'before_deploy'")
    h.tables(at=12), h.describe("sink.totals")   # also as SQL: SHOW TABLES, DESCRIBE name AS OF EPOCH 12

Every read goes through the manifest: the row of the chosen point names the Delta version of each table, so
what you read is a consistent cut, also while a pipeline is writing. Operator state tables are change logs;
the state as of a version is, per key, its newest row unless that row is a tombstone (`state_store.resolve`),
done lazily by Polars or, for SQL, by a DuckDB view over the Delta files (deltalake's Arrow dataset locally, a
Polars scan in an object store; DuckDB's own delta and httpfs extensions are never needed).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import duckdb
import polars as pl
from sqlglot import exp

from engine import delta_tables
from engine.errors import UserError
from engine.manifest import (
    DEAD_LETTERS,
    LATE,
    RESUMABLE,
    SINK,
    STATE,
    TableEntry,
    entries,
    expired,
    expired_message,
    live_savepoints,
    read_checkpoints,
    readable,
    savepoint_rows,
)
from engine.state_dir import StateDir
from engine.state_store import resolve
from engine.storage import Location, location
from sql import time_travel
from sql.errors import did_you_mean

T = TypeVar("T")

BOOKKEEPING = ("_epoch", "_deleted")
At = int | str | dt.datetime | None


class HistoryError(UserError, LookupError):
    """A point in time, operator or table that the state directory does not have (any more)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


def open(state: str | Location, storage_options: Mapping[str, str] | None = None) -> History:
    """The history of the state directory `state`: a local folder, or `s3://bucket/prefix` (gs://, az://).

    `storage_options` (delta-rs' and obstore's keys: `aws_endpoint_url`, `aws_region`, `aws_access_key_id`, ...)
    hold for every table in the state directory's bucket, its sinks there included; without them the
    standard `AWS_*` (`GOOGLE_*`, `AZURE_*`) environment variables are used."""
    return History(state, storage_options)


class History:
    def __init__(self, state: str | Location, storage_options: Mapping[str, str] | None = None) -> None:
        self.dir = StateDir(location(state, storage_options))
        if not self.dir.manifest.exists():
            raise FileNotFoundError(f"{state} is not a timelapse state directory")
        self._read: tuple[frozenset[str], pl.DataFrame] | None = None

    # -- the manifest --------------------------------------------------------------------------
    def manifest_rows(self) -> pl.DataFrame:
        """The manifest's rows, read again only when its log changed: one listing tells (Delta log entries are
        never rewritten in place), where reading the rows costs several requests in an object store."""
        log = self.dir.manifest / "_delta_log"
        try:
            names = frozenset(p.name for p in log.iterdir())
        except FileNotFoundError:
            names = frozenset()
        if self._read is not None and names and self._read[0] == names:
            return self._read[1]
        rows = read_checkpoints(self.dir.manifest)
        self._read = (names, rows)
        return rows

    def row(self, at: At = None, rows: pl.DataFrame | None = None) -> dict[str, Any]:
        """The manifest row of a point: None (the current cut), an epoch, a savepoint name, or a time (the last
        checkpoint committed at or before it; naive times are UTC)."""
        rows = self.manifest_rows() if rows is None else rows
        if at is None:
            current = rows.filter(pl.col("kind").is_in(list(RESUMABLE)))
            if current.is_empty():
                raise HistoryError(f"{self.dir.root} has no committed epoch yet")
            return current.row(-1, named=True)
        if isinstance(at, str):
            live = live_savepoints(rows)
            if at in live:  # the epoch's row with the savepoint's own tables (an edited savepoint's differ)
                return {**self.row(int(live[at]["epoch"]), rows), "tables": savepoint_rows(rows)[at]["tables"]}
            try:
                at = dt.datetime.fromisoformat(at)
            except ValueError:
                known = ", ".join(sorted(live)) or "none"
                raise HistoryError(f"no savepoint named '{at}' (savepoints: {known}); times are ISO") from None
        epochs = rows.filter(pl.col("kind") == "epoch")
        if isinstance(at, dt.datetime):
            when = at if at.tzinfo else at.replace(tzinfo=dt.UTC)
            before = epochs.filter(pl.col("committed_at") <= when)
            if before.is_empty():
                raise HistoryError(f"no epoch was committed at or before {when.isoformat()}")
            row = before.row(-1, named=True)
        else:
            found = epochs.filter(pl.col("epoch") == int(at))
            if found.is_empty() and expired(rows, int(at)):
                raise HistoryError(expired_message(rows, int(at)))
            if found.is_empty():
                last = epochs.get_column("epoch").max()
                raise HistoryError(f"epoch {at} is not a committed checkpoint (the last one is epoch {last})")
            row = found.row(-1, named=True)
        if not readable(rows, row):
            raise HistoryError(expired_message(rows, int(row["epoch"])))
        return row

    def checkpoints(self) -> pl.DataFrame:
        """One row per checkpoint and rollback: epoch, time, watermark, rows in and out, state sizes,
        savepoints naming it, and for a rollback the epoch it returned to."""
        rows = self.manifest_rows()
        names: dict[int, list[str]] = {}
        for sp in live_savepoints(rows).values():
            names.setdefault(int(sp["epoch"]), []).append(sp["name"])
        out = []
        for row in rows.filter(pl.col("kind").is_in(list(RESUMABLE))).iter_rows(named=True):
            metrics = json.loads(row["metrics"] or "{}")
            out.append(
                {
                    "epoch": row["epoch"],
                    "kind": row["kind"],
                    "committed_at": row["committed_at"],
                    "watermark": row["watermark"],
                    "rows_in": sum(metrics.get("rows_in", {}).values()),
                    "rows_out": sum(metrics.get("rows_out", {}).values()),
                    "dead_letters": sum(metrics.get("dead_letters", {}).values()),
                    "late_rows": sum(metrics.get("late_rows", {}).values()),
                    "state_rows": sum(metrics.get("state_rows", {}).values()),
                    "savepoints": names.get(row["epoch"], []) if row["kind"] == "epoch" else [],
                    "rolled_back_to": metrics.get("rollback", {}).get("to_epoch"),
                    "readable": readable(rows, row) if row["kind"] == "epoch" else True,
                }
            )
        schema = {
            "epoch": pl.Int64,
            "kind": pl.String,
            "committed_at": pl.Datetime("us", "UTC"),
            "watermark": pl.Datetime("us", "UTC"),
            "rows_in": pl.Int64,
            "rows_out": pl.Int64,
            "dead_letters": pl.Int64,
            "late_rows": pl.Int64,
            "state_rows": pl.Int64,
            "savepoints": pl.List(pl.String),
            "rolled_back_to": pl.Int64,
            "readable": pl.Boolean,
        }
        return pl.DataFrame(out, schema=schema)

    def operators(self) -> pl.DataFrame:
        """Every stateful operator of the current cut: its SQL origin, key and kept values, and tables."""
        row = self.row()
        records = json.loads(row["operators"] or "{}")
        tables = entries(row)
        out = []
        for state_id, record in records.items():
            main = next((t for t in tables if t.name in (state_id, f"{state_id}/left")), None)
            out.append(
                {
                    "operator": state_id,
                    "kind": record.get("kind"),
                    "sinks": record.get("sinks", []),
                    "key": json.dumps(record.get("key")),
                    "window": record.get("window"),
                    "state": json.dumps(record.get("state")),
                    "sql": record.get("sql"),
                    "tables": [t.name for t in tables if t.role in (STATE, LATE) and t.name.split("/")[0] == state_id],
                    "path": main.path if main else record.get("directory"),
                }
            )
        return pl.DataFrame(
            out,
            schema={
                "operator": pl.String,
                "kind": pl.String,
                "sinks": pl.List(pl.String),
                "key": pl.String,
                "window": pl.String,
                "state": pl.String,
                "sql": pl.String,
                "tables": pl.List(pl.String),
                "path": pl.String,
            },
        )

    # -- tables as of a point --------------------------------------------------------------------
    def table_entry(self, row: dict[str, Any], name: str, roles: tuple[str, ...]) -> TableEntry:
        """The table called `name` among those of `roles`, trying the roles in order."""
        tables = [t for t in entries(row) if t.role in roles]
        for role in roles:
            for table in tables:
                if table.role == role and table.name.lower() == name.lower():
                    return table
        known = sorted({t.name for t in tables})
        listing = ", ".join(sorted(f"{t.name} ({t.role})" for t in tables))
        raise HistoryError(f"no table '{name}' at epoch {row['epoch']}{did_you_mean(name, known)}; tables: {listing}")

    def scan_state(self, op: str, at: At = None) -> pl.LazyFrame:
        """An operator's live state as a lazy frame (one row per key), as of `at`."""
        return self.scan_state_of(self.row(at), op)

    def scan_state_of(self, row: dict[str, Any], op: str) -> pl.LazyFrame:
        entry = self.table_entry(row, op, ("state",))
        log = self.unless_expired(row, lambda: delta_tables.scan(entry.path, version=entry.version))
        return resolve(log, state_keys(entry)).drop(*BOOKKEEPING)

    def state(self, op: str, at: At = None) -> pl.DataFrame:
        """An operator's state table (by operator id, e.g. `totals` or `totals/distinct_0`) as of `at`."""
        row = self.row(at)
        # a row, not its epoch number: after a rollback the current row's number is also an older epoch's
        return self.unless_expired(row, lambda: self.scan_state_of(row, op).collect())

    def sink(self, name: str, at: At = None) -> pl.DataFrame:
        """A Delta sink table as it was at `at`."""
        row = self.row(at)
        entry = self.table_entry(row, name, ("sink",))
        return self.unless_expired(row, lambda: delta_tables.read(entry.path, version=entry.version))

    def unless_expired(self, row: dict[str, Any], read: Callable[[], T]) -> T:
        """`read()`; when it fails because retention, in a running pipeline, freed the epoch meanwhile, the
        HistoryError saying so (a reader beside a pipeline that keeps few checkpoints can lose that race)."""
        try:
            return read()
        except HistoryError:
            raise
        except Exception:
            rows = self.manifest_rows()
            if expired(rows, int(row["epoch"])) or not readable(rows, row):
                raise HistoryError(expired_message(rows, int(row["epoch"]))) from None
            raise

    def late(self, op: str, at: At = None) -> pl.DataFrame:
        """The rows an operator judged late (with the watermark they arrived behind and why), as of `at`."""
        row = self.row(at)
        frames = [
            delta_tables.read(t.path, version=t.version).with_columns(pl.lit(t.name).alias("_table"))
            for t in entries(row)
            if t.role == LATE and t.name.split("/")[0] == op
        ]
        if not frames:
            # An unknown operator is an error, a punctual one is empty (a join's state tables are op/left, op/right).
            if not any(t.role == STATE and t.name.split("/")[0] == op for t in entries(row)):
                self.table_entry(row, op, ("state",))
            return pl.DataFrame()
        return pl.concat(frames, how="diagonal_relaxed")

    def dead_letters(self, source: str, at: At = None) -> pl.DataFrame:
        """A source's rejected records: epoch, file, position, raw text and reason."""
        row = self.row(at)
        matches = [t for t in entries(row) if t.role == DEAD_LETTERS and t.name.lower() == source.lower()]
        if not matches:
            return pl.DataFrame()
        return delta_tables.read(matches[0].path, version=matches[0].version)

    def diff(self, op: str, a: At, b: At) -> pl.DataFrame:
        """Keys inserted, deleted and changed in an operator's state between `a` and `b`: `change`, the key
        columns, then `<column>_before` and `<column>_after` for every other column."""
        entry = self.table_entry(self.row(b), op, ("state",))
        keys = state_keys(entry)
        before = self.scan_state(op, a).drop("_kg", strict=False)
        after = self.scan_state(op, b).drop("_kg", strict=False)
        values = [c for c in after.collect_schema().names() if c not in keys]
        joined = before.with_columns(pl.lit(True).alias("__a")).join(
            after.with_columns(pl.lit(True).alias("__b")),
            on=keys,
            how="full",
            coalesce=True,
            nulls_equal=True,
            suffix="_after",
        )
        joined = joined.rename({v: f"{v}_before" for v in values})
        same = pl.all_horizontal(pl.col(f"{v}_before").eq_missing(pl.col(f"{v}_after")) for v in values)
        change = (
            pl.when(pl.col("__a").is_null())
            .then(pl.lit("inserted"))
            .when(pl.col("__b").is_null())
            .then(pl.lit("deleted"))
            .when(~same if values else pl.lit(False))
            .then(pl.lit("changed"))
        )
        columns = [c for v in values for c in (f"{v}_before", f"{v}_after")]
        return (
            joined.with_columns(change.alias("change"))
            .filter(pl.col("change").is_not_null())
            .select("change", *keys, *columns)
            .sort(keys, nulls_last=True)
            .collect()
        )

    # -- what a point exposes ------------------------------------------------------------------
    def tables(self, at: At = None, kind: str | None = None) -> pl.DataFrame:
        """The tables the cut at `at` exposes to `sql()` (what `SHOW TABLES` answers): `kind` (the qualifier),
        `name`, `qualified_name` (to paste into a query), `unqualified` (whether the bare name reads this table:
        state first, then sink, late, dead_letters), `epoch`, the Delta `version`, `about` (what it holds) and
        `path`."""
        row = self.row(at)
        operators = json.loads(row["operators"] or "{}")
        tables = entries(row)
        listed = sorted(
            (t for t in tables if t.role in time_travel.KINDS and kind in (None, t.role)),
            key=lambda t: (time_travel.KINDS.index(t.role), t.name.lower()),
        )
        first = {}  # the unqualified lookup of `_entry`: the first role in KINDS order holding the name
        for entry in sorted(tables, key=lambda t: time_travel.KINDS.index(t.role)):
            first.setdefault(entry.name.lower(), (entry.role, entry.name))
        records = [
            {
                "kind": t.role,
                "name": t.name,
                "qualified_name": f"{t.role}.{exp.to_identifier(t.name).sql(dialect='duckdb')}",
                "unqualified": first[t.name.lower()] == (t.role, t.name),
                "epoch": row["epoch"],
                "version": t.version,
                "about": _about(t, operators),
                "path": t.path,
            }
            for t in listed
        ]
        schema = {
            "kind": pl.String,
            "name": pl.String,
            "qualified_name": pl.String,
            "unqualified": pl.Boolean,
            "epoch": pl.Int64,
            "version": pl.Int64,
            "about": pl.String,
            "path": pl.String,
        }
        return pl.DataFrame(records, schema=schema)

    def describe(self, name: str, at: At = None, kind: str | None = None) -> pl.DataFrame:
        """The columns `sql()` sees in table `name` (qualified by `kind`, or looked up like an unqualified name)
        as of `at` (what `DESCRIBE` answers): `column_name`, `column_type` (DuckDB's), and `key` (a state
        table's key columns)."""
        entry = self.table_entry(self.row(at), name, (kind,) if kind else time_travel.KINDS)
        con = duckdb.connect()
        _register(con, entry, "described")  # the same view a query reads, so the columns are the ones it sees
        confine(con)
        columns = con.sql('DESCRIBE "described"').pl().select("column_name", "column_type")
        keys = set(state_keys(entry)) if entry.role == STATE else set()
        return columns.with_columns(pl.col("column_name").is_in(list(keys)).alias("key"))

    # -- SQL -----------------------------------------------------------------------------------
    def sql(self, query: str) -> pl.DataFrame:
        """DuckDB SQL over state, sinks, late rows and dead letters, each table `AS OF` any point:
        `AS OF EPOCH n`, `AS OF SAVEPOINT 'name'`, `AS OF TIMESTAMP '...'`; without a clause, the current cut.
        `SHOW TABLES` and `DESCRIBE name` (both with an optional AS OF clause) list and describe the tables of a
        point in time (`tables`, `describe`).

        Read-only: one query, nothing that writes, changes the session or reads files (`sql.read_only`); the
        connection it runs on cannot reach the filesystem either (`confine`)."""
        time_travel.check_statement(query)  # one statement that starts like a query, before anything else
        listing = time_travel.parse_listing(query)
        if listing is not None:
            point = listing.point
            at = None if point.at == "latest" else point.value
            if isinstance(listing, time_travel.ShowTables):
                return self.tables(at, listing.kind)
            return self.describe(point.name, at, point.kind)
        tree, explain = time_travel.parse_query(query)
        rows = self.manifest_rows()
        con = duckdb.connect()
        views: dict[time_travel.TableAt, str] = {}
        for _, point in time_travel.references(tree):
            if point in views:
                continue
            row = self.row(None if point.at == "latest" else point.value, rows)
            roles = (point.kind,) if point.kind else time_travel.KINDS
            name = f"{point.kind or ''}.{point.name}@{point.at}:{point.value}"
            _register(con, self.table_entry(row, point.name, roles), name)
            views[point] = name
        confine(con)
        return con.sql(explain + time_travel.rewrite(tree, views.__getitem__)).pl()

    def duckdb(self, at: At = None, *, confined: bool = True) -> duckdb.DuckDBPyConnection:
        """A DuckDB connection with a view for every table of the cut at `at` (default: the current one):
        in schemas `state` (operator ids), `sink`, `late` and `dead_letters` (source names), and unqualified in
        the main schema too, state first where names collide.

        Confined like `sql()` by default (`confine`: no file access, configuration locked), so it can be handed
        to code that should only read the state directory. `confined=False` gives a connection of your own, as
        powerful as `duckdb.connect()`: COPY results out, attach other databases, read other files."""
        row = self.row(at)
        con = duckdb.connect()
        for role in time_travel.KINDS:
            con.execute(f"CREATE SCHEMA IF NOT EXISTS {role}")
        named: set[str] = set()
        for role in time_travel.KINDS:
            for entry in entries(row):
                if entry.role != role:
                    continue
                _register(con, entry, entry.name, schema=role)
                if entry.name.lower() not in named:
                    named.add(entry.name.lower())
                    con.execute(f"CREATE VIEW {_quote(entry.name)} AS SELECT * FROM {role}.{_quote(entry.name)}")
        return confine(con) if confined else con


def confine(con: duckdb.DuckDBPyConnection) -> duckdb.DuckDBPyConnection:
    """Harden `con` once its views are registered: no file access (COPY, ATTACH, read_csv, `FROM 'file'`,
    INSTALL, EXPORT all fail), no extension loading, no Python variables as tables, and the configuration
    locked so that no statement can undo it. Views over registered Polars scans still read: Polars reads
    those files, not DuckDB."""
    for setting in (
        "autoinstall_known_extensions = false",
        "autoload_known_extensions = false",
        "allow_community_extensions = false",
        "allow_persistent_secrets = false",
        "python_enable_replacements = false",
        "enable_external_access = false",
        "lock_configuration = true",  # last: locks the ones above
    ):
        con.execute(f"SET {setting}")
    return con


def _about(entry: TableEntry, operators: dict[str, Any]) -> str:
    """What a table holds, in a few words, from the manifest's record of the operators."""
    if entry.role == SINK:
        return "Delta sink"
    if entry.role == DEAD_LETTERS:
        return "records the source could not read"
    operator, _, part = entry.name.partition("/")
    record = operators.get(operator, {})
    kind = str(record.get("kind") or "operator")
    feeds = f" -> {', '.join(record['sinks'])}" if record.get("sinks") else ""
    if entry.role == LATE:
        return f"late rows of a {kind}{feeds}"
    return f"{kind} state" + (f" ({part})" if part else "") + feeds


def state_keys(entry: TableEntry) -> list[str]:
    described = json.loads(entry.schema or "{}")
    if "keys" in described:
        return list(described["keys"])
    keys = []  # written before tables described their keys: key columns came first, up to __rows
    for name in described:
        if name == "__rows":
            break
        if name not in ("_kg", *BOOKKEEPING):
            keys.append(name)
    return keys


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _register(con: duckdb.DuckDBPyConnection, entry: TableEntry, name: str, schema: str = "main") -> None:
    """A view `name` over the table as of the entry's version; state tables resolved to their live rows.

    The Delta files are read lazily, so filters and projections reach them, through a Polars scan (with the
    location's storage options): in an object store DuckDB would need its httpfs and delta extensions, and
    deltalake's own Arrow filesystem can abort the process at exit (delta-facts §11)."""
    where = location(entry.path).resolve()
    path = str(where)
    # A Polars scan on a local disk too, not deltalake's Arrow dataset: a table written by delta-rs' MERGE (an
    # upsert sink) stores strings as string views, and the dataset then fails every filter DuckDB pushes into it
    # on a string column (`no kernel matching input types (string, string_view)`).
    dataset = delta_tables.scan(where, version=entry.version)
    source = f"__{schema}_{abs(hash((name, path, entry.version)))}"
    con.register(source, dataset)
    target = f"{schema}.{_quote(name)}"
    if entry.role != STATE:
        con.execute(f"CREATE VIEW {target} AS SELECT * FROM {source}")
        return
    keys = ", ".join(_quote(k) for k in state_keys(entry))
    con.execute(
        f"CREATE VIEW {target} AS SELECT * EXCLUDE (_epoch, _deleted, __newest) FROM "
        f"(SELECT *, max(_epoch) OVER ({'PARTITION BY ' + keys if keys else ''}) AS __newest FROM {source}) "
        "WHERE _epoch = __newest AND NOT _deleted"
    )


def checkpoint(state: str | Location, epoch: int | None = None) -> dict[str, Any]:
    """The manifest row of `epoch`; by default the current cut (the latest epoch, or a later rollback)."""
    return History(state).row(epoch)


def state_at(state: str | Location, operator: str, epoch: At = None) -> pl.LazyFrame:
    """The live state of a stateful operator (by state id) as of `epoch`: one row per key."""
    return History(state).scan_state(operator, epoch)
