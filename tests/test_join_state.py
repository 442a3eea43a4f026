"""Column-bounded interval joins (Nexmark q4/q9's `B.dateTime BETWEEN A.dateTime AND A.expires`) against DuckDB,
over random epoch splits with late rows and outer joins; their state holds only rows that can still match."""

from __future__ import annotations

import random
import shutil
import tempfile
from pathlib import Path

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from engine.operators import join as join_operator
from sql import plan_script
from tests.helpers import duck, examples, read_sink, run, sort_all, write_jsonl

BASE_MS = 1_767_225_600_000
SOURCES = """
CREATE TABLE auction (id BIGINT, seller BIGINT, ts TIMESTAMP(3), expires TIMESTAMP(3),
  WATERMARK FOR ts AS ts - INTERVAL '5' SECOND)
WITH ('connector' = 'filesystem', 'path' = 'auction', 'format' = 'json');
CREATE TABLE bid (bid_id BIGINT, auction BIGINT, price BIGINT, ts TIMESTAMP(3),
  WATERMARK FOR ts AS ts - INTERVAL '5' SECOND)
WITH ('connector' = 'filesystem', 'path' = 'bid', 'format' = 'json');
CREATE TABLE out (id BIGINT, bid_id BIGINT, price BIGINT) WITH ('connector' = 'delta', 'path' = 'out');
"""
# q4's condition, with the auction on the left or (mirrored) on the right, and with constants on both bounds
CONDITIONS = {
    "auction-left": ("auction A {kind} JOIN bid B", "B.ts BETWEEN A.ts AND A.expires"),
    "auction-right": ("bid B {kind} JOIN auction A", "B.ts BETWEEN A.ts AND A.expires"),
    "shifted": (
        "auction A {kind} JOIN bid B",
        "B.ts >= A.ts - INTERVAL '1' SECOND AND B.ts < A.expires + INTERVAL '2' SECOND",
    ),
}
DUCK_CONDITIONS = {
    "auction-left": "B.ts BETWEEN A.ts AND A.expires",
    "auction-right": "B.ts BETWEEN A.ts AND A.expires",
    "shifted": "B.ts >= A.ts - INTERVAL 1 SECOND AND B.ts < A.expires + INTERVAL 2 SECOND",
}


def streams(seed: int, n_auctions: int, n_bids: int) -> tuple[list[dict[str, object]], list[dict[str, object]]]:
    """Auctions living 0-20 s (a few without an end), bids on them; both mostly in time order, some rows far
    behind (late once the watermark has moved past them)."""
    rng = random.Random(seed)

    def jitter(i: int) -> int:
        back = rng.randint(8, 20) if rng.random() < 0.1 else rng.randint(0, 3)
        return BASE_MS + i * 1000 - back * 1000

    auctions = []
    for i in range(n_auctions):
        ts = jitter(i)
        expires = None if rng.random() < 0.05 else ts + rng.randint(0, 20) * 1000
        auctions.append({"id": i, "seller": rng.randint(1, 3), "ts": ts, "expires": expires})
    bids = [
        {
            "bid_id": 1000 + i,
            "auction": rng.randint(0, max(n_auctions, 1)),
            "price": rng.randint(1, 100),
            "ts": jitter(i),
        }
        for i in range(n_bids)
    ]
    return auctions, bids


def write(root: Path, rows: list[dict[str, object]], name: str, files: int) -> None:
    size = max(1, -(-len(rows) // files))
    for n in range(files):
        write_jsonl(root / name / f"{n}.json", rows[n * size : (n + 1) * size])


def timestamps(rows: list[dict[str, object]], schema: dict[str, pl.DataType]) -> pl.DataFrame:
    frame = pl.DataFrame(rows, schema=schema)
    return frame.with_columns(
        pl.col(c).cast(pl.Datetime("ms")).dt.replace_time_zone("UTC") for c in ("ts", "expires") if c in schema
    )


AUCTION = {"id": pl.Int64, "seller": pl.Int64, "ts": pl.Int64, "expires": pl.Int64}
BID = {"bid_id": pl.Int64, "auction": pl.Int64, "price": pl.Int64, "ts": pl.Int64}


def late_ids(root: Path, side: str, column: str) -> list[int]:
    path = next((root / "state" / "operators").glob("join-*")) / f"late_{side}"
    if not (path / "_delta_log").exists():
        return []
    return pl.read_delta(str(path)).get_column(column).to_list()


@settings(max_examples=examples(25), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    seed=st.integers(0, 10_000),
    n_auctions=st.integers(0, 30),
    n_bids=st.integers(0, 60),
    kind=st.sampled_from(["INNER", "LEFT", "RIGHT", "FULL"]),
    form=st.sampled_from(sorted(CONDITIONS)),
    max_rows=st.one_of(st.none(), st.integers(1, 12)),
    files=st.integers(1, 3),
)
def test_column_bounded_interval_joins_match_duckdb(
    seed: int, n_auctions: int, n_bids: int, kind: str, form: str, max_rows: int | None, files: int
) -> None:
    root = Path(tempfile.mkdtemp())
    try:
        auctions, bids = streams(seed, n_auctions, n_bids)
        write(root, auctions, "auction", files)
        write(root, bids, "bid", files)
        tables, condition = CONDITIONS[form]
        query = (
            f"INSERT INTO out SELECT A.id, B.bid_id, B.price FROM {tables.format(kind=kind)} "
            f"ON A.id = B.auction AND {condition};"
        )
        # drain: the final watermark at the end of time, so every unmatched row of an outer join is padded
        run(root, SOURCES + query, max_epoch_rows=max_rows, drain=True)
        # Late rows (behind their input's watermark when they came, which depends on the epochs) are not joined:
        # they are in the late tables, and DuckDB joins the others.
        auction_side, bid_side = ("left", "right") if form != "auction-right" else ("right", "left")
        a = timestamps(auctions, AUCTION).filter(~pl.col("id").is_in(late_ids(root, auction_side, "id")))
        b = timestamps(bids, BID).filter(~pl.col("bid_id").is_in(late_ids(root, bid_side, "bid_id")))
        duck_tables = tables.format(kind=kind).replace("auction A", "a A").replace("bid B", "b B")
        expected = duck(
            f"SELECT A.id, B.bid_id, B.price FROM {duck_tables} ON A.id = B.auction AND {DUCK_CONDITIONS[form]}",
            a=a,
            b=b,
        )
        assert_frame_equal(sort_all(read_sink(root / "out")), sort_all(expected), check_dtypes=False)
    finally:
        shutil.rmtree(root)


def test_column_bounded_join_is_an_interval_join_unless_hinted() -> None:
    base = SOURCES + "INSERT INTO out SELECT {hint} A.id, B.bid_id, B.price FROM auction A JOIN bid B "
    base += "ON A.id = B.auction AND B.ts BETWEEN A.ts AND A.expires;"
    interval = plan_script(base.format(hint="")).explain()
    assert "IntervalJoin INNER" in interval and "ts0 <= expires" in interval
    regular = plan_script(base.format(hint="/*+ REGULAR_JOIN */")).explain()
    assert "IntervalJoin" not in regular and "Join INNER" in regular


def test_column_bounded_join_state_holds_what_can_still_match(tmp_path: Path) -> None:
    auctions, bids = streams(7, 200, 600)
    write(tmp_path, auctions, "auction", 4)
    write(tmp_path, bids, "bid", 4)
    sql = SOURCES + (
        "INSERT INTO out SELECT A.id, B.bid_id, B.price FROM auction A LEFT JOIN bid B "
        "ON A.id = B.auction AND B.ts BETWEEN A.ts AND A.expires;"
    )
    summary = run(tmp_path, sql, max_epoch_rows=25)
    watermark = min(max(int(r["ts"]) for r in rows) for rows in (auctions, bids)) - 5000  # type: ignore[call-overload]
    operator = next((tmp_path / "state" / "operators").glob("join-*"))

    def live(side: str) -> pl.DataFrame:
        log = pl.read_delta(str(operator / side))  # the table at its last version: the last checkpoint's
        keys = [c for c in log.columns if not c.startswith("_") or c.startswith("__k")]
        keys = [c for c in keys if c not in ("__count", "__matched")]
        latest = log.filter(pl.col("_epoch") == pl.col("_epoch").max().over(keys))
        return latest.filter(~pl.col("_deleted"))

    left, right = live("left"), live("right")
    wm = pl.lit(watermark).cast(pl.Datetime("ms", "UTC"))
    # An auction stays while a bid on time could still fall before it expires; a bid while an auction on time
    # could still start before it. Nothing else.
    assert left.filter(pl.col("expires") < wm).height == 0
    assert right.filter(pl.col("ts0") < wm).height == 0
    on_time = timestamps(auctions, AUCTION).filter(~pl.col("id").is_in(late_ids(tmp_path, "left", "id")))
    assert left.height == on_time.filter(pl.col("expires") >= wm).height
    assert 0 < left.height < 40  # auctions live up to 20 s, one a second: the state follows that, not the stream
    assert summary["epochs"] > 10


FILTERED = {
    # conditions on one side, in ON and in WHERE: filtered before the join
    "on-and-where": (
        "FROM auction A JOIN bid B ON A.id = B.auction AND B.price > 30 WHERE A.seller <> 2 AND B.price < 90",
        "FROM a A JOIN b B ON A.id = B.auction AND B.price > 30 WHERE A.seller <> 2 AND B.price < 90",
    ),
    "comma": (
        "FROM auction A, bid B WHERE A.id = B.auction AND A.seller IN (1, 3) AND B.price % 2 = 0",
        "FROM a A, b B WHERE A.id = B.auction AND A.seller IN (1, 3) AND B.price % 2 = 0",
    ),
    # a RIGHT join later in the chain: the WHERE must not filter A before it (it would keep padded C rows)
    "outer-chain": (
        "FROM auction A JOIN bid B ON A.id = B.auction RIGHT JOIN auction C ON C.id = B.auction WHERE A.seller = 1",
        "FROM a A JOIN b B ON A.id = B.auction RIGHT JOIN a C ON C.id = B.auction WHERE A.seller = 1",
    ),
    "left-where": (
        "FROM auction A LEFT JOIN bid B ON A.id = B.auction WHERE B.price > 50 OR A.seller = 3",
        "FROM a A LEFT JOIN b B ON A.id = B.auction WHERE B.price > 50 OR A.seller = 3",
    ),
}


@settings(max_examples=examples(16), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    seed=st.integers(0, 10_000),
    shape=st.sampled_from(sorted(FILTERED)),
    max_rows=st.one_of(st.none(), st.integers(1, 12)),
)
def test_filters_pushed_below_joins_match_duckdb(seed: int, shape: str, max_rows: int | None) -> None:
    root = Path(tempfile.mkdtemp())
    try:
        auctions, bids = streams(seed, 20, 50)
        write(root, auctions, "auction", 2)
        write(root, bids, "bid", 2)
        ours, theirs = FILTERED[shape]
        three = "C." in ours
        sink = (
            "CREATE TABLE pairs (id BIGINT, bid_id BIGINT, cid BIGINT, PRIMARY KEY (id, bid_id, cid) NOT ENFORCED) "
            "WITH ('connector' = 'delta', 'path' = 'pairs');\n"
        )
        third = "C.id" if three else "CAST(NULL AS BIGINT)"
        sql = SOURCES + sink + f"INSERT INTO pairs SELECT /*+ REGULAR_JOIN */ A.id, B.bid_id, {third} {ours};"
        run(root, sql, max_epoch_rows=max_rows)
        expected = duck(
            f"SELECT A.id, B.bid_id, {third} AS cid {theirs}",
            a=timestamps(auctions, AUCTION),
            b=timestamps(bids, BID),
        )
        assert_frame_equal(sort_all(read_sink(root / "pairs")), sort_all(expected), check_dtypes=False)
    finally:
        shutil.rmtree(root)


@settings(max_examples=examples(12), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    seed=st.integers(0, 10_000),
    kind=st.sampled_from(["INNER", "LEFT", "RIGHT", "FULL"]),
    max_rows=st.one_of(st.none(), st.integers(1, 9)),
    duplicates=st.booleans(),
)
def test_regular_joins_probing_a_key_index_match_duckdb(
    seed: int, kind: str, max_rows: int | None, duplicates: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every side indexed by key from its first row on (the index is kept for large sides only), equal rows
    arriving again (merged with the stored ones) or not."""
    monkeypatch.setattr(join_operator, "INDEX_MIN_ROWS", 0)
    root = Path(tempfile.mkdtemp())
    try:
        auctions, bids = streams(seed, 15, 40)
        if duplicates:
            bids = bids + bids[::3]
        write(root, auctions, "auction", 2)
        write(root, bids, "bid", 3)
        sink = (
            "CREATE TABLE pairs (id BIGINT, bid_id BIGINT, n BIGINT, PRIMARY KEY (id, bid_id) NOT ENFORCED) "
            "WITH ('connector' = 'delta', 'path' = 'pairs');\n"
        )
        sql = (
            SOURCES
            + sink
            + (
                f"INSERT INTO pairs SELECT id, bid_id, COUNT(*) FROM (SELECT A.id, B.bid_id FROM auction A {kind} JOIN "
                "bid B ON A.seller = B.auction) GROUP BY id, bid_id;"
            )
        )
        run(root, sql, max_epoch_rows=max_rows)
        expected = duck(
            f"SELECT A.id, B.bid_id, COUNT(*) AS n FROM a A {kind} JOIN b B ON A.seller = B.auction GROUP BY ALL",
            a=timestamps(auctions, AUCTION),
            b=timestamps(bids, BID),
        )
        assert_frame_equal(sort_all(read_sink(root / "pairs")), sort_all(expected), check_dtypes=False)
    finally:
        shutil.rmtree(root)


# Nexmark q7's shape: a window's highest price joined back to its bids, the time bound in the WHERE
HIGHEST = """
CREATE TABLE best (bid_id BIGINT, price BIGINT, ts TIMESTAMP(3)) WITH ('connector' = 'delta', 'path' = 'best');
INSERT INTO best SELECT B.bid_id, B.price, B.ts
FROM bid B
JOIN (
  SELECT MAX(price) AS maxprice, window_end AS ts
  FROM TABLE(TUMBLE(TABLE bid, DESCRIPTOR(ts), INTERVAL '10' SECOND))
  GROUP BY window_start, window_end
) B1 ON B.price = B1.maxprice
WHERE B.ts BETWEEN B1.ts - INTERVAL '10' SECOND AND B1.ts;
"""


@settings(max_examples=examples(12), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 10_000), n_bids=st.integers(0, 80), max_rows=st.one_of(st.none(), st.integers(1, 15)))
def test_a_time_bound_in_the_where_of_an_inner_join_bounds_its_state(
    seed: int, n_bids: int, max_rows: int | None
) -> None:
    """The WHERE's bound holds of every joined row of an INNER join as much as ON's: the join is an interval
    join (bids leave the state once the watermark passes them by 10 s), with the regular join's result."""
    assert "IntervalJoin INNER" in plan_script(SOURCES + HIGHEST).explain()
    rng = random.Random(seed)
    # out of order within the watermark's delay (5 s), so that no row is late whatever the epochs
    bids = [
        {"bid_id": i, "auction": 1, "price": rng.randint(1, 20), "ts": BASE_MS + i * 700 - rng.randint(0, 4) * 1000}
        for i in range(n_bids)
    ]
    root = Path(tempfile.mkdtemp())
    try:
        write(root, [], "auction", 1)
        write(root, bids, "bid", 2)
        run(root, SOURCES + HIGHEST, max_epoch_rows=max_rows, drain=True)
        expected = duck(
            "SELECT B.bid_id, B.price, B.ts FROM b B JOIN (SELECT MAX(price) AS maxprice, "
            "time_bucket(INTERVAL 10 SECOND, ts) + INTERVAL 10 SECOND AS ts FROM b GROUP BY 2) B1 "
            "ON B.price = B1.maxprice WHERE B.ts BETWEEN B1.ts - INTERVAL 10 SECOND AND B1.ts",
            b=timestamps(bids, BID),
        )
        ours = read_sink(root / "best").with_columns(pl.col("ts").dt.replace_time_zone(None))  # DuckDB's are naive
        assert_frame_equal(sort_all(ours), sort_all(expected), check_dtypes=False)
    finally:
        shutil.rmtree(root)
