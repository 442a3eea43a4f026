"""Repairing state with SQL (`timelapse state edit`) and bootstrapping it from a table (`timelapse state bootstrap`):
a run continued from the new savepoint equals a straight run over input whose effect matches the change."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import duckdb
import polars as pl
import pytest
from polars.testing import assert_frame_equal

import engine
from engine import retention, versioning
from engine.branching import create_branch
from engine.state_dir import StateDir, StateDirBusy
from engine.state_edit import EditRefused, edit_state
from tests.helpers import duck, read_sink, run, sort_all, write_jsonl

SQL = """
CREATE TABLE orders (id BIGINT, customer STRING, amount BIGINT)
WITH ('connector' = 'filesystem', 'path' = 'in', 'format' = 'json');
CREATE TABLE totals (customer STRING, n BIGINT, total BIGINT, mean DOUBLE, kinds BIGINT,
  PRIMARY KEY (customer) NOT ENFORCED) WITH ('connector' = 'delta', 'path' = 'totals');
INSERT INTO totals SELECT /*+ STATE_ID('totals') */ customer, COUNT(*), SUM(amount), AVG(amount),
  COUNT(DISTINCT amount) FROM orders GROUP BY customer;
"""
ORACLE = """SELECT customer, count(*) AS n, sum(amount) AS total, avg(amount) AS mean,
            count(DISTINCT amount) AS kinds FROM src GROUP BY customer"""
CUSTOMERS = ["ann", "bob", "cy"]


def orders(first: int, count: int) -> list[dict[str, Any]]:
    return [{"id": i, "customer": CUSTOMERS[i % 3], "amount": i % 5} for i in range(first, first + count)]


def timelapse(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "engine.cli", *args], cwd=root, capture_output=True, text=True)


def state_of(state: Path, table: str) -> pl.DataFrame:
    return sort_all(engine.open(state).state(table))


def manifest_rows(state: Path) -> int:
    return pl.read_delta(str(state / "manifest")).height


def frame(rows: list[dict[str, Any]]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema={"id": pl.Int64, "customer": pl.String, "amount": pl.Int64})


def test_deleting_a_key_at_a_savepoint_equals_a_run_that_never_saw_its_rows(tmp_path: Path) -> None:
    edited, straight = tmp_path / "edited", tmp_path / "straight"
    first, second, third = orders(0, 12), orders(12, 12), orders(24, 6)
    write_jsonl(edited / "in" / "a.json", first)
    run(edited, SQL, max_epoch_rows=4)
    versioning.create_savepoint(edited / "state", "s1", reason="before the bad deploy")
    write_jsonl(edited / "in" / "b.json", second)
    run(edited, SQL, max_epoch_rows=4)  # the line runs on past the savepoint
    current = state_of(edited / "state", "totals")
    manifest_before = manifest_rows(edited / "state")

    done = timelapse(
        edited,
        *("state", "edit", "state", "--from", "savepoint", "s1", "--as", "fixed", "--reason", "ann was a test"),
        *("--json", "DELETE FROM totals WHERE customer = 'ann'"),
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["tables"] == {
        "totals": {"inserted": 0, "updated": 0, "deleted": 1},
        "totals/distinct_3": {
            "inserted": 0,
            "updated": 0,
            "deleted": 4,
        },  # ann's distinct amounts (0, 3, 1, 4) go along
    }
    # One savepoint row, audited; the running line is not disturbed.
    rows = pl.read_delta(str(edited / "state" / "manifest")).sort("committed_at")
    assert rows.height == manifest_before + 1
    audit = json.loads(rows.row(-1, named=True)["metrics"])
    assert rows.row(-1, named=True)["kind"] == "savepoint"
    assert audit["savepoint"] == "fixed" and audit["reason"] == "ann was a test" and audit["user"]
    assert audit["edit"]["from"] == {"savepoint": "s1"}
    assert audit["edit"]["statements"] == ["DELETE FROM totals WHERE customer = 'ann'"]
    assert_frame_equal(state_of(edited / "state", "totals"), current)
    at_fixed = engine.open(edited / "state").state("totals", at="fixed")
    assert sorted(at_fixed.get_column("customer").to_list()) == ["bob", "cy"]
    assert engine.open(edited / "state").sql("SELECT count(*) AS n FROM totals AS OF SAVEPOINT 'fixed'").item() == 2
    # An export of the edited savepoint holds the edited state, not its epoch's.
    engine.export_savepoint(edited / "state", "fixed", tmp_path / "exported")
    exported = engine.open(tmp_path / "exported").state("totals", at="fixed")
    assert_frame_equal(exported.sort("customer"), at_fixed.sort("customer"))
    assert "(edited from savepoint 's1'" in timelapse(edited, "log", str(tmp_path / "exported")).stdout
    log = timelapse(edited, "log", "state")
    assert "savepoint 'fixed'" in log.stdout and "edited" in log.stdout, log.stdout

    # The line's next run puts its tables back at its own cut (the edit's version is no longer the head), and
    # retention keeps what the edited savepoint names (versions no epoch row names), whatever it frees.
    write_jsonl(edited / "in" / "c.json", third)
    run(edited, SQL, max_epoch_rows=4)
    assert_frame_equal(
        sort_all(read_sink(edited / "totals")),
        sort_all(duck(ORACLE, src=frame(first + second + third))),
        check_dtypes=False,
    )
    with StateDir(edited / "state").lock():
        retention.apply(StateDir(edited / "state"), retention.RetentionPolicy(count=1))
    rolled = timelapse(edited, "rollback", "state", "--savepoint", "fixed", "--reason", "continue without ann")
    assert rolled.returncode == 0, rolled.stderr
    run(edited, SQL, max_epoch_rows=4)
    # Blame tells the edit apart from its epoch's input: ann's state ends at the savepoint by the edit, who and
    # why, and the line's next input brings it back; bob was not edited.
    s1 = versioning.savepoints(edited / "state").filter(pl.col("name") == "s1").item(0, "epoch")
    ann = engine.blame(edited / "state", "totals", key={"customer": "ann"})
    edit = ann.filter(pl.col("change") == "edited")
    assert edit.height == 1 and edit.item(0, "epoch") == s1 and edit.item(0, "count__count_after") is None
    assert edit.item(0, "count__count_before") is not None
    assert json.loads(edit.item(0, "input"))[0]["edit"]["statements"] == ["DELETE FROM totals WHERE customer = 'ann'"]
    shown = timelapse(edited, "blame", "state", "totals", "--key", "customer=ann")
    assert shown.returncode == 0 and f"epoch {s1}  edited" in shown.stdout, shown.stdout + shown.stderr
    assert "savepoint 'fixed' by" in shown.stdout and "ann was a test" in shown.stdout
    after = ann.filter(pl.col("epoch") > s1)
    assert after.item(0, "change") == "inserted" and after.item(0, "count__count_before") is None
    bob = engine.blame(edited / "state", "totals", key={"customer": "bob"})
    assert "edited" not in bob.get_column("change").to_list()

    kept = [r for r in first if r["customer"] != "ann"]
    write_jsonl(straight / "in" / "a.json", kept)
    write_jsonl(straight / "in" / "b.json", second)
    write_jsonl(straight / "in" / "c.json", third)
    run(straight, SQL, max_epoch_rows=4)
    for table in ("totals", "totals/distinct_3"):
        assert_frame_equal(state_of(edited / "state", table), state_of(straight / "state", table))
    sink = sort_all(read_sink(edited / "totals"))
    assert_frame_equal(sink, sort_all(read_sink(straight / "totals")))
    expected = duck(ORACLE, src=frame(kept + second + third))
    assert_frame_equal(sink, sort_all(expected), check_dtypes=False)


def test_a_counter_set_right_at_an_epoch_equals_a_run_over_the_rows_it_missed(tmp_path: Path) -> None:
    """Two of bob's orders (amount unknown) were lost before epoch 2: add them to his count, branch from the edit."""
    edited, straight = tmp_path / "edited", tmp_path / "straight"
    first, second = orders(0, 12), orders(12, 9)
    missed = [{"id": 100 + i, "customer": "bob", "amount": None} for i in range(2)]
    write_jsonl(edited / "in" / "a.json", first)
    run(edited, SQL, max_epoch_rows=6)
    write_jsonl(edited / "in" / "b.json", second)
    result = edit_state(
        edited / "state",
        "UPDATE totals SET count__count = count__count + 2, __rows = __rows + 2 WHERE customer = 'bob';",
        epoch=2,
        as_savepoint="recounted",
        reason="two orders lost",
    )
    assert result["tables"] == {"totals": {"inserted": 0, "updated": 1, "deleted": 0}}
    branch = tmp_path / "branch"
    assert create_branch(edited / "state", branch / "state", savepoint="recounted")["from_epoch"] == 2
    run(branch, SQL.replace("'path' = 'in'", f"'path' = '{edited / 'in'}'"), max_epoch_rows=6)

    write_jsonl(straight / "in" / "a.json", first + missed)
    write_jsonl(straight / "in" / "b.json", second)
    run(straight, SQL, max_epoch_rows=6)
    for table in ("totals", "totals/distinct_3"):
        assert_frame_equal(state_of(branch / "state", table), state_of(straight / "state", table))
    sink = sort_all(engine.open(branch / "state").sink("totals"))
    assert_frame_equal(sink, sort_all(read_sink(straight / "totals")))
    assert_frame_equal(sink, sort_all(duck(ORACLE, src=frame(first + missed + second))), check_dtypes=False)
    # The edited directory's own line never saw the edit: it runs on from its latest epoch without it.
    run(edited, SQL, max_epoch_rows=6)
    own = sort_all(read_sink(edited / "totals"))
    assert_frame_equal(own, sort_all(duck(ORACLE, src=frame(first + second))), check_dtypes=False)


REFUSED = [
    ("UPDATE totals SET customer = 'ann'", "keys must stay unique, but customer='ann' would be in 3 rows"),
    ("UPDATE totals SET customer = 'ann' WHERE customer = 'bob'", "customer='ann' would be in 2 rows"),
    ("UPDATE totals SET count__count = -5 WHERE customer = 'bob'", "count__count = -5 at customer='bob'; COUNT(*)"),
    ("UPDATE totals SET count__count = __rows + 1", "counts values of the group's __rows input rows"),
    ("UPDATE totals SET sum_amount__sum = NULL", "SUM(amount) counted values (sum_amount__count > 0), so its sum"),
    ("UPDATE totals SET sum_amount__count = 0, sum_amount__sum = 5", "(sum_amount__count = 0), so its sum is 0"),
    ("UPDATE totals SET count__count = 99999999999999999999", "column count__count (BIGINT) cannot hold '9999"),
    ("COPY totals TO 'x.csv'", "not COPY: COPY totals TO 'x.csv'"),
    ("DELETE FROM join-ab/left", "at line 1, column 16: Expected table name but got 'join'; double-quote"),
    ("INSERT INTO totals SELECT * FROM totals", "keys must stay unique"),
    ("UPDATE totals SET count__count = 'many'", "column count__count (BIGINT) cannot hold 'many'"),
    ("UPDATE totals SET avg_amount__sum = 0", "set them together (also avg_amount__count)"),
    ("UPDATE totals SET count_distinct_amount__count = 9", "number of distinct values kept in totals/distinct_3"),
    ("UPDATE totals SET _kg = 1", "column _kg is bookkeeping"),
    ("DELETE FROM totals WHERE _epoch = 1", "column _epoch is bookkeeping"),
    ("INSERT INTO totals SELECT * FROM read_csv('/etc/passwd')", "read only state tables, not READ_CSV"),
    ("INSERT INTO totals SELECT * FROM 'in/a.json'", "'in/a.json' is not a state table"),
    ("DELETE FROM main.totals", "read only state tables, not main.totals"),
    ('DELETE FROM "totals/distinct_3"', "derived from the input, edit or delete the group in totals"),
    ("UPDATE totals SET __rows = 0", "__rows counts a group's input rows and must stay above 0"),
    ("INSERT INTO totals (customer, __rows) VALUES ('dee', 1)", "count values kept in totals/distinct_3"),
    ("DROP TABLE totals", "only UPDATE, DELETE and INSERT edit state, not DROP"),
    ("UPDATE totals SET n = (1", "cannot parse statement 1 at line 1, column"),
    ("DELETE FROM totals WHERE customer = 'nobody'", "the statements change no row"),
]


def test_edits_that_break_the_state_are_refused_and_write_nothing(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "in" / "a.json", orders(0, 12))
    run(tmp_path, SQL, max_epoch_rows=4)
    state = tmp_path / "state"
    versioning.create_savepoint(state, "s1")
    before = manifest_rows(state)
    head = {p.name: len(list((p / "_delta_log").glob("*.json"))) for p in (state / "operators" / "totals").iterdir()}
    for statement, message in REFUSED:
        with pytest.raises(EditRefused) as refused:
            edit_state(state, statement, savepoint="s1", as_savepoint="x")
        assert message in str(refused.value), (statement, str(refused.value))
        assert "\n" not in str(refused.value)
    with pytest.raises(versioning.VersioningError, match="savepoint 's1' already exists"):
        edit_state(state, "DELETE FROM totals", epoch=1, as_savepoint="s1")
    handle = StateDir(state).lock()  # a running pipeline holds the directory
    try:
        with pytest.raises(StateDirBusy):
            edit_state(state, "DELETE FROM totals", savepoint="s1", as_savepoint="x")
    finally:
        handle.close()
    # The CLI: one line, exit 2; nothing written by any of them.
    done = timelapse(
        tmp_path, "state", "edit", "state", "--from", "epoch", "1", "--as", "x", "UPDATE totals SET _kg = 1"
    )
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith("error: column _kg is bookkeeping")
    assert manifest_rows(state) == before
    after = {p.name: len(list((p / "_delta_log").glob("*.json"))) for p in (state / "operators" / "totals").iterdir()}
    assert after == head

    # An AVG may be set by its value: the count is kept and the sum adjusted; it reads as a column too.
    result = edit_state(
        state, "UPDATE totals SET avg_amount = 10 WHERE avg_amount < 2", savepoint="s1", as_savepoint="avg"
    )
    before_avg, after_avg = engine.open(state).state("totals", at="s1"), engine.open(state).state("totals", at="avg")
    low = before_avg.filter(pl.col("avg_amount__sum") < 2 * pl.col("avg_amount__count"))
    assert result["tables"]["totals"]["updated"] == low.height > 0
    changed = after_avg.join(low.select("customer", "avg_amount__count"), on="customer")
    assert changed.select((pl.col("avg_amount__sum") == 10 * pl.col("avg_amount__count_right")).all()).item()
    assert changed.select((pl.col("avg_amount__count") == pl.col("avg_amount__count_right")).all()).item()
    with pytest.raises(EditRefused, match="not both"):
        edit_state(state, "UPDATE totals SET avg_amount = 1, avg_amount__count = 1", savepoint="s1", as_savepoint="y")
    # A group that counted no amount has a NULL average (as AVG has): matched by IS NULL, never by a comparison,
    # and it cannot be set (its count keeps the sum at 0).
    edit_state(
        state,
        "UPDATE totals SET avg_amount__sum = 0, avg_amount__count = 0 WHERE customer = 'ann'",
        epoch=1,
        as_savepoint="none",
    )
    with pytest.raises(EditRefused, match="change no row"):
        edit_state(state, "DELETE FROM totals WHERE avg_amount > 1000000", savepoint="none", as_savepoint="y")
    with pytest.raises(EditRefused, match="avg_amount is NULL where avg_amount__count = 0"):
        edit_state(state, "UPDATE totals SET avg_amount = avg_amount * 2", savepoint="none", as_savepoint="y")
    gone = edit_state(state, "DELETE FROM totals WHERE avg_amount IS NULL", savepoint="none", as_savepoint="y")
    assert gone["tables"]["totals"] == {"inserted": 0, "updated": 0, "deleted": 1}
    for wrong, message in (
        ({"epoch": "3"}, "epoch must be an int, not str '3'"),
        ({"epoch": 1, "savepoint": "s1"}, "give savepoint or epoch, not both"),
        ({"epoch": 1, "as_savepoint": ""}, "a savepoint needs a name, not ''"),
    ):
        with pytest.raises(versioning.VersioningError, match=message):
            edit_state(state, "DELETE FROM totals", **{"as_savepoint": "z", **wrong})  # type: ignore[arg-type]


BOOTSTRAP_SQL = """
CREATE TABLE orders (id BIGINT, customer STRING, amount BIGINT)
WITH ('connector' = 'filesystem', 'path' = 'in', 'format' = 'json');
CREATE TABLE totals (customer STRING, n BIGINT, total BIGINT, mean DOUBLE, PRIMARY KEY (customer) NOT ENFORCED)
WITH ('connector' = 'delta', 'path' = 'totals');
INSERT INTO totals SELECT /*+ STATE_ID('totals') */ customer, COUNT(*), SUM(amount), AVG(amount)
FROM orders GROUP BY customer;
CREATE TABLE overall (one INT, n BIGINT, top BIGINT, PRIMARY KEY (one) NOT ENFORCED)
WITH ('connector' = 'delta', 'path' = 'overall');
INSERT INTO overall SELECT /*+ STATE_ID('overall') */ 1, COUNT(*), MAX(amount) FROM orders;
"""
# What a user writes in DuckDB to produce each operator's partial columns from a backfill.
BACKFILL = {
    "totals": """SELECT customer, count(*) AS __rows, count(*) AS count__count,
                 CAST(sum(amount) AS BIGINT) AS sum_amount__sum, count(amount) AS sum_amount__count,
                 CAST(sum(amount) AS DOUBLE) AS avg_amount__sum, count(amount) AS avg_amount__count
                 FROM backfill GROUP BY customer""",
    "overall": "SELECT count(*) AS __rows, count(*) AS count__count, max(amount) AS max_amount__max FROM backfill",
}


def test_bootstrap_from_a_batch_group_by_then_the_rest_equals_a_straight_run(tmp_path: Path) -> None:
    booted, straight = tmp_path / "booted", tmp_path / "straight"
    rows = orders(0, 30)
    first, second = rows[:15], rows[15:]
    write_jsonl(straight / "in" / "a.json", rows)
    run(straight, BOOTSTRAP_SQL, max_epoch_rows=7)

    write_jsonl(booted / "backfill" / "a.json", first)  # outside the streaming directory
    write_jsonl(booted / "in" / "b.json", second)
    (booted / "pipeline.sql").write_text(BOOTSTRAP_SQL)
    con = duckdb.connect()
    con.execute(f"CREATE VIEW backfill AS SELECT * FROM read_json_auto('{booted / 'backfill' / 'a.json'}')")
    for operator, query in BACKFILL.items():
        con.execute(f"COPY ({query}) TO '{booted / operator}.parquet' (FORMAT parquet)")
    con.execute(
        f"COPY ({BACKFILL['totals']}) TO '{booted}/bad.parquet' (FORMAT parquet)".replace(
            "CAST(sum(amount) AS BIGINT)", "sum(amount)"
        )
    )

    bad = timelapse(booted, "state", "bootstrap", "state", "totals", "--from", "bad.parquet", "--sql", "pipeline.sql")
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1, bad.stderr
    assert "column sum_amount__sum is DOUBLE, expected BIGINT" in bad.stderr
    assert "customer STRING, __rows BIGINT, count__count BIGINT" in bad.stderr  # the expected columns, listed
    done = timelapse(
        booted, "state", "bootstrap", "state", "totals", "--from", "totals.parquet", "--sql", "pipeline.sql", "--json"
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["rows"] == 3
    engine.bootstrap_state(booted / "state", "overall", booted / "overall.parquet", booted / "pipeline.sql")
    assert versioning.savepoints(booted / "state").get_column("name").to_list() == ["bootstrap"]

    upgrades: list[Any] = []
    engine.Pipeline.from_sql(booted / "pipeline.sql", booted / "state").run(
        once=True, max_epoch_rows=7, on_upgrade=upgrades.append
    )
    assert upgrades == []  # the bootstrap's row matches the plan: nothing to check
    for table in ("totals", "overall"):
        assert_frame_equal(state_of(booted / "state", table), state_of(straight / "state", table))
    assert_frame_equal(sort_all(read_sink(booted / "totals")), sort_all(read_sink(straight / "totals")))
    expected = duck(
        "SELECT customer, count(*) AS n, sum(amount) AS total, avg(amount) AS mean FROM src GROUP BY customer",
        src=frame(rows),
    )
    assert_frame_equal(sort_all(read_sink(booted / "totals")), sort_all(expected), check_dtypes=False)
    assert read_sink(booted / "overall").rows() == [(1, 30, 4)]

    # A group deleted and inserted again gets the key group the engine gave it (`_kg`, recomputed by the edit).
    now = state_of(booted / "state", "totals")
    ann = now.filter(pl.col("customer") == "ann").drop("_kg").row(0)
    values = ", ".join(repr(v) for v in ann)
    last = int(engine.open(booted / "state").checkpoints().get_column("epoch").max())  # type: ignore[arg-type]
    again = engine.edit_state(
        booted / "state",
        f"DELETE FROM totals WHERE customer = 'ann'; INSERT INTO totals VALUES ({values})",
        epoch=last,
        as_savepoint="same",
    )
    assert again["tables"] == {"totals": {"inserted": 1, "updated": 0, "deleted": 1}}
    assert_frame_equal(sort_all(engine.open(booted / "state").state("totals", at="same")), now)

    with pytest.raises(versioning.VersioningError, match=r"has run epochs.*state edit"):
        engine.bootstrap_state(booted / "state", "overall", booted / "overall.parquet", booted / "pipeline.sql")


SHAPES_SQL = """
CREATE TABLE orders (customer STRING, amount BIGINT, price DECIMAL(10, 2), ts TIMESTAMP(3),
  WATERMARK FOR ts AS ts - INTERVAL '1' SECOND) WITH ('connector' = 'filesystem', 'path' = 'in', 'format' = 'json');
CREATE TABLE names (customer STRING, name STRING)
WITH ('connector' = 'filesystem', 'path' = 'names', 'format' = 'json');
CREATE TABLE perwin (customer STRING, ws TIMESTAMP(3), we TIMESTAMP(3), n BIGINT)
WITH ('connector' = 'delta', 'path' = 'perwin');
INSERT INTO perwin SELECT /*+ STATE_ID('w') */ customer, window_start, window_end, COUNT(*)
FROM TABLE(TUMBLE(TABLE orders, DESCRIPTOR(ts), INTERVAL '1' MINUTE)) GROUP BY customer, window_start, window_end;
CREATE TABLE joined (customer STRING, name STRING, amount BIGINT) WITH ('connector' = 'delta', 'path' = 'joined');
INSERT INTO joined SELECT o.customer, n.name, o.amount FROM orders o JOIN names n ON o.customer = n.customer;
CREATE TABLE prices (customer STRING, total DECIMAL(10, 2), mean DECIMAL(10, 2), PRIMARY KEY (customer) NOT ENFORCED)
WITH ('connector' = 'delta', 'path' = 'prices');
INSERT INTO prices SELECT /*+ STATE_ID('pr') */ customer, SUM(price), AVG(price) FROM orders GROUP BY customer;
"""


def test_join_and_window_state_only_lose_rows_and_bootstrap_refuses_what_a_run_cannot_make(tmp_path: Path) -> None:
    rows = [
        {"customer": c, "amount": i, "price": None if c == "cy" else f"{i}.25", "ts": f"2026-01-01 00:00:{i:02d}"}
        for i, c in enumerate(["ann", "bob", "cy", "ann"])
    ]
    write_jsonl(tmp_path / "in" / "a.json", rows)
    write_jsonl(tmp_path / "names" / "a.json", [{"customer": "ann", "name": "Ann"}, {"customer": "bob", "name": "Bob"}])
    (tmp_path / "pipeline.sql").write_text(SHAPES_SQL)
    run(tmp_path, SHAPES_SQL)
    state = tmp_path / "state"
    join = next(t for t in engine.open(state).operators().get_column("tables").explode() if t.endswith("/right"))
    for statement, message in [
        (f"INSERT INTO \"{join}\" (cid0, name, __count) VALUES ('dee', 'Dee', 1)", "derived join keys"),
        (f'UPDATE "{join}" SET __count = 3', "a join's rows carry derived join keys and multiplicities"),
        ("UPDATE w SET window_end = window_end + INTERVAL 1 HOUR", "not move it (it sets window_end"),
        ("INSERT INTO w SELECT * REPLACE (window_end + INTERVAL 15 SECOND AS window_end) FROM w", "not create windows"),
    ]:
        with pytest.raises(EditRefused, match=re.escape(message)):
            edit_state(state, statement.replace("cid0", "customer0"), epoch=1, as_savepoint="x")
    # Deleting rows is what join and window state take; the CLI's hint quotes the new name for a shell.
    done = timelapse(
        tmp_path,
        "state",
        "edit",
        "state",
        "--from",
        "epoch",
        "1",
        "--as",
        "no bob",
        f"DELETE FROM \"{join}\" WHERE name = 'Bob'; DELETE FROM w WHERE customer = 'bob'",
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("savepoint 'no bob' = epoch 1 edited:\n"), done.stdout
    assert "timelapse rollback state --savepoint 'no bob'" in done.stdout
    cy = engine.open(state).state("pr").filter(pl.col("customer") == "cy")
    assert cy.select("avg_price__sum", "avg_price__count").rows() == [(0, 0)]  # what a run stores with no price

    boot = tmp_path / "boot"
    backfill = pl.DataFrame(
        {"customer": ["ann", "cy"], "__rows": [2, 1], "sum_price__sum": ["1.005", None], "sum_price__count": [1, 0]}
    ).with_columns(pl.col("sum_price__sum").cast(pl.Decimal(10, 3)))
    backfill = backfill.with_columns(
        avg_price__sum=pl.col("sum_price__sum"), avg_price__count=pl.col("sum_price__count")
    )
    backfill.write_parquet(tmp_path / "lossy.parquet")
    for operator, path, sql, message in [
        ("w", "lossy.parquet", "pipeline.sql", "'w' aggregates per window (TUMBLE"),
        ("pr", "lossy.parquet", "pipeline.sql", "column sum_price__sum cannot hold Decimal('1.005') as DECIMAL(38, 2)"),
        ("pr", "lossy.parquet", "nosuch.sql", "nosuch.sql: no such SQL file"),
    ]:
        with pytest.raises(versioning.VersioningError, match=re.escape(message)):
            engine.bootstrap_state(boot, operator, tmp_path / path, tmp_path / sql)
        assert not boot.exists()  # a refused bootstrap leaves no directory behind
    # A NULL sum of a group that counted no value is stored as a run stores it (0), so both compare equal.
    backfill.with_columns(pl.col("^.*__sum$").round(2)).write_parquet(tmp_path / "backfill.parquet")
    engine.bootstrap_state(boot, "pr", tmp_path / "backfill.parquet", tmp_path / "pipeline.sql")
    booted = engine.open(boot).state("pr").filter(pl.col("customer") == "cy")
    assert booted.select("sum_price__sum", "avg_price__sum").rows() == [(0, 0)]


def test_an_edit_and_a_rollback_to_it_in_a_bucket(tmp_path: Path, s3: Any) -> None:
    """A state directory uploaded to an object store is edited there, and rolled back to the edit, as on a disk."""
    from engine.storage import ObjectPath, copy_tree

    write_jsonl(tmp_path / "in" / "a.json", orders(0, 12))
    run(tmp_path, SQL, max_epoch_rows=4)
    versioning.create_savepoint(tmp_path / "state", "s1")
    project = ObjectPath("s3", s3.bucket(), "edit")
    remote = project / "state"
    copy_tree(tmp_path / "state", remote)
    copy_tree(tmp_path / "totals", project / "totals")  # the sink beside it: a rollback restores it too
    done = edit_state(str(remote), "DELETE FROM totals WHERE customer = 'ann'", savepoint="s1", as_savepoint="fixed")
    assert done["tables"]["totals"]["deleted"] == 1
    versioning.rollback(str(remote), savepoint="fixed", reason="without ann")
    there = engine.open(str(remote)).state("totals").sort("customer")
    expected = state_of(tmp_path / "state", "totals").filter(pl.col("customer") != "ann").sort("customer")
    assert_frame_equal(there.drop("_kg"), expected.drop("_kg"), check_column_order=False)
