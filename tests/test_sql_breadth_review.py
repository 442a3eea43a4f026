"""Review of the SQL-breadth merge (issue 21): bad values that stopped a pipeline, and what CREATE FUNCTION may
import. Each case runs a pipeline as a user would."""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path

import polars as pl
import pytest

from engine import Pipeline
from sql import SqlError
from tests.helpers import read_sink, run, write_jsonl

UTC = dt.UTC
ROWS = [
    {"id": 1, "b": 9_223_372_036_854_775_807, "n": 2_147_483_647, "x": 1e300},
    {"id": 2, "b": -9_223_372_036_854_775_808, "n": -2_147_483_648, "x": -1e300},
    {"id": 3, "b": 1_580_466_615_000, "n": 3, "x": 1_580_466_615.5},
    {"id": 4, "b": None, "n": None, "x": None},
]
SOURCE = """
CREATE TABLE src (id BIGINT, b BIGINT, n INT, x DOUBLE)
WITH ('connector' = 'filesystem', 'path' = 'in', 'format' = 'json');
"""


def values(root: Path, kind: str, expr: str) -> list[object]:
    """`expr` over ROWS through a pipeline into a Delta sink: the values by id."""
    write_jsonl(root / "in" / "a.json", ROWS)
    sql = (
        SOURCE
        + f"CREATE TABLE out (id BIGINT, v {kind}) WITH ('connector' = 'delta', 'path' = 'out');\n"
        + f"INSERT INTO out SELECT id, {expr} AS v FROM src;\n"
    )
    run(root, sql)
    return read_sink(root / "out").sort("id").get_column("v").to_list()


def at(ms: int) -> dt.datetime:
    return dt.datetime(1970, 1, 1, tzinfo=UTC) + dt.timedelta(milliseconds=ms)


# -- timestamps outside Flink's range (years 0000-9999) are NULL, not a Polars panic at the sink ----------------
def test_to_timestamp_ltz_out_of_range_is_null(tmp_path: Path) -> None:
    got = values(tmp_path, "TIMESTAMP_LTZ(3)", "TO_TIMESTAMP_LTZ(b, 3)")
    assert got[:2] == [None, None] and got[3] is None
    assert got[2] == at(1_580_466_615_000)


def test_to_timestamp_ltz_seconds_out_of_range_is_null(tmp_path: Path) -> None:
    got = values(tmp_path, "TIMESTAMP_LTZ(3)", "TO_TIMESTAMP_LTZ(b, 0)")
    assert got == [None, None, None, None]  # 1.58e12 seconds is past the year 9999 too


def test_date_format_of_out_of_range_is_null(tmp_path: Path) -> None:
    got = values(tmp_path, "STRING", "DATE_FORMAT(TO_TIMESTAMP_LTZ(b, 3), 'yyyy-MM-dd')")
    assert got == [None, None, "2020-01-31", None]


def test_from_unixtime_out_of_range_is_null(tmp_path: Path) -> None:
    got = values(tmp_path, "STRING", "FROM_UNIXTIME(x)")
    assert got == [None, None, "2020-01-31 10:30:15", None]


def test_from_unixtime_of_huge_bigint_is_null(tmp_path: Path) -> None:
    assert values(tmp_path, "STRING", "FROM_UNIXTIME(b)") == [None, None, None, None]


def test_timestampadd_out_of_range_is_null(tmp_path: Path) -> None:
    got = values(tmp_path, "TIMESTAMP(3)", "TIMESTAMPADD(DAY, n, TIMESTAMP '2020-01-01 00:00:00')")
    assert got[:2] == [None, None] and got[3] is None
    assert got[2] == dt.datetime(2020, 1, 4, tzinfo=UTC)


def test_timestampadd_months_out_of_range_is_null(tmp_path: Path) -> None:
    got = values(tmp_path, "TIMESTAMP(3)", "TIMESTAMPADD(MONTH, n, TIMESTAMP '2020-01-31 00:00:00')")
    assert got == [None, None, dt.datetime(2020, 4, 30, tzinfo=UTC), None]


def test_timestampadd_on_a_date_out_of_range_is_null(tmp_path: Path) -> None:
    got = values(tmp_path, "DATE", "TIMESTAMPADD(YEAR, n, DATE '2020-02-29')")
    assert got == [None, None, dt.date(2023, 2, 28), None]


def test_timestampadd_past_year_9999_is_null(tmp_path: Path) -> None:
    got = values(tmp_path, "TIMESTAMP(3)", "TIMESTAMPADD(YEAR, 7980 + n, TIMESTAMP '2020-01-01 00:00:00')")
    assert got == [None, None, None, None]  # 2020 + 7983 = 10003


# -- CREATE FUNCTION ... LANGUAGE PYTHON: what SQL may import and call ---------------------------------------------
FUNCTION_SQL = SOURCE + (
    "CREATE TABLE out (id BIGINT, v STRING) WITH ('connector' = 'delta', 'path' = 'out');\n"
    "CREATE FUNCTION f AS '{name}' LANGUAGE PYTHON;\n"
    "INSERT INTO out SELECT id, f(CAST(n AS STRING)) AS v FROM src;\n"
)


def plan_function(root: Path, name: str) -> None:
    script = root / "project" / "pipeline.sql"
    script.parent.mkdir(exist_ok=True)
    script.write_text(FUNCTION_SQL.format(name=name))
    Pipeline.from_sql(script, state=root / "state")


def test_a_plain_function_of_an_installed_package_is_refused(tmp_path: Path) -> None:
    """`click.launch(url: str, ...) -> int` has type hints, so it passed as a per-row UDF: SQL could start a
    program per row. A plain function is taken from the pipeline's own folder (or an allowed root) only."""
    with pytest.raises(SqlError) as caught:
        plan_function(tmp_path, "click.launch")
    message = str(caught.value)
    assert message.startswith("line 5, column ") and "\n" not in message, message
    assert "outside the pipeline's folder" in message and "@udf" in message, message


def test_a_plain_function_on_the_python_path_outside_the_folder_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "review_plain_udfs.py").write_text("def f(x: str) -> str:\n    return x\n")
    monkeypatch.syspath_prepend(str(elsewhere))
    with pytest.raises(SqlError, match="outside the pipeline's folder"):
        plan_function(tmp_path, "review_plain_udfs.f")


def test_a_udf_marked_function_on_the_python_path_is_imported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "review_marked_udfs.py").write_text(
        "import polars as pl\nfrom engine import udf\n\n@udf(pl.String)\n"
        "def f(x: pl.Series) -> pl.Series:\n    return x + '!'\n"
    )
    monkeypatch.syspath_prepend(str(elsewhere))
    plan_function(tmp_path, "review_marked_udfs.f")


def test_a_standard_library_module_is_refused_before_it_is_imported(tmp_path: Path) -> None:
    """No UDF lives in the standard library, and importing some of it does things (`antigravity` opens a web
    browser): refused by name, before any import."""
    for name in ("antigravity.geohash", "os.system", "subprocess.run", "builtins.eval"):
        with pytest.raises(SqlError, match="standard library") as caught:
            plan_function(tmp_path, name)
        assert "\n" not in str(caught.value)
    assert "antigravity" not in sys.modules


# -- the Delta change data feed source ------------------------------------------------------------------------------
CHANGES = """
CREATE TABLE changes (id BIGINT, part INT, v INT, PRIMARY KEY (id) NOT ENFORCED)
WITH ('connector' = 'delta', 'path' = 'changes', 'read.change-data-feed' = 'true', 'scan.max-epoch-rows' = '97');
CREATE TABLE totals (part INT, n BIGINT, total BIGINT, PRIMARY KEY (part) NOT ENFORCED)
WITH ('connector' = 'delta', 'path' = 'totals');
INSERT INTO totals SELECT part, COUNT(*), SUM(v) FROM changes GROUP BY part;
"""


def test_change_feed_rows_keep_their_positions_across_runs(tmp_path: Path) -> None:
    """A version written as many files is read back by delta-rs in a different row order on each read; positions
    (version, row) must name the same rows in a later run, else a run resuming inside a version reads some rows
    twice and others never."""
    import deltalake

    frame = pl.DataFrame(
        {"id": range(800), "part": [i % 8 for i in range(800)], "v": [i % 7 for i in range(800)]},
        schema={"id": pl.Int64, "part": pl.Int32, "v": pl.Int32},
    )
    config = {"delta.enableChangeDataFeed": "true"}
    deltalake.write_deltalake(str(tmp_path / "changes"), frame.to_arrow(), partition_by=["part"], configuration=config)
    deltalake.DeltaTable(str(tmp_path / "changes")).update(predicate="id % 3 = 0", updates={"v": "v + 100"})
    script = tmp_path / "pipeline.sql"
    script.write_text(CHANGES)
    for _ in range(5):  # each run stops inside a version; the next resumes at the position reached
        Pipeline.from_sql(script, state=tmp_path / "state").run(max_epochs=2)
    Pipeline.from_sql(script, state=tmp_path / "state").run(once=True)
    final = frame.with_columns(pl.when(pl.col("id") % 3 == 0).then(pl.col("v") + 100).otherwise(pl.col("v")))
    expected = final.group_by("part").agg(n=pl.len().cast(pl.Int64), total=pl.col("v").sum().cast(pl.Int64))
    got = read_sink(tmp_path / "totals").select("part", "n", "total")
    assert got.sort("part").to_dicts() == expected.sort("part").to_dicts()


def test_change_feed_value_that_does_not_fit_is_a_dead_letter(tmp_path: Path) -> None:
    """A stored value the declared type cannot hold goes to the dead letters, as from the plain Delta source,
    never a silent NULL."""
    import deltalake

    frame = pl.DataFrame({"id": [1, 2, 3], "part": [1, 1, 2], "v": [5, 2**40, 7]})  # v stored as BIGINT
    deltalake.write_deltalake(
        str(tmp_path / "changes"), frame.to_arrow(), configuration={"delta.enableChangeDataFeed": "true"}
    )
    script = tmp_path / "pipeline.sql"
    script.write_text(CHANGES)
    summary = Pipeline.from_sql(script, state=tmp_path / "state").run(once=True)
    got = read_sink(tmp_path / "totals").select("part", "n", "total").sort("part").to_dicts()
    assert got == [{"part": 1, "n": 1, "total": 5}, {"part": 2, "n": 1, "total": 7}]
    assert summary["dead_letters"] == {"changes": 1}
    letters = pl.read_delta(str(tmp_path / "state" / "dead_letters" / "changes"))
    assert "1099511627776" in str(letters.to_dicts())


# -- REPEAT / LPAD / RPAD with a huge count: NULL, not a process killed for memory ---------------------------------
def test_repeat_and_pad_beyond_the_longest_string_are_null(tmp_path: Path) -> None:
    """REPEAT(s, 2147483647) built a list of 2^31 copies first: the process was killed for memory (the OOM
    killer, no error, no dead letter). A result longer than MAX_STRING characters is NULL; run here under an
    address-space limit so that a regression fails instead of exhausting the machine."""
    import subprocess

    code = (
        "import resource, sys; resource.setrlimit(resource.RLIMIT_AS, (6 << 30, 6 << 30)); "
        "from pathlib import Path; from tests.test_sql_breadth_review import values; "
        "root = Path(sys.argv[1]); "
        "print(values(root / 'a', 'STRING', 'REPEAT(CAST(id AS STRING), n)')); "
        "print(values(root / 'b', 'STRING', 'LPAD(CAST(id AS STRING), n, CAST(id AS STRING))')); "
        "print(values(root / 'c', 'STRING', 'RPAD(\\'\\', n, \\'ab\\')')); "
        "print(values(root / 'd', 'STRING', 'REPEAT(\\'ab\\', b)'))"
    )
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    repeat, lpad, rpad, big = done.stdout.strip().splitlines()
    assert repeat == "[None, '', '333', None]"
    assert lpad == "[None, None, '333', None]"
    assert rpad == "[None, None, 'aba', None]"
    assert big == "[None, '', None, None]"  # a BIGINT count: its product with the length would overflow


# -- MATCH_RECOGNIZE: an aggregate over a match overflows as the SQL type does, it does not stop the pipeline -------
MATCH_SUM = """
CREATE TABLE events (k STRING, v BIGINT, ts TIMESTAMP(3), WATERMARK FOR ts AS ts - INTERVAL '1' SECOND)
WITH ('connector' = 'filesystem', 'path' = 'events', 'format' = 'json');
CREATE TABLE out (k STRING, total BIGINT, n BIGINT) WITH ('connector' = 'delta', 'path' = 'out');
INSERT INTO out SELECT * FROM events MATCH_RECOGNIZE (
  PARTITION BY k ORDER BY ts
  MEASURES SUM(A.v) AS total, COUNT(A.v) AS n
  ONE ROW PER MATCH AFTER MATCH SKIP PAST LAST ROW
  PATTERN (A{2} B)
  DEFINE A AS SUM(A.v) > 0, B AS B.v < 0
);
"""


def test_match_recognize_sum_beyond_bigint_does_not_stop_the_pipeline(tmp_path: Path) -> None:
    big = 2**62
    rows = [{"k": "x", "v": v, "ts": "2026-01-01 00:00:0" + str(i)} for i, v in enumerate([big, big, -1, 1, 2, -1])]
    write_jsonl(tmp_path / "events" / "a.json", rows)
    run(tmp_path, MATCH_SUM, drain=True)
    got = read_sink(tmp_path / "out").sort("n", "total").to_dicts()
    # Java's long arithmetic, as Flink's: 2^62 + 2^62 wraps to -2^63, so A{2} fails at the second row; the match
    # from the second row fails at B (1 is not < 0); the one from the fourth row is found
    assert got == [{"k": "x", "total": 3, "n": 2}], got


# -- a per-row Python function that fails on a value: one line naming it and the value, a user error -------------
def test_a_failing_per_row_function_is_one_line_naming_the_value(tmp_path: Path) -> None:
    import subprocess

    (tmp_path / "my_udfs.py").write_text(
        "def parse(s: str | None) -> int | None:\n    return None if s is None else int(s)\n\n"
        "def wrong(s: str | None) -> int | None:\n    return s\n"
    )
    write_jsonl(tmp_path / "in" / "a.json", [{"s": "1"}, {"s": "x"}])
    for function, expected in [("parse", "failed on 'x': ValueError: invalid literal"), ("wrong", "returned a value")]:
        (tmp_path / "pipeline.sql").write_text(
            "CREATE TABLE src (s STRING) WITH ('connector' = 'filesystem', 'path' = 'in', 'format' = 'json');\n"
            f"CREATE TABLE out (v BIGINT) WITH ('connector' = 'delta', 'path' = 'out_{function}');\n"
            f"CREATE FUNCTION f AS 'my_udfs.{function}' LANGUAGE PYTHON;\n"
            "INSERT INTO out SELECT f(s) FROM src;\n"
        )
        command = [sys.executable, "-m", "engine.cli", "run", "pipeline.sql", "--state", f"state_{function}", "--once"]
        done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=120)
        lines = done.stderr.strip().splitlines()
        assert done.returncode == 2 and len(lines) == 1, done.stderr
        assert lines[0].startswith(f"error: function F ('my_udfs.{function}') ") and expected in lines[0], lines
