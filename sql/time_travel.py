"""Time-travel SQL over a state directory: DuckDB's SQL plus `AS OF` clauses on any table.

    SELECT * FROM totals AS OF EPOCH 1234
    SELECT * FROM totals AS OF SAVEPOINT 'before_deploy'
    SELECT * FROM totals AS OF TIMESTAMP '2026-11-01 10:00:00'      -- also FOR SYSTEM_TIME AS OF '...'
    SELECT a.cust, a.n, b.n FROM totals AS OF EPOCH 10 a JOIN totals AS OF EPOCH 20 b USING (cust)
    SHOW TABLES [FROM sink] [AS OF EPOCH 12]       -- the tables a point in time exposes (`parse_listing`)
    DESCRIBE sink.totals [AS OF SAVEPOINT 'x']     -- a table's columns at that point

A table without a clause is read at the current cut. Parsing extends sqlglot's DuckDB dialect; `rewrite`
replaces each (table, point in time) with the name of a view the caller registers, and drops the clauses, so
DuckDB runs plain SQL. Pure: what a name refers to and which Delta version a point in time means is decided by
the caller (`engine.history`).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import sqlglot
from sqlglot import exp
from sqlglot.dialects.duckdb import DuckDB
from sqlglot.errors import ParseError, TokenError

from sql import read_only
from sql.errors import SqlError, error_at


class TimeTravel(DuckDB):
    class Parser(DuckDB.Parser):
        VERSION_PHRASES = {
            **DuckDB.Parser.VERSION_PHRASES,
            ("AS", "OF", "EPOCH"): "EPOCH",
            ("AS", "OF", "SAVEPOINT"): "SAVEPOINT",
            ("AS", "OF", "TIMESTAMP"): "TIMESTAMP",
        }


#: the kinds of tables a query can name, as qualifiers: `sink.totals`; unqualified names try them in this order
KINDS = ("state", "sink", "late", "dead_letters")


@dataclass(frozen=True)
class TableAt:
    """A table as of a point in time: `at` is `latest`, `epoch`, `savepoint` or `timestamp`; `kind` is one of
    KINDS when the name was qualified."""

    name: str
    at: str = "latest"
    value: int | str | None = None
    kind: str | None = None


def parse(text: str) -> exp.Expr:
    """Parse one query; errors carry line and column."""
    try:
        statements = [s for s in sqlglot.parse(text, read=TimeTravel) if s is not None]
    except (ParseError, TokenError) as err:
        detail = err.errors[0] if isinstance(err, ParseError) and err.errors else {}
        line, column = detail.get("line"), detail.get("col")
        message = str(detail.get("description") or err).split("\n")[0]
        if message.startswith("Required keyword"):
            message = "the query is incomplete here"
        raise SqlError(message, line, column) from None
    if len(statements) != 1:
        raise SqlError("give exactly one query")
    return statements[0]


def check_statement(text: str) -> tuple[int, str]:
    """Refuse `text` unless it is one statement that starts like a query (`read_only.statement`)."""
    return read_only.statement(text, TimeTravel())


def parse_query(text: str) -> tuple[exp.Expr, str]:
    """One read-only query (`sql.read_only`), and the `EXPLAIN [ANALYZE] ` that prefixes it, or ''. The prefix
    is blanked out before parsing, so that positions in errors stay those of `text`."""
    start, prefix = check_statement(text)
    body = read_only.blank(text, start)
    tree = parse(body)
    read_only.tree(body, read_only.tokenize(body, TimeTravel()), tree)
    return tree, prefix


def references(tree: exp.Expr) -> list[tuple[exp.Table, TableAt]]:
    """Every table of the query (CTE names excepted) with the point in time it is read at."""
    ctes = {cte.alias_or_name.lower() for cte in tree.find_all(exp.CTE)}
    found = []
    for table in tree.find_all(exp.Table):
        if not table.name or (table.name.lower() in ctes and table.args.get("version") is None):
            continue
        found.append((table, _point(table)))
    return found


def _point(table: exp.Table) -> TableAt:
    point = _time(table)
    if not table.db:
        return point
    if table.db.lower() not in KINDS or table.catalog:
        raise error_at(
            table.args.get("db") or table, f"qualify a table with one of {', '.join(KINDS)}, not '{table.db}'"
        )
    return TableAt(point.name, point.at, point.value, table.db.lower())


def _time(table: exp.Table) -> TableAt:
    version = table.args.get("version")
    if version is None:
        return TableAt(table.name)
    kind = str(version.this).upper()
    value = version.expression
    if kind == "VERSION" or version.args.get("kind") != "AS OF":
        raise error_at(table, "write AS OF EPOCH n, AS OF SAVEPOINT 'name' or AS OF TIMESTAMP '...'")
    if kind == "EPOCH":
        if not (isinstance(value, exp.Literal) and not value.is_string and value.this.isdigit()):
            raise error_at(table, "AS OF EPOCH takes an epoch number")
        return TableAt(table.name, "epoch", int(value.this))
    if not (isinstance(value, exp.Literal) and value.is_string):
        raise error_at(table, f"AS OF {kind} takes a quoted string")
    return TableAt(table.name, kind.lower(), value.this)


def rewrite(tree: exp.Expr, view: Callable[[TableAt], str]) -> str:
    """DuckDB SQL in which each table reads the view `view(point)` names."""
    tree = tree.copy()
    for table, point in references(tree):
        alias = table.alias or (table.name if point.at != "latest" or view(point) != table.name else None)
        replacement = exp.Table(this=exp.to_identifier(view(point), quoted=True))
        if alias and not isinstance(table.parent, exp.Summarize):  # SUMMARIZE takes a bare table name
            replacement.set("alias", exp.TableAlias(this=exp.to_identifier(alias)))
        table.replace(replacement)
    return tree.sql(dialect="duckdb")


@dataclass(frozen=True)
class ShowTables:
    """`SHOW TABLES [FROM kind] [AS OF ...]`: `point.name` is empty; `kind` narrows the listing to one qualifier."""

    point: TableAt
    kind: str | None = None


@dataclass(frozen=True)
class Describe:
    """`DESCRIBE [kind.]name [AS OF ...]`: the columns of one table at a point in time."""

    point: TableAt


_LISTING = re.compile(r"\s*(?:(?P<show>SHOW\s+(?:ALL\s+)?TABLES)|(?P<describe>DESCRIBE|DESC))(?![\w$])", re.I)
_SHOW_FROM = re.compile(r"\s+(?:FROM|IN)\s+(?P<kind>\w+)", re.I)
_A_QUERY = re.compile(r"\s*\(?\s*(?:SELECT|WITH|FROM|VALUES)(?![\w$])", re.I)
_PLACEHOLDER = "__tables"


def parse_listing(text: str) -> ShowTables | Describe | None:
    """`SHOW TABLES` and `DESCRIBE table`, with the same qualifiers and AS OF clauses as a query's tables; None
    for anything else (DESCRIBE of a query included: DuckDB answers that over the rewritten query).

    DuckDB alone would list the views of an empty connection (`[]`): the tables of a point in time are the
    manifest's, so the caller answers these from the manifest row."""
    match = _LISTING.match(text)
    if match is None:
        return None
    start = match.end()
    if match.group("show"):
        kind = None
        narrowed = _SHOW_FROM.match(text, start)
        if narrowed is not None:
            kind = narrowed.group("kind").lower()
            if kind not in KINDS:
                line, column = _position(text, narrowed.start("kind"))
                raise SqlError(f"SHOW TABLES FROM takes one of {', '.join(KINDS)}, not '{kind}'", line, column)
            start = narrowed.end()
        return ShowTables(_single_table(text, start, _PLACEHOLDER), kind)
    if _A_QUERY.match(text, start):
        return None
    if not text[start:].strip().removesuffix(";"):
        raise SqlError(
            "DESCRIBE needs a table name: DESCRIBE [state|sink|late|dead_letters.]name", *_position(text, start)
        )
    return Describe(_single_table(text, start, None))


def _single_table(text: str, start: int, placeholder: str | None) -> TableAt:
    """Parse `text[start:]` as the table (and AS OF clause) of `SELECT * FROM ...`, so that names, qualifiers and
    points in time follow exactly the rules of a query; error positions are those of `text`."""
    prefix = f"SELECT * FROM {placeholder} " if placeholder else "SELECT * FROM "
    rest = text[start:].rstrip().removesuffix(";")
    try:
        tree = parse(prefix + rest)
        found = references(tree)
        unexpected = [key for key, value in tree.args.items() if value and key not in ("expressions", "from", "from_")]
        table = found[0][0] if found else None
        if len(found) != 1 or unexpected or (table is not None and table.alias):
            raise error_at(table, "expected a table name and an optional AS OF clause, and nothing else")
        return found[0][1]
    except SqlError as err:
        if err.line is None:
            raise
        line, column = _position(text, start)
        if err.line == 1:  # shift from the synthetic query's first line back to the original text
            raise SqlError(err.message, line, column + max((err.col or 1) - len(prefix), 1) - 1) from None
        raise SqlError(err.message, line + err.line - 1, err.col) from None


def _position(text: str, offset: int) -> tuple[int, int]:
    """1-based line and column of `offset` in `text`."""
    line = text.count("\n", 0, offset) + 1
    return line, offset - (text.rfind("\n", 0, offset) + 1) + 1
