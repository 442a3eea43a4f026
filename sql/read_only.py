"""What `timelapse sql` (and `History.sql`) accepts: one read-only query over the state directory's tables.

    SELECT / WITH / FROM / VALUES / SUMMARIZE / PIVOT queries, SHOW TABLES, DESCRIBE, EXPLAIN [ANALYZE] query

Everything else is refused with the position of the offending token: a second statement (`SELECT 1; COPY ...`),
statements that write or change the session (COPY, ATTACH, DETACH, INSTALL, LOAD, SET, RESET, PRAGMA, CALL,
CREATE, INSERT, UPDATE, DELETE, DROP, ALTER, EXPORT, IMPORT, USE, transactions), and functions that read files or
reach outside the state directory (`read_csv`, `read_text`, `glob`, `parquet_scan`, `query_table`, ...) in any
position. Table names never reach DuckDB's replacement scans (`FROM '/etc/passwd'`): every table of a query is
rewritten to a view of the state directory, or refused as unknown (`engine.history`). The caller also hardens
the DuckDB connection itself (no file access, configuration locked), so this check is the first of two walls.

Pure: tokens and sqlglot trees in, `SqlError` out.
"""

from __future__ import annotations

import re

from sqlglot import exp
from sqlglot.dialects.dialect import Dialect
from sqlglot.errors import TokenError
from sqlglot.tokens import Token, TokenType

from sql.errors import SqlError, error_at

#: the words a read-only statement may start with
QUERY_STARTS = frozenset(
    {"SELECT", "WITH", "FROM", "VALUES", "(", "SHOW", "DESCRIBE", "DESC", "EXPLAIN", "SUMMARIZE", "PIVOT", "UNPIVOT"}
)
#: table functions that only compute (no files, no catalog outside the query)
PURE_TABLE_FUNCTIONS = frozenset({"range", "generate_series", "unnest", "generate_subscripts"})
#: functions that read files, other databases or the environment, wherever they appear
_OUTSIDE = re.compile(
    r"(read_|parquet_|sniff_|glob$|delta_|iceberg_|sqlite_|postgres_|mysql_|st_read|query$|query_table$|getenv$"
    r"|load_|install_|duckdb_secrets$|which_secret$|pragma_|duckdb_extensions$|json_execute_serialized_sql"
    r"|checkpoint$|force_checkpoint$|export_|import_)",
    re.I,
)
#: statement and expression kinds that write or change the session, refused even nested (defence in depth)
_WRITE_KINDS = """DDL DML Copy Attach Detach Install Pragma Set Use Command Transaction Commit Rollback Export LoadData
Merge TruncateTable Alter Drop Create Grant Revoke Comment Analyze Refresh Cache Kill Declare Lock"""
_WRITES = tuple(getattr(exp, name) for name in _WRITE_KINDS.split() if hasattr(exp, name))
_QUERY_KINDS = (exp.Query, exp.Values, exp.Describe, exp.Summarize, exp.Pivot, exp.Show)

READ_ONLY = "timelapse sql is read-only: one query (SELECT, WITH, FROM, VALUES, SHOW TABLES, DESCRIBE, EXPLAIN)"


def statement(text: str, dialect: Dialect) -> tuple[int, str]:
    """Refuse `text` unless it is one statement that starts like a query. Returns where the query starts and
    what precedes it: `EXPLAIN [ANALYZE] ` (sqlglot reads the rest of an EXPLAIN as one opaque string, so the
    words are blanked out and the query after them is tokenized on its own), or (0, '')."""
    tokens = tokenize(text, dialect)
    explain: list[str] = []
    for word in ("EXPLAIN", "ANALYZE"):  # ANALYZE only after EXPLAIN: alone, it is refused below
        if not (tokens and tokens[0].text.upper() == word and (explain or word == "EXPLAIN")):
            break
        explain.append(word)
        text = blank(text, tokens[0].end + 1)
        tokens = tokenize(text, dialect)
    statements: list[list[Token]] = [[]]
    for token in tokens:
        if token.token_type == TokenType.SEMICOLON:
            statements.append([])
        else:
            statements[-1].append(token)
    statements = [s for s in statements if s]
    if not statements:
        raise SqlError(f"EXPLAIN takes a query; {READ_ONLY}" if explain else "give a query")
    if len(statements) > 1:
        raise SqlError(f"a second statement starts here; {READ_ONLY}", *_at(text, statements[1][0]))
    words = statements[0]
    first = words[0].text.upper()
    if explain and first in ("EXPLAIN", "SHOW", "DESCRIBE", "DESC"):
        raise SqlError(f"EXPLAIN takes a query; {READ_ONLY}", *_at(text, words[0]))
    if first not in QUERY_STARTS:
        raise SqlError(f"{first} is refused; {READ_ONLY}", *_at(text, words[0]))
    if first == "SHOW" and not (len(words) > 1 and words[1].text.upper() in ("TABLES", "ALL")):
        raise SqlError(f"SHOW lists the tables only (SHOW TABLES); {READ_ONLY}", *_at(text, words[0]))
    return (words[0].start, " ".join(explain) + " ") if explain else (0, "")


def blank(text: str, end: int) -> str:
    """`text` with its first `end` characters replaced by spaces (newlines kept, so positions do not move)."""
    return re.sub(r"[^\n]", " ", text[:end]) + text[end:]


def tree(text: str, tokens: list[Token], node: exp.Expr) -> None:
    """Refuse a parsed query that writes, or reads anything but the state directory's tables."""
    if not isinstance(node, _QUERY_KINDS):
        raise error_at(node, f"{node.key.upper()} is refused; {READ_ONLY}")
    for part in node.walk():
        if isinstance(part, _WRITES):
            raise _refused(text, tokens, part, f"{part.key.upper()} is refused; {READ_ONLY}")
        if isinstance(part, exp.Table) and isinstance(part.this, exp.Func):
            name = _function_name(part.this)
            if name.lower() not in PURE_TABLE_FUNCTIONS:
                raise _refused(text, tokens, part.this, f"the table function {name} is refused; {READ_ONLY}")
        elif isinstance(part, exp.Func) and _OUTSIDE.match(_function_name(part)):
            name = _function_name(part)
            raise _refused(text, tokens, part, f"{name} reads outside the state directory; {READ_ONLY}")


def _function_name(node: exp.Func) -> str:
    return (node.name if isinstance(node, exp.Anonymous) else node.sql_name()).lower()


def _refused(text: str, tokens: list[Token], node: exp.Expr, message: str) -> SqlError:
    """The error at the token that names `node` (sqlglot keeps positions on few nodes: look the word up)."""
    error = error_at(node, message)
    if error.line is not None:
        return error
    word = _function_name(node) if isinstance(node, exp.Func) else node.key
    for token in tokens:
        if token.text.lower() == word.lower():
            return SqlError(message, *_at(text, token))
    return error


def _at(text: str, token: Token) -> tuple[int, int]:
    """1-based line and column where `token` starts in `text`."""
    offset = token.start
    return text.count("\n", 0, offset) + 1, offset - (text.rfind("\n", 0, offset) + 1) + 1


def tokenize(text: str, dialect: Dialect) -> list[Token]:
    """The tokens of `text` (comments dropped), or the tokenizer's error."""
    try:
        return dialect.tokenize(text)
    except TokenError as err:
        raise SqlError(str(err).split("\n")[0]) from None
