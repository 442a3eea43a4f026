"""Operators composed: Top-N over a join, GROUP BY over window results, UNION ALL of window aggregations."""

from __future__ import annotations

from pathlib import Path

from polars.testing import assert_frame_equal

from tests import test_joins as j
from tests.helpers import duck, read_sink, run, sort_all

SQL = (
    j.SOURCES
    + """
CREATE TABLE topj (cust BIGINT, oid BIGINT, pid BIGINT, rn BIGINT, PRIMARY KEY (cust, rn) NOT ENFORCED)
WITH ('connector' = 'delta', 'path' = 'topj');
INSERT INTO topj SELECT cust, oid, pid, rn FROM (
  SELECT o.cust, o.id AS oid, p.id AS pid,
         ROW_NUMBER() OVER (PARTITION BY o.cust ORDER BY o.amount + p.paid DESC, o.id, p.id) AS rn
  FROM orders o JOIN payments p ON o.cust = p.cust) WHERE rn <= 2;
CREATE TEMPORARY VIEW w AS SELECT cust, window_start, COUNT(*) AS n
  FROM TABLE(TUMBLE(TABLE orders, DESCRIPTOR(ts), INTERVAL '10' SECOND)) GROUP BY cust, window_start, window_end;
CREATE TABLE busiest (cust BIGINT, windows BIGINT, most BIGINT, PRIMARY KEY (cust) NOT ENFORCED)
WITH ('connector' = 'delta', 'path' = 'busiest');
INSERT INTO busiest SELECT cust, COUNT(*), MAX(n) FROM w GROUP BY cust;
CREATE TABLE both_sides (src STRING, cust BIGINT, ws TIMESTAMP(3), n BIGINT)
WITH ('connector' = 'delta', 'path' = 'both');
INSERT INTO both_sides SELECT 'o', cust, window_start, n FROM w
UNION ALL SELECT 'p', cust, window_start, COUNT(*)
  FROM TABLE(TUMBLE(TABLE payments, DESCRIPTOR(ts), INTERVAL '10' SECOND)) GROUP BY cust, window_start, window_end;
"""
)


def test_operators_compose(tmp_path: Path) -> None:
    orders, payments = j.make(61, 120, 0), j.make(62, 120, 1000)
    j.write(tmp_path, orders, payments)
    run(tmp_path, SQL, max_epoch_rows=9)
    o, p = j.frame(orders), j.frame(payments)
    top = duck(
        """SELECT cust, oid, pid, rn FROM (SELECT o.cust, o.id AS oid, p.id AS pid, row_number() OVER (
                    PARTITION BY o.cust ORDER BY o.amount + p.paid DESC, o.id, p.id) AS rn
                  FROM o JOIN p ON o.cust = p.cust) WHERE rn <= 2""",
        o=o,
        p=p,
    )
    assert_frame_equal(sort_all(read_sink(tmp_path / "topj")), sort_all(top), check_dtypes=False)
    final = max(int(r["ts"]) for r in orders + payments) - 5000  # type: ignore[call-overload]
    windows = f"""WITH t AS (SELECT 'o' AS src, cust, epoch_ms(ts) - epoch_ms(ts) % 10000 AS ws FROM o
                            UNION ALL SELECT 'p', cust, epoch_ms(ts) - epoch_ms(ts) % 10000 FROM p),
                  w AS (SELECT src, cust, ws, count(*) AS n FROM t WHERE ws + 10000 - 1 <= {final}
                        GROUP BY src, cust, ws)"""
    busiest = duck(
        windows + " SELECT cust, count(*) AS windows, max(n) AS most FROM w WHERE src = 'o' GROUP BY cust", o=o, p=p
    )
    assert_frame_equal(sort_all(read_sink(tmp_path / "busiest")), sort_all(busiest), check_dtypes=False)
    both = duck(windows + " SELECT src, cust, make_timestamp(ws * 1000) AS ws, n FROM w", o=o, p=p)
    actual = read_sink(tmp_path / "both")
    actual = actual.with_columns(actual.get_column("ws").dt.replace_time_zone(None))
    assert_frame_equal(sort_all(actual), sort_all(both), check_dtypes=False)
