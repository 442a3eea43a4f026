"""History: state as of any epoch, diffs, time-travel SQL, and the CLI that shows them."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

import engine
from engine import HistoryError, versioning
from sql import SqlError
from tests import test_windows as w
from tests.helpers import duck, naive, run, sort_all

SQL = (
    w.SOURCE
    + w.SINK
    + w.tvf_query(w.WINDOWS["tumble"][0]).replace("SELECT k,", "SELECT /*+ STATE_ID('per_window') */ k,")
    + """
CREATE TABLE totals (k STRING, n BIGINT, s BIGINT, PRIMARY KEY (k) NOT ENFORCED)
WITH ('connector' = 'delta', 'path' = 'totals');
INSERT INTO totals SELECT /*+ STATE_ID('per_key') */ k, COUNT(*), SUM(v) FROM events GROUP BY k;
"""
)
EPOCH_ROWS = 10


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict[str, object]]]:
    root = tmp_path_factory.mktemp("history")
    rows = w.make_rows(17, 120, late_share=0.1)
    w.write_input(root, rows)
    run(root, SQL, max_epoch_rows=EPOCH_ROWS, max_epochs=6)
    versioning.create_savepoint(root / "state", "six", epoch=6)
    run(root, SQL, max_epoch_rows=EPOCH_ROWS)
    return root, rows


def test_state_at_an_epoch_equals_duckdb_over_the_input_of_epochs_up_to_it(history: tuple[Path, list]) -> None:  # type: ignore[type-arg]
    root, rows = history
    h = engine.open(root / "state")
    for epoch in (1, 5, 9, 12):
        seen = w.frame(rows[: epoch * EPOCH_ROWS])
        expected = duck(
            "SELECT k, count(*) AS __rows, count(*) AS count__count, sum(v) AS sum_v__sum, "
            "count(v) AS sum_v__count FROM src GROUP BY k",
            src=seen,
        )
        actual = h.state("per_key", at=epoch).drop("_kg")
        actual = actual.with_columns(pl.when(pl.col("sum_v__count") > 0).then(pl.col("sum_v__sum")).alias("sum_v__sum"))
        assert_frame_equal(sort_all(actual), sort_all(expected), check_dtypes=False)

        # The window state: every window not yet fired at this epoch's watermark, counted over on-time rows.
        watermark = h.checkpoints().filter(pl.col("epoch") == epoch).item(0, "watermark")
        open_windows = duck(
            w.MARKS
            + f"""
            , assigned AS (SELECT k, e - e % 10000 AS s, wm FROM marks)
            SELECT k, make_timestamp(s * 1000) AS window_start, count(*) AS count__count FROM assigned
            WHERE wm IS NULL OR make_timestamp((s + 10000) * 1000) - INTERVAL 1 MILLISECOND > wm
            GROUP BY k, s
            HAVING make_timestamp((s + 10000) * 1000) - INTERVAL 1 MILLISECOND
                   > TIMESTAMP '{watermark.replace(tzinfo=None).isoformat()}'
            """,
            src=seen,
        )
        state = naive(h.state("per_window", at=epoch).select("k", "window_start", "count__count"))
        assert_frame_equal(sort_all(state), sort_all(open_windows), check_dtypes=False)


def test_diff_is_the_set_difference_of_two_states(history: tuple[Path, list]) -> None:  # type: ignore[type-arg]
    root, _ = history
    h = engine.open(root / "state")
    for a, b in ((2, 7), ("six", 12), (12, 3)):
        before, after = h.state("per_key", at=a).drop("_kg"), h.state("per_key", at=b).drop("_kg")
        diff = h.diff("per_key", a, b)
        inserted = after.join(before, on="k", how="anti", nulls_equal=True)
        deleted = before.join(after, on="k", how="anti", nulls_equal=True)
        changed = after.join(before, on=after.columns, how="anti", nulls_equal=True).join(
            inserted, on="k", how="anti", nulls_equal=True
        )
        for kind, keys in (("inserted", inserted), ("deleted", deleted), ("changed", changed)):
            got = diff.filter(pl.col("change") == kind).get_column("k").sort(nulls_last=True).to_list()
            assert got == keys.get_column("k").sort(nulls_last=True).to_list(), kind
        row = diff.filter(pl.col("change") == "changed").row(0, named=True)
        key = row["k"]
        assert row["count__count_after"] == after.filter(pl.col("k").eq_missing(key)).item(0, "count__count")
        assert row["count__count_before"] == before.filter(pl.col("k").eq_missing(key)).item(0, "count__count")
    assert h.diff("per_key", 5, 5).is_empty()


def test_time_travel_sql_forms(history: tuple[Path, list]) -> None:  # type: ignore[type-arg]
    root, _ = history
    h = engine.open(root / "state")
    at_4 = h.state("per_key", at=4).drop("_kg")
    by_epoch = h.sql("SELECT * EXCLUDE (_kg) FROM per_key AS OF EPOCH 4")
    assert_frame_equal(sort_all(by_epoch), sort_all(at_4), check_dtypes=False)
    by_savepoint = h.sql("SELECT k, count__count FROM per_key AS OF SAVEPOINT 'six'")
    assert_frame_equal(
        sort_all(by_savepoint), sort_all(h.state("per_key", at=6).select("k", "count__count")), check_dtypes=False
    )
    committed = h.checkpoints().filter(pl.col("epoch") == 8).item(0, "committed_at")
    stamp = (committed + dt.timedelta(microseconds=1)).isoformat()
    for form in (f"AS OF TIMESTAMP '{stamp}'", f"FOR SYSTEM_TIME AS OF '{stamp}'"):
        at_time = h.sql(f"SELECT k, count__count FROM per_key {form}")
        assert_frame_equal(
            sort_all(at_time), sort_all(h.state("per_key", at=8).select("k", "count__count")), check_dtypes=False
        )
    # Two versions of one table, joined; a sink (qualified, as the state id could shadow it) and a CTE.
    growth = h.sql(
        "WITH early AS (SELECT k, count__count AS n FROM per_key AS OF EPOCH 3) "
        "SELECT b.k, early.n AS before, b.count__count AS after FROM early "
        "JOIN per_key AS OF EPOCH 9 AS b ON early.k IS NOT DISTINCT FROM b.k ORDER BY b.k"
    )
    assert (growth.get_column("after") >= growth.get_column("before")).all()
    sink_rows = h.sql("SELECT count(*) AS n FROM sink.totals AS OF EPOCH 6").item()
    assert sink_rows == h.sink("totals", at=6).height
    latest = h.sql("SELECT count(*) AS n FROM out").item()
    assert latest == h.sink("out").height

    with pytest.raises(HistoryError, match="epoch 99 is not a committed checkpoint"):
        h.sql("SELECT * FROM per_key AS OF EPOCH 99")
    with pytest.raises(HistoryError, match="no savepoint named 'nope'"):
        h.sql("SELECT * FROM per_key AS OF SAVEPOINT 'nope'")
    with pytest.raises(HistoryError, match=r"no table 'per_kee'.*did you mean 'per_key'"):
        h.sql("SELECT * FROM per_kee")
    with pytest.raises(SqlError, match="line 1, column 15: AS OF EPOCH takes an epoch number"):
        h.sql("SELECT * FROM per_key AS OF EPOCH 'x'")
    with pytest.raises(SqlError, match="line 1, column 15: qualify a table"):
        h.sql("SELECT * FROM other.per_key")


def test_an_epoch_removed_by_retention_is_a_clear_error(tmp_path: Path) -> None:
    rows = w.make_rows(3, 60, late_share=0)
    w.write_input(tmp_path, rows)
    run(tmp_path, SQL, max_epoch_rows=EPOCH_ROWS, retain_count=2)
    h = engine.open(tmp_path / "state")
    with pytest.raises(HistoryError, match=r"epoch 1 was removed by retention.*oldest readable epoch is"):
        h.sql("SELECT * FROM per_key AS OF EPOCH 1")
    # Retention also forgets the manifest rows of freed epochs (the retention rows say which went).
    listed = h.checkpoints()
    assert 1 not in listed.get_column("epoch").to_list() and listed.get_column("readable").all()


def test_checkpoints_operators_late_rows_and_dead_letters(history: tuple[Path, list]) -> None:  # type: ignore[type-arg]
    root, rows = history
    h = engine.open(root / "state")
    checkpoints = h.checkpoints()
    assert checkpoints.get_column("epoch").to_list() == list(range(1, 13))
    assert checkpoints.filter(pl.col("epoch") == 6).item(0, "savepoints").to_list() == ["six"]
    assert checkpoints.get_column("rows_in").sum() == len(rows)
    operators = h.operators()
    assert set(operators.get_column("operator")) == {"per_window", "per_key"}
    per_key = operators.filter(pl.col("operator") == "per_key").row(0, named=True)
    assert per_key["kind"] == "group aggregate" and json.loads(per_key["key"]) == ["k"]
    assert per_key["sinks"] == ["totals"] and "GROUP BY k" in per_key["sql"]
    late = h.late("per_window")
    assert late.height == sum(checkpoints.get_column("late_rows")) > 0
    assert {"seq", "_watermark", "_reason"} <= set(late.columns)
    assert h.dead_letters("events").is_empty()
    con = h.duckdb()
    assert con.sql("SELECT count(*) FROM state.per_key").pl().item() == h.state("per_key").height
    assert con.sql("SELECT count(*) FROM sink.totals").pl().item() == h.sink("totals").height
    assert con.sql("SELECT count(*) FROM per_key").pl().item() == h.state("per_key").height


def test_state_diff_and_sql_from_the_cli(history: tuple[Path, list]) -> None:  # type: ignore[type-arg]
    root, _ = history

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "engine.cli", *args], capture_output=True, text=True, cwd=root, timeout=120
        )

    shown = cli("state", "state", "per_key", "--at", "six")
    assert shown.returncode == 0, shown.stderr
    assert "count__count" in shown.stdout and "_kg" not in shown.stdout
    as_json = json.loads(cli("state", "state", "per_key", "--at", "4", "--json").stdout)
    assert len(as_json) == engine.open(root / "state").state("per_key", at=4).height
    diff = cli("diff", "state", "per_key", "2", "7", "--csv")
    assert diff.returncode == 0 and diff.stdout.startswith("change,k,")
    query = cli("sql", "state", "SELECT count(*) AS n FROM per_key AS OF EPOCH 3", "--json")
    assert json.loads(query.stdout) == [{"n": engine.open(root / "state").state("per_key", at=3).height}]
    bad = cli("sql", "state", "SELECT nope FROM per_key")
    assert bad.returncode == 2 and "nope" in bad.stderr and "Traceback" not in bad.stderr
    gone = cli("state", "state", "per_key", "--at", "99")
    assert gone.returncode == 2 and "epoch 99" in gone.stderr


def test_show_tables_and_describe_list_what_a_point_in_time_exposes(history: tuple[Path, list]) -> None:  # type: ignore[type-arg]
    root, _ = history
    h = engine.open(root / "state")
    listed = h.sql("SHOW TABLES")
    assert_frame_equal(listed, h.tables())
    manifest = {(t["role"], t["name"]) for t in h.row()["tables"]}
    assert set(zip(listed.get_column("kind"), listed.get_column("name"), strict=True)) == manifest
    assert {("state", "per_key"), ("state", "per_window"), ("sink", "out"), ("sink", "totals")} <= manifest
    assert ("late", "per_window/late") in manifest
    assert set(listed.get_column("epoch")) == {12}
    for table in listed.iter_rows(named=True):  # every name shown is one a query can use, and reads that table
        count = h.sql(f"SELECT count(*) AS n FROM {table['qualified_name']}").item()
        reader = {"state": h.state, "sink": h.sink, "late": h.late, "dead_letters": h.dead_letters}[table["kind"]]
        assert count == reader(table["name"].split("/")[0] if table["kind"] == "late" else table["name"]).height
        if table["unqualified"]:
            assert h.sql(f'SELECT count(*) AS n FROM "{table["name"]}"').item() == count
    late = listed.filter(pl.col("kind") == "late").row(0, named=True)
    assert late["qualified_name"] == 'late."per_window/late"' and "window aggregate" in late["about"]
    assert listed.filter(pl.col("name") == "per_key").item(0, "about") == "group aggregate state -> totals"

    # A point in time, and one qualifier: the versions that point's manifest row names.
    at_three = h.sql("SHOW TABLES AS OF EPOCH 3")
    versions = {(t["role"], t["name"]): t["version"] for t in h.row(3)["tables"]}
    assert {(r["kind"], r["name"]): r["version"] for r in at_three.iter_rows(named=True)} == versions
    sinks = h.sql("show tables from sink as of savepoint 'six';")
    assert set(sinks.get_column("kind")) == {"sink"} and set(sinks.get_column("epoch")) == {6}
    assert_frame_equal(sinks, h.tables(at="six", kind="sink"))

    described = h.sql("DESCRIBE per_key")
    assert described.get_column("column_name").to_list() == h.sql("SELECT * FROM per_key").columns
    assert described.filter(pl.col("key")).get_column("column_name").to_list() == ["k"]
    sink = h.sql("DESCRIBE sink.totals AS OF EPOCH 4")
    assert sink.get_column("column_name").to_list() == ["k", "n", "s"] and not sink.get_column("key").any()
    assert sink.get_column("column_type").to_list() == ["VARCHAR", "BIGINT", "BIGINT"]
    assert_frame_equal(h.sql('DESC late."per_window/late"'), h.describe("per_window/late", kind="late"))
    assert "column_name" in h.sql("DESCRIBE SELECT k FROM per_key").columns  # DuckDB's DESCRIBE of a query

    with pytest.raises(HistoryError, match=r"no table 'per_kee'.*did you mean 'per_key'"):
        h.sql("DESCRIBE per_kee")
    with pytest.raises(HistoryError, match="epoch 99 is not a committed checkpoint"):
        h.sql("SHOW TABLES AS OF EPOCH 99")
    with pytest.raises(SqlError, match="line 1, column 18: SHOW TABLES FROM takes one of state, sink"):
        h.sql("SHOW TABLES FROM other")
    with pytest.raises(SqlError, match="line 1, column 10: AS OF EPOCH takes an epoch number"):
        h.sql("DESCRIBE per_key AS OF EPOCH 'x'")
    with pytest.raises(SqlError, match="line 1, column 10: qualify a table"):
        h.sql("DESCRIBE other.per_key")
    with pytest.raises(SqlError, match="DESCRIBE needs a table name"):
        h.sql("DESCRIBE")


def test_show_tables_and_describe_from_the_cli(history: tuple[Path, list]) -> None:  # type: ignore[type-arg]
    root, _ = history

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "engine.cli", "sql", "state", *args],
            capture_output=True,
            text=True,
            cwd=root,
            env={**os.environ, "COLUMNS": "250"},  # wide enough for the table's long paths
            timeout=120,
        )

    table = cli("SHOW TABLES")
    assert table.returncode == 0, table.stderr
    assert "qualified_name" in table.stdout and "state.per_key" in table.stdout and "sink.totals" in table.stdout
    as_json = json.loads(cli("SHOW TABLES AS OF SAVEPOINT 'six'", "--json").stdout)
    assert {(r["kind"], r["name"]) for r in as_json} >= {("state", "per_key"), ("sink", "out")}
    assert {r["epoch"] for r in as_json} == {6}
    as_csv = cli("SHOW TABLES FROM state", "--csv").stdout.splitlines()
    assert as_csv[0] == "kind,name,qualified_name,unqualified,epoch,version,about,path"
    assert {line.split(",")[1] for line in as_csv[1:]} == {"per_key", "per_window", "per_window/distinct_2"}
    described = json.loads(cli("DESCRIBE state.per_window AS OF EPOCH 5", "--json").stdout)
    assert [c["column_name"] for c in described if c["key"]] == ["k", "window_start", "window_end"]
    bad = cli("DESCRIBE sink.nope")
    assert bad.returncode == 2 and "no table 'nope'" in bad.stderr and "Traceback" not in bad.stderr
    empty = subprocess.run(
        [sys.executable, "-m", "engine.cli", "state", "--help"], capture_output=True, text=True, timeout=60
    )
    assert "SHOW TABLES" in empty.stdout  # the help's advice now works


def test_readers_of_a_manifest_being_created_hear_that_nothing_is_committed(tmp_path: Path) -> None:
    """A first run creates the manifest's folder, then its log: a reader in between is told that no epoch is
    committed yet (it used to get an internal error about an unreadable table)."""
    for made in ("manifest", "manifest/_delta_log"):
        (tmp_path / made).mkdir()
        with pytest.raises(HistoryError, match="no committed epoch yet"):
            engine.open(tmp_path).row()
        done = subprocess.run(
            [sys.executable, "-m", "engine.cli", "log", str(tmp_path)], capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0 and "internal error" not in done.stderr, done.stderr


def test_sql_filters_a_string_column_of_an_upsert_sink(tmp_path: Path) -> None:
    """delta-rs writes an upsert sink's strings as string views; a filter DuckDB pushes down must still work."""
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.json").write_text("".join(f'{{"k": "k{i % 7}", "v": {i}}}\n' for i in range(50)))
    sql = """CREATE TABLE src (k STRING, v BIGINT) WITH ('connector' = 'filesystem', 'path' = 'in', 'format' = 'json');
CREATE TABLE out (k STRING, n BIGINT, PRIMARY KEY (k) NOT ENFORCED) WITH ('connector' = 'delta', 'path' = 'out');
INSERT INTO out SELECT k, COUNT(*) FROM src GROUP BY k;
"""
    run(tmp_path, sql)
    found = engine.open(tmp_path / "state").sql("SELECT k, n FROM sink.out WHERE k = 'k1'")
    assert found.rows() == [("k1", 7)]
