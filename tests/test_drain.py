"""Draining a bounded input: `timelapse run --drain` closes every window, session and join padding.

A plain `--once` leaves open what the final watermark has not passed; `--drain` then moves every watermark to
the end of time, so the sinks hold what DuckDB computes over all the (on-time) input. After a drain every new
row is late; a rollback to the epoch before the drain resumes normal processing.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import polars as pl

from tests.helpers import duck, naive, read_sink, write_jsonl
from tests.test_windows import BASE_MS, MARKS, SOURCE, frame

GAP_S = 7
PIPELINE = (
    SOURCE
    + f"""
CREATE TABLE sessions (k STRING, ws TIMESTAMP(3), we TIMESTAMP(3), n BIGINT, s BIGINT)
WITH ('connector' = 'delta', 'path' = 'sessions');
INSERT INTO sessions SELECT k, window_start, window_end, COUNT(*), SUM(v) FROM TABLE(SESSION(TABLE events
  PARTITION BY k, DESCRIPTOR(ts), INTERVAL '{GAP_S}' SECOND)) GROUP BY k, window_start, window_end;
CREATE TABLE tumbles (k STRING, ws TIMESTAMP(3), n BIGINT) WITH ('connector' = 'delta', 'path' = 'tumbles');
INSERT INTO tumbles SELECT k, window_start, COUNT(*) FROM TABLE(TUMBLE(TABLE events, DESCRIPTOR(ts),
  INTERVAL '10' SECOND)) GROUP BY k, window_start, window_end;
CREATE TABLE padded (seq BIGINT, next_seq BIGINT) WITH ('connector' = 'delta', 'path' = 'padded');
INSERT INTO padded SELECT a.seq, b.seq FROM events a LEFT JOIN events b ON a.k = b.k
  AND b.ts BETWEEN a.ts + INTERVAL '1' MILLISECOND AND a.ts + INTERVAL '3' SECOND;
"""
)


def make_rows(seed: int, count: int, start: int, t0: int) -> list[dict[str, object]]:
    rng = random.Random(seed)
    rows, t = [], t0
    for i in range(count):  # bursts separated by quiet gaps, a few late rows
        t += rng.choice([1000, 1000, 2000, 9000, 15000])
        ts = t - rng.randint(0, 3) * 1000 if rng.random() > 0.08 else t - 60_000
        rows.append({"seq": start + i, "k": rng.choice(["a", "b", None]), "v": rng.randint(1, 7), "ts": ts})
    return rows


def oracle(rows: list[dict[str, object]]) -> dict[str, pl.DataFrame]:
    """Everything on time, with nothing left open: what a drain must give."""
    ontime = f"{MARKS}, ontime AS (SELECT * FROM marks WHERE wm IS NULL OR "
    sessions = duck(
        ontime
        + f"""ts + INTERVAL {GAP_S} SECOND - INTERVAL 1 MILLISECOND > wm),
        flagged AS (
          SELECT *, CASE WHEN ts <= max(ts) OVER (PARTITION BY k ORDER BY ts, seq
                                                ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING)
                                  + INTERVAL {GAP_S} SECOND THEN 0 ELSE 1 END AS fresh FROM ontime),
        numbered AS (SELECT *, sum(fresh) OVER (PARTITION BY k ORDER BY ts, seq) AS sid FROM flagged)
        SELECT k, min(ts), max(ts) + INTERVAL {GAP_S} SECOND, count(*), sum(v) FROM numbered GROUP BY k, sid""",
        src=frame(rows),
    )
    tumbles = duck(
        ontime
        + """time_bucket(INTERVAL 10 SECOND, ts) + INTERVAL 10 SECOND - INTERVAL 1 MILLISECOND > wm)
        SELECT k, time_bucket(INTERVAL 10 SECOND, ts), count(*) FROM ontime GROUP BY ALL""",
        src=frame(rows),
    )
    padded = duck(
        ontime
        + """ts >= wm)
        SELECT a.seq, b.seq FROM ontime a LEFT JOIN ontime b ON a.k = b.k
          AND b.ts BETWEEN a.ts + INTERVAL 1 MILLISECOND AND a.ts + INTERVAL 3 SECOND""",
        src=frame(rows),
    )
    return {"sessions": sessions, "tumbles": tumbles, "padded": padded}


def timelapse(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-m", "engine.cli", *args], cwd=root, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    return done


def sinks(root: Path) -> dict[str, list[tuple[object, ...]]]:
    return {name: sorted(naive(read_sink(root / name)).rows(), key=repr) for name in ("sessions", "tumbles", "padded")}


def expected(rows: list[dict[str, object]]) -> dict[str, list[tuple[object, ...]]]:
    return {name: sorted(naive(frame_).rows(), key=repr) for name, frame_ in oracle(rows).items()}


def test_drain_closes_what_once_leaves_open_and_rollback_undoes_it(tmp_path: Path) -> None:
    first = make_rows(3, 80, 0, BASE_MS)
    write_jsonl(tmp_path / "in" / "part-0.json", first)
    (tmp_path / "p.sql").write_text(PIPELINE)

    timelapse(tmp_path, "run", "p.sql", "--state", "st", "--once", "--max-epoch-rows", "9")
    want = expected(first)
    before = sinks(tmp_path)
    for name in want:  # a plain run leaves the last windows, sessions and paddings open
        assert set(before[name]) < set(want[name]), name

    drained = json.loads(timelapse(tmp_path, "run", "p.sql", "--state", "st", "--drain", "--json").stdout)
    assert drained["drained"] == drained["last_epoch"] and drained["epochs"] == 1
    assert sinks(tmp_path) == want
    assert "drained at epoch" in timelapse(tmp_path, "log", "st").stdout

    # After the drain every new row is late: it goes to the late tables, the sinks do not change.
    later = make_rows(4, 30, 1000, int(first[-1]["ts"]) + 5_000)  # type: ignore[arg-type]
    write_jsonl(tmp_path / "in" / "part-1.json", later)
    timelapse(tmp_path, "run", "p.sql", "--state", "st", "--once")
    assert sinks(tmp_path) == want
    late = pl.concat(
        [pl.read_delta(str(p)).select(pl.nth(0).alias("seq")) for p in (tmp_path / "st" / "operators").glob("*/late*")]
    )
    assert set(range(1000, 1030)) <= set(late.get_column("seq").to_list())

    # A rollback to the epoch before the drain resumes normal processing, and a new drain closes everything.
    timelapse(tmp_path, "rollback", "st", "--to-epoch", str(drained["drained"] - 1), "--reason", "more input came")
    timelapse(tmp_path, "run", "p.sql", "--state", "st", "--drain")
    assert sinks(tmp_path) == expected(first + later)


def test_a_drain_killed_before_its_commit_is_replayed_as_a_drain(tmp_path: Path) -> None:
    """The drain epoch is logged like any other: a restart replays it, even without --drain."""
    rows = make_rows(5, 50, 0, BASE_MS)
    write_jsonl(tmp_path / "in" / "part-0.json", rows)
    (tmp_path / "p.sql").write_text(PIPELINE)
    timelapse(tmp_path, "run", "p.sql", "--state", "st", "--once")
    killed = subprocess.run(
        [sys.executable, "-m", "engine.cli", "run", "p.sql", "--state", "st", "--drain"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "TIMELAPSE_CRASH_AT": "manifest.commit.before"},
    )
    assert killed.returncode == -9
    resumed = json.loads(timelapse(tmp_path, "run", "p.sql", "--state", "st", "--once", "--json").stdout)
    assert resumed["drained"] == resumed["last_epoch"]
    assert sinks(tmp_path) == expected(rows)
