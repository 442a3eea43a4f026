"""The CLI as a user runs it: the README's demo, explain, --json, and one-line errors with positions."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import polars as pl
from polars.testing import assert_frame_equal

from tests.test_epochs import SQL, make_input


def timelapse(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "engine.cli", *args], cwd=cwd, capture_output=True, text=True, timeout=300
    )


def test_demo_tells_the_story_with_the_commands_that_do_it(tmp_path: Path) -> None:
    result = timelapse("demo", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    commands = [
        "$ timelapse run pipeline.sql --state state",
        "$ timelapse savepoint create state --name before_deploy",
        "$ timelapse run pipeline_v2.sql --state state",
        "$ timelapse diff state per_sensor before_deploy 5",
        "$ timelapse sql state",
        "$ timelapse rollback state --savepoint before_deploy",
        "$ timelapse run pipeline.sql --state state",
        "$ timelapse log state",
    ]
    position = 0
    for command in commands:  # each step shows its command, in the story's order
        found = result.stdout.find(command, position)
        assert found >= 0, f"{command!r} missing after position {position}:\n{result.stdout}"
        position = found + len(command)
    assert "per_minute: identical; per_sensor: identical" in result.stdout and "Try next" in result.stdout

    # The commands shown are real: run from the demo's folder, they answer the same.
    demo = tmp_path / "timelapse-demo"
    diff = timelapse("diff", "state", "per_sensor", "before_deploy", "5", "--json", cwd=demo)
    assert diff.returncode == 0, diff.stderr
    assert len(json.loads(diff.stdout)) == 5
    log = timelapse("log", "state", cwd=demo)
    assert log.returncode == 0 and "rollback 5 -> 3" in log.stdout and "bad deploy" in log.stdout

    again = timelapse("demo", "--json", cwd=tmp_path)  # re-running starts afresh
    assert again.returncode == 0, again.stderr
    story = json.loads(again.stdout)
    steps = {s["command"].split()[1] + (" v2" if "pipeline_v2" in s["command"] else ""): s for s in story["steps"]}
    # The bad deploy kept the operators' state, and the diff since the savepoint shows what it broke.
    assert {c["status"] for c in steps["run v2"]["result"]["upgrade"]} == {"kept"}
    changed = steps["diff"]["result"]
    assert len(changed) == 5 and {c["change"] for c in changed} == {"changed"}
    assert all(c["max_celsius__max_before"] <= 40.5 < 80 < c["max_celsius__max_after"] for c in changed)
    assert steps["sql"]["result"] > 0  # output rows written by the bad deploy
    assert steps["rollback"]["result"]["rolled_back_to"] == steps["savepoint"]["result"]["epoch"] == 3

    # After the rollback and the fixed run, the sinks equal those of a run that never saw the bad deploy.
    from engine import Pipeline
    from engine.demo import DEMO_SQL

    clean = tmp_path / "clean"
    clean.mkdir()
    (clean / "pipeline.sql").write_text(DEMO_SQL)
    Pipeline.from_sql(clean / "pipeline.sql", state=clean / "state").run(once=True)
    for sink, keys in (("per_minute", ["sensor", "minute"]), ("per_sensor", ["sensor"])):
        final = pl.read_delta(str(demo / "out" / sink)).sort(keys)
        expected = pl.read_delta(str(clean / "out" / sink)).sort(keys)
        assert_frame_equal(final, expected, check_exact=False, rel_tol=1e-9)  # one epoch here: sums in another order
    assert pl.read_delta(str(demo / "out" / "per_sensor")).get_column("hottest_c").max() <= 40.5  # type: ignore[operator]
    assert story["identical_to_clean_run"] is True


def test_run_json_summary_and_explain(tmp_path: Path) -> None:
    make_input(tmp_path, 5, 2, 10)
    (tmp_path / "pipeline.sql").write_text(SQL)
    result = timelapse("run", "pipeline.sql", "--state", "state", "--once", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    # 20 good readings and 2 unreadable lines: rows_in counts the good ones, records_read both.
    assert summary["rows_in"]["SensorData"] == 20 and summary["dead_letters"]["SensorData"] == 2
    assert summary["records_read"]["SensorData"] == 22
    assert set(summary) >= {"epochs", "rows_in", "records_read", "rows_out", "dead_letters", "last_epoch", "watermark"}
    assert "epoch" in result.stderr  # live progress goes to stderr
    plan = timelapse("explain", "pipeline.sql", cwd=tmp_path)
    assert plan.returncode == 0
    assert "Scan SensorData" in plan.stdout and "stateless" in plan.stdout and "Sink hot_readings" in plan.stdout
    # `timelapse ... | head`: the reader stops reading; no error and no traceback, exit 0.
    query = "SELECT range AS n FROM range(200000)"
    command = [sys.executable, "-m", "engine.cli", "sql", "state", query, "--json", "--limit", "200000"]
    reader = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert reader.stdout is not None and reader.stderr is not None
    assert reader.stdout.read(10)
    reader.stdout.close()
    assert reader.wait(timeout=300) == 0 and reader.stderr.read() == b""


def test_bad_sql_is_one_line_with_its_position(tmp_path: Path) -> None:
    (tmp_path / "bad.sql").write_text(SQL.replace("WHERE temperature > 30", "WHERE temprature > 30"))
    result = timelapse("run", "bad.sql", "--state", "state", "--once", cwd=tmp_path)
    assert result.returncode == 2
    line = SQL.splitlines().index(next(x for x in SQL.splitlines() if x.startswith("INSERT"))) + 1
    column = SQL.splitlines()[line - 1].index("temperature > 30") + 1
    assert result.stderr.strip() == (
        f"error: line {line}, column {column}: unknown column 'temprature' (did you mean 'temperature'?)"
    )
    assert "Traceback" not in result.stderr


def test_unsupported_connector_and_missing_file_are_user_errors(tmp_path: Path) -> None:
    (tmp_path / "p.sql").write_text(SQL.replace("'connector' = 'delta'", "'connector' = 'kafka2'"))
    result = timelapse("run", "p.sql", "--state", "state", "--once", cwd=tmp_path)
    assert result.returncode == 2 and "connector 'kafka2'" in result.stderr and "Traceback" not in result.stderr
    missing = timelapse("run", "nope.sql", "--state", "state", "--once", cwd=tmp_path)
    assert missing.returncode == 2 and "Traceback" not in missing.stderr


def test_a_second_run_on_a_busy_state_dir_is_refused(tmp_path: Path) -> None:
    from engine.state_dir import StateDir

    make_input(tmp_path, 5, 1, 5)
    (tmp_path / "pipeline.sql").write_text(SQL)
    handle = StateDir(tmp_path / "state").lock()
    try:
        result = timelapse("run", "pipeline.sql", "--state", "state", "--once", cwd=tmp_path)
    finally:
        handle.close()
    assert result.returncode == 3 and "another timelapse process" in result.stderr


def test_durations() -> None:
    from engine.cli import UsageError, parse_duration

    assert parse_duration("500ms") == 0.5 and parse_duration("2s") == 2 and parse_duration("1m") == 60
    import pytest

    with pytest.raises(UsageError):
        parse_duration("soon")


def test_a_sink_table_with_other_columns_is_a_clear_user_error(tmp_path: Path) -> None:
    make_input(tmp_path, 5, 1, 5)
    (tmp_path / "pipeline.sql").write_text(SQL)
    assert timelapse("run", "pipeline.sql", "--state", "state", "--once", cwd=tmp_path).returncode == 0
    changed = SQL.replace(
        "CREATE TABLE hot_readings (id STRING, temperature DOUBLE, ts TIMESTAMP(3))",
        "CREATE TABLE hot_readings (id STRING, celsius DOUBLE, ts TIMESTAMP(3))",
    )
    (tmp_path / "changed.sql").write_text(changed)
    result = timelapse("run", "changed.sql", "--state", "state2", "--once", cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "has columns (id, temperature, ts) but CREATE TABLE declares (id, celsius, ts)" in result.stderr
