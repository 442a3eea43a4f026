"""Watermarks over several sources: lateness is a function of each source's row order alone.

The documented rule (docs/sql.md, "Event time, watermarks and late rows"): a row's watermark is the running
maximum of its own source's WATERMARK expression over the rows of that source before it; an operator judges
a row late by that watermark, and fires (windows, OVER rows, join state) by the minimum over the watermarks of
the sources upstream of it. So an unrelated INSERT never changes a result, and neither do epoch boundaries.

The DuckDB oracle below applies that rule to the whole input in one batch; hypothesis varies the data, the
delays, how rows are split into epochs and how the sources interleave (per-source epoch shares).
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

from tests.helpers import duck, examples, naive, read_sink, run, write_jsonl

BASE_MS = 1_767_225_600_000  # 2026-01-01 00:00:00 UTC
SOURCES = ("a", "b", "c")


def issue_pipeline(with_b: bool) -> str:
    sql = """
    CREATE TABLE a (k BIGINT, ts TIMESTAMP(3), WATERMARK FOR ts AS ts - INTERVAL '4' SECOND)
    WITH ('connector' = 'filesystem', 'path' = 'a', 'format' = 'json');
    CREATE TABLE counts (k BIGINT, ws TIMESTAMP(3), n BIGINT) WITH ('connector' = 'delta', 'path' = 'counts');
    INSERT INTO counts SELECT k, window_start, COUNT(*) FROM TABLE(TUMBLE(TABLE a, DESCRIPTOR(ts),
      INTERVAL '10' SECOND)) GROUP BY k, window_start, window_end;
    """
    if with_b:
        sql += """
    CREATE TABLE b (k BIGINT, ts TIMESTAMP(3), WATERMARK FOR ts AS ts - INTERVAL '4' SECOND)
    WITH ('connector' = 'filesystem', 'path' = 'b', 'format' = 'json');
    CREATE TABLE nothing (k BIGINT) WITH ('connector' = 'blackhole');
    INSERT INTO nothing SELECT k FROM b;
    """
    return sql


@pytest.mark.parametrize("with_b", [False, True])
@pytest.mark.parametrize("max_rows", [None, 1])
def test_an_unrelated_source_never_changes_lateness(tmp_path: Path, with_b: bool, max_rows: int | None) -> None:
    """The issue's reproduction: the row at 2 s arrives after one at 30 s, so it is late, whatever the epoch
    size, and whether or not another INSERT of the file reads another source."""
    write_jsonl(tmp_path / "a" / "1.json", [{"k": 1, "ts": s * 1000} for s in (1, 30, 2, 45)])
    write_jsonl(tmp_path / "b" / "1.json", [{"k": 1, "ts": s * 1000} for s in (1, 45)])
    run(tmp_path, issue_pipeline(with_b), max_epoch_rows=max_rows)
    counts = read_sink(tmp_path / "counts").sort("ws")
    assert counts.get_column("n").to_list() == [1, 1]  # [0, 10) and [30, 40); [40, 50) is still open
    late = pl.read_delta(str(next((tmp_path / "state" / "operators").glob("*/late"))))
    assert late.get_column("ts").dt.epoch("ms").to_list() == [2000]


# -- the rule, at random -------------------------------------------------------------------------------------
def make_rows(rng: random.Random, source: str, count: int, uid: list[int]) -> list[dict[str, object]]:
    """Out-of-order rows with some far behind; every timestamp in the whole input is distinct (no ties)."""
    rows = []
    for i in range(count):
        back = rng.randint(8, 25) if rng.random() < 0.2 else rng.randint(0, 3)
        uid[0] += 1
        ts = BASE_MS + max(0, i * 1000 - back * 1000) + uid[0]
        rows.append({"src": source, "seq": i, "k": rng.choice([1, 2, 3]), "v": rng.randint(1, 9), "ts": ts})
    return rows


def pipeline(delays: dict[str, int], shares: dict[str, int | None]) -> str:
    sql = ""
    for name in SOURCES:
        share = f", 'scan.max-epoch-rows' = '{shares[name]}'" if shares[name] else ""
        sql += f"""
        CREATE TABLE {name} (src STRING, seq BIGINT, k BIGINT, v BIGINT, ts TIMESTAMP(3),
          WATERMARK FOR ts AS ts - INTERVAL '{delays[name]}' SECOND)
        WITH ('connector' = 'filesystem', 'path' = '{name}', 'format' = 'json'{share});
        """
    return (
        sql
        + """
    CREATE TEMPORARY VIEW ab AS SELECT src, seq, k, v, ts FROM a UNION ALL SELECT src, seq, k, v, ts FROM b;
    CREATE TABLE windows (k BIGINT, ws TIMESTAMP(3), n BIGINT, s BIGINT) WITH ('connector' = 'delta', 'path' = 'w');
    INSERT INTO windows SELECT k, window_start, COUNT(*), SUM(v)
      FROM TABLE(TUMBLE(TABLE ab, DESCRIPTOR(ts), INTERVAL '5' SECOND)) GROUP BY k, window_start, window_end;
    CREATE TABLE pairs (aseq BIGINT, bseq BIGINT) WITH ('connector' = 'delta', 'path' = 'j');
    INSERT INTO pairs SELECT a.seq, b.seq FROM a JOIN b ON a.k = b.k
      AND b.ts BETWEEN a.ts - INTERVAL '2' SECOND AND a.ts + INTERVAL '3' SECOND;
    CREATE TABLE running (src STRING, seq BIGINT, total BIGINT) WITH ('connector' = 'delta', 'path' = 'o');
    INSERT INTO running SELECT src, seq, SUM(v) OVER (PARTITION BY k ORDER BY ts
      ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) FROM (
        SELECT src, seq, k, v, ts FROM a UNION ALL SELECT src, seq, k, v, ts FROM c);
    """
    )


def marked(rows: dict[str, list[dict[str, object]]], delays: dict[str, int]) -> pl.DataFrame:
    """Every row with its own source's watermark before it, computed by DuckDB."""
    frames = [
        pl.DataFrame(r, schema={"src": pl.String, "seq": pl.Int64, "k": pl.Int64, "v": pl.Int64, "ts": pl.Int64})
        for r in rows.values()
    ]
    src = pl.concat(frames).with_columns(pl.col("ts").cast(pl.Datetime("ms")).dt.replace_time_zone("UTC"))
    delay = " ".join(f"WHEN '{n}' THEN INTERVAL {d} SECOND" for n, d in delays.items())
    return duck(
        f"""SELECT *, max(ts - CASE src {delay} END) OVER (PARTITION BY src ORDER BY seq
                   ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS wm,
                   max(ts - CASE src {delay} END) OVER (PARTITION BY src) AS final_wm
            FROM src""",
        src=src,
    )


def oracle(rows: dict[str, list[dict[str, object]]], delays: dict[str, int]) -> dict[str, pl.DataFrame]:
    m = marked(rows, delays)
    # An operator's final watermark: the minimum over its upstream sources' (None while one has no rows).
    finals = {r["src"]: r["final_wm"] for r in m.select("src", "final_wm").unique().iter_rows(named=True)}

    def final(*names: str) -> str:
        values = [finals.get(n) for n in names]
        return "NULL" if any(v is None for v in values) else f"TIMESTAMP '{min(values)}'"  # type: ignore[type-var]

    windows = duck(
        f"""WITH w AS (SELECT *, time_bucket(INTERVAL 5 SECOND, ts) AS ws FROM m WHERE src IN ('a', 'b'))
        SELECT k, ws, count(*) AS n, sum(v) AS s FROM w
        WHERE (wm IS NULL OR ws + INTERVAL 5 SECOND - INTERVAL 1 MILLISECOND > wm)
          AND ws + INTERVAL 5 SECOND - INTERVAL 1 MILLISECOND <= {final("a", "b")}
        GROUP BY k, ws""",
        m=m,
    )
    window_late = duck(
        """SELECT src, seq FROM m WHERE src IN ('a', 'b')
           AND time_bucket(INTERVAL 5 SECOND, ts) + INTERVAL 5 SECOND - INTERVAL 1 MILLISECOND <= wm""",
        m=m,
    )
    on_time = "(wm IS NULL OR ts >= wm)"
    pairs = duck(
        f"""SELECT l.seq AS aseq, r.seq AS bseq
        FROM (SELECT * FROM m WHERE src = 'a' AND {on_time}) l JOIN (SELECT * FROM m WHERE src = 'b' AND {on_time}) r
          ON l.k = r.k AND r.ts BETWEEN l.ts - INTERVAL 2 SECOND AND l.ts + INTERVAL 3 SECOND""",
        m=m,
    )
    join_late = duck(f"SELECT src, seq FROM m WHERE src IN ('a', 'b') AND NOT {on_time}", m=m)
    running = duck(
        f"""WITH kept AS (SELECT * FROM m WHERE src IN ('a', 'c') AND {on_time}),
        summed AS (SELECT src, seq, ts, sum(v) OVER (PARTITION BY k ORDER BY ts) AS total FROM kept)
        SELECT src, seq, total FROM summed WHERE ts <= {final("a", "c")}""",
        m=m,
    )
    over_late = duck(f"SELECT src, seq FROM m WHERE src IN ('a', 'c') AND NOT {on_time}", m=m)
    return {
        "windows": windows,
        "pairs": pairs,
        "running": running,
        "window_late": window_late,
        "join_late": join_late,
        "over_late": over_late,
    }


def late_rows(state: Path, kind: str) -> pl.DataFrame:
    frames = [  # a join's right side names its columns src0, seq0, ...: take them by position
        pl.read_delta(str(p)).select(pl.nth(0).alias("src"), pl.nth(1).alias("seq"))
        for d in (state / "operators").glob(f"{kind}*")
        for p in d.iterdir()
        if p.name.startswith("late")
    ]
    return pl.concat(frames) if frames else pl.DataFrame(schema={"src": pl.String, "seq": pl.Int64})


def rows_of(frame: pl.DataFrame) -> list[tuple[object, ...]]:
    return sorted(naive(frame).rows(), key=repr)


def check(root: Path, rows: dict[str, list[dict[str, object]]], delays: dict[str, int], shares, max_rows) -> None:
    for name, source_rows in rows.items():
        half = len(source_rows) // 2  # two files: files are read in order, rows in file order
        write_jsonl(root / name / "1.json", source_rows[:half])
        write_jsonl(root / name / "2.json", source_rows[half:])
    run(root, pipeline(delays, shares), max_epoch_rows=max_rows)
    expected = oracle(rows, delays)
    assert rows_of(read_sink(root / "w").select("k", "ws", "n", "s")) == rows_of(expected["windows"])
    assert rows_of(read_sink(root / "j")) == rows_of(expected["pairs"])
    assert rows_of(read_sink(root / "o")) == rows_of(expected["running"])
    state = root / "state"
    assert rows_of(late_rows(state, "window-agg")) == rows_of(expected["window_late"])
    assert rows_of(late_rows(state, "join")) == rows_of(expected["join_late"])
    assert rows_of(late_rows(state, "over")) == rows_of(expected["over_late"])


@settings(max_examples=examples(10), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    seed=st.integers(0, 100_000),
    counts=st.tuples(st.integers(0, 14), st.integers(0, 14), st.integers(0, 14)),
    delays=st.tuples(st.integers(0, 4), st.integers(0, 4), st.integers(0, 4)),
    shares=st.tuples(*[st.one_of(st.none(), st.integers(1, 5))] * 3),
    max_rows=st.one_of(st.none(), st.integers(1, 8)),
)
def test_several_sources_match_the_rule_for_every_split(
    seed: int,
    counts: tuple[int, int, int],
    delays: tuple[int, int, int],
    shares: tuple[int | None, int | None, int | None],
    max_rows: int | None,
) -> None:
    rng, uid = random.Random(seed), [0]
    rows = {name: make_rows(rng, name, n, uid) for name, n in zip(SOURCES, counts, strict=True)}
    root = Path(tempfile.mkdtemp())
    try:
        check(root, rows, dict(zip(SOURCES, delays, strict=True)), dict(zip(SOURCES, shares, strict=True)), max_rows)
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.parametrize("max_rows", [1, 7, None])
def test_several_sources_at_fixed_splits(tmp_path: Path, max_rows: int | None) -> None:
    rng, uid = random.Random(7), [0]
    rows = {name: make_rows(rng, name, 25, uid) for name in SOURCES}
    check(tmp_path, rows, {"a": 3, "b": 1, "c": 2}, {"a": None, "b": 2, "c": None}, max_rows)
