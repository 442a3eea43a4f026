"""HOP and CUMULATE aggregation kept as slices (engine/operators/window_slices.py) against DuckDB.

Rows arrive out of order and some late by a random lag, so that many are late for some, not all, of their
windows (a straggler counts only in the windows still open). Hypothesis varies the data, the windows (with
offsets, several windows per slice) and the epoch split, and the number of worker threads: the result must match
the DuckDB oracle (tests/test_windows.py computes each row's watermark there).
"""

from __future__ import annotations

import random
import shutil
import tempfile
from pathlib import Path

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.helpers import duck, examples, naive, read_sink, run, sort_all
from tests.scaleout_helpers import assert_same_run, roots, run_with, same, states
from tests.test_windows import BASE_MS, DELAY_S, MARKS, SOURCE, assert_same, frame, write_input

SINK = """
CREATE TABLE out (k STRING, ws TIMESTAMP(3), we TIMESTAMP(3), c BIGINT, cv BIGINT, s BIGINT,
                  a DOUBLE, mn INT, mx INT, cf BIGINT, e BIGINT)
WITH ('connector' = 'delta', 'path' = 'out');
"""
AGGS = "COUNT(*), COUNT(v), SUM(v), AVG(v), MIN(v), MAX(v), COUNT(*) FILTER (WHERE v > 3), SUM(v) * 2 + MAX(v)"
DUCK_AGGS = "count(*), count(v), sum(v), avg(v), min(v), max(v), count(*) FILTER (WHERE v > 3), sum(v) * 2 + max(v)"

#: name -> (window TVF, DuckDB expansion of each row into its windows: (start s, length len) in ms)
WINDOWS = {
    "hop_5_windows": (
        "HOP(TABLE events, DESCRIPTOR(ts), INTERVAL '2' SECOND, INTERVAL '10' SECOND)",
        "unnest(range(0, 5)) AS h(i), unnest([e - (e % 2000) - i * 2000]) AS t(s), unnest([10000]) AS z(len)",
    ),
    "hop_offset": (
        "HOP(TABLE events, DESCRIPTOR(ts), INTERVAL '3' SECOND, INTERVAL '9' SECOND, INTERVAL '1' SECOND)",
        "unnest(range(0, 3)) AS h(i), unnest([e - ((e - 1000) % 3000) - i * 3000]) AS t(s), unnest([9000]) AS z(len)",
    ),
    "cumulate": (
        "CUMULATE(TABLE events, DESCRIPTOR(ts), INTERVAL '3' SECOND, INTERVAL '12' SECOND)",
        "unnest(range(1, 5)) AS h(i), unnest([e - (e % 12000)]) AS t(s), unnest([i * 3000]) AS z(len)",
    ),
    "cumulate_offset": (
        "CUMULATE(TABLE events, DESCRIPTOR(ts), INTERVAL '4' SECOND, INTERVAL '8' SECOND, INTERVAL '3' SECOND)",
        "unnest(range(1, 3)) AS h(i), unnest([e - ((e - 3000) % 8000)]) AS t(s), unnest([i * 4000]) AS z(len)",
    ),
}


def make_rows(seed: int, count: int, late_share: float) -> list[dict[str, object]]:
    rng = random.Random(seed)
    rows = []
    for i in range(count):
        lag = rng.randint(DELAY_S, 16) if rng.random() < late_share else rng.randint(0, DELAY_S - 1)
        rows.append(
            {
                "seq": i,
                "k": rng.choice(["a", "b", "c", None]),
                "v": rng.choice([None, 1, 2, 3, 4, 5, 6, 7]),
                "ts": max(BASE_MS + i * 700 - lag * 1000 - rng.randint(0, 999), BASE_MS),
            }
        )
    return rows


def query(window: str) -> str:
    return (
        f"INSERT INTO out SELECT k, window_start, window_end, {AGGS} FROM TABLE({window}) "
        "GROUP BY k, window_start, window_end;"
    )


def oracle(rows: list[dict[str, object]], expansion: str, drained: bool = False) -> pl.DataFrame:
    final = "TIMESTAMP '9999-01-01'" if drained else "(SELECT fwm FROM final)"
    return duck(
        MARKS
        + f"""
        , assigned AS (
          SELECT marks.*, make_timestamp(s * 1000) AS ws, make_timestamp((s + len) * 1000) AS we
          FROM marks, {expansion} WHERE s + len > e AND s <= e)
        SELECT k, ws, we, {DUCK_AGGS} FROM assigned
        WHERE (wm IS NULL OR we - INTERVAL 1 MILLISECOND > wm)
          AND we - INTERVAL 1 MILLISECOND <= {final}
        GROUP BY k, ws, we""",
        src=frame(rows),
    )


def late_oracle(rows: list[dict[str, object]], expansion: str) -> list[int]:
    """The rows late for at least one of their windows (the late-rows table holds them, with how many)."""
    found = duck(
        MARKS
        + f"""
        SELECT seq FROM marks, {expansion} WHERE s + len > e AND s <= e
        GROUP BY seq, wm
        HAVING bool_or(wm IS NOT NULL AND make_timestamp((s + len) * 1000) - INTERVAL 1 MILLISECOND <= wm)
        ORDER BY seq""",
        src=frame(rows),
    )
    return found.get_column("seq").to_list()


def streamed(root: Path, window: str, max_rows: int | None, workers: int = 1) -> pl.DataFrame:
    parallel = f"SET 'parallelism.default' = '{workers}';\n" if workers > 1 else ""
    run(root, parallel + SOURCE + SINK + query(window), max_epoch_rows=max_rows)
    return naive(read_sink(root / "out"))


@settings(max_examples=examples(12), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    seed=st.integers(0, 10_000),
    count=st.integers(0, 90),
    max_rows=st.one_of(st.none(), st.integers(1, 25)),
    window=st.sampled_from(list(WINDOWS)),
    late_share=st.sampled_from([0.0, 0.3]),
    workers=st.sampled_from([1, 2]),
)
def test_sliced_windows_match_duckdb_whatever_the_epochs(
    seed: int, count: int, max_rows: int | None, window: str, late_share: float, workers: int
) -> None:
    root = Path(tempfile.mkdtemp())
    try:
        rows = make_rows(seed, count, late_share)
        write_input(root, rows, files=2)
        tvf, expansion = WINDOWS[window]
        assert_same(streamed(root, tvf, max_rows, workers), oracle(rows, expansion))
    finally:
        shutil.rmtree(root)


def test_stragglers_count_in_open_windows_and_late_rows_are_recorded(tmp_path: Path) -> None:
    rows = make_rows(17, 160, late_share=0.4)
    write_input(tmp_path, rows)
    tvf, expansion = WINDOWS["hop_5_windows"]
    assert_same(streamed(tmp_path, tvf, max_rows=9), oracle(rows, expansion))
    late = pl.read_delta(str(next((tmp_path / "state" / "operators").glob("*/late"))))
    expected = late_oracle(rows, expansion)
    assert expected and sorted(late.get_column("seq").to_list()) == expected
    assert late.get_column("_reason").str.contains(r"^[1-5] of 5 window").all()
    assert late.get_column("_reason").str.contains("5 of 5").any()  # late for all five
    assert not late.get_column("_reason").str.contains("5 of 5").all()  # stragglers: late for some


def test_state_holds_slices_and_forgets_them_after_their_last_window(tmp_path: Path) -> None:
    rows = make_rows(5, 120, late_share=0.3)
    write_input(tmp_path, rows)
    streamed(tmp_path, WINDOWS["hop_5_windows"][0], max_rows=13)
    log = pl.read_delta(str(next((tmp_path / "state" / "operators").glob("window-agg-*")) / "state"))
    assert {"k", "slice_start", "slice_end", "__rows", "sum_v__sum", "max_v__max", "_kg"} <= set(log.columns)
    widths = log.filter(~pl.col("_deleted")).select((pl.col("slice_end") - pl.col("slice_start")).dt.total_seconds())
    assert set(widths.to_series().to_list()) <= {2, 10}  # a slice, or a straggler's window
    assert 2 in widths.to_series().to_list()
    live = log.filter(pl.col("_epoch") == pl.col("_epoch").max().over("k", "slice_start", "slice_end"))
    final_wm = max(r["ts"] for r in rows) - DELAY_S * 1000  # type: ignore[type-var]
    for start, end in live.filter(~pl.col("_deleted")).select("slice_start", "slice_end").iter_rows():
        last_window_end = start.timestamp() * 1000 + 10_000 if (end - start).total_seconds() == 2 else None
        last_window_end = last_window_end or end.timestamp() * 1000
        assert last_window_end - 1 > final_wm  # slices whose last window fired left the state


def test_sliced_windows_on_ray_workers_match_the_single_process_run(tmp_path: Path) -> None:
    ray = pytest.importorskip("ray")
    started = not ray.is_initialized()
    if started:
        ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False)
    try:
        rows = make_rows(23, 150, late_share=0.3)
        single, two = roots(tmp_path, lambda r: write_input(r, rows), "single", "two")
        sql = SOURCE + SINK + SINK.replace("out", "cum") + query(WINDOWS["hop_5_windows"][0])
        sql += query(WINDOWS["cumulate"][0]).replace("INTO out", "INTO cum")
        run_with(single, sql, None, max_epoch_rows=14)
        run_with(two, sql, 2, max_epoch_rows=14)
        assert_same_run(single, two, ["out", "cum"], sources=("events",))
        want, got = states(single), states(two)
        assert sorted(got) == sorted(want)
        for name, frame in want.items():
            same(sort_all(got[name]), sort_all(frame), f"state table {name}")
        assert_same(naive(read_sink(two / "out")), oracle(rows, WINDOWS["hop_5_windows"][1]))
        assert_same(naive(read_sink(two / "cum")), oracle(rows, WINDOWS["cumulate"][1]))
    finally:
        if started:
            ray.shutdown()


def test_drain_fires_every_window_of_every_slice_once(tmp_path: Path) -> None:
    rows = make_rows(29, 60, late_share=0.3)
    write_input(tmp_path, rows)
    tvf, expansion = WINDOWS["cumulate_offset"]
    run(tmp_path, SOURCE + SINK + query(tvf), max_epoch_rows=11, drain=True)
    expected = oracle(rows, expansion, drained=True)
    assert_same(naive(read_sink(tmp_path / "out")), expected)
