"""Cascaded window aggregations and window joins against DuckDB, for TUMBLE, HOP, CUMULATE and SESSION.

A GROUP BY over a window aggregation's window_start and window_end is itself a window aggregation (final,
append-only rows), as in Flink (Nexmark q5's shape); so is a join of two window aggregations on their
windows. The oracle computes the inner window aggregation in DuckDB with the per-row watermark rule (see
tests/test_windows.py), then the outer query over its result.
"""

from __future__ import annotations

import random
from pathlib import Path

import polars as pl
import pytest

from sql import SqlError, plan_script
from tests.helpers import duck, naive, read_sink, run
from tests.test_windows import BASE_MS, DELAY_S, MARKS, SOURCE, WINDOWS, frame, make_rows, write_input

SESSION = "SESSION(TABLE events PARTITION BY k, DESCRIPTOR(ts), INTERVAL '7' SECOND)"
TVFS = {name: tvf for name, (tvf, _) in WINDOWS.items() if name != "tumble_offset"} | {"session": SESSION}


def inner_oracle(name: str, out: str = "inner_w", where: str = "TRUE") -> str:
    """DuckDB SQL (after MARKS) for `out(k, ws, we, n, s)`: the final rows of the inner window aggregation over
    the rows matching `where` (each judged by its watermark among all the source's rows)."""
    rows = f"(SELECT * FROM marks WHERE {where})"
    if name == "session":
        gap = 7
        return f"""
        , {out}_ontime AS (SELECT * FROM {rows}
            WHERE wm IS NULL OR ts + INTERVAL {gap} SECOND - INTERVAL 1 MILLISECOND > wm),
        {out}_flagged AS (
          SELECT *, CASE WHEN ts <= max(ts) OVER (PARTITION BY k ORDER BY ts, seq
                                                ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING)
                                  + INTERVAL {gap} SECOND THEN 0 ELSE 1 END AS fresh
          FROM {out}_ontime),
        {out}_sessions AS (SELECT *, sum(fresh) OVER (PARTITION BY k ORDER BY ts, seq) AS sid FROM {out}_flagged),
        {out} AS (
          SELECT k, min(ts) AS ws, max(ts) + INTERVAL {gap} SECOND AS we, count(*) AS n, sum(v) AS s
          FROM {out}_sessions GROUP BY k, sid
          HAVING max(ts) + INTERVAL {gap} SECOND - INTERVAL 1 MILLISECOND <= (SELECT fwm FROM final))
        """
    expansion = WINDOWS[name][1]
    return f"""
    , {out}_assigned AS (
      SELECT r.*, make_timestamp(s * 1000) AS ws, make_timestamp((s + len) * 1000) AS we
      FROM {rows} r, {expansion} WHERE s + len > e),
    {out} AS (
      SELECT k, ws, we, count(*) AS n, sum(v) AS s FROM {out}_assigned
      WHERE (wm IS NULL OR we - INTERVAL 1 MILLISECOND > wm)
        AND we - INTERVAL 1 MILLISECOND <= (SELECT fwm FROM final)
      GROUP BY k, ws, we)
    """


def inner_sql(name: str) -> str:
    return (
        f"SELECT k, COUNT(*) AS n, SUM(v) AS s, window_start, window_end FROM TABLE({TVFS[name]}) "
        "GROUP BY k, window_start, window_end"
    )


def rows_for(name: str) -> list[dict[str, object]]:
    if name != "session":
        return make_rows(21, 120)
    rng = random.Random(8)
    rows, t = [], BASE_MS
    for i in range(120):  # bursts separated by quiet gaps, some late rows
        t += rng.choice([1000, 1000, 2000, 9000, 15000])
        ts = t - rng.randint(0, 3) * 1000 if rng.random() > 0.08 else t - 60_000
        rows.append({"seq": i, "k": rng.choice(["a", "b", None]), "v": rng.randint(1, 7), "ts": ts})
    return rows


def same(actual: pl.DataFrame, expected: pl.DataFrame) -> None:
    actual = naive(actual)
    expected = naive(expected.rename(dict(zip(expected.columns, actual.columns, strict=True)))).cast(
        actual.schema  # type: ignore[arg-type]
    )
    assert actual.height > 0
    assert sorted(actual.rows(), key=repr) == sorted(expected.rows(), key=repr)


@pytest.mark.parametrize("name", list(TVFS))
@pytest.mark.parametrize("max_rows", [9, None])
def test_group_by_over_a_window_aggregation_is_a_window_aggregation(
    tmp_path: Path, name: str, max_rows: int | None
) -> None:
    rows = rows_for(name)
    write_input(tmp_path, rows)
    sql = (
        SOURCE
        + f"""
    CREATE TABLE out (ws TIMESTAMP(3), we TIMESTAMP(3), top BIGINT, total BIGINT, keys BIGINT)
    WITH ('connector' = 'delta', 'path' = 'out');
    INSERT INTO out SELECT window_start, window_end, MAX(n), SUM(s), COUNT(*)
    FROM ({inner_sql(name)}) GROUP BY window_start, window_end;
    """
    )
    explained = plan_script(sql).explain()
    assert explained.count("WindowAggregate") == 2 and "GroupAggregate" not in explained
    run(tmp_path, sql, max_epoch_rows=max_rows)
    expected = duck(
        MARKS + inner_oracle(name) + " SELECT ws, we, max(n), sum(s), count(*) FROM inner_w GROUP BY ws, we",
        src=frame(rows),
    )
    same(read_sink(tmp_path / "out"), expected)


@pytest.mark.parametrize("name", list(TVFS))
def test_join_of_two_window_aggregations_is_a_window_join(tmp_path: Path, name: str) -> None:
    rows = rows_for(name)
    write_input(tmp_path, rows)
    sql = (
        SOURCE
        + f"""
    CREATE TEMPORARY VIEW counts AS {inner_sql(name)};
    CREATE TEMPORARY VIEW evens AS SELECT k, COUNT(*) AS evens, window_start, window_end
      FROM TABLE({TVFS[name]}) WHERE MOD(v, 2) = 0 GROUP BY k, window_start, window_end;
    CREATE TABLE out (k STRING, ws TIMESTAMP(3), we TIMESTAMP(3), n BIGINT, evens BIGINT)
    WITH ('connector' = 'delta', 'path' = 'out');
    INSERT INTO out SELECT c.k, c.window_start, c.window_end, c.n, e.evens FROM counts c JOIN evens e
      ON c.k = e.k AND c.window_start = e.window_start AND c.window_end = e.window_end;
    """
    )
    assert "WindowJoin" in plan_script(sql).explain()
    run(tmp_path, sql, max_epoch_rows=11)
    # The even rows' aggregation sees only even rows, but their watermarks come from every row.
    expected = duck(
        MARKS
        + inner_oracle(name)
        + inner_oracle(name, out="even_w", where="v % 2 = 0")
        + """ SELECT i.k, i.ws, i.we, i.n, e.n FROM inner_w i JOIN even_w e
              ON i.k = e.k AND i.ws = e.ws AND i.we = e.we""",
        src=frame(rows),
    )
    same(read_sink(tmp_path / "out"), expected)


def test_a_windowed_view_through_a_projection_cascades(tmp_path: Path) -> None:
    """window_start and window_end passed on by a WHERE and a projection keep their meaning."""
    rows = make_rows(5, 90)
    write_input(tmp_path, rows)
    sql = (
        SOURCE
        + f"""
    CREATE TEMPORARY VIEW per_k AS SELECT k, n, window_start, window_end FROM ({inner_sql("tumble")}) WHERE n > 1;
    CREATE TABLE out (ws TIMESTAMP(3), keys BIGINT) WITH ('connector' = 'delta', 'path' = 'out');
    INSERT INTO out SELECT window_start, COUNT(*) FROM per_k GROUP BY window_start, window_end;
    """
    )
    run(tmp_path, sql, max_epoch_rows=7)
    expected = duck(
        MARKS + inner_oracle("tumble") + " SELECT ws, count(*) FROM inner_w WHERE n > 1 GROUP BY ws, we",
        src=frame(rows),
    )
    same(read_sink(tmp_path / "out"), expected)


def test_an_updating_result_over_windows_explains_the_window_aggregation() -> None:
    """Grouping a windowed result by window_start alone, or by a shifted copy of it, is not a window aggregation:
    the message says what makes it one, and does not send the user to a PRIMARY KEY."""
    sql = (
        SOURCE
        + f"""
    CREATE TABLE out (ws TIMESTAMP(3), top BIGINT) WITH ('connector' = 'delta', 'path' = 'out');
    INSERT INTO out SELECT window_start, MAX(n) FROM ({inner_sql("tumble")}) GROUP BY window_start;
    """
    )
    with pytest.raises(SqlError) as raised:
        plan_script(sql)
    assert "both window_start and window_end" in str(raised.value)
    renamed = sql.replace(
        f"FROM ({inner_sql('tumble')}) GROUP BY window_start",
        f"FROM (SELECT window_start + INTERVAL '1' SECOND AS ws, window_end AS we, n FROM ({inner_sql('tumble')})) "
        "GROUP BY ws, we",
    ).replace("SELECT window_start, MAX(n)", "SELECT ws, MAX(n)")
    with pytest.raises(SqlError) as raised:
        plan_script(renamed)
    message = str(raised.value)
    assert "window_start and window_end" in message and "PRIMARY KEY" not in message
    assert DELAY_S  # the source declares a watermark


def test_nexmark_q5_shape_with_renamed_window_columns(tmp_path: Path) -> None:
    """Flink's own q5: window columns renamed (starttime, endtime), the max per window joined back."""
    rows = make_rows(9, 120)
    write_input(tmp_path, rows)
    hop = TVFS["hop"]
    counts = (
        f"SELECT k, COUNT(*) AS n, window_start AS starttime, window_end AS endtime FROM TABLE({hop}) "
        "GROUP BY k, window_start, window_end"
    )
    sql = (
        SOURCE
        + f"""
    CREATE TABLE out (k STRING, n BIGINT, starttime TIMESTAMP(3)) WITH ('connector' = 'delta', 'path' = 'out');
    INSERT INTO out SELECT AuctionBids.k, AuctionBids.n, AuctionBids.starttime FROM ({counts}) AS AuctionBids
    JOIN (SELECT MAX(CountBids.n) AS maxn, CountBids.starttime, CountBids.endtime FROM ({counts}) AS CountBids
          GROUP BY CountBids.starttime, CountBids.endtime) AS MaxBids
    ON AuctionBids.starttime = MaxBids.starttime AND AuctionBids.endtime = MaxBids.endtime
       AND AuctionBids.n >= MaxBids.maxn;
    """
    )
    explained = plan_script(sql).explain()
    assert "WindowJoin" in explained and "GroupAggregate" not in explained and "retract" not in explained
    run(tmp_path, sql, max_epoch_rows=13)
    expected = duck(
        MARKS
        + inner_oracle("hop")
        + """, top AS (SELECT ws, we, max(n) AS maxn FROM inner_w GROUP BY ws, we)
        SELECT i.k, i.n, i.ws FROM inner_w i JOIN top t ON i.ws = t.ws AND i.we = t.we AND i.n >= t.maxn""",
        src=frame(rows),
    )
    same(read_sink(tmp_path / "out"), expected)
