"""Flink's statements around the queries: statement sets, temporary views and tables, DROP VIEW, and CREATE
FUNCTION ... LANGUAGE PYTHON (through the CLI, with the module next to the SQL file), with their refusals."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from engine import Pipeline, paths
from sql import plan_script
from sql.errors import SqlError
from sql.plan import Scan
from tests.helpers import duck, read_sink, sort_all, write_jsonl

SOURCE = """CREATE TEMPORARY TABLE ev (k BIGINT, name STRING, v INT)
WITH ('connector' = 'filesystem', 'path' = 'data/ev', 'format' = 'json');
CREATE TABLE small (k BIGINT, v INT) WITH ('connector' = 'delta', 'path' = 'out/small');
CREATE TABLE big (k BIGINT, name STRING) WITH ('connector' = 'delta', 'path' = 'out/big');
"""
FIRST = "INSERT INTO small SELECT k, v FROM ev WHERE v < 5"
SECOND = "INSERT INTO big SELECT k, name FROM ev WHERE v >= 5"
ROWS = [{"k": i, "name": f"n{i % 4}", "v": i % 9} for i in range(40)]


def project(root: Path, sql: str) -> Path:
    write_jsonl(root / "data" / "ev" / "1.json", ROWS)
    script = root / "pipeline.sql"
    script.write_text(sql)
    return script


def outputs(root: Path) -> tuple[pl.DataFrame, pl.DataFrame]:
    return sort_all(read_sink(root / "out" / "small")), sort_all(read_sink(root / "out" / "big"))


@pytest.mark.parametrize(
    "statement_set",
    [
        f"EXECUTE STATEMENT SET\nBEGIN\n  {FIRST};\n  {SECOND};\nEND;",
        f"BEGIN STATEMENT SET;\n{FIRST};\n{SECOND};\nEND;",
    ],
    ids=["execute", "begin"],
)
def test_a_statement_set_plans_as_its_inserts_one_after_another(tmp_path: Path, statement_set: str) -> None:
    plain = plan_script(f"{SOURCE}{FIRST};\n{SECOND};")
    grouped = plan_script(SOURCE + statement_set)
    assert grouped.explain() == plain.explain()  # one pipeline, one scan of ev shared by both INSERTs
    assert grouped.fingerprint == plain.fingerprint
    assert len([n for n in grouped.nodes if isinstance(n, Scan)]) == 1

    Pipeline.from_sql(project(tmp_path, SOURCE + statement_set), state=tmp_path / "state").run(once=True)
    small, big = outputs(tmp_path)
    source = pl.DataFrame(ROWS, schema={"k": pl.Int64, "name": pl.String, "v": pl.Int32})
    assert_frame_equal(small, sort_all(duck("SELECT k, v FROM ev WHERE v < 5", ev=source)), check_dtypes=False)
    assert_frame_equal(big, sort_all(duck("SELECT k, name FROM ev WHERE v >= 5", ev=source)), check_dtypes=False)


def test_execute_insert_is_an_insert() -> None:
    assert (
        plan_script(f"{SOURCE}EXECUTE {FIRST};\n{SECOND};").fingerprint
        == plan_script(f"{SOURCE}{FIRST};\n{SECOND};").fingerprint
    )


def refusal(sql: str) -> str:
    with pytest.raises(SqlError) as caught:
        plan_script(sql)
    return str(caught.value)


def test_a_statement_set_that_is_empty_or_holds_other_statements_is_refused() -> None:
    assert refusal(SOURCE + "EXECUTE STATEMENT SET BEGIN END;") == (
        "line 5, column 1: the statement set is empty: put at least one INSERT INTO between BEGIN and END"
    )
    assert refusal(SOURCE + "BEGIN STATEMENT SET;\nEND;").startswith("line 5, column 1: the statement set is empty")
    message = refusal(SOURCE + f"EXECUTE STATEMENT SET BEGIN\n{FIRST};\nSET 'state.ttl' = '1 h';\nEND;")
    assert message.startswith("line 7, column ") and "INSERT INTO statements only, not SET" in message
    message = refusal(SOURCE + f"EXECUTE STATEMENT SET BEGIN\n{FIRST};\n{SECOND};")
    assert message.startswith("line 5, column 1: ") and "no END" in message
    assert "\n" not in message


def test_temporary_views_tables_if_not_exists_and_drop_view(tmp_path: Path) -> None:
    sql = (
        SOURCE
        + """CREATE TEMPORARY VIEW low AS SELECT k, v FROM ev WHERE v < 5;
CREATE TEMPORARY VIEW IF NOT EXISTS low AS SELECT k, v FROM ev;  -- exists: skipped, as in Flink
CREATE VIEW IF NOT EXISTS high AS SELECT k, name FROM ev WHERE v >= 5;
INSERT INTO small SELECT * FROM low;
INSERT INTO big SELECT * FROM high;
DROP TEMPORARY VIEW low;
DROP VIEW IF EXISTS never_there;
"""
    )
    Pipeline.from_sql(project(tmp_path, sql), state=tmp_path / "state").run(once=True)
    small, big = outputs(tmp_path)
    assert small.height == sum(r["v"] < 5 for r in ROWS) and big.height == sum(r["v"] >= 5 for r in ROWS)
    assert refusal(SOURCE + "CREATE TEMPORARY VIEW low AS SELECT k, v FROM ev;\nCREATE VIEW low AS SELECT 1;") == (
        "line 6, column 13: 'low' is already defined"
    )
    gone = refusal(
        SOURCE + "CREATE VIEW low AS SELECT k, v FROM ev;\nDROP VIEW low;\nINSERT INTO small SELECT * FROM low;"
    )
    assert gone.startswith("line 7, column 33: unknown table 'low'")
    assert refusal(SOURCE + "DROP VIEW nope;") == "line 5, column 11: DROP VIEW: there is no view 'nope'"


# -- CREATE FUNCTION ... LANGUAGE PYTHON, through the CLI ---------------------------------------------------------

FUNCTIONS_MODULE = """
import polars as pl
from engine import udaf, udf


@udf(pl.Int64)
def doubled(v: pl.Series) -> pl.Series:
    return v * 2


def shout(name: str | None) -> str | None:  # a plain function: called per row, its hints give the types
    return None if name is None else name.upper() + "!"


sum_sq = udaf(
    "SUM_SQ_IMPORTED", {"s": pl.Int64()}, partial=lambda x: {"s": (x.cast(pl.Int64) ** 2).sum()},
    merge=lambda a, b: {"s": a["s"] + b["s"]}, finish=lambda st: st["s"], result_type=pl.Int64(),
)


class NotAFunction:
    pass


def untyped(x):
    return x


def series_only(v: pl.Series) -> pl.Series:
    return v
"""

FUNCTIONS_SQL = """CREATE TABLE ev (k BIGINT, name STRING, v INT)
WITH ('connector' = 'filesystem', 'path' = 'data/ev', 'format' = 'json');
CREATE TABLE rows_out (k BIGINT, d BIGINT, s STRING) WITH ('connector' = 'delta', 'path' = 'out/rows');
CREATE TABLE sums (name STRING, sq BIGINT, PRIMARY KEY (name) NOT ENFORCED)
WITH ('connector' = 'delta', 'path' = 'out/sums');
CREATE TEMPORARY SYSTEM FUNCTION dbl AS 'my_functions.doubled' LANGUAGE PYTHON;
CREATE FUNCTION IF NOT EXISTS shout AS 'my_functions.shout' LANGUAGE PYTHON;
CREATE FUNCTION IF NOT EXISTS shout AS 'my_functions.untyped' LANGUAGE PYTHON;  -- exists: skipped
CREATE TEMPORARY FUNCTION sumsq AS 'my_functions.sum_sq' LANGUAGE PYTHON;
EXECUTE STATEMENT SET BEGIN
INSERT INTO rows_out SELECT k, dbl(v), shout(name) FROM ev;
INSERT INTO sums SELECT name, sumsq(v) FROM ev GROUP BY name;
END;
"""


def timelapse(
    root: Path, *args: str, roots: str | None = None, pythonpath: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != paths.ROOTS_VARIABLE}
    if roots is not None:
        env[paths.ROOTS_VARIABLE] = roots
    if pythonpath is not None:
        env["PYTHONPATH"] = os.pathsep.join([pythonpath, env.get("PYTHONPATH", "")])
    return subprocess.run(
        [sys.executable, "-m", "engine.cli", *args], cwd=root, env=env, capture_output=True, text=True, timeout=120
    )


def function_project(root: Path, sql: str) -> Path:
    folder = root / "project"
    write_jsonl(folder / "data" / "ev" / "1.json", [*ROWS, {"k": 99, "name": None, "v": 3}])
    (folder / "my_functions.py").write_text(FUNCTIONS_MODULE)
    (folder / "pipeline.sql").write_text(sql)
    return folder


def test_create_function_imports_a_module_next_to_the_sql_file(tmp_path: Path) -> None:
    folder = function_project(tmp_path, FUNCTIONS_SQL)
    # run from another folder: the module is found beside the SQL file, not in the working directory
    done = timelapse(tmp_path, "run", "project/pipeline.sql", "--state", "state", "--once", "--quiet")
    assert done.returncode == 0, done.stderr
    source = pl.DataFrame(
        [*ROWS, {"k": 99, "name": None, "v": 3}], schema={"k": pl.Int64, "name": pl.String, "v": pl.Int32}
    )
    expected_rows = duck("SELECT k, v * 2 AS d, upper(name) || '!' AS s FROM ev", ev=source)
    assert_frame_equal(sort_all(read_sink(folder / "out" / "rows")), sort_all(expected_rows), check_dtypes=False)
    expected_sums = duck("SELECT name, sum(v * v) AS sq FROM ev GROUP BY name", ev=source)
    assert_frame_equal(sort_all(read_sink(folder / "out" / "sums")), sort_all(expected_sums), check_dtypes=False)
    explained = timelapse(tmp_path, "explain", "project/pipeline.sql")
    assert explained.returncode == 0, explained.stderr


REFUSED = [
    ("'my_functions.doubled' LANGUAGE JAVA", "LANGUAGE JAVA is not supported: timelapse has no JVM"),
    ("'my_functions.doubled' LANGUAGE SCALA", "LANGUAGE SCALA is not supported"),
    ("'my_functions.doubled'", "add LANGUAGE PYTHON (Flink's default language is JAVA"),
    ("'../elsewhere/my_functions.py' LANGUAGE PYTHON", "is not a Python name of the form 'module.function'"),
    ("'/tmp/x.doubled' LANGUAGE PYTHON", "file paths are not accepted"),
    ("'no_such_module.fn' LANGUAGE PYTHON", "no module named 'no_such_module' in the pipeline's folder"),
    ("'my_functions.missing' LANGUAGE PYTHON", "module 'my_functions' has no 'missing'"),
    ("'my_functions.NotAFunction' LANGUAGE PYTHON", "is a class, not a function"),
    ("'my_functions.untyped' LANGUAGE PYTHON", "parameter 'x' needs a type hint"),
    ("'my_functions.series_only' LANGUAGE PYTHON", "declares no SQL result type: decorate it with @udf"),
    ("'os.system' LANGUAGE PYTHON", "is in Python's standard library, which holds no SQL functions"),
]


def refused_function(tmp_path: Path, definition: str) -> str:
    sql = FUNCTIONS_SQL.split("CREATE TEMPORARY SYSTEM")[0] + f"CREATE FUNCTION f AS {definition};\n"
    sql += "INSERT INTO rows_out SELECT k, v, name FROM ev;\n"
    return str(function_project(tmp_path, sql) / "pipeline.sql")


@pytest.mark.parametrize(("definition", "reason"), REFUSED, ids=[r[1][:24] for r in REFUSED])
def test_create_function_refusals_are_one_line_with_a_position(tmp_path: Path, definition: str, reason: str) -> None:
    with pytest.raises(SqlError) as caught:
        Pipeline.from_sql(Path(refused_function(tmp_path, definition)), state=tmp_path / "state")
    message = str(caught.value)
    assert message.startswith("line 6, column ") and reason in message and "\n" not in message, message


def test_create_function_refusals_through_the_cli(tmp_path: Path) -> None:
    for index, (definition, reason) in enumerate(REFUSED[:4:3]):
        script = Path(refused_function(tmp_path / str(index), definition))
        done = timelapse(script.parent, "run", "pipeline.sql", "--state", "state", "--once")
        assert done.returncode == 2, done.stderr
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and "line 6, column " in lines[0] and reason in lines[0], done.stderr


def test_with_allowed_roots_a_module_outside_them_is_refused_before_it_runs(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    marker = tmp_path / "imported"
    (elsewhere / "side_effects.py").write_text(
        f"from pathlib import Path\nPath({str(marker)!r}).write_text('ran')\ndef f(x: int) -> int:\n    return x\n"
    )
    sql = FUNCTIONS_SQL.split("CREATE TEMPORARY SYSTEM")[0]
    sql += (
        "CREATE FUNCTION f AS 'side_effects.f' LANGUAGE PYTHON;\nINSERT INTO rows_out SELECT k, f(k), name FROM ev;\n"
    )
    folder = function_project(tmp_path, sql)
    done = timelapse(folder, "explain", "pipeline.sql", roots=str(folder), pythonpath=str(elsewhere))
    assert done.returncode == 2 and "outside the pipeline's folder and the allowed roots" in done.stderr, done.stderr
    assert not marker.exists()  # its top-level code never ran
    # the same module inside an allowed root is imported
    done = timelapse(folder, "explain", "pipeline.sql", roots=f"{folder}:{elsewhere}", pythonpath=str(elsewhere))
    assert done.returncode == 0, done.stderr
    assert marker.exists()


def test_create_function_without_the_engine_is_refused() -> None:
    sql = SOURCE + "CREATE FUNCTION f AS 'my_functions.doubled' LANGUAGE PYTHON;\n" + FIRST
    assert "Python functions are loaded by the engine" in refusal(sql)


def test_drop_function_and_create_it_again(tmp_path: Path) -> None:
    head = FUNCTIONS_SQL.split("CREATE TEMPORARY SYSTEM")[0]
    sql = head + (
        "CREATE FUNCTION f AS 'my_functions.doubled' LANGUAGE PYTHON;\n"
        "DROP TEMPORARY SYSTEM FUNCTION f;\n"
        "DROP FUNCTION IF EXISTS f;\n"
        "CREATE FUNCTION f AS 'my_functions.shout' LANGUAGE PYTHON;\n"
        "INSERT INTO rows_out SELECT k, v, f(name) FROM ev;\n"
    )
    folder = function_project(tmp_path, sql)
    Pipeline.from_sql(folder / "pipeline.sql", state=tmp_path / "state").run(once=True)
    shouted = read_sink(folder / "out" / "rows").filter(pl.col("k") == 1).get_column("s").to_list()
    assert shouted == ["N1!"]
    with pytest.raises(SqlError, match="line 6, column 15: DROP FUNCTION: no function 'g' was created"):
        Pipeline.from_sql(
            head + "DROP FUNCTION g;\n" + "INSERT INTO rows_out SELECT k, v, name FROM ev;", state=tmp_path / "s2"
        )
