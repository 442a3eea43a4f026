"""Storage faults: a full disk during a commit, truncated or corrupted Parquet files, missing or corrupted Delta
log entries. Each is detected, reported without a traceback, and recovered from where it can be (falling back
to the newest checkpoint that reads cleanly); the final output always equals an undisturbed run's."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest

import engine
from engine import recovery
from engine.sources.base import ConnectorError
from tests import crash_harness as harness


def cli(root: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "engine.cli", *args],
        cwd=root,
        env={**os.environ, **harness.ENV, **(env or {})},
        capture_output=True,
        text=True,
        timeout=300,
    )


def run(root: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return cli(root, "run", "pipeline.sql", "--state", "state", "--once", "--max-epoch-rows", "10", "--json", env=env)


def started(root: Path, seed: int, chunks: int, deliveries: int = 1) -> harness.Stream:
    """A pipeline that has run over its first `deliveries` chunks of input, checkpointing every epoch."""
    stream = harness.Stream(root, seed=seed, chunks=chunks)
    stream.setup("1 epochs")
    for _ in range(deliveries):
        stream.deliver()
    assert run(stream.root).returncode == 0
    return stream


@pytest.mark.parametrize(
    "point",
    [
        "sink.commit.before",
        "manifest.commit.before",
        # slow: the same ENOSPC path at other tables (~25 s each on CI); a full disk at the state table is also
        # covered by test_a_failing_first_epoch_reports_the_real_error[full disk at the state]
        pytest.param("state.commit.before", marks=pytest.mark.slow),
        pytest.param("compaction.before", marks=pytest.mark.slow),
    ],
)
def test_a_full_disk_during_a_commit_stops_cleanly_and_the_next_run_resumes(tmp_path: Path, point: str) -> None:
    stream = harness.Stream(tmp_path / "p", seed=11, chunks=4)
    stream.setup("1 epochs")
    stream.deliver()
    stream.deliver()
    failed = run(stream.root, env={"TIMELAPSE_FAIL_AT": f"{point}:2"})
    assert failed.returncode == 5, failed.stderr
    assert "the disk is full" in failed.stderr and "Traceback" not in failed.stderr
    harness.finish_and_check(stream, tmp_path)


@contextlib.contextmanager
def small_disk(path: Path, megabytes: int) -> Iterator[None]:
    path.mkdir(parents=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={megabytes}m", "tmpfs", str(path)])
    if mounted.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        yield
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def test_a_real_full_disk_is_reported_and_survived(tmp_path: Path) -> None:
    """The state directory lives on an 8 MB tmpfs that a filler file has all but filled."""
    stream = harness.Stream(tmp_path / "p", seed=12, chunks=4)
    stream.setup("1 epochs")
    disk = tmp_path / "p" / "state"
    with small_disk(disk, 8):
        stream.deliver()
        assert run(stream.root).returncode == 0
        filler = disk / "filler"
        with open(filler, "wb") as handle, contextlib.suppress(OSError):
            while True:
                handle.write(b"\0" * 65536)
                handle.flush()
        stream.deliver()
        full = run(stream.root, env={"RUST_BACKTRACE": "1"})
        assert full.returncode == 5, full.stderr
        assert "the disk is full" in full.stderr and "Traceback" not in full.stderr
        assert "panicked" not in full.stderr and "backtrace" not in full.stderr  # Rust's panic text is filtered
        filler.unlink()
        harness.finish_and_check(stream, tmp_path)
        assert cli(stream.root, "verify", "state").returncode == 0


def _state_entry(root: Path) -> dict[str, object]:
    row = engine.open(root / "state").row()
    return next(t for t in row["tables"] if t["role"] == "state" and t["name"].startswith("group-agg"))


def _state_table(root: Path) -> Path:
    return Path(str(_state_entry(root)["path"]))


def _newest_data_file(table: Path) -> Path:
    files = [p for p in table.glob("*.parquet")]
    return max(files, key=lambda p: p.stat().st_mtime_ns)


def _named_log_entry(root: Path) -> Path:
    """The log entry of the version the latest checkpoint names (a Delta checkpoint of it may sit beside it)."""
    entry = _state_entry(root)
    return Path(str(entry["path"])) / "_delta_log" / f"{int(entry['version']):020d}.json"  # type: ignore[call-overload]


def _damage_log(root: Path, corrupt: bool) -> None:
    """Delete or corrupt the named version's log entry, and the Delta checkpoint of that version if there is one
    (otherwise the checkpoint alone would still serve the version, and nothing would be damaged)."""
    entry = _named_log_entry(root)
    for item in entry.parent.glob(f"{entry.stem}.*"):
        if corrupt:
            item.write_text('{"add": {"path": "gone')
        else:
            item.unlink()


DAMAGE = {
    "truncated parquet": lambda r: _newest_data_file(_state_table(r)).write_bytes(
        _newest_data_file(_state_table(r)).read_bytes()[:100]
    ),
    "truncated sink file": lambda r: _newest_data_file(r / "totals").write_bytes(b"PAR1 torn"),
    "missing log entry": lambda r: _damage_log(r, corrupt=False),
    "corrupted log entry": lambda r: _damage_log(r, corrupt=True),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_damaged_state_falls_back_to_the_newest_clean_checkpoint(tmp_path: Path, damage: str) -> None:
    stream = started(tmp_path / "p", seed=13, chunks=4, deliveries=2)
    last = int(engine.open(stream.root / "state").row()["epoch"])
    DAMAGE[damage](stream.root)
    verify = cli(stream.root, "verify", "state")
    assert verify.returncode == 4 and "PROBLEM" in verify.stdout  # `timelapse verify` sees it too
    stream.deliver()
    resumed = run(stream.root)
    assert resumed.returncode == 0, resumed.stderr
    assert "warning: the state to resume from is damaged" in resumed.stderr
    assert f"fell back to epoch {last - 1}" in resumed.stderr
    manifest = pl.read_delta(str(stream.root / "state" / "manifest"))
    reasons = manifest.filter(pl.col("kind") == "rollback").get_column("metrics").to_list()
    assert any("automatic fallback" in r for r in reasons)  # audited in the manifest
    harness.finish_and_check(stream, tmp_path)


def test_damage_in_every_checkpoint_is_reported_not_guessed_around(tmp_path: Path) -> None:
    stream = started(tmp_path / "p", seed=14, chunks=3)
    table = _state_table(stream.root)
    oldest = min(table.glob("*.parquet"), key=lambda p: p.stat().st_mtime_ns)
    oldest.write_bytes(b"PAR1 not really")  # read by every checkpoint's version of the table
    stream.deliver()
    failed = run(stream.root)
    assert failed.returncode == 5, failed.stderr
    assert "no retained checkpoint reads cleanly" in failed.stderr and "timelapse verify" in failed.stderr
    assert "Traceback" not in failed.stderr
    with pytest.raises(recovery.StateDamaged):
        recovery.fall_back(stream.root / "state", RuntimeError("restore failed"))
    for folder in ("state", "out", "totals", "joined"):  # without a backup: start again from the sources
        shutil.rmtree(stream.root / folder)
    harness.finish_and_check(stream, tmp_path)


def test_a_damaged_manifest_falls_back_to_its_previous_version_or_is_reported(tmp_path: Path) -> None:
    stream = started(tmp_path / "p", seed=15, chunks=2)
    log = stream.root / "state" / "manifest" / "_delta_log"
    newest = max(log.glob("*.json"))
    for item in log.glob(f"{newest.stem}.*"):
        item.write_text('{"add": {"path": "gone')
    (log / "_last_checkpoint").unlink(missing_ok=True)
    stream.deliver()
    resumed = run(stream.root)  # the newest entry is set aside; its epoch is replayed from the offset log
    assert resumed.returncode == 0, resumed.stderr
    assert "_damaged_log" in resumed.stderr and "Traceback" not in resumed.stderr
    assert list((stream.root / "state" / "manifest" / "_damaged_log").rglob(newest.name))  # kept, not deleted
    harness.finish_and_check(stream, tmp_path)
    for item in log.glob("*.json"):  # every entry damaged: nothing to fall back to
        item.write_text('{"add": {"path": "gone')
    (log / "_last_checkpoint").unlink(missing_ok=True)
    failed = run(stream.root)
    assert failed.returncode == 5, failed.stderr
    assert "the manifest of" in failed.stderr and "cannot be read" in failed.stderr
    assert "Traceback" not in failed.stderr
    assert cli(stream.root, "verify", "state").returncode == 4


FIRST_EPOCH_SQL = """
CREATE TABLE src (id STRING, v INT) WITH ('connector' = 'filesystem', 'path' = 'data', 'format' = 'json');
CREATE TABLE totals (id STRING, n BIGINT, PRIMARY KEY (id) NOT ENFORCED)
WITH ('connector' = 'delta', 'path' = '{sink}');
INSERT INTO totals SELECT id, COUNT(*) AS n FROM src GROUP BY id;
"""

FIRST_EPOCH_FAULTS = {
    "full disk at the sink": ({"TIMELAPSE_FAIL_AT": "sink.commit.before"}, "totals", 5, "the disk is full"),
    "full disk at the state": ({"TIMELAPSE_FAIL_AT": "state.commit.before"}, "totals", 5, "the disk is full"),
    "full disk at the manifest": ({"TIMELAPSE_FAIL_AT": "manifest.commit.before"}, "totals", 5, "the disk is full"),
    "sink path under a file": ({}, "blocker/totals", 2, "cannot create the Delta table"),
}


def _first_epoch_failure(root: Path, fresh: bool, env: dict[str, str], sink: str) -> subprocess.CompletedProcess[str]:
    """Run a pipeline that fails in its epoch on a fresh state directory, or on one with an epoch committed."""
    root.mkdir(parents=True)
    (root / "blocker").write_text("a file, so no directory can be created under it\n")
    (root / "data").mkdir()
    (root / "data" / "1.json").write_text('{"id": "a", "v": 1}\n')
    if not fresh:
        (root / "pipeline.sql").write_text(FIRST_EPOCH_SQL.format(sink="totals"))
        assert run(root).returncode == 0
        (root / "data" / "2.json").write_text('{"id": "b", "v": 2}\n')
    (root / "pipeline.sql").write_text(FIRST_EPOCH_SQL.format(sink=sink))
    return run(root, env=env)


@pytest.mark.parametrize("fault", list(FIRST_EPOCH_FAULTS))
def test_a_failing_first_epoch_reports_the_real_error(tmp_path: Path, fault: str) -> None:
    """On a fresh directory there is no checkpoint to fall back to: the error itself is reported, with the exit
    code it gets on a directory that has committed epochs (it used to be hidden behind an OutOfBoundsError)."""
    env, sink, code, message = FIRST_EPOCH_FAULTS[fault]
    fresh = _first_epoch_failure(tmp_path / "fresh", True, env, sink)
    existing = _first_epoch_failure(tmp_path / "existing", False, env, sink)
    for failed in (fresh, existing):
        assert failed.returncode == code, failed.stderr
        assert message in failed.stderr, failed.stderr
        assert "OutOfBounds" not in failed.stderr and "internal error" not in failed.stderr
        assert "Traceback" not in failed.stderr and len(failed.stderr.strip().splitlines()) == 1
    paths = (str(tmp_path / "fresh"), str(tmp_path / "existing"))
    assert fresh.stderr.replace(paths[0], "ROOT") == existing.stderr.replace(paths[1], "ROOT")
    if env:  # the fault was transient: the fresh directory then runs from the start
        again = run(tmp_path / "fresh")
        assert again.returncode == 0, again.stderr
        assert pl.read_delta(str(tmp_path / "fresh" / "totals")).sort("id").rows() == [("a", 1)]


def test_a_failing_first_epoch_raises_the_real_error_in_python(tmp_path: Path) -> None:
    (tmp_path / "blocker").write_text("")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "1.json").write_text('{"id": "a", "v": 1}\n')
    (tmp_path / "pipeline.sql").write_text(FIRST_EPOCH_SQL.format(sink="blocker/totals"))
    pipeline = engine.Pipeline.from_sql(tmp_path / "pipeline.sql", state=tmp_path / "state")
    with pytest.raises(ConnectorError, match="cannot create the Delta table"):
        pipeline.run(once=True)
    with pytest.raises(ValueError, match="no space"):  # recovery re-raises the cause itself: nothing to fall back on
        recovery.fall_back(tmp_path / "state", ValueError("no space"))
