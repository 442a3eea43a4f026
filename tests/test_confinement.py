"""Nothing escapes its root: symlinks under an allowed root that lead out of it (Delta sinks and sources, lookup
tables), and `timelapse sql`, which runs read-only queries and nothing else. All through the CLI, as a user would."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
from deltalake import write_deltalake

from engine import paths
from tests.helpers import read_sink, write_jsonl

ORDERS = """
CREATE TABLE orders (id BIGINT, cust BIGINT, ts TIMESTAMP(3), WATERMARK FOR ts AS ts - INTERVAL '1' SECOND)
WITH ('connector' = 'filesystem', 'path' = 'data/orders', 'format' = 'json');
"""
TO_SINK = (
    ORDERS
    + """
CREATE TABLE out (id BIGINT, cust BIGINT) WITH ('connector' = 'delta', 'path' = 'data/out');
INSERT INTO out SELECT id, cust FROM orders;
"""
)
LOOKUP = (
    ORDERS
    + """
CREATE TABLE customers (id BIGINT, name STRING) WITH ('connector' = '{connector}', 'path' = 'data/dim'{options});
CREATE TABLE out (oid BIGINT, name STRING) WITH ('connector' = 'delta', 'path' = 'data/out');
INSERT INTO out SELECT o.id, c.name FROM orders AS o LEFT JOIN customers FOR SYSTEM_TIME AS OF o.ts AS c
  ON o.cust = c.id;
"""
)


def file_options(fmt: str) -> str:
    return f", 'format' = '{fmt}'" + (", 'csv.header' = 'true'" if fmt == "csv" else "")


FROM_DELTA = """
CREATE TABLE src (id BIGINT, cust BIGINT) WITH ('connector' = 'delta', 'path' = 'data/src');
CREATE TABLE out (id BIGINT, cust BIGINT) WITH ('connector' = 'delta', 'path' = 'data/out');
INSERT INTO out SELECT id, cust FROM src;
"""


def cli(cwd: Path, *args: str, roots: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != paths.ROOTS_VARIABLE}
    if roots is not None:
        env[paths.ROOTS_VARIABLE] = str(roots)
    return subprocess.run(
        [sys.executable, "-m", "engine.cli", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


def refused(done: subprocess.CompletedProcess[str], *words: str) -> str:
    """The one-line error of a run that exited 2, checked to name `words`."""
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    assert "Traceback" not in done.stderr and "panicked" not in done.stderr
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """`tmp_path/project/data` is the allowed root; `tmp_path/outside` holds what must stay out of reach."""
    root = tmp_path / "project"
    write_jsonl(
        root / "data" / "orders" / "a.json",
        [{"id": i, "cust": i % 3, "ts": f"2026-01-01 00:00:{i:02d}"} for i in range(6)],
    )
    (tmp_path / "outside").mkdir()
    return root


def run(root: Path, sql: str) -> subprocess.CompletedProcess[str]:
    (root / "pipeline.sql").write_text(sql)
    return cli(root, "run", "pipeline.sql", "--state", "data/state", "--once", roots=root / "data")


# -- Delta sinks ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("entry", ["_delta_log", "id=1"])
def test_a_delta_sink_with_a_symlink_out_of_the_root_is_refused(project: Path, entry: str) -> None:
    """A symlinked `_delta_log`, or a symlinked sub-directory new files could be written into, leads out."""
    outside = project.parent / "outside" / "taken"
    outside.mkdir()
    (project / "data" / "out").mkdir()
    (project / "data" / "out" / entry).symlink_to(outside)
    message = refused(run(project, TO_SINK), "table 'out'", str(outside), "outside the allowed roots")
    assert f"data/out/{entry}" in message
    assert list(outside.iterdir()) == []  # nothing was written there


def test_a_delta_sink_with_data_files_outside_the_root_is_refused(project: Path) -> None:
    """An existing sink whose data file is a symlink out of the root: a MERGE or a reader would open it."""
    write_deltalake(str(project / "data" / "out"), pl.DataFrame({"id": [9], "cust": [9]}).to_arrow())
    data = next((project / "data" / "out").glob("*.parquet"))
    moved = project.parent / "outside" / data.name
    shutil.move(data, moved)
    data.symlink_to(moved)
    refused(run(project, TO_SINK), "table 'out'", data.name, "outside the allowed roots")


def test_symlinks_that_stay_inside_the_root_work(project: Path) -> None:
    (project / "data" / "logs").mkdir()
    (project / "data" / "out").mkdir()
    (project / "data" / "out" / "_delta_log").symlink_to(project / "data" / "logs")
    done = run(project, TO_SINK)
    assert done.returncode == 0, done.stderr
    assert read_sink(project / "data" / "out").height == 6
    assert any((project / "data" / "logs").iterdir())


# -- lookup tables -------------------------------------------------------------------------------------------------
def write_dimension(path: Path, fmt: str, rows: dict[str, list[object]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    frame = pl.DataFrame(rows)
    {"parquet": frame.write_parquet, "csv": frame.write_csv, "json": frame.write_ndjson}[fmt](path)


@pytest.mark.parametrize("fmt", ["parquet", "csv", "json"])
def test_a_lookup_table_file_leading_out_of_the_root_is_refused(project: Path, fmt: str) -> None:
    secret = project.parent / "outside" / f"secret.{fmt}"
    write_dimension(secret, fmt, {"id": [2], "name": ["SECRET"]})
    write_dimension(project / "data" / "dim" / f"a.{fmt}", fmt, {"id": [0, 1], "name": ["ann", "bob"]})
    link = project / "data" / "dim" / f"b.{fmt}"
    link.symlink_to(secret)
    lookup = LOOKUP.format(connector="filesystem", options=file_options(fmt))
    refused(run(project, lookup), "table 'customers'", str(link), str(secret), "outside the allowed roots")
    assert not (project / "data" / "out").exists() or "SECRET" not in str(read_sink(project / "data" / "out"))


def test_a_lookup_table_file_linked_inside_the_root_is_read(project: Path) -> None:
    write_dimension(project / "data" / "dim" / "a.csv", "csv", {"id": [0, 1], "name": ["ann", "bob"]})
    inside = project / "data" / "shared" / "c.csv"
    write_dimension(inside, "csv", {"id": [2], "name": ["cy"]})
    (project / "data" / "dim" / "b.csv").symlink_to(inside)
    done = run(project, LOOKUP.format(connector="filesystem", options=file_options("csv")))
    assert done.returncode == 0, done.stderr
    joined = dict(read_sink(project / "data" / "out").iter_rows())
    assert joined == {i: ["ann", "bob", "cy"][i % 3] for i in range(6)}


def test_a_delta_lookup_table_leading_out_of_the_root_is_refused(project: Path) -> None:
    outside = project.parent / "outside" / "customers"
    write_deltalake(str(outside), pl.DataFrame({"id": [0, 1, 2], "name": ["a", "b", "c"]}).to_arrow())
    (project / "data" / "dim").mkdir()
    (project / "data" / "dim" / "_delta_log").symlink_to(outside / "_delta_log")
    lookup = LOOKUP.format(connector="delta", options="")
    refused(run(project, lookup), "table 'customers'", "_delta_log", "outside the allowed roots")


# -- Delta sources -------------------------------------------------------------------------------------------------
def delta_source(project: Path) -> Path:
    source = project / "data" / "src"
    write_deltalake(str(source), pl.DataFrame({"id": [1, 2, 3], "cust": [1, 1, 2]}).to_arrow())
    return source


def test_a_delta_source_whose_log_names_a_file_outside_the_root_is_refused(project: Path) -> None:
    source = delta_source(project)
    data = next(source.glob("*.parquet"))
    moved = project.parent / "outside" / data.name
    shutil.move(data, moved)
    log = source / "_delta_log" / f"{0:020d}.json"
    actions = [json.loads(line) for line in log.read_text().splitlines()]
    for action in actions:
        if "add" in action:
            action["add"]["path"] = str(moved)  # an absolute path: a log may name any file
    log.write_text("\n".join(json.dumps(a) for a in actions) + "\n")
    refused(run(project, FROM_DELTA), "table 'src'", str(moved), "outside the allowed roots")
    assert not (project / "data" / "out").exists() or read_sink(project / "data" / "out").is_empty()


def test_a_delta_source_with_a_symlinked_log_or_file_out_of_the_root_is_refused(project: Path) -> None:
    source = delta_source(project)
    log = project.parent / "outside" / "_delta_log"
    shutil.move(source / "_delta_log", log)
    (source / "_delta_log").symlink_to(log)
    refused(run(project, FROM_DELTA), "table 'src'", "_delta_log", "outside the allowed roots")
    (source / "_delta_log").unlink()
    shutil.move(log, source / "_delta_log")
    data = next(source.glob("*.parquet"))
    moved = project.parent / "outside" / data.name
    shutil.move(data, moved)
    data.symlink_to(moved)
    refused(run(project, FROM_DELTA), "table 'src'", data.name, "outside the allowed roots")
    # Moved back inside the root (still through a symlink), the same table is read.
    inside = project / "data" / "elsewhere" / data.name
    inside.parent.mkdir()
    shutil.move(moved, inside)
    data.unlink()
    data.symlink_to(inside)
    done = run(project, FROM_DELTA)
    assert done.returncode == 0, done.stderr
    assert sorted(read_sink(project / "data" / "out").get_column("id")) == [1, 2, 3]


# -- timelapse sql is read-only ------------------------------------------------------------------------------------
STATEFUL = (
    ORDERS
    + """
CREATE TABLE per_cust (cust BIGINT, n BIGINT, PRIMARY KEY (cust) NOT ENFORCED)
WITH ('connector' = 'delta', 'path' = 'data/per_cust');
INSERT INTO per_cust SELECT /*+ STATE_ID('per_cust') */ cust, COUNT(*) FROM orders GROUP BY cust;
"""
)

# (statement, the word the error must name); `{out}` is a file outside the state directory
ATTACKS = [
    ("COPY (SELECT 1) TO '{out}'", "COPY"),
    ("COPY per_cust TO '{out}' (FORMAT parquet)", "COPY"),
    ("ATTACH '{out}' AS x", "ATTACH"),
    ("DETACH memory", "DETACH"),
    ("INSTALL httpfs", "INSTALL"),
    ("LOAD httpfs", "LOAD"),
    ("SET enable_external_access = true", "SET"),
    ("RESET lock_configuration", "RESET"),
    ("PRAGMA enable_profiling", "PRAGMA"),
    ("CREATE TABLE t AS SELECT * FROM per_cust", "CREATE"),
    ("INSERT INTO per_cust VALUES (9, 9)", "INSERT"),
    ("DROP TABLE per_cust", "DROP"),
    ("SELECT * FROM read_csv('/etc/passwd')", "read_csv"),
    ("SELECT * FROM read_text('/etc/passwd')", "read_text"),
    ("SELECT * FROM read_blob('/etc/passwd')", "read_blob"),
    ("SELECT * FROM read_parquet('{parquet}')", "read_parquet"),
    ("SELECT * FROM read_json_auto('/etc/passwd')", "read_json_auto"),
    ("SELECT * FROM parquet_scan('{parquet}')", "parquet_scan"),
    ("SELECT * FROM sniff_csv('/etc/passwd')", "sniff_csv"),
    ("SELECT * FROM glob('/*')", "glob"),
    ("SELECT n, (SELECT count(*) FROM read_csv('/etc/passwd')) FROM per_cust", "read_csv"),
    ("SELECT * FROM query_table('per_cust')", "query_table"),
    ("FROM '/etc/passwd'", "/etc/passwd"),
    ("SELECT * FROM '{parquet}'", "parquet"),
    ("SELECT 1; COPY (SELECT 1) TO '{out}'", "second statement"),
    ("SELECT 1 -- a comment\n; COPY (SELECT 1) TO '{out}'", "second statement"),
    ("SELECT 1 /* ; */ ; /* hidden */ COPY (SELECT 1) TO '{out}'", "second statement"),
    ("EXPORT DATABASE '{out}'", "EXPORT"),
    ("IMPORT DATABASE '{out}'", "IMPORT"),
    ("CALL pragma_version()", "CALL"),
    ("EXPLAIN COPY (SELECT 1) TO '{out}'", "COPY is refused"),
    ("EXPLAIN SHOW TABLES", "EXPLAIN takes a query"),
    ("USE memory", "USE"),
    ("SHOW databases", "SHOW TABLES"),
]


def sql(state: Path, query: str, capsys: pytest.CaptureFixture[str]) -> subprocess.CompletedProcess[str]:
    """`timelapse sql data/state QUERY --json`, run by the CLI's own `main` in this process: the same parsing,
    error mapping and exit codes as the command, without starting Python again for each of many queries
    (`test_timelapse_sql_in_its_own_process` covers the command itself)."""
    from engine.cli import main

    cwd = Path.cwd()
    try:
        os.chdir(state)
        code = main(["sql", "data/state", query, "--json"])
    finally:
        os.chdir(cwd)
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess([query], code, out, err)


@pytest.fixture(scope="module")
def state(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("sql")
    write_jsonl(
        root / "data" / "orders" / "a.json",
        [{"id": i, "cust": i % 3, "ts": f"2026-01-01 00:00:{i:02d}"} for i in range(6)],
    )
    (root / "pipeline.sql").write_text(STATEFUL)
    done = cli(root, "run", "pipeline.sql", "--state", "data/state", "--once", "--max-epoch-rows", "3")
    assert done.returncode == 0, done.stderr
    pl.DataFrame({"leaked": [1]}).write_parquet(root.parent / f"{root.name}-outside.parquet")
    return root


def test_timelapse_sql_refuses_everything_but_one_query(state: Path, capsys: pytest.CaptureFixture[str]) -> None:
    outside = state.parent / f"{state.name}-written"
    parquet = state.parent / f"{state.name}-outside.parquet"
    for query, word in ATTACKS:
        done = sql(state, query.format(out=outside, parquet=parquet), capsys)
        message = refused(done, word)
        assert "read-only" in message or "no table" in message, (query, message)
        assert done.stdout == "", query
        assert "leaked" not in message and "root:" not in message, (query, message)  # nothing read leaks
    assert not outside.exists()
    assert not any(p.name.startswith("t") and p.suffix == ".csv" for p in state.iterdir())


def test_timelapse_sql_in_its_own_process(state: Path) -> None:
    """The command itself: refusals exit 2 with one line and write nothing; a query answers."""
    outside = state.parent / f"{state.name}-by-process.csv"
    env = {k: v for k, v in os.environ.items() if k != paths.ROOTS_VARIABLE}
    attacks = [f"COPY (SELECT 1) TO '{outside}'", f"SELECT 1; COPY (SELECT 1) TO '{outside}'"]
    queries = [*attacks, "SELECT sum(n)::BIGINT AS total FROM sink.per_cust"]
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "engine.cli", "sql", "data/state", query, "--json"],
            **dict(cwd=state, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True),
        )
        for query in queries
    ]
    outputs = [p.communicate(timeout=120) for p in processes]
    done = [subprocess.CompletedProcess([], p.returncode, *out) for p, out in zip(processes, outputs, strict=True)]
    for result in done[:-1]:
        refused(result)
    assert done[-1].returncode == 0 and json.loads(done[-1].stdout) == [{"total": 6}], done[-1].stderr
    assert not outside.exists()


def test_refusals_point_at_the_offending_token(state: Path, capsys: pytest.CaptureFixture[str]) -> None:
    queries = [
        "SELECT cust\nFROM per_cust, read_csv('/etc/passwd')",
        "SELECT 1;\n  COPY (SELECT 1) TO 'x.csv'",
        "  ATTACH 'x.db'",
    ]
    messages = [refused(sql(state, query, capsys)) for query in queries]
    assert "line 2, column 16" in messages[0], messages[0]
    assert "line 2, column 3" in messages[1], messages[1]
    assert "line 1, column 3" in messages[2], messages[2]
    assert not (state / "x.csv").exists() and not (state / "x.db").exists()


def test_ordinary_time_travel_queries_still_work(state: Path, capsys: pytest.CaptureFixture[str]) -> None:
    queries = [
        "SELECT cust, n FROM sink.per_cust ORDER BY cust",
        "SELECT cust, n FROM sink.per_cust AS OF EPOCH 1 ORDER BY cust",
        "WITH a AS (SELECT * FROM state.per_cust) SELECT a.cust, a.__rows AS kept, s.n FROM a JOIN sink.per_cust s "
        "USING (cust) ORDER BY cust",
        "SHOW TABLES",
        "DESCRIBE sink.per_cust",
        "VALUES (1), (2)",
        "SELECT count(*) AS n FROM range(3)",
        "EXPLAIN SELECT * FROM per_cust",
        "-- a comment first\nSELECT sum(n)::INT AS total FROM sink.per_cust AS OF EPOCH 1",
        "SUMMARIZE sink.per_cust",
    ]
    done = [sql(state, query, capsys) for query in queries]
    for query, result in zip(queries, done, strict=True):
        assert result.returncode == 0, (query, result.stderr)
    rows = [json.loads(r.stdout) for r in done]
    assert rows[0] == [{"cust": 0, "n": 2}, {"cust": 1, "n": 2}, {"cust": 2, "n": 2}]
    assert rows[1] == [{"cust": 0, "n": 1}, {"cust": 1, "n": 1}, {"cust": 2, "n": 1}]  # epoch 1: the first 3 rows
    assert rows[2] == [{"cust": c, "kept": 2, "n": 2} for c in range(3)]
    assert {"sink.per_cust"} <= {r["qualified_name"] for r in rows[3]}
    assert [r["column_name"] for r in rows[4]] == ["cust", "n"]
    assert rows[5] == [{"col0": 1}, {"col0": 2}]
    assert rows[6] == [{"n": 3}]
    assert rows[7]
    assert rows[8] == [{"total": 3}]
    assert [r["column_name"] for r in rows[9]] == ["cust", "n"]


def test_the_python_api_connection_is_confined_unless_asked(state: Path, tmp_path: Path) -> None:
    import duckdb

    from engine.history import History

    h = History(state / "data" / "state")
    con = h.duckdb()
    assert con.sql("SELECT count(*) FROM sink.per_cust").fetchall() == [(3,)]
    with pytest.raises(duckdb.Error):
        con.execute(f"COPY (SELECT 1) TO '{tmp_path / 'x.csv'}'")
    with pytest.raises(duckdb.Error):
        con.execute("SET enable_external_access = true")
    assert not (tmp_path / "x.csv").exists()
    own = h.duckdb(confined=False)
    own.execute(f"COPY (SELECT * FROM sink.per_cust) TO '{tmp_path / 'x.csv'}'")
    assert (tmp_path / "x.csv").exists()
