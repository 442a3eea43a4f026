"""A corpus of malformed statements, options and flags: each is a user error, one line, with a position.

Every case runs the real CLI: `timelapse explain` (in process, its stderr captured) for the SQL cases, a share of
them again through `timelapse run` in a subprocess, and the CLI's flags through its parser. Each asserts exit code
2, exactly one line on stderr that names the line and column (or the flag), and no traceback, internal error or
Rust panic text.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from engine import cli
from engine.pipeline import Pipeline
from sql import SqlError
from sql.options import CONNECTORS, OptionError

HEADER = """\
CREATE TABLE src (k STRING, v INT, d DECIMAL(10, 2), ts TIMESTAMP(3), WATERMARK FOR ts AS ts - INTERVAL '1' SECOND) WITH ('connector' = 'datagen', 'number-of-rows' = '10');
CREATE TABLE out (k STRING, v BIGINT) WITH ('connector' = 'blackhole');
CREATE TABLE files (k STRING, v INT, ts TIMESTAMP(3)) WITH ('connector' = 'filesystem', 'path' = 'in', 'format' = 'json');
"""  # noqa: E501
INSERT = "INSERT INTO out SELECT k, v FROM src;"
FORBIDDEN = ("Traceback", "internal error", "panicked", "PanicException", "RUST_BACKTRACE")


def table(columns: str, options: str) -> str:
    """A CREATE TABLE on line 4 (whose mistake is the case), then a valid INSERT."""
    return f"CREATE TABLE t ({columns}) WITH ({options}); {INSERT}"


def uses(options: str, query: str = "INSERT INTO out SELECT k, v FROM t;") -> str:
    return f"CREATE TABLE t (k STRING, v INT) WITH ({options}); {query}"


# (id, line 4 of the script, a fragment of the message). The mistake is always on line 4.
CASES: list[tuple[str, str, str]] = [
    # syntax and typos
    ("keyword-typo", "INSERT INTO out SELEC k, v FROM src;", "syntax error"),
    ("from-typo", "INSERT INTO out SELECT k, v FORM src;", "syntax error"),
    ("unterminated-string", "INSERT INTO out SELECT k, v FROM src WHERE k = 'abc;", "a string is not closed"),
    ("unterminated-name", "INSERT INTO out SELECT k, `v FROM src;", "a quoted name is not closed"),
    ("unterminated-comment", "INSERT INTO out SELECT k, v FROM src; /* the end", "a comment is not closed"),
    ("unclosed-paren", "INSERT INTO out SELECT k, v FROM src WHERE (v > 1;", "syntax error"),
    ("dangling-operator", "INSERT INTO out SELECT k, v FROM src WHERE v > ;", "syntax error near '>'"),
    ("group-without-by", "INSERT INTO out SELECT k, COUNT(*) FROM src GROUP k;", "syntax error"),
    # unknown names
    ("unknown-column", "INSERT INTO out SELECT k, vv FROM src;", "unknown column 'vv' (did you mean 'v'?)"),
    (
        "updating-into-append-with-a-hint",  # the hint's text is parsed alone: its positions are not the statement's
        "INSERT INTO files SELECT /*+ STATE_ID('agg') */ k, CAST(COUNT(*) AS INT), MAX(ts) FROM src GROUP BY k;",
        "gives an updating result",
    ),
    ("unknown-table", "INSERT INTO out SELECT k, v FROM srcc;", "unknown table 'srcc' (did you mean 'src'?)"),
    ("unknown-sink", "INSERT INTO outt SELECT k, v FROM src;", "unknown table 'outt'"),
    ("unknown-function", "INSERT INTO out SELECT k, FOO(v) FROM src;", "function FOO is not supported"),
    ("unknown-no-paren-function", "INSERT INTO out SELECT k, CURRENT_TIMESTAMP FROM src;", "CURRENT_TIMESTAMP"),
    ("unknown-qualifier", "INSERT INTO out SELECT x.k, v FROM src;", "'x'"),
    ("unknown-insert-column", "INSERT INTO out (k, w) SELECT k, v FROM src;", "no column 'w'"),
    ("unknown-aggregate", "INSERT INTO out SELECT k, MEDIAN(v) FROM src GROUP BY k;", "MEDIAN"),
    # wrong types
    ("compare-string-int", "INSERT INTO out SELECT k, v FROM src WHERE k > 1;", "cannot compare STRING"),
    ("string-function-on-int", "INSERT INTO out SELECT k, UPPER(v) FROM src;", "expected a STRING"),
    ("non-boolean-where", "INSERT INTO out SELECT k, v FROM src WHERE v;", "BOOLEAN"),
    ("sink-column-type", "INSERT INTO out SELECT v, k FROM src;", "column 'k' is STRING"),
    ("too-few-columns", "INSERT INTO out SELECT k FROM src;", "produces 1 column(s)"),
    ("sum-of-string", "INSERT INTO out SELECT k, SUM(k) FROM src GROUP BY k;", "SUM needs a number"),
    ("avg-of-string", "INSERT INTO out SELECT k, AVG(k) FROM src GROUP BY k;", "AVG needs a number"),
    ("cast-decimal-precision", "INSERT INTO out SELECT k, CAST(v AS DECIMAL(50, 60)) FROM src;", "precision"),
    ("decimal-precision", table("d DECIMAL(50, 60), k STRING", "'connector' = 'datagen'"), "between 1 and 38"),
    ("decimal-scale", table("d DECIMAL(10, 12), k STRING", "'connector' = 'datagen'"), "scale"),
    ("decimal-zero", table("d DECIMAL(0, 0)", "'connector' = 'datagen'"), "between 1 and 38"),
    ("timestamp-precision", table("ts TIMESTAMP(12)", "'connector' = 'datagen'"), "between 0 and 9"),
    ("varchar-zero", table("s VARCHAR(0)", "'connector' = 'datagen'"), "at least 1"),
    ("unsupported-type", table("t TIME", "'connector' = 'datagen'"), "not supported"),
    ("duplicate-column", table("k STRING, k INT", "'connector' = 'datagen'"), "declared twice"),
    ("primary-key-unknown", table("k STRING, PRIMARY KEY (kk) NOT ENFORCED", "'connector' = 'datagen'"), "'kk'"),
    ("defined-twice", "CREATE TABLE src (k STRING) WITH ('connector' = 'datagen'); " + INSERT, "already defined"),
    # intervals and windows
    (
        "zero-window",
        "INSERT INTO out SELECT window_start, COUNT(*) FROM TABLE(TUMBLE(TABLE src, DESCRIPTOR(ts), "
        "INTERVAL '0' SECOND)) GROUP BY window_start, window_end;",
        "must be positive",
    ),
    (
        "negative-window",
        "INSERT INTO out SELECT k, COUNT(*) FROM TABLE(TUMBLE(TABLE src, DESCRIPTOR(ts), "
        "INTERVAL '-5' SECOND)) GROUP BY k, window_start, window_end;",
        "positive",
    ),
    (
        "interval-text",
        "INSERT INTO out SELECT k, COUNT(*) FROM TABLE(TUMBLE(TABLE src, DESCRIPTOR(ts), "
        "INTERVAL 'abc' SECOND)) GROUP BY k, window_start, window_end;",
        "interval",
    ),
    (
        "interval-unit",
        "INSERT INTO out SELECT k, v FROM src WHERE ts > ts - INTERVAL '1' FORTNIGHT;",
        "FORTNIGHT",
    ),
    (
        "hop-not-multiple",
        "INSERT INTO out SELECT k, COUNT(*) FROM TABLE(HOP(TABLE src, DESCRIPTOR(ts), INTERVAL '3' SECOND, "
        "INTERVAL '10' SECOND)) GROUP BY k, window_start, window_end;",
        "multiple",
    ),
    (
        "window-on-int",
        "INSERT INTO out SELECT k, COUNT(*) FROM TABLE(TUMBLE(TABLE src, DESCRIPTOR(v), INTERVAL '1' SECOND)) "
        "GROUP BY k, window_start, window_end;",
        "must be a TIMESTAMP",
    ),
    (
        "window-without-descriptor",
        "INSERT INTO out SELECT k, COUNT(*) FROM TABLE(TUMBLE(TABLE src, INTERVAL '1' SECOND)) "
        "GROUP BY k, window_start, window_end;",
        "DESCRIPTOR",
    ),
    # watermarks
    ("watermark-on-int", table("k STRING, v INT, WATERMARK FOR v AS v", "'connector' = 'datagen'"), "TIMESTAMP"),
    ("watermark-unknown-column", table("k STRING, WATERMARK FOR ts AS ts", "'connector' = 'datagen'"), "unknown"),
    (
        "watermark-expression-type",
        table("k STRING, v INT, ts TIMESTAMP(3), WATERMARK FOR ts AS v", "'connector' = 'datagen'"),
        "must give a TIMESTAMP",
    ),
    # unsupported constructs
    ("order-by", "INSERT INTO out SELECT k, v FROM src ORDER BY v;", "ORDER BY"),
    ("limit", "INSERT INTO out SELECT k, v FROM src LIMIT 3;", "LIMIT"),
    ("union-distinct", "INSERT INTO out SELECT k, v FROM src UNION SELECT k, v FROM src;", "UNION without ALL"),
    ("non-equi-join", "INSERT INTO out SELECT a.k, b.v FROM src a JOIN src b ON a.k > b.k;", "equality"),
    ("subquery", "INSERT INTO out SELECT k, v FROM src WHERE v IN (SELECT v FROM src);", "subquer"),
    ("no-from", "INSERT INTO out SELECT 'a', 1;", "without FROM"),
    ("delete", "DELETE FROM src WHERE v > 1;", "not supported"),
    ("create-function", "CREATE FUNCTION f AS 'x.y'; " + INSERT, "add LANGUAGE PYTHON"),
    ("create-function-java", "CREATE FUNCTION f AS 'x.Y' LANGUAGE JAVA; " + INSERT, "no JVM"),
    ("statement-set-empty", "EXECUTE STATEMENT SET BEGIN END; " + INSERT, "statement set is empty"),
    ("statement-set-set", "EXECUTE STATEMENT SET BEGIN SET 'a' = 'b'; END; " + INSERT, "INSERT INTO statements only"),
    ("ctas", "CREATE TABLE t2 AS SELECT k, v FROM src; " + INSERT, "AS SELECT"),
    ("over-by-value", "INSERT INTO out SELECT k, SUM(v) OVER (PARTITION BY k ORDER BY v) FROM src;", "time attribute"),
    ("distinct-group-by", "INSERT INTO out SELECT DISTINCT k, COUNT(*) FROM src GROUP BY k;", "DISTINCT"),
    ("star-group-by", "INSERT INTO out SELECT * FROM src GROUP BY k;", "SELECT *"),
    ("having-non-group", "INSERT INTO out SELECT k, COUNT(*) FROM src GROUP BY k HAVING v > 1;", "HAVING"),
    # found by mutating valid scripts token by token
    ("computed-without-expression", table("k STRING, a AS, v INT", "'connector' = 'datagen'"), "needs an expression"),
    ("interval-overflow", "INSERT INTO out SELECT k, v FROM src WHERE ts > ts - INTERVAL '99999999999' DAY;", "10000"),
    (
        "avg-star",
        "INSERT INTO out SELECT k, AVG(*) FROM src GROUP BY k;",
        "AVG takes one argument",
    ),
    (
        "rank-bound-fraction",
        "INSERT INTO out SELECT k, v FROM (SELECT k, v, ROW_NUMBER() OVER (PARTITION BY k ORDER BY v DESC) AS rn "
        "FROM src) WHERE rn <= 1.5;",
        "whole number",
    ),
    (
        "rows-fraction",
        "INSERT INTO out SELECT k, SUM(v) OVER (PARTITION BY k ORDER BY ts ROWS BETWEEN 1.5 PRECEDING AND CURRENT ROW) "
        "FROM src;",
        "whole number of preceding rows",
    ),
    ("time-minus-number", "INSERT INTO out SELECT k, ts - 1 FROM src;", "cannot apply sub to TIMESTAMP_LTZ(3) and INT"),
    ("having-type", "INSERT INTO out SELECT k, COUNT(*) FROM src GROUP BY k HAVING COUNT(*) > k;", "COUNT(*) > k"),
    ("group-select-type", "INSERT INTO out SELECT k, k * COUNT(*) FROM src GROUP BY k;", "STRING and BIGINT"),
    (
        "over-result-type",
        "INSERT INTO out SELECT k, NOT SUM(v) OVER (PARTITION BY k ORDER BY ts ROWS BETWEEN 1 PRECEDING "
        "AND CURRENT ROW) FROM src;",
        "BOOLEAN",
    ),
    ("semicolon-missing", "CREATE TABLE t (k STRING) WITH ('connector' = 'datagen') SET 'a' = 'b'; " + INSERT, "';'"),
    ("insert-without-query", "INSERT INTO out; " + INSERT, "needs a query"),
    ("use-catalog", "USE CATALOG c; " + INSERT, "USE statements are not supported"),
    ("show-tables", "SHOW TABLES; " + INSERT, "not valid Flink SQL, or not supported"),
    ("option-not-quoted", uses("'connector' = 'datagen', 'seed' = 1 + 1"), "both quoted"),
    # connector options
    ("format-avro", uses("'connector' = 'filesystem', 'path' = 'in', 'format' = 'avro'"), "'format' = 'avro': must"),
    ("missing-path", uses("'connector' = 'filesystem', 'format' = 'json'"), "needs the option 'path'"),
    ("missing-connector", uses("'path' = 'in'"), "option 'connector' is missing"),
    ("unknown-connector", uses("'connector' = 'kafka2'"), "unknown connector 'kafka2'"),
    ("connector-typo", uses("'connector' = 'filesystm', 'path' = 'in'"), "did you mean 'filesystem'?"),
    ("option-typo", uses("'connector' = 'filesystem', 'path' = 'in', 'formt' = 'json'"), "did you mean 'format'?"),
    ("option-twice", uses("'connector' = 'filesystem', 'path' = 'in', 'path' = 'in2'"), "given twice"),
    ("empty-path", uses("'connector' = 'filesystem', 'path' = ''"), "must not be empty"),
    ("epoch-rows-zero", uses("'connector' = 'datagen', 'scan.max-epoch-rows' = '0'"), "'scan.max-epoch-rows'"),
    ("epoch-rows-text", uses("'connector' = 'datagen', 'scan.max-epoch-rows' = 'many'"), "whole number"),
    ("idle-timeout-negative", uses("'connector' = 'datagen', 'scan.watermark.idle-timeout' = '-1 s'"), "duration"),
    ("idle-timeout-unit", uses("'connector' = 'datagen', 'scan.watermark.idle-timeout' = '5 parsecs'"), "duration"),
    ("ttl-too-long", "SET 'state.ttl' = '99999999999999999999'; " + INSERT, "shorter than 10000 years"),
    (
        "record-bytes-text",
        uses("'connector' = 'filesystem', 'path' = 'in', 'scan.max-record-bytes' = 'lots'"),
        "not a size",
    ),
    ("record-bytes-zero", uses("'connector' = 'filesystem', 'path' = 'in', 'scan.max-record-bytes' = '0'"), "larger"),
    ("csv-header", uses("'connector' = 'filesystem', 'path' = 'in', 'csv.header' = 'yes'"), "'csv.header'"),
    ("csv-delimiter", uses("'connector' = 'filesystem', 'path' = 'in', 'csv.field-delimiter' = ';;'"), "one character"),
    ("rows-per-second-zero", uses("'connector' = 'datagen', 'rows-per-second' = '0'"), "greater than 0"),
    ("rows-per-second-text", uses("'connector' = 'datagen', 'rows-per-second' = 'fast'"), "must be a number"),
    ("number-of-rows-negative", uses("'connector' = 'datagen', 'number-of-rows' = '-5'"), "at least 0"),
    ("datagen-start-time", uses("'connector' = 'datagen', 'start-time' = 'yesterday'"), "not a timestamp"),
    ("datagen-field-column", uses("'connector' = 'datagen', 'fields.vv.min' = '1'"), "did you mean 'v'?"),
    ("datagen-field-option", uses("'connector' = 'datagen', 'fields.v.mni' = '1'"), "'fields.v.min'"),
    ("datagen-field-kind", uses("'connector' = 'datagen', 'fields.v.kind' = 'sequential'"), "'sequence'"),
    ("datagen-min-above-max", uses("'connector' = 'datagen', 'fields.v.min' = '9', 'fields.v.max' = '1'"), "above"),
    ("datagen-null-rate", uses("'connector' = 'datagen', 'fields.v.null-rate' = '2'"), "between 0 and 1"),
    ("nexmark-table", uses("'connector' = 'nexmark', 'nexmark.table' = 'bids'"), "did you mean 'bid'?"),
    ("nexmark-events", uses("'connector' = 'nexmark', 'nexmark.table' = 'bid', 'events.num' = '0'"), "at least 1"),
    ("delta-starting-version", uses("'connector' = 'delta', 'path' = 'd', 'starting-version' = '-1'"), "at least 0"),
    (
        "delta-partition-column",
        "CREATE TABLE t (k STRING, v BIGINT) WITH ('connector' = 'delta', 'path' = 'd', 'partition-by' = 'kk'); "
        "INSERT INTO t SELECT k, v FROM src;",
        "'kk', not a column",
    ),
    ("print-as-source", uses("'connector' = 'print'"), "cannot be read"),
    ("datagen-as-sink", uses("'connector' = 'datagen'", "INSERT INTO t SELECT k, v FROM src;"), "cannot be written"),
    (
        "datagen-as-lookup",
        uses(
            "'connector' = 'datagen'",
            "INSERT INTO out SELECT s.k, d.v FROM src AS s JOIN t FOR SYSTEM_TIME AS OF s.ts AS d ON s.k = d.k;",
        ),
        "cannot be looked up",
    ),
    (
        "print-option-typo",
        uses("'connector' = 'print', 'print-identifer' = 'x'", "INSERT INTO t SELECT k, v FROM src;"),
        "'print-identifier'",
    ),
    # SET
    ("set-interval-zero", "SET 'checkpoint.interval' = '0 s'; " + INSERT, "longer than 0"),
    ("set-interval-epochs", "SET 'checkpoint.interval' = '0 epochs'; " + INSERT, "positive number of epochs"),
    ("set-key-typo", "SET 'checkpoint.intervall' = '5 s'; " + INSERT, "did you mean 'checkpoint.interval'?"),
    ("set-parallelism", "SET 'parallelism.default' = '0'; " + INSERT, "1 to 128"),
    ("set-retention-count", "SET 'checkpoint.retention.count' = '-1'; " + INSERT, "positive number or 'all'"),
    ("set-retention-age", "SET 'checkpoint.retention.age' = 'a week'; " + INSERT, "not a duration"),
    ("set-state-growth", "SET 'checkpoint.state-growth' = '-64 MB'; " + INSERT, "not a size"),
    ("set-ttl", "SET 'state.ttl' = 'forever'; " + INSERT, "not a duration"),
    ("set-ttl-time", "SET 'state.ttl.time' = 'wall'; " + INSERT, "'processing', 'event'"),
    ("ttl-hint", "INSERT INTO out SELECT /*+ STATE_TTL('0 s') */ k, COUNT(*) FROM src GROUP BY k;", "longer than 0"),
]
POSITION = re.compile(r"^error: line 4, column \d+: ")


def explain(tmp_path: Path, statement: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    script = tmp_path / "p.sql"
    script.write_text(HEADER + statement + "\n")
    code = cli.main(["explain", str(script)])
    return code, capsys.readouterr().err


def assert_one_line(code: int, err: str, fragment: str, position: re.Pattern[str] | None = POSITION) -> None:
    assert code == 2, err
    assert err.endswith("\n") and err.count("\n") == 1, err
    for text in FORBIDDEN:
        assert text not in err, err
    assert '"__' not in err, err  # no internal column names
    if position is not None:
        assert position.match(err), err
    assert fragment in err, err


@pytest.mark.parametrize(("statement", "fragment"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_a_malformed_statement_is_one_line_with_its_position(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], statement: str, fragment: str
) -> None:
    assert_one_line(*explain(tmp_path, statement, capsys), fragment)


def test_the_corpus_is_large_and_the_header_is_valid(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert len(CASES) >= 60 and len({c[0] for c in CASES}) == len(CASES)
    assert explain(tmp_path, INSERT, capsys)[0] == 0


RUN_CASES = [c for c in CASES if c[0] in ("unterminated-string", "decimal-precision", "format-avro", "missing-path")]
RUN_CASES += [c for c in CASES if c[0] in ("epoch-rows-zero", "set-key-typo", "option-typo", "watermark-on-int")]


@pytest.mark.parametrize(("statement", "fragment"), [c[1:] for c in RUN_CASES], ids=[c[0] for c in RUN_CASES])
def test_timelapse_run_refuses_it_before_touching_state(tmp_path: Path, statement: str, fragment: str) -> None:
    (tmp_path / "p.sql").write_text(HEADER + statement + "\n")
    done = subprocess.run(
        [sys.executable, "-m", "engine.cli", "run", "p.sql", "--state", "state", "--once"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert_one_line(done.returncode, done.stderr, fragment)
    assert not (tmp_path / "state").exists()


# (argv, the flag named in the message)
FLAGS: list[list[str]] = [
    ["run", "p.sql", "--state", "s", "--max-epoch-rows", "0"],
    ["run", "p.sql", "--state", "s", "--max-epoch-rows", "-1"],
    ["run", "p.sql", "--state", "s", "--max-epoch-rows", "ten"],
    ["run", "p.sql", "--state", "s", "--max-epochs", "-1"],
    ["run", "p.sql", "--state", "s", "--max-epochs", "0"],
    ["run", "p.sql", "--state", "s", "--retain", "0"],
    ["run", "p.sql", "--state", "s", "--retain", "-1"],
    ["run", "p.sql", "--state", "s", "--retain", "abc"],
    ["run", "p.sql", "--state", "s", "--retain-age", "0"],
    ["run", "p.sql", "--state", "s", "--retain-age", "soon"],
    ["run", "p.sql", "--state", "s", "--trigger", "0"],
    ["run", "p.sql", "--state", "s", "--trigger", "often"],
    ["run", "p.sql", "--state", "s", "--trigger=-1s"],
    ["run", "p.sql", "--state", "s", "--checkpoint-interval", "0 epochs"],
    ["run", "p.sql", "--state", "s", "--checkpoint-interval", "sometimes"],
    ["run", "p.sql", "--state", "s", "--checkpoint-state-growth", "0"],
    ["run", "p.sql", "--state", "s", "--checkpoint-state-growth", "big"],
    ["run", "p.sql", "--state", "s", "--parallelism", "0"],
    ["run", "p.sql", "--state", "s", "--parallelism", "129"],
    ["run", "p.sql", "--state", "s", "--parallelism", "many"],
    ["state", "s", "agg-1", "--limit", "0"],
    ["sql", "s", "SELECT 1", "--limit", "-3"],
    ["diff", "s", "agg-1", "1", "2", "--limit", "x"],
    ["retention", "s", "--count", "0"],
    ["retention", "s", "--count", "two"],
    ["retention", "s", "--age", "-1s"],
    ["retention", "s", "--age", "0 h"],
    ["savepoint", "create", "s", "--name", "x", "--epoch", "0"],
    ["savepoint", "create", "s", "--name", "x", "--epoch", "latest"],
    ["rollback", "s", "--to-epoch", "0"],
    ["rollback", "s", "--to-epoch", "-2"],
    ["rollback", "s", "--to-epoch", "last"],
]


def invoke(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    try:
        code = cli.main(argv)
    except SystemExit as done:  # argparse exits from inside parse_args
        code = int(done.code or 0)
    return code, capsys.readouterr().err


@pytest.mark.parametrize("argv", FLAGS, ids=[" ".join(a[:1] + a[-2:]) for a in FLAGS])
def test_a_bad_flag_is_one_line_naming_the_flag(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, argv: list[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    flag = next((a.split("=")[0] for a in reversed(argv) if a.startswith("--")), "")
    assert_one_line(*invoke(argv, capsys), f"argument {flag}:", position=None)


def test_epochs_are_numbered_from_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    state = tmp_path / "state"
    script = tmp_path / "p.sql"
    script.write_text(HEADER + INSERT + "\n")
    assert cli.main(["run", str(script), "--state", str(state), "--once", "--quiet"]) == 0
    capsys.readouterr()
    for argv in (["state", str(state), "agg-1", "--at", "0"], ["diff", str(state), "agg-1", "0", "1"]):
        code, err = invoke(argv, capsys)
        assert_one_line(code, err, "epochs are numbered from 1", position=None)
    from engine import versioning

    with pytest.raises(versioning.VersioningError, match="there is no epoch 0: epochs are numbered from 1"):
        versioning.rollback(state, to_epoch=0)


@pytest.mark.parametrize(
    "options",
    [
        {"max_epoch_rows": 0},
        {"max_epochs": -1},
        {"trigger": 0},
        {"parallelism": 500},
        {"retain_count": 0},
        {"retain_age": "-1 d"},
        {"checkpoint_interval": "0 s"},
        {"checkpoint_state_growth": "none"},
    ],
    ids=lambda o: next(iter(o)),
)
def test_the_python_api_checks_its_run_options(tmp_path: Path, options: dict[str, object]) -> None:
    pipeline = Pipeline.from_sql(HEADER + INSERT, state=tmp_path / "state")
    with pytest.raises(OptionError, match=next(iter(options))) as caught:
        pipeline.run(once=True, **options)  # type: ignore[arg-type]
    assert isinstance(caught.value, SqlError)  # the CLI reports it as a user error, exit 2
    assert not (tmp_path / "state").exists()


def test_the_connector_rules_cover_every_runtime_connector() -> None:
    from engine.sinks import SINKS
    from engine.sources import SOURCES

    assert {n for n, c in CONNECTORS.items() if c.source} == set(SOURCES)
    assert {n for n, c in CONNECTORS.items() if c.sink} == set(SINKS)


@pytest.mark.parametrize(
    ("sink", "prepare", "fragment"),
    [
        (
            "CREATE TABLE blocked (k STRING, v BIGINT) WITH ('connector' = 'delta', 'path' = 'afile/sink');",
            lambda root: (root / "afile").write_text("not a folder"),
            "cannot create the Delta table",
        ),
        (
            "CREATE TABLE blocked (k STRING, v BIGINT) WITH ('connector' = 'delta', 'path' = 'old');",
            lambda root: Pipeline.from_sql(
                "CREATE TABLE s (a STRING) WITH ('connector' = 'datagen', 'number-of-rows' = '1');\n"
                "CREATE TABLE o (a STRING) WITH ('connector' = 'delta', 'path' = 'old');\n"
                "INSERT INTO o SELECT a FROM s;",
                state=root / "other",
            ).run(once=True),
            "has columns (a) but CREATE TABLE declares (k, v)",
        ),
    ],
    ids=["path-under-a-file", "other-columns"],
)
def test_a_connector_error_at_run_time_names_the_table_and_its_position(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sink: str, prepare: object, fragment: str
) -> None:
    monkeypatch.chdir(tmp_path)
    prepare(tmp_path)  # type: ignore[operator]
    (tmp_path / "p.sql").write_text(HEADER + sink + "\nINSERT INTO blocked SELECT k, v FROM src;\n")
    done = subprocess.run(
        [sys.executable, "-m", "engine.cli", "run", "p.sql", "--state", "state", "--once", "--quiet"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    placed = re.compile(r"^error: table 'blocked' \(line 4, column \d+\)")
    assert_one_line(done.returncode, done.stderr, fragment, placed)
