"""The damage matrix: each kind of damage to a state directory (offset files, the manifest's log, state and sink
files), with `timelapse verify`'s answer and `timelapse run`'s behaviour asserted to agree. Where verify finds
damage (exit 4) the run either recovers, saying what it did, and then the sinks equal DuckDB's answer over all
the input (exactly once), or stops with exit 5 naming the same file. No traceback or Rust panic text is shown."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import duckdb
import polars as pl
import pytest
from deltalake import DeltaTable

import engine
from engine.verify import verify as verify_state

SQL = """
CREATE TABLE src (id STRING, v INT) WITH ('connector' = 'filesystem', 'path' = 'data', 'format' = 'json');
CREATE TABLE totals (id STRING, n BIGINT, s BIGINT, PRIMARY KEY (id) NOT ENFORCED)
WITH ('connector' = 'delta', 'path' = 'totals');
CREATE TABLE raw (id STRING, v INT) WITH ('connector' = 'delta', 'path' = 'raw');
INSERT INTO totals SELECT id, COUNT(*) AS n, SUM(v) AS s FROM src GROUP BY id;
INSERT INTO raw SELECT id, v FROM src;
"""

PANIC_TEXT = ("panicked", "RUST_BACKTRACE", "stack backtrace", "Traceback")


def cli(root: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "engine.cli", *args],
        cwd=root,
        env={**os.environ, "RUST_BACKTRACE": "1", **(env or {})},  # a backtrace would be shown, were it not filtered
        capture_output=True,
        text=True,
        timeout=120,
    )


def run(root: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return cli(root, "run", "pipeline.sql", "--state", "state", "--once", "--max-epoch-rows", "10", env=env)


def deliver(root: Path, name: str, rows: int, seed: int) -> None:
    (root / "data").mkdir(exist_ok=True)
    lines = [f'{{"id": "k{(i * 7 + seed) % 4}", "v": {i + seed}}}' for i in range(rows)]
    (root / "data" / f"{name}.json").write_text("\n".join(lines) + "\n")


def build(root: Path) -> int:
    """Three epochs committed (one per file), then one more file waiting: returns the last committed epoch."""
    root.mkdir()
    (root / "pipeline.sql").write_text(SQL)
    for n in range(3):
        deliver(root, f"{n}", 10, n)
    engine.Pipeline.from_sql(root / "pipeline.sql", state=root / "state").run(once=True, max_epoch_rows=10)
    deliver(root, "3", 4, 3)
    return int(engine.open(root / "state").row()["epoch"])


def check_sinks(root: Path) -> None:
    """The sinks equal DuckDB over every input file: each record exactly once."""
    con = duckdb.connect()
    files = str(root / "data" / "*.json")
    expected = con.sql(f"SELECT id, COUNT(*) AS n, SUM(v) AS s FROM read_json_auto('{files}') GROUP BY id").pl()
    totals = pl.read_delta(str(root / "totals"))
    assert totals.sort("id").rows() == expected.sort("id").with_columns(pl.col("s").cast(pl.Int64)).rows()
    inputs = con.sql(f"SELECT id, v FROM read_json_auto('{files}') ORDER BY id, v").fetchall()
    assert pl.read_delta(str(root / "raw")).sort("id", "v").rows() == inputs


def offset_file(root: Path, epoch: int) -> Path:
    return root / "state" / "offsets" / f"{epoch:012d}.json"


def newest_file(table: Path) -> Path:
    return max(table.glob("*.parquet"), key=lambda p: p.stat().st_mtime_ns)


def state_table(root: Path) -> Path:
    row = engine.open(root / "state").row()
    return Path(next(t["path"] for t in row["tables"] if t["role"] == "state"))


def uncommitted_epoch_held_by_a_sink(root: Path, last: int) -> Path:
    """A run stopped (a full disk) after the sinks committed epoch last+1, before its manifest row."""
    failed = run(root, env={"TIMELAPSE_FAIL_AT": "manifest.commit.before"})
    assert failed.returncode == 5, failed.stderr
    path = offset_file(root, last + 1)
    path.write_text('{"epoch": ')
    return path


def pipeline_file_lost(root: Path, last: int, garbled: bool) -> Path:
    """`pipeline.json` (the prefix of every marker) lost while a sink holds an uncommitted epoch: with a new id
    the sink would take the replayed epoch for a new one and hold its rows twice."""
    failed = run(root, env={"TIMELAPSE_FAIL_AT": "manifest.commit.before"})
    assert failed.returncode == 5, failed.stderr
    path = root / "state" / "pipeline.json"
    return _write(path, '{"pipeline_id": ') if garbled else _unlink(path)


@dataclass(frozen=True)
class Cell:
    damage: Callable[[Path, int], Path | None]  # returns the file the answers must name
    verify_says: str  # in verify's output (it exits 4), or "" when there is nothing to find (exit 0)
    run_exit: int
    run_says: str  # in the run's stderr


MATRIX = {
    "garbled offset file of the last committed epoch": Cell(
        lambda r, last: _write(offset_file(r, last), '{"epoch": 3, "pla'), "cannot be resumed", 5, "cannot be resumed"
    ),
    "missing offset file of a committed epoch": Cell(
        lambda r, last: _unlink(offset_file(r, last - 1)), "is missing", 5, "is missing"
    ),
    "garbled offset file of an uncommitted epoch no sink holds": Cell(
        lambda r, last: _write(offset_file(r, last + 1), "\x00\x00"), "plans it again", 0, "plans it again"
    ),
    "garbled offset file of an uncommitted epoch a sink holds": Cell(
        uncommitted_epoch_held_by_a_sink, "a sink already holds", 5, "cannot be replayed exactly"
    ),
    "garbled manifest log entry": Cell(
        lambda r, last: _write(max((r / "state" / "manifest" / "_delta_log").glob("*.json")), '{"add": {"path": "g'),
        "a run sets the entries after version",
        0,
        "_damaged_log",
    ),
    "missing manifest log entry (as a crash before the commit)": Cell(
        lambda r, last: _unlink(max((r / "state" / "manifest" / "_delta_log").glob("*.json"))) and None, "", 0, ""
    ),
    "truncated state file": Cell(
        lambda r, last: _truncate(newest_file(state_table(r))), "cannot be read", 0, "fell back to epoch"
    ),
    "missing state file": Cell(
        lambda r, last: _unlink(newest_file(state_table(r))), "is missing", 0, "fell back to epoch"
    ),
    "truncated sink file": Cell(
        lambda r, last: _truncate(newest_file(r / "raw")), "cannot be read", 0, "fell back to epoch"
    ),
    "missing sink file": Cell(lambda r, last: _unlink(newest_file(r / "raw")), "is missing", 0, "fell back to epoch"),
    "missing pipeline id file": Cell(
        lambda r, last: pipeline_file_lost(r, last, garbled=False), "recovers the pipeline id", 0, "was recovered"
    ),
    "garbled pipeline id file": Cell(
        lambda r, last: pipeline_file_lost(r, last, garbled=True), "recovers the pipeline id", 0, "was recovered"
    ),
    "garbled rollback intent": Cell(
        lambda r, last: _write(r / "state" / "rollback-in-progress.json", '{"to_ep'), "cut short", 5, "cut short"
    ),
}


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def _unlink(path: Path) -> Path:
    path.unlink()
    return path


def _truncate(path: Path) -> Path:
    path.write_bytes(path.read_bytes()[:100])
    return path


@pytest.mark.parametrize("cell", list(MATRIX))
def test_verify_and_run_agree_about_damage(tmp_path: Path, cell: str) -> None:
    root = tmp_path / "p"
    last = build(root)
    spec = MATRIX[cell]
    named = spec.damage(root, last)

    verify = cli(root, "verify", "state")
    assert verify.returncode == (4 if spec.verify_says else 0), verify.stdout + verify.stderr
    assert spec.verify_says in verify.stdout
    if named is not None:
        assert named.name in verify.stdout  # verify names the damaged file

    resumed = run(root)
    assert resumed.returncode == spec.run_exit, resumed.stderr
    assert spec.run_says in resumed.stderr
    for text in PANIC_TEXT:
        assert text not in verify.stderr + resumed.stderr, text
    if spec.run_exit == 5:
        assert named is not None and named.name in resumed.stderr  # the run names the same file
        assert len(resumed.stderr.strip().splitlines()) == 1
        return
    if spec.verify_says:
        assert "warning: the state to resume from is damaged" in resumed.stderr
    check_sinks(root)
    assert verify_state(root / "state")["problems"] == []  # repaired: verify has nothing left to report


RUST_PANICS = """\
epoch      1  in       10
\nthread 'tokio-rt-worker' (20778) panicked at crates/polars-io/src/utils/byte_source.rs:585:9:
assertion failed: range.end as u64 <= self.size
stack backtrace:
   0: __rustc::rust_begin_unwind
             at /rustc/library/std/src/panicking.rs:697:5
note: Some details are omitted, run with `RUST_BACKTRACE=full` for a verbose backtrace.
\nthread 'tokio-rt-worker' panicked at /cargo/tokio/src/runtime/blocking/shutdown.rs:51:21:
Already shut down
error: the disk is full
\nnot a panic
epoch      2"""


@pytest.mark.parametrize("piece", [1, 5, 64, 10_000])
def test_rust_panic_blocks_are_left_out_and_the_rest_streams(piece: int) -> None:
    from engine.native_stderr import PanicFilter

    panic = PanicFilter()
    shown = [panic.feed(RUST_PANICS[i : i + piece]) for i in range(0, len(RUST_PANICS), piece)]
    expected = "epoch      1  in       10\nerror: the disk is full\n\nnot a panic\nepoch      2"
    assert "".join(shown) + panic.close() == expected
    if piece >= len(RUST_PANICS):
        assert shown[0].endswith("epoch      2")  # an unfinished line (a progress line) is shown at once


PANICKING_READ = """
import sys
import polars as pl
from engine.native_stderr import without_panic_text
with without_panic_text():
    try:
        pl.scan_delta(sys.argv[1]).collect()
    except BaseException as err:
        print(type(err).__name__, file=sys.stderr)
"""


def test_debug_shows_the_panic_text(tmp_path: Path) -> None:
    """Polars' reader panics in worker threads on a Delta table whose file is shorter than its log says (a run
    now finds that first, by size): the panic text is left out, the Python side still speaks, and
    TIMELAPSE_DEBUG=1 shows everything."""
    root = tmp_path / "p"
    build(root)
    _truncate(newest_file(root / "raw"))
    answers = [
        subprocess.run(
            [sys.executable, "-c", PANICKING_READ, str(root / "raw")],
            env={**os.environ, "RUST_BACKTRACE": "1", **env},
            capture_output=True,
            text=True,
            timeout=60,
        )
        for env in ({}, {"TIMELAPSE_DEBUG": "1"})
    ]
    quiet, loud = answers
    assert "panicked" in loud.stderr and "stack backtrace" in loud.stderr, loud.stderr
    assert quiet.stderr.strip() == loud.stderr.strip().splitlines()[-1], quiet.stderr


def test_a_full_disk_shows_one_line_and_no_panic_text(tmp_path: Path) -> None:
    """With a few KB left, delta-rs' writer panics in a Tokio worker ("thread 'tokio-rt-worker' panicked at
    .../object_store/src/buffered.rs") before the error reaches Python: the user sees the one-line error."""
    from tests.test_storage_faults import small_disk

    root = tmp_path / "p"
    root.mkdir()
    (root / "pipeline.sql").write_text(SQL)
    deliver(root, "0", 10, 0)
    with small_disk(root / "state", 8):
        assert run(root).returncode == 0
        filler = root / "state" / "filler"
        with open(filler, "wb", buffering=0) as handle, contextlib.suppress(OSError):
            while True:
                handle.write(b"\0" * 4096)
        os.truncate(filler, filler.stat().st_size - 4096)  # room for the offset file, not for the Parquet files
        for n in range(1, 4):
            deliver(root, f"{n}", 10, n)
        full = cli(root, "run", "pipeline.sql", "--state", "state", "--once", "--max-epoch-rows", "1")
        assert full.returncode == 5, full.stderr
        assert "the disk is full" in full.stderr and len(full.stderr.strip().splitlines()) == 1, full.stderr
        filler.unlink()
        assert run(root).returncode == 0
    check_sinks(root)


@pytest.mark.parametrize("how", ["timelapse rollback", "automatic fallback"])
def test_a_rollback_after_sinks_ran_ahead_of_the_manifest_loses_nothing(tmp_path: Path, how: str) -> None:
    """A run stopped after the sinks committed an epoch, before its manifest row; then a rollback (asked for, or
    a fallback from damage). Restoring a sink does not take its marker back, so the epochs after the rollback
    must be numbered past the one the sinks hold, or they would skip it and lose its rows."""
    root = tmp_path / "p"
    last = build(root)
    failed = run(root, env={"TIMELAPSE_FAIL_AT": "manifest.commit.before"})
    assert failed.returncode == 5, failed.stderr
    if how == "timelapse rollback":
        rolled = cli(root, "rollback", "state", "--to-epoch", str(last - 1))
        assert rolled.returncode == 0, rolled.stderr
    else:  # a file of the state version the manifest names (the failed run committed a newer one)
        row = engine.open(root / "state").row()
        entry = next(t for t in row["tables"] if t["role"] == "state")
        named = DeltaTable(entry["path"], version=entry["version"])
        files = [Path(f.removeprefix("file://")) for f in named.file_uris()]
        _truncate(max(files, key=lambda p: p.stat().st_mtime_ns))
    resumed = run(root)
    assert resumed.returncode == 0, resumed.stderr
    check_sinks(root)
