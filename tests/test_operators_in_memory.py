"""Each stateful operator kind run in memory by the operator harness: no state directory, no runner.

Expected rows are written by hand from the SQL semantics; the state assertions check what the operator keeps
(and forgets) between epochs, and a restore from its committed change log.
"""

from __future__ import annotations

import polars as pl

from sql.plan import Aggregate, Join, OverAggregate, TopN
from tests.operator_harness import OperatorHarness, at

EVENTS = """
CREATE TABLE events (k STRING, v INT, ts TIMESTAMP(3), WATERMARK FOR ts AS ts - INTERVAL '1' SECOND)
WITH ('connector' = 'filesystem', 'path' = 'in', 'format' = 'json');
"""
ORDERS = """
CREATE TABLE orders (id BIGINT, cust BIGINT, ts TIMESTAMP(3), WATERMARK FOR ts AS ts)
WITH ('connector' = 'filesystem', 'path' = 'orders', 'format' = 'json');
CREATE TABLE payments (id BIGINT, cust BIGINT, ts TIMESTAMP(3), WATERMARK FOR ts AS ts)
WITH ('connector' = 'filesystem', 'path' = 'payments', 'format' = 'json');
"""


def rows(frame: pl.DataFrame, *columns: str) -> list[tuple[object, ...]]:
    return sorted(frame.select(columns).iter_rows(), key=repr)


def test_window_aggregate_fires_by_watermark_and_forgets_the_window() -> None:
    harness = OperatorHarness(
        EVENTS
        + """CREATE TABLE out (k STRING, ws TIMESTAMP(3), c BIGINT, s BIGINT)
        WITH ('connector' = 'delta', 'path' = 'o');
        INSERT INTO out SELECT k, window_start, COUNT(*) AS c, SUM(v) AS s
        FROM TABLE(TUMBLE(TABLE events, DESCRIPTOR(ts), INTERVAL '10' SECOND)) GROUP BY k, window_start, window_end;""",
        Aggregate,
    )
    out = harness.feed(events=[("a", 1, at(1)), ("b", 2, at(2)), ("a", 3, at(9))])
    assert out.height == 0  # watermark 8 s: the window [0, 10) is open
    assert rows(harness.state(), "k", "__rows") == [("a", 2), ("b", 1)]
    out = harness.feed(events=[("a", 5, at(12)), ("a", 7, at(3))])  # watermark 11 s: [0, 10) closes
    assert rows(out, "k", "c", "s") == [("a", 2, 4), ("b", 1, 2)]
    assert rows(harness.state(), "k", "window_start") == [("a", at(10))]
    # the row at 3 s came after the one at 12 s had moved its source's watermark to 11 s: late, kept aside
    assert rows(harness.late_rows(), "k", "v") == [("a", 7)]
    harness.feed(events=[("b", 1, at(4))])
    assert rows(harness.late_rows(), "k", "v") == [("a", 7), ("b", 1)]
    harness.commit()
    log = harness.change_log()
    # one change-log row per key changed since the last checkpoint: the fired windows leave as tombstones
    assert rows(log.filter(pl.col("_deleted")), "k", "window_start") == [("a", at(0)), ("b", at(0))]
    assert rows(log.filter(~pl.col("_deleted")), "k", "window_start") == [("a", at(10))]
    restored = harness.restored()
    assert rows(restored.frames()[""], "k", "__rows") == [("a", 1)]


def test_group_aggregate_emits_a_changelog_and_keeps_one_row_per_group() -> None:
    harness = OperatorHarness(
        EVENTS
        + """CREATE TABLE out (k STRING, s BIGINT, PRIMARY KEY (k) NOT ENFORCED)
        WITH ('connector' = 'delta', 'path' = 'o');
        INSERT INTO out SELECT k, SUM(v) AS s FROM events GROUP BY k;""",
        Aggregate,
        parallelism=2,
    )
    out = harness.feed(events=[("a", 1, at(1)), ("b", 2, at(1))])
    assert rows(out, "__op", "k", "s") == [("+I", "a", 1), ("+I", "b", 2)]
    harness.commit()
    out = harness.feed(events=[("a", 4, at(2))])
    assert out.select("__op", "k", "s").rows() == [("-U", "a", 1), ("+U", "a", 5)]
    assert rows(harness.state(), "k", "__rows") == [("a", 2), ("b", 1)]
    harness.commit()
    assert harness.change_log().height == 3  # a and b, then a again: one row per changed group and checkpoint
    assert rows(harness.restored().frames()[""], "k", "__rows") == [("a", 2), ("b", 1)]


def test_regular_join_pairs_rows_across_epochs_and_pads_a_left_join() -> None:
    harness = OperatorHarness(
        ORDERS
        + """CREATE TABLE out (o BIGINT, p BIGINT, PRIMARY KEY (o, p) NOT ENFORCED)
        WITH ('connector' = 'delta', 'path' = 'o');
        INSERT INTO out SELECT o.id, p.id FROM orders o LEFT JOIN payments p ON o.cust = p.cust;""",
        Join,
    )
    out = harness.feed(orders=[(1, 10, at(1)), (2, 20, at(1))])
    assert rows(out, "__op", "id", "id0") == [("+I", 1, None), ("+I", 2, None)]
    out = harness.feed(payments=[(7, 10, at(2))])
    assert rows(out, "__op", "id", "id0") == [("+I", 1, 7), ("-D", 1, None)]
    assert harness.state("left").height == 2 and harness.state("right").height == 1
    harness.commit()
    restored = harness.restored()
    assert restored.state_rows == 3


def test_interval_join_evicts_rows_once_the_watermark_passes_their_bound() -> None:
    harness = OperatorHarness(
        ORDERS
        + """CREATE TABLE out (o BIGINT, p BIGINT) WITH ('connector' = 'delta', 'path' = 'o');
        INSERT INTO out SELECT o.id, p.id FROM orders o JOIN payments p
        ON o.cust = p.cust AND p.ts BETWEEN o.ts AND o.ts + INTERVAL '5' SECOND;""",
        Join,
    )
    out = harness.feed(orders=[(1, 10, at(1))], payments=[(7, 10, at(3)), (8, 10, at(9))])
    assert rows(out, "id", "id0") == [(1, 7)]
    harness.feed(orders=[(2, 30, at(20))], payments=[(9, 30, at(20))])
    # watermark 20 s: order 1 (bound 6 s) and payments at 3 s and 9 s (bounds 3 s, 9 s) are evicted
    assert rows(harness.state("left"), "__k0") == [(30,)]
    assert rows(harness.state("right"), "__k0") == [(30,)]
    harness.feed(orders=[(3, 10, at(2))])  # behind the watermark: late
    assert rows(harness.late_rows("late_left"), "id") == [(3,)]


def test_top_n_keeps_the_top_rows_per_partition() -> None:
    harness = OperatorHarness(
        EVENTS
        + """CREATE TABLE out (k STRING, v INT, rn BIGINT, PRIMARY KEY (k, rn) NOT ENFORCED)
        WITH ('connector' = 'delta', 'path' = 'o');
        INSERT INTO out SELECT k, v, rn FROM (
          SELECT *, ROW_NUMBER() OVER (PARTITION BY k ORDER BY v DESC) AS rn FROM events) WHERE rn <= 2;""",
        TopN,
    )
    out = harness.feed(events=[("a", 1, at(1)), ("a", 5, at(1))])
    assert rows(out, "__op", "v", "rn") == [("+I", 1, 2), ("+I", 5, 1)]
    out = harness.feed(events=[("a", 3, at(2))])
    assert rows(out, "__op", "v", "rn") == [("+I", 3, 2), ("-D", 1, 2)]
    assert sorted(harness.state()["v"].to_list()) == [3, 5]  # over an append-only input, v = 1 can never rank


def test_deduplication_emits_the_first_row_once_the_watermark_passes_it() -> None:
    harness = OperatorHarness(
        EVENTS
        + """CREATE TABLE out (k STRING, v INT) WITH ('connector' = 'delta', 'path' = 'o');
        INSERT INTO out SELECT k, v FROM (
          SELECT *, ROW_NUMBER() OVER (PARTITION BY k ORDER BY ts) AS rn FROM events) WHERE rn = 1;""",
        TopN,
    )
    assert harness.operator.node.first_by_time
    out = harness.feed(events=[("a", 2, at(5)), ("a", 1, at(4.5))])
    assert out.height == 0  # watermark 4 s: a row at 4.2 s could still come
    out = harness.feed(events=[("b", 9, at(10))])
    assert rows(out, "k", "v") == [("a", 1)]
    # an emitted key keeps only the fact that it was emitted; b waits for the watermark
    assert rows(harness.state(), "k", "v", "__emitted") == [("b", 9, False), (None, None, True)]
    harness.feed(events=[("c", 3, at(1))])
    assert rows(harness.late_rows(), "k") == [("c",)]


def test_over_aggregate_emits_rows_in_time_order_with_their_frame() -> None:
    harness = OperatorHarness(
        EVENTS
        + """CREATE TABLE out (k STRING, v INT, s BIGINT) WITH ('connector' = 'delta', 'path' = 'o');
        INSERT INTO out SELECT k, v, SUM(v) OVER (PARTITION BY k ORDER BY ts
          ROWS BETWEEN 1 PRECEDING AND CURRENT ROW) AS s FROM events;""",
        OverAggregate,
    )
    out = harness.feed(events=[("a", 1, at(1)), ("a", 10, at(3)), ("a", 100, at(2))])
    assert out.select("v", "__over0").rows() == [(1, 1), (100, 101)]  # watermark 2 s: the row at 3 s waits
    out = harness.feed(events=[("a", 1000, at(9))])
    assert out.select("v", "__over0").rows() == [(10, 110)]
    # emitted rows stay only as long as a later frame reaches them: the last one; the row at 9 s waits
    assert rows(harness.state(), "v", "__emitted") == [(10, True), (1000, False)]
