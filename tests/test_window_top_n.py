"""Window Top-N and window deduplication (ROW_NUMBER() OVER (PARTITION BY window_start, window_end ...)) against
DuckDB's QUALIFY over the same windows, for random epoch splits: final rows once the watermark passes the window's
end, append-only (a sink without a key takes them), late rows to the late table, state holding only open windows.
And the state TTL of Top-N and deduplication."""

from __future__ import annotations

import random
import shutil
import tempfile
from pathlib import Path

import polars as pl
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

import engine
from engine import Pipeline
from tests.helpers import duck, examples, naive, read_sink, sort_all, write_jsonl

BASE_MS = 1_767_225_600_000
DELAY_MS = 1000
SOURCE = """CREATE TABLE bid (id BIGINT, k STRING, price INT, ts TIMESTAMP(3),
  WATERMARK FOR ts AS ts - INTERVAL '1' SECOND)
WITH ('connector' = 'filesystem', 'path' = 'bids', 'format' = 'json');
"""
TUMBLE = "TABLE(TUMBLE(TABLE bid, DESCRIPTOR(ts), INTERVAL '10' SECOND))"
HOP = "TABLE(HOP(TABLE bid, DESCRIPTOR(ts), INTERVAL '5' SECOND, INTERVAL '10' SECOND))"
WINDOWED = f"""
CREATE TABLE top2 (ws TIMESTAMP(3), we TIMESTAMP(3), k STRING, id BIGINT, price INT, rn BIGINT)
WITH ('connector' = 'delta', 'path' = 'out/top2');
CREATE TABLE first_bid (ws TIMESTAMP(3), we TIMESTAMP(3), k STRING, id BIGINT, ts TIMESTAMP(3))
WITH ('connector' = 'delta', 'path' = 'out/first_bid');
CREATE TABLE last_bid (ws TIMESTAMP(3), we TIMESTAMP(3), k STRING, id BIGINT, ts TIMESTAMP(3))
WITH ('connector' = 'delta', 'path' = 'out/last_bid');
CREATE TABLE top_keys (ws TIMESTAMP(3), we TIMESTAMP(3), k STRING, c BIGINT, rn BIGINT)
WITH ('connector' = 'delta', 'path' = 'out/top_keys');
EXECUTE STATEMENT SET BEGIN
INSERT INTO top2 SELECT window_start, window_end, k, id, price, rn FROM (
  SELECT *, ROW_NUMBER() OVER (PARTITION BY window_start, window_end, k ORDER BY price DESC, id) AS rn FROM {TUMBLE}
) WHERE rn <= 2;
INSERT INTO first_bid SELECT window_start, window_end, k, id, ts FROM (
  SELECT *, ROW_NUMBER() OVER (PARTITION BY window_start, window_end, k ORDER BY ts ASC) AS rn FROM {HOP}
) WHERE rn = 1;
INSERT INTO last_bid SELECT window_start, window_end, k, id, ts FROM (
  SELECT *, ROW_NUMBER() OVER (PARTITION BY k, window_end, window_start ORDER BY ts DESC) AS rn FROM {TUMBLE}
) WHERE rn <= 1;
INSERT INTO top_keys SELECT window_start, window_end, k, c, rn FROM (
  SELECT *, ROW_NUMBER() OVER (PARTITION BY window_start, window_end ORDER BY c DESC, k) AS rn FROM (
    SELECT window_start, window_end, k, COUNT(*) AS c FROM {TUMBLE} GROUP BY window_start, window_end, k)
) WHERE rn <= 2;
END;
"""


def make(seed: int, count: int) -> list[dict[str, object]]:
    """Bids up to 4 s out of order (the watermark allows 1 s), so some arrive after their window closed. Every
    ts is distinct (i * 700 ms less whole seconds), as is every id."""
    rng = random.Random(seed)
    return [
        {
            "id": i,
            "k": rng.choice(["a", "b", "c", None]),
            "price": rng.randint(1, 30),
            "ts": BASE_MS + i * 700 - rng.randint(0, 4) * 1000,
        }
        for i in range(count)
    ]


def windows(rows: list[dict[str, object]], slide: int, size: int) -> pl.DataFrame:
    """Each row in each of its windows, with whether it is late there: the window ended (end - 1 ms) at or before
    the row's watermark, the largest ts - 1 s among the rows before it (written independently of the engine)."""
    out: list[dict[str, object]] = []
    watermark: int | None = None
    for row in rows:
        ts = int(row["ts"])  # type: ignore[call-overload]
        first = ts - ts % slide - size + slide
        for start in range(first, ts + 1, slide):
            if start <= ts < start + size:
                late = watermark is not None and start + size - 1 <= watermark
                out.append({**row, "ws": start, "we": start + size, "late": late})
        watermark = ts - DELAY_MS if watermark is None else max(watermark, ts - DELAY_MS)
    schema = {"id": pl.Int64, "k": pl.String, "price": pl.Int32, "ts": pl.Int64, "ws": pl.Int64, "we": pl.Int64}
    frame = pl.DataFrame(out, schema={**schema, "late": pl.Boolean})
    return frame.with_columns(pl.col(c).cast(pl.Datetime("ms")).dt.replace_time_zone("UTC") for c in ("ts", "ws", "we"))


def oracles(rows: list[dict[str, object]]) -> dict[str, pl.DataFrame]:
    tumble, hop = windows(rows, 10_000, 10_000), windows(rows, 5_000, 10_000)
    return {
        "top2": duck(
            "SELECT ws, we, k, id, price, row_number() OVER (PARTITION BY ws, we, k ORDER BY price DESC, id) AS rn "
            "FROM w WHERE NOT late QUALIFY rn <= 2",
            w=tumble,
        ),
        "first_bid": duck(
            "SELECT ws, we, k, id, ts FROM w WHERE NOT late "
            "QUALIFY row_number() OVER (PARTITION BY ws, we, k ORDER BY ts) = 1",
            w=hop,
        ),
        "last_bid": duck(
            "SELECT ws, we, k, id, ts FROM w WHERE NOT late "
            "QUALIFY row_number() OVER (PARTITION BY ws, we, k ORDER BY ts DESC) = 1",
            w=tumble,
        ),
        "top_keys": duck(
            "SELECT ws, we, k, c, row_number() OVER (PARTITION BY ws, we ORDER BY c DESC, k NULLS LAST) AS rn "
            "FROM (SELECT ws, we, k, count(*) AS c FROM w WHERE NOT late GROUP BY ws, we, k) QUALIFY rn <= 2",
            w=tumble,
        ),
        "late": tumble.filter("late").select("id", "ws"),
        "late_hop": hop.filter("late").select("id", "ws"),
    }


def write(root: Path, rows: list[dict[str, object]]) -> None:
    half = len(rows) // 2
    write_jsonl(root / "bids" / "1.json", rows[:half])
    write_jsonl(root / "bids" / "2.json", rows[half:])


def pipeline(root: Path, sql: str) -> Pipeline:
    (root / "pipeline.sql").write_text(sql)
    return Pipeline.from_sql(root / "pipeline.sql", state=root / "state")


def operators(root: Path) -> dict[str, str]:
    """sink table -> the state id of the ranking operator that feeds it."""
    found = engine.open(root / "state").operators()
    return {
        sinks[0]: op
        for op, sinks, kind in found.select("operator", "sinks", "kind").rows()
        if "top-n" in kind or "deduplicate" in kind
    }


@settings(max_examples=examples(10), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 10_000), count=st.integers(0, 90), max_rows=st.one_of(st.none(), st.integers(1, 25)))
def test_window_top_n_and_deduplication_match_duckdb_whatever_the_epochs(
    seed: int, count: int, max_rows: int | None
) -> None:
    root = Path(tempfile.mkdtemp())
    try:
        rows = make(seed, count)
        write(root, rows)
        pipeline(root, SOURCE + WINDOWED).run(once=True, drain=True, max_epoch_rows=max_rows)
        expected = oracles(rows)
        for table in ("top2", "first_bid", "last_bid", "top_keys"):
            found = read_sink(root / "out" / table)
            assert_frame_equal(sort_all(naive(found)), sort_all(naive(expected[table])), check_dtypes=False)
        if count:
            ids = operators(root)
            history = engine.open(root / "state")
            for table, late in (("top2", "late"), ("first_bid", "late_hop"), ("last_bid", "late")):
                recorded = history.late(ids[table])  # no columns when nothing was ever late
                found_ids = recorded.get_column("id").to_list() if recorded.height else []
                assert sorted(found_ids) == sorted(expected[late].get_column("id").to_list())
                assert history.state(ids[table]).height == 0  # drained: every window fired and left the state
    finally:
        shutil.rmtree(root)


def test_the_output_is_append_only_and_the_state_holds_only_open_windows(tmp_path: Path) -> None:
    rows = make(7, 120)
    write(tmp_path, rows)
    plan = pipeline(tmp_path, SOURCE + WINDOWED)
    assert all(sink.changelog == "append" for sink in plan.plan.sinks)  # no key on the sinks, and none needed
    assert "Window TopN 2" in plan.explain() and "Window Deduplicate" in plan.explain()
    plan.run(once=True, max_epoch_rows=13)  # no drain: the last windows stay open
    watermark = max(int(r["ts"]) for r in rows) - DELAY_MS  # type: ignore[call-overload]
    history = engine.open(tmp_path / "state")
    ids = operators(tmp_path)
    # over a window aggregation, a window's rows arrive when it closes: ranked and emitted in the same epoch
    assert history.state(ids["top_keys"]).height == 0
    for table in ("top2", "first_bid"):
        state = history.state(ids[table])
        assert state.height > 0
        ends = state.select(pl.col("__p1").dt.epoch("ms")).to_series()  # PARTITION BY window_start, window_end
        assert (ends - 1 > watermark).all(), table  # only windows the watermark has not passed
        if table == "top2":  # at most n rows per open window and key
            assert state.group_by("__p0", "__p1", "__p2").len().get_column("len").max() <= 2
    # what was emitted so far is exactly the closed windows' final rows
    expected = oracles(rows)["top2"].filter(pl.col("we").dt.epoch("ms") - 1 <= watermark)
    assert_frame_equal(
        sort_all(naive(read_sink(tmp_path / "out" / "top2"))), sort_all(naive(expected)), check_dtypes=False
    )
    # a new run restores the open windows and ends as one straight run would
    write_jsonl(tmp_path / "bids" / "3.json", make(8, 10))
    pipeline(tmp_path, SOURCE + WINDOWED).run(once=True, drain=True, max_epoch_rows=4)
    everything = oracles(rows + make(8, 10))
    for table in ("top2", "first_bid", "last_bid", "top_keys"):
        found = read_sink(tmp_path / "out" / table)
        assert_frame_equal(sort_all(naive(found)), sort_all(naive(everything[table])), check_dtypes=False)


def test_a_window_ranking_that_is_not_partitioned_by_the_window_stays_updating(tmp_path: Path) -> None:
    sql = f"""{SOURCE}
    CREATE TABLE t (k STRING, id BIGINT, rn BIGINT) WITH ('connector' = 'delta', 'path' = 'out/t');
    INSERT INTO t SELECT k, id, rn FROM (
      SELECT *, ROW_NUMBER() OVER (PARTITION BY window_start, k ORDER BY price DESC) AS rn FROM {TUMBLE}
    ) WHERE rn <= 2;
    """
    try:
        pipeline(tmp_path, sql)
    except Exception as err:  # a Top-N over rows that may change: an append-only sink refuses it
        assert "updating result" in str(err) and "\n" not in str(err)
    else:
        raise AssertionError("an updating Top-N was accepted by an append-only sink")


# -- state TTL -------------------------------------------------------------------------------------------------

TTL = """CREATE TABLE orders (id BIGINT, k STRING, amount INT, ts TIMESTAMP(3),
  WATERMARK FOR ts AS ts - INTERVAL '1' SECOND)
WITH ('connector' = 'filesystem', 'path' = 'orders', 'format' = 'json');
CREATE TABLE top2 (k STRING, id BIGINT, amount INT, rn BIGINT, PRIMARY KEY (k, rn) NOT ENFORCED)
WITH ('connector' = 'delta', 'path' = 'out/top2');
CREATE TABLE firsts (k STRING, id BIGINT) WITH ('connector' = 'delta', 'path' = 'out/firsts');
SET 'state.ttl' = '10 s';
SET 'state.ttl.time' = 'event';
INSERT INTO top2 SELECT k, id, amount, rn FROM (
  SELECT *, ROW_NUMBER() OVER (PARTITION BY k ORDER BY amount DESC) AS rn FROM orders) WHERE rn <= 2;
INSERT INTO firsts SELECT k, id FROM (
  SELECT /*+ STATE_TTL('10 s', 'event') */ *, ROW_NUMBER() OVER (PARTITION BY k ORDER BY ts) AS rn FROM orders
) WHERE rn = 1;
"""


def order(i: int, k: str, amount: int, seconds: int) -> dict[str, object]:
    return {"id": i, "k": k, "amount": amount, "ts": BASE_MS + seconds * 1000}


def test_top_n_and_deduplication_forget_partitions_unchanged_for_the_ttl(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "orders" / "1.json", [order(1, "a", 9, 0), order(2, "a", 8, 1), order(3, "b", 5, 2)])
    plan = pipeline(tmp_path, TTL)
    assert plan.explain().count("TTL 0:00:10 (event time)") == 2
    plan.run(once=True)
    ids = {sink: op for sink, op in operators(tmp_path).items()}
    history = engine.open(tmp_path / "state")
    assert sorted(history.state(ids["top2"]).get_column("k").to_list()) == ["a", "a", "b"]

    # b keeps changing for 40 s of event time; a's partition, unchanged for longer than 10 s, leaves the state
    write_jsonl(tmp_path / "orders" / "2.json", [order(10 + s, "b", s, s) for s in range(3, 40)])
    pipeline(tmp_path, TTL).run(once=True, max_epoch_rows=5)
    history = engine.open(tmp_path / "state")
    assert set(history.state(ids["top2"]).get_column("k").to_list()) == {"b"}
    assert set(history.state(ids["firsts"]).get_column("__p0").to_list()) == {"b"}

    # a comes back: its ranking and its first row start afresh, as in Flink
    write_jsonl(tmp_path / "orders" / "3.json", [order(99, "a", 1, 41)])
    pipeline(tmp_path, TTL).run(once=True, drain=True)
    top = read_sink(tmp_path / "out" / "top2").filter(pl.col("k") == "a").sort("rn")
    assert top.select("id", "amount", "rn").rows() == [(99, 1, 1), (2, 8, 2)]  # rank 1 replaced; rank 2 as it was
    firsts = read_sink(tmp_path / "out" / "firsts").filter(pl.col("k") == "a").sort("id")
    assert firsts.get_column("id").to_list() == [1, 99]  # without the TTL, 99 would be a duplicate of 1
    tables = engine.open(tmp_path / "state").tables(kind="state")
    assert any(name.endswith("/touched") for name in tables.get_column("name").to_list())


def test_without_a_ttl_top_n_keeps_every_partition(tmp_path: Path) -> None:
    sql = TTL.replace("SET 'state.ttl' = '10 s';\nSET 'state.ttl.time' = 'event';\n", "")
    sql = sql.replace("/*+ STATE_TTL('10 s', 'event') */ ", "")
    write_jsonl(tmp_path / "orders" / "1.json", [order(1, "a", 9, 0), order(2, "a", 8, 1)])
    write_jsonl(tmp_path / "orders" / "2.json", [order(10 + s, "b", s, s) for s in range(3, 40)])
    write_jsonl(tmp_path / "orders" / "3.json", [order(99, "a", 1, 41)])
    pipeline(tmp_path, sql).run(once=True, drain=True, max_epoch_rows=5)
    top = read_sink(tmp_path / "out" / "top2").filter(pl.col("k") == "a").sort("rn")
    assert top.select("id", "rn").rows() == [(1, 1), (2, 2)]
    assert read_sink(tmp_path / "out" / "firsts").filter(pl.col("k") == "a").get_column("id").to_list() == [1]
