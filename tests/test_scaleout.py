"""Scale-out on Ray, differential: the stateful operators on 2 and 3 Ray workers give what the single-process
run gives and what DuckDB computes over the same input in one batch; whatever the epoch size and worker count
(Hypothesis); across restarts that change the worker count (2 -> 1 -> 3), from a plain checkpoint and from a
savepoint, with the same state tables; and with a file's rows split between workers inside one epoch.

One local Ray instance serves the module (`Pipeline.run(executor="ray")` uses it and leaves it running); each run
starts its own workers on it, as a run on a shared cluster does.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest
from deltalake import write_deltalake
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine import versioning
from tests import test_joins as joins
from tests import test_over as over
from tests import test_windows as windows
from tests.helpers import duck, examples, naive, read_sink, sort_all, write_jsonl
from tests.scaleout_helpers import assert_same_run, late_rows, metrics, roots, run_with, same, states

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module", autouse=True)
def local_ray() -> Iterator[None]:
    started = not ray.is_initialized()
    if started:
        ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False)
    yield
    if started:
        ray.shutdown()


# -- one pipeline over one source: windows, GROUP BY, Top-N, deduplication, chained operators ----------------
WINDOW_COLUMNS = (
    "(k STRING, ws TIMESTAMP(3), we TIMESTAMP(3), c BIGINT, cv BIGINT, cd BIGINT, s BIGINT, a DOUBLE, mn INT, "
    "mx INT, cf BIGINT, e BIGINT)"
)
SESSION_GAP_S = 3


def _window_sinks(*names: str) -> str:
    return "".join(
        f"CREATE TABLE {name} {WINDOW_COLUMNS} WITH ('connector' = 'delta', 'path' = '{name}');\n" for name in names
    )


EVENTS = (
    windows.SOURCE
    + _window_sinks("tumble", "hop", "session")
    + windows.tvf_query(windows.WINDOWS["tumble"][0]).replace("INTO out", "INTO tumble")
    + "\n"
    + windows.tvf_query(windows.WINDOWS["hop"][0]).replace("INTO out", "INTO hop")
    + f"""
INSERT INTO session SELECT k, window_start, window_end, {windows.SESSION_AGGS} FROM TABLE(SESSION(TABLE events
  PARTITION BY k, DESCRIPTOR(ts), INTERVAL '{SESSION_GAP_S}' SECOND)) GROUP BY k, window_start, window_end
  HAVING COUNT(*) > 1;
CREATE TABLE totals (k STRING, n BIGINT, s BIGINT, d BIGINT, PRIMARY KEY (k) NOT ENFORCED)
WITH ('connector' = 'delta', 'path' = 'totals');
INSERT INTO totals SELECT k, COUNT(*), SUM(v), COUNT(DISTINCT v) FROM events GROUP BY k;
CREATE TABLE everything (name STRING, n BIGINT, mx INT, d BIGINT, PRIMARY KEY (name) NOT ENFORCED)
WITH ('connector' = 'delta', 'path' = 'everything');
INSERT INTO everything SELECT 'all', COUNT(*), MAX(v), COUNT(DISTINCT k) FROM events;
CREATE TABLE top3 (k STRING, seq BIGINT, v INT, rn BIGINT, PRIMARY KEY (k, rn) NOT ENFORCED)
WITH ('connector' = 'delta', 'path' = 'top3');
INSERT INTO top3 SELECT k, seq, v, rn FROM (
  SELECT *, ROW_NUMBER() OVER (PARTITION BY k ORDER BY v DESC, seq) AS rn FROM events WHERE v IS NOT NULL
) WHERE rn <= 3;
CREATE TABLE latest (k STRING, seq BIGINT, PRIMARY KEY (k) NOT ENFORCED)
WITH ('connector' = 'delta', 'path' = 'latest');
INSERT INTO latest SELECT k, seq FROM (
  SELECT *, ROW_NUMBER() OVER (PARTITION BY k ORDER BY ts DESC, seq DESC) AS rn FROM events) WHERE rn = 1;
CREATE TABLE firsts (k STRING, seq BIGINT, ts TIMESTAMP(3)) WITH ('connector' = 'delta', 'path' = 'firsts');
INSERT INTO firsts SELECT k, seq, ts FROM (
  SELECT *, ROW_NUMBER() OVER (PARTITION BY k ORDER BY ts ASC) AS rn FROM events) WHERE rn = 1;
CREATE TABLE spread (bucket BIGINT, groups BIGINT, lowest BIGINT, highest BIGINT, totals BIGINT,
  PRIMARY KEY (bucket) NOT ENFORCED) WITH ('connector' = 'delta', 'path' = 'spread');
INSERT INTO spread SELECT n % 3, COUNT(*), MIN(total), MAX(total), COUNT(DISTINCT total) FROM (
  SELECT seq % 13 AS g, COUNT(*) AS n, SUM(v) AS total FROM events GROUP BY seq % 13) GROUP BY n % 3;
CREATE TABLE leaders (k STRING, total BIGINT, PRIMARY KEY (k) NOT ENFORCED)
WITH ('connector' = 'delta', 'path' = 'leaders');
INSERT INTO leaders SELECT k, total FROM (
  SELECT k, total, ROW_NUMBER() OVER (ORDER BY total DESC, k) AS rn FROM (
    SELECT k, SUM(v) AS total FROM events GROUP BY k)
) WHERE rn <= 2;
"""
)
EVENT_SINKS = ["tumble", "hop", "session", "totals", "everything", "top3", "latest", "firsts", "spread", "leaders"]
BAD_LINES = ['{"seq": 5000, "k": "a", "v": "many", "ts": 1767225600000}', "not json at all", '{"seq": 5001, "k": "b"']


def event_rows(seed: int, count: int) -> list[dict[str, object]]:
    return windows.make_rows(seed, count)


def write_events(root: Path, rows: list[dict[str, object]], files: int = 3, bad: bool = True) -> None:
    """`rows` in `files` files in order; bad lines in the middle of the second file (dead letters)."""
    size = max(1, -(-len(rows) // files))
    for f in range(files):
        part = rows[f * size : (f + 1) * size]
        if f == 1 and bad:
            write_jsonl(root / "in" / "part-1.json", part[: len(part) // 2])
            text = (root / "in" / "part-1.json").read_text()
            tail = "".join(line + "\n" for line in BAD_LINES)
            rest = root / "in" / "rest.tmp"
            write_jsonl(rest, part[len(part) // 2 :])
            (root / "in" / "part-1.json").write_text(text + tail + rest.read_text())
            rest.unlink()
        else:
            write_jsonl(root / "in" / f"part-{f}.json", part)


def assert_events_match_duckdb(root: Path, rows: list[dict[str, object]]) -> None:
    """Every sink of EVENTS equals DuckDB's batch answer over `rows`."""
    windows.assert_same(naive(read_sink(root / "tumble")), windows.oracle_window(rows, windows.WINDOWS["tumble"][1]))
    windows.assert_same(naive(read_sink(root / "hop")), windows.oracle_window(rows, windows.WINDOWS["hop"][1]))
    windows.assert_same(naive(read_sink(root / "session")), windows.oracle_session(rows, SESSION_GAP_S))
    src = windows.frame(rows)
    oracles = {
        "totals": "SELECT k, count(*) AS n, sum(v) AS s, count(DISTINCT v) AS d FROM src GROUP BY k",
        "everything": "SELECT 'all' AS name, count(*) AS n, max(v) AS mx, count(DISTINCT k) AS d FROM src",
        "top3": """SELECT k, seq, v, rn FROM (SELECT *, row_number() OVER (PARTITION BY k ORDER BY v DESC, seq)
                   AS rn FROM src WHERE v IS NOT NULL) WHERE rn <= 3""",
        "latest": """SELECT k, seq FROM (SELECT *, row_number() OVER (PARTITION BY k ORDER BY ts DESC, seq DESC)
                     AS rn FROM src) WHERE rn = 1""",
        "firsts": windows.MARKS
        + """SELECT k, seq, ts FROM (SELECT *, row_number() OVER (PARTITION BY k ORDER BY ts, seq) AS rn
                     FROM marks WHERE wm IS NULL OR ts > wm) WHERE rn = 1 AND ts <= (SELECT fwm FROM final)""",
        "spread": """SELECT n % 3 AS bucket, count(*) AS groups, min(total) AS lowest, max(total) AS highest,
                     count(DISTINCT total) AS totals
                     FROM (SELECT seq % 13 AS g, count(*) AS n, sum(v) AS total FROM src GROUP BY seq % 13)
                     GROUP BY n % 3""",
        "leaders": "SELECT k, sum(v) AS total FROM src GROUP BY k ORDER BY total DESC, k NULLS LAST LIMIT 2",
    }
    for sink, query in oracles.items():
        same(sort_all(naive(read_sink(root / sink))), sort_all(naive(duck(query, src=src))), sink)


def test_windows_group_by_top_n_and_chains_on_2_and_3_workers(tmp_path: Path) -> None:
    rows = event_rows(11, 130)
    single, two, three = roots(tmp_path, lambda r: write_events(r, rows), "single", "two", "three")
    run_with(single, EVENTS, None, max_epoch_rows=22)
    assert_events_match_duckdb(single, rows)
    late = late_rows(single)
    assert late and sum(f.height for f in late.values()) > 0  # the input has late rows: they must agree too
    for root, workers in ((two, 2), (three, 3)):
        summary = run_with(root, EVENTS, workers, max_epoch_rows=22)
        assert sum(summary["dead_letters"].values()) == len(BAD_LINES), summary
        assert_same_run(single, root, EVENT_SINKS, sources=("events",))
        assert_same_state(single, root)
        assert_events_match_duckdb(root, rows)


# -- joins and OVER over three sources ---------------------------------------------------------------------
JOINS = (
    joins.SOURCES
    + """
CREATE TABLE trades (id BIGINT, account STRING, amount INT, ts TIMESTAMP(3),
  WATERMARK FOR ts AS ts - INTERVAL '5' SECOND)
WITH ('connector' = 'filesystem', 'path' = 'trades', 'format' = 'json');
CREATE TABLE customers (id BIGINT, name STRING) WITH ('connector' = 'delta', 'path' = 'customers');
CREATE TABLE inner_out (oid BIGINT, pid BIGINT, amount INT, paid INT, PRIMARY KEY (oid, pid) NOT ENFORCED)
WITH ('connector' = 'delta', 'path' = 'inner_out');
INSERT INTO inner_out SELECT o.id, p.id, o.amount, p.paid FROM orders o JOIN payments p ON o.cust = p.cust;
CREATE TABLE left_out (oid BIGINT, pid BIGINT, amount INT, paid INT, PRIMARY KEY (oid, pid) NOT ENFORCED)
WITH ('connector' = 'delta', 'path' = 'left_out');
INSERT INTO left_out SELECT o.id, p.id, o.amount, p.paid FROM orders o LEFT JOIN payments p ON o.cust = p.cust;
CREATE TABLE padded (oid BIGINT, pid BIGINT, amount INT, paid INT) WITH ('connector' = 'delta', 'path' = 'padded');
INSERT INTO padded SELECT o.id, p.id, o.amount, p.paid FROM orders o FULL JOIN payments p
  ON o.cust = p.cust AND p.ts BETWEEN o.ts - INTERVAL '2' SECOND AND o.ts + INTERVAL '3' SECOND;
CREATE TABLE interval_out (oid BIGINT, pid BIGINT, amount INT, paid INT)
WITH ('connector' = 'delta', 'path' = 'interval_out');
INSERT INTO interval_out SELECT o.id, p.id, o.amount, p.paid FROM orders o JOIN payments p
  ON o.cust = p.cust AND p.ts BETWEEN o.ts - INTERVAL '2' SECOND AND o.ts + INTERVAL '3' SECOND;
CREATE TABLE lookup_out (oid BIGINT, name STRING) WITH ('connector' = 'delta', 'path' = 'lookup_out');
INSERT INTO lookup_out SELECT o.id, c.name FROM orders AS o
  LEFT JOIN customers FOR SYSTEM_TIME AS OF o.ts AS c ON o.cust = c.id;
CREATE TABLE agg_join (cust BIGINT, n BIGINT, pid BIGINT, PRIMARY KEY (cust, pid) NOT ENFORCED)
WITH ('connector' = 'delta', 'path' = 'agg_join');
INSERT INTO agg_join SELECT c.cust, c.n, p.id FROM (SELECT cust, COUNT(*) AS n FROM orders GROUP BY cust) AS c
  JOIN payments p ON c.cust = p.cust;
CREATE TABLE over_out (id BIGINT, account STRING, ts TIMESTAMP(3), n BIGINT, total BIGINT, mean DOUBLE, lo INT,
  hi INT) WITH ('connector' = 'delta', 'path' = 'over_out');
INSERT INTO over_out SELECT id, account, ts, """
    + over.AGGS.replace("OVER w", "OVER (PARTITION BY account ORDER BY ts ROWS BETWEEN 2 PRECEDING AND CURRENT ROW)")
    + """ FROM trades;
"""
)
JOIN_SINKS = ["inner_out", "left_out", "padded", "interval_out", "lookup_out", "agg_join", "over_out"]


def write_joins(root: Path, seed: int) -> None:
    orders, payments = joins.make(seed, 60, 0), joins.make(seed + 1, 60, 1000)
    joins.write(root, orders, payments)
    trades = over.make(seed + 2, 70)
    write_jsonl(root / "trades" / "1.json", trades[:35])
    write_jsonl(root / "trades" / "2.json", trades[35:])
    write_deltalake(str(root / "customers"), pl.DataFrame({"id": [1, 2, 3], "name": ["ann", "bob", "cy"]}).to_arrow())


def assert_joins_match_duckdb(root: Path, seed: int) -> None:
    o, p = joins.frame(joins.make(seed, 60, 0)), joins.frame(joins.make(seed + 1, 60, 1000))
    interval = "o.cust = p.cust AND p.ts BETWEEN o.ts - INTERVAL 2 SECOND AND o.ts + INTERVAL 3 SECOND"
    oracles = {
        "inner_out": "SELECT o.id AS oid, p.id AS pid, o.amount, p.paid FROM o JOIN p ON o.cust = p.cust",
        "left_out": "SELECT o.id AS oid, p.id AS pid, o.amount, p.paid FROM o LEFT JOIN p ON o.cust = p.cust",
        "interval_out": f"SELECT o.id AS oid, p.id AS pid, o.amount, p.paid FROM o JOIN p ON {interval}",
        "lookup_out": """SELECT o.id AS oid, c.name FROM o LEFT JOIN
                         (VALUES (1, 'ann'), (2, 'bob'), (3, 'cy')) AS c(id, name) ON o.cust = c.id""",
        "agg_join": """SELECT c.cust, c.n, p.id AS pid FROM (SELECT cust, count(*) AS n FROM o GROUP BY cust) c
                       JOIN p ON c.cust = p.cust""",
    }
    for sink, query in oracles.items():
        same(sort_all(read_sink(root / sink)), sort_all(duck(query, o=o, p=p)), sink)
    # a FULL interval join pads a row once the watermark passes its bound: those the final watermark settled
    orders, payments = joins.make(seed, 60, 0), joins.make(seed + 1, 60, 1000)
    final = min(max(int(r["ts"]) for r in rows) for rows in (orders, payments)) - 5000  # type: ignore[call-overload]
    settled = {int(r["id"]) for r in orders if int(r["ts"]) + 3000 < final}  # type: ignore[call-overload]
    settled |= {int(r["id"]) for r in payments if int(r["ts"]) + 2000 < final}  # type: ignore[call-overload]
    padded = duck(f"SELECT o.id AS oid, p.id AS pid, o.amount, p.paid FROM o FULL JOIN p ON {interval}", o=o, p=p)
    padded = padded.filter(
        pl.col("pid").is_not_null() & pl.col("oid").is_not_null()
        | pl.col("oid").is_in(settled)
        | pl.col("pid").is_in(settled)
    )
    same(sort_all(read_sink(root / "padded")), sort_all(padded), "padded")
    trades = over.make(seed + 2, 70)
    src = pl.DataFrame(trades, schema={"id": pl.Int64, "account": pl.String, "amount": pl.Int32, "ts": pl.Int64})
    src = src.with_columns(pl.col("ts").cast(pl.Datetime("ms")).dt.replace_time_zone("UTC"))
    final = max(int(r["ts"]) for r in trades) - 5000  # type: ignore[call-overload]
    expected = duck(
        f"""SELECT id, account, ts, {over.DUCK_AGGS} FROM src
            WINDOW w AS (PARTITION BY account ORDER BY ts ROWS BETWEEN 2 PRECEDING AND CURRENT ROW)
            QUALIFY epoch_ms(ts) <= {final}""",
        src=src,
    )
    expected = expected.rename(
        dict(zip(expected.columns, ["id", "account", "ts", "n", "total", "mean", "lo", "hi"], strict=True))
    )
    same(sort_all(naive(read_sink(root / "over_out"))), sort_all(naive(expected)), "over")


def test_joins_and_over_aggregates_on_2_and_3_workers(tmp_path: Path) -> None:
    single, two, three = roots(tmp_path, lambda r: write_joins(r, 3), "single", "two", "three")
    run_with(single, JOINS, None, max_epoch_rows=12)
    assert_joins_match_duckdb(single, 3)
    for root, workers in ((two, 2), (three, 3)):
        run_with(root, JOINS, workers, max_epoch_rows=12)
        assert_same_run(single, root, JOIN_SINKS)
        assert_same_state(single, root)
        assert_joins_match_duckdb(root, 3)


# -- any epoch size, any worker count -------------------------------------------------------------------------
SMALL = (
    windows.SOURCE
    + _window_sinks("tumble")
    + windows.tvf_query(windows.WINDOWS["tumble"][0]).replace("INTO out", "INTO tumble")
    + """
CREATE TABLE totals (k STRING, n BIGINT, s BIGINT, d BIGINT, PRIMARY KEY (k) NOT ENFORCED)
WITH ('connector' = 'delta', 'path' = 'totals');
INSERT INTO totals SELECT k, COUNT(*), SUM(v), COUNT(DISTINCT v) FROM events GROUP BY k;
CREATE TABLE leaders (k STRING, total BIGINT, PRIMARY KEY (k) NOT ENFORCED)
WITH ('connector' = 'delta', 'path' = 'leaders');
INSERT INTO leaders SELECT k, total FROM (
  SELECT k, total, ROW_NUMBER() OVER (ORDER BY total DESC, k) AS rn FROM (
    SELECT k, SUM(v) AS total FROM events GROUP BY k)
) WHERE rn <= 2;
"""
)
SMALL_SINKS = ["tumble", "totals", "leaders"]


@settings(max_examples=examples(12), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    seed=st.integers(0, 10_000),
    count=st.integers(0, 80),
    max_rows=st.one_of(st.none(), st.integers(1, 30)),
    ray_rows=st.one_of(st.none(), st.integers(1, 30)),
    workers=st.integers(1, 3),
)
def test_any_epoch_size_and_worker_count_give_the_single_process_result(
    seed: int, count: int, max_rows: int | None, ray_rows: int | None, workers: int
) -> None:
    tmp = Path(tempfile.mkdtemp())
    try:
        rows = event_rows(seed, count)
        single, scaled = roots(tmp, lambda r: write_events(r, rows), "single", "scaled")
        run_with(single, SMALL, None, max_epoch_rows=max_rows)
        run_with(scaled, SMALL, workers, max_epoch_rows=ray_rows)
        # the epochs differ (their sizes do): late rows compare without the epoch they arrived in
        assert_same_run(single, scaled, SMALL_SINKS, sources=("events",), with_epoch=False)
    finally:
        shutil.rmtree(tmp)


# -- rescaling across restarts ----------------------------------------------------------------------------------
RESCALE_ROWS = event_rows(21, 120)


def _writes(statement: str, sinks: list[str]) -> bool:
    words = statement.split()
    return any(words[i].upper() in ("TABLE", "INTO") and words[i + 1] in sinks for i in range(len(words) - 1))


RESCALE_SINKS = ["tumble", "session", "totals", "top3", "spread", "recent"]
RESCALE = (
    windows.SOURCE
    + "\n".join(  # the statements of EVENTS writing RESCALE_SINKS (each INSERT follows its CREATE TABLE)
        statement + ";" for statement in EVENTS.split(";") if statement.strip() and _writes(statement, RESCALE_SINKS)
    )
    + """
CREATE TABLE recent (seq BIGINT, k STRING, n BIGINT, s BIGINT) WITH ('connector' = 'delta', 'path' = 'recent');
INSERT INTO recent SELECT seq, k,
  COUNT(v) OVER (PARTITION BY k ORDER BY ts ROWS BETWEEN 3 PRECEDING AND CURRENT ROW),
  SUM(v) OVER (PARTITION BY k ORDER BY ts ROWS BETWEEN 3 PRECEDING AND CURRENT ROW) FROM events;
"""
)


def assert_same_state(expected: Path, actual: Path, ignore: tuple[str, ...] = ()) -> None:
    """Every state table of the last checkpoint holds the same rows: state does not depend on the worker count."""
    want, got = states(expected), states(actual)
    assert sorted(got) == sorted(want)
    for name, frame in want.items():
        drop = [c for c in ignore if c in frame.columns]
        same(sort_all(got[name].drop(drop)), sort_all(frame.drop(drop)), f"state table {name}")


def _assert_rescaled_like_straight(straight: Path, rescaled: Path, ignore: tuple[str, ...] = ()) -> None:
    assert_same_run(straight, rescaled, RESCALE_SINKS, sources=("events",), with_epoch=False)
    assert_same_state(straight, rescaled, ignore)


@pytest.fixture(scope="module")
def straight(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The single-process run the rescaled runs must equal."""
    (root,) = roots(tmp_path_factory.mktemp("straight"), lambda r: write_events(r, RESCALE_ROWS), "straight")
    run_with(root, RESCALE, None, max_epoch_rows=15)
    return root


def test_rescale_2_1_3_from_checkpoints(tmp_path: Path, straight: Path) -> None:
    (root,) = roots(tmp_path, lambda r: write_events(r, RESCALE_ROWS), "rescaled")
    run_with(root, RESCALE, 2, max_epoch_rows=15, max_epochs=3)
    run_with(root, RESCALE, 1, max_epoch_rows=15, max_epochs=3)
    run_with(root, RESCALE, 3, max_epoch_rows=15)
    _assert_rescaled_like_straight(straight, root)
    parallelism = [m["parallelism"] for m in metrics(root)]
    assert parallelism[:3] == [2] * 3 and parallelism[3:6] == [1] * 3 and set(parallelism[6:]) == {3}
    assert [m["rescaled_from"] for m in metrics(root) if "rescaled_from" in m] == [2, 1]


def test_rescale_2_1_3_from_a_savepoint(tmp_path: Path, straight: Path) -> None:
    (root,) = roots(tmp_path, lambda r: write_events(r, RESCALE_ROWS), "rescaled")
    run_with(root, RESCALE, 2, max_epoch_rows=15, max_epochs=3)
    assert versioning.create_savepoint(root / "state", "before") == {"savepoint": "before", "epoch": 3}
    run_with(root, RESCALE, 2, max_epoch_rows=15, max_epochs=2)  # epochs the rollback takes back
    versioning.rollback(root / "state", savepoint="before")
    run_with(root, RESCALE, 1, max_epoch_rows=15, max_epochs=2)
    run_with(root, RESCALE, 3, max_epoch_rows=15)
    # Epochs after a rollback are numbered on from those it took back, and an OVER's arrival numbers (its state
    # key) begin with the epoch's: compare its rows without them.
    _assert_rescaled_like_straight(straight, root, ignore=("__seq", "_kg"))
    parallelism = [m["parallelism"] for m in metrics(root)]
    assert parallelism[0] == 2 and parallelism[-1] == 3 and 1 in parallelism


# -- one file, its rows split between workers inside an epoch ------------------------------------------------------
def test_a_file_split_between_workers_mid_file_keeps_watermarks_and_late_rows(tmp_path: Path) -> None:
    rows = event_rows(31, 140)
    single, three = roots(tmp_path, lambda r: write_events(r, rows, files=1, bad=False), "single", "three")
    sql = (
        windows.SOURCE
        + _window_sinks("tumble")
        + windows.tvf_query(windows.WINDOWS["tumble"][0]).replace("INTO out", "INTO tumble")
    )
    run_with(single, sql, None, max_epoch_rows=70)
    # Each epoch's 70 records, all of one file, are cut into three record ranges (FileSource.split): two cuts
    # fall inside the file, and each worker's rows get the watermarks of the rows before them in the file.
    run_with(three, sql, 3, max_epoch_rows=70)
    assert late_rows(single)
    assert_same_run(single, three, ["tumble"])
    windows.assert_same(naive(read_sink(three / "tumble")), windows.oracle_window(rows, windows.WINDOWS["tumble"][1]))
