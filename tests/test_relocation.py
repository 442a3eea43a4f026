"""A state directory is relocatable: copied, moved (alone or with its project folder) it behaves as the original.

Every test drives the real CLI in a subprocess, as a user would; the oracle is DuckDB over all the input rows.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import polars as pl
from deltalake import write_deltalake
from polars.testing import assert_frame_equal

import engine
from engine.manifest import read_checkpoints
from tests.helpers import duck, sort_all

# The input is a Delta table next to the SQL ('path' is relative to the .sql file), so the pipeline's offsets
# are Delta versions: no file names, and the state directory part of relocation is what these tests assert.
SQL = """
CREATE TABLE orders (id BIGINT, cust BIGINT, amount BIGINT) WITH ('connector' = 'delta', 'path' = 'input');
CREATE TABLE totals (cust BIGINT, n BIGINT, amount BIGINT, PRIMARY KEY (cust) NOT ENFORCED)
WITH ('connector' = 'delta', 'path' = 'out/totals');
INSERT INTO totals SELECT /*+ STATE_ID('totals') */ cust, COUNT(*), SUM(amount) FROM orders GROUP BY cust;
CREATE TABLE seen (id BIGINT, cust BIGINT) WITH ('connector' = 'delta', 'path' = 'out/seen');
INSERT INTO seen SELECT id, cust FROM orders;
"""

FILES_SQL = """
CREATE TABLE orders (id BIGINT, cust BIGINT, amount BIGINT) WITH ('connector' = 'filesystem', 'path' = 'data',
  'format' = 'json');
CREATE TABLE totals (cust BIGINT, n BIGINT, amount BIGINT, PRIMARY KEY (cust) NOT ENFORCED)
WITH ('connector' = 'delta', 'path' = 'out/totals');
INSERT INTO totals SELECT /*+ STATE_ID('totals') */ cust, COUNT(*), SUM(amount) FROM orders GROUP BY cust;
CREATE TABLE seen (id BIGINT, cust BIGINT) WITH ('connector' = 'delta', 'path' = 'out/seen');
INSERT INTO seen SELECT id, cust FROM orders;
"""

SCHEMA = {"id": pl.Int64, "cust": pl.Int64, "amount": pl.Int64}


def _rows(first: int, count: int) -> pl.DataFrame:
    ids = list(range(first, first + count))
    return pl.DataFrame({"id": ids, "cust": [i % 5 for i in ids], "amount": [i * 7 % 23 for i in ids]}, schema=SCHEMA)


def _project(root: Path, first: int = 0, count: int = 40) -> None:
    root.mkdir(parents=True)
    (root / "p.sql").write_text(SQL)
    _append(root, first, count)


def _append(root: Path, first: int, count: int) -> None:
    write_deltalake(str(root / "input"), _rows(first, count).to_arrow(), mode="append")


def _cli(*args: str | Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-m", "engine.cli", *map(str, args)], capture_output=True, text=True, timeout=120
    )
    if check:
        assert done.returncode == 0, done.stderr
        assert "Traceback" not in done.stderr
    return done


def _run(root: Path, state: str = "st", *extra: str) -> dict:
    done = _cli("run", root / "p.sql", "--state", root / state, "--once", "--max-epoch-rows", "15", "--json", *extra)
    return json.loads(done.stdout.strip().splitlines()[-1])


def _oracle(inputs: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    totals = duck("SELECT cust, COUNT(*) AS n, SUM(amount) AS amount FROM i GROUP BY cust", i=inputs)
    seen = duck("SELECT id, cust FROM i", i=inputs)
    return sort_all(totals), sort_all(seen)


def _assert_sinks_equal_oracle(root: Path, inputs: pl.DataFrame) -> None:
    totals, seen = _oracle(inputs)
    got_totals = sort_all(pl.read_delta(str(root / "out" / "totals")).select("cust", "n", "amount"))
    got_seen = sort_all(pl.read_delta(str(root / "out" / "seen")).select("id", "cust"))
    assert_frame_equal(got_totals, totals, check_dtypes=False)
    assert_frame_equal(got_seen, seen, check_dtypes=False)  # each row exactly once


def _fingerprint(folder: Path) -> dict[str, str]:
    """Every file below `folder` (its lease included) and a hash of its bytes."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _recorded_paths(state: Path) -> list[str]:
    """Every table path and operator directory as the manifest stores them (not as readers resolve them)."""
    frame = pl.read_delta(str(state / "manifest"))
    paths = [t["path"] for tables in frame.get_column("tables").to_list() for t in tables or []]
    for text in frame.get_column("operators").to_list():
        paths += [record["directory"] for record in json.loads(text or "{}").values() if "directory" in record]
    return paths


def test_a_copied_state_directory_runs_on_its_own_tables_and_leaves_the_original_untouched(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    _project(a)
    _run(a)
    shutil.copytree(a, b, symlinks=True)  # the whole project: SQL, input, sinks, state (like `cp -a`)
    before = _fingerprint(a)

    _append(b, 40, 30)
    summary = _run(b)
    assert summary["rows_in"] == {"orders": 30} or sum(summary["rows_in"].values()) == 30

    _assert_sinks_equal_oracle(b, pl.concat([_rows(0, 40), _rows(40, 30)]))
    assert _fingerprint(a) == before  # not a byte of the original changed: no commit to its state or sinks
    _assert_sinks_equal_oracle(a, _rows(0, 40))
    # Inside the state directory, everything is recorded relative to it.
    recorded = _recorded_paths(b / "st")
    assert recorded and not [p for p in recorded if os.path.isabs(p)]
    # Readers of the copy see the copy's state.
    assert engine.open(b / "st").state("totals").get_column("__rows").sum() == 70
    assert engine.open(a / "st").state("totals").get_column("__rows").sum() == 40


def test_copying_only_the_state_directory_into_another_project(tmp_path: Path) -> None:
    """`cp -a A/st B/st`: B's runs restore from and commit to B's state only; B's sinks are its SQL's own."""
    a, b = tmp_path / "a", tmp_path / "b"
    _project(a)
    _run(a)
    b.mkdir()
    (b / "p.sql").write_text(SQL)
    shutil.copytree(a / "input", b / "input", symlinks=True)
    shutil.copytree(a / "st", b / "st", symlinks=True)
    before = _fingerprint(a)

    _append(b, 40, 30)
    _run(b)
    assert _fingerprint(a) == before
    totals, _ = _oracle(pl.concat([_rows(0, 40), _rows(40, 30)]))
    assert engine.open(b / "st").state("totals").get_column("__rows").sum() == 70
    # Every key changed, so B's fresh upsert sink holds every total; its append sink holds the rows B read.
    got = sort_all(pl.read_delta(str(b / "out" / "totals")).select("cust", "n", "amount"))
    assert_frame_equal(got, totals, check_dtypes=False)
    assert sorted(pl.read_delta(str(b / "out" / "seen")).get_column("id").to_list()) == list(range(40, 70))


def test_a_state_directory_moved_away_from_its_sinks(tmp_path: Path) -> None:
    """Moved alone: its state goes with it, the sinks stay where the SQL declares them; a rollback that would
    miss a sink says so instead of leaving it as it is."""
    a = tmp_path / "a"
    _project(a)
    _run(a)
    _append(a, 40, 10)
    _run(a)
    moved = tmp_path / "elsewhere" / "st"
    moved.parent.mkdir()
    shutil.move(a / "st", moved)
    first = int(engine.open(moved).checkpoints().get_column("epoch").min())

    refused = _cli("rollback", moved, "--to-epoch", str(first), check=False)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert "sink 'totals'" in refused.stderr and "not found" in refused.stderr, refused.stderr

    _append(a, 50, 10)
    _cli("run", a / "p.sql", "--state", moved, "--once", "--json")  # the sinks are the SQL's, in a/out
    _assert_sinks_equal_oracle(a, _rows(0, 60))
    assert engine.open(moved).state("totals").get_column("__rows").sum() == 60
    _cli("rollback", moved, "--to-epoch", str(first))
    assert engine.open(moved).state("totals").get_column("__rows").sum() == 15
    assert pl.read_delta(str(a / "out" / "seen")).height == 15


def test_moving_the_whole_project_folder_keeps_every_row_exactly_once(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "elsewhere" / "b"
    _project(a)
    _run(a)
    b.parent.mkdir()
    shutil.move(a, b)
    _append(b, 40, 25)
    _run(b)
    _assert_sinks_equal_oracle(b, pl.concat([_rows(0, 40), _rows(40, 25)]))
    assert not a.exists()
    # The sinks (beside the state directory, in the project folder) are recorded relative to it too.
    assert all(not os.path.isabs(p) for p in _recorded_paths(b / "st"))
    # The history of the moved directory reads as before: state and sinks at the first run's epochs.
    history = engine.open(b / "st")
    first = int(history.checkpoints().filter(pl.col("kind") == "epoch").get_column("epoch").min())
    assert history.state("totals", at=first).get_column("__rows").sum() == 15
    assert history.sink("seen", at=first).height == 15
    verify = _cli("verify", b / "st", "--json")
    assert json.loads(verify.stdout)["problems"] == [], verify.stdout


def test_moving_a_project_that_reads_files_keeps_every_row_exactly_once(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "moved"
    (a / "data").mkdir(parents=True)
    (a / "p.sql").write_text(FILES_SQL)

    def write(root: Path, first: int, count: int) -> None:
        lines = [json.dumps(r) for r in _rows(first, count).to_dicts()]
        (root / "data" / f"part-{first:04d}.json").write_text("\n".join(lines) + "\n")

    write(a, 0, 30)
    _run(a)
    shutil.move(a, b)
    write(b, 30, 20)
    _run(b)
    _assert_sinks_equal_oracle(b, pl.concat([_rows(0, 30), _rows(30, 20)]))


def _epochs_read(state: Path) -> int:
    """How many input rows the committed epochs of `state` have read (0 before the first commit)."""
    try:
        metrics = pl.read_delta(str(state / "manifest")).filter(pl.col("kind") == "epoch").get_column("metrics")
    except Exception:
        return 0
    return sum(sum(json.loads(m).get("rows_in", {}).values()) for m in metrics.to_list())


def _wait_for(condition: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_a_copy_taken_while_the_original_runs_is_consistent(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    _project(a, 0, 30)
    running = subprocess.Popen(
        [sys.executable, "-m", "engine.cli", "run", a / "p.sql", "--state", a / "st", "--trigger", "50ms", "--quiet"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_for(lambda: _epochs_read(a / "st") == 30)
        # Feed the running original while the copy is taken, so that it commits epochs during the copy.
        for first in range(30, 90, 10):
            _append(a, first, 10)
            time.sleep(0.05)
        shutil.copytree(a, b, symlinks=True)  # the lease and its lock file too, as `cp -a` copies them
        _append(a, 90, 10)
        _wait_for(lambda: _epochs_read(a / "st") == 100)
    finally:
        running.send_signal(signal.SIGINT)
        _, err = running.communicate(timeout=60)
    assert running.returncode in (0, 130), err
    before = _fingerprint(a)

    # The copy is a crash-consistent snapshot: its manifest names a cut, and the run resumes from that cut
    # and reads on to the end of the copied input.
    copied = pl.read_delta(str(b / "input"))
    _run(b)
    _assert_sinks_equal_oracle(b, copied.select(SCHEMA.keys()))
    assert _fingerprint(a) == before
    _assert_sinks_equal_oracle(a, _rows(0, 100))


def test_a_branch_of_a_copy_and_history_at_old_epochs(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    _project(a)
    _run(a)
    shutil.copytree(a, b, symlinks=True)
    before = _fingerprint(a)
    _append(b, 40, 20)
    _run(b)

    history = engine.open(b / "st")
    epochs = history.checkpoints().filter(pl.col("kind") == "epoch").get_column("epoch").to_list()
    first, last = min(epochs), max(epochs)
    assert history.state("totals", at=first).get_column("__rows").sum() == 15
    assert history.state("totals", at=last).get_column("__rows").sum() == 60
    assert history.sink("seen", at=first).height == 15
    assert history.sink("seen").height == 60
    # Every table the copy's manifest names lies inside the copy (or is one of its own sinks).
    for path in history.tables(at=first).get_column("path").to_list():
        assert Path(path).is_relative_to(b), path

    done = _cli("branch", b / "st", b / "br", "--from", "epoch", str(first), "--json")
    made = json.loads(done.stdout)
    assert all(Path(p).is_relative_to(b) for p in made["sinks"].values()), made
    branch = engine.open(b / "br")
    assert branch.state("totals").get_column("__rows").sum() == 15
    _run(b, "br")  # the branch resumes from its cut and reads all the input
    assert branch.state("totals").get_column("__rows").sum() == 60
    assert_frame_equal(
        sort_all(pl.read_delta(made["sinks"]["seen"]).select("id", "cust")),
        _oracle(pl.concat([_rows(0, 40), _rows(40, 20)]))[1],
        check_dtypes=False,
    )
    assert _fingerprint(a) == before
    # The parent's log names the branch; the whole project (parent and branch) can move and both still work.
    c = tmp_path / "c"
    shutil.move(b, c)
    assert engine.open(c / "br").state("totals").get_column("__rows").sum() == 60
    log = json.loads(_cli("log", c / "st", "--json").stdout)
    assert any(e["kind"] == "branch" and Path(e["path"]) == c / "br" for e in log), log
    _append(c, 60, 10)
    _run(c, "br")
    assert engine.open(c / "br").state("totals").get_column("__rows").sum() == 70


def _absolutize(state: Path, old_root: Path) -> None:
    """Rewrite the manifest as an earlier version wrote it: every path absolute, under `old_root`."""
    frame = pl.read_delta(str(state / "manifest"))

    def absolute(text: str) -> str:
        return text if os.path.isabs(text) else os.path.normpath(os.path.join(old_root, text))

    def operators(text: str | None) -> str | None:
        if not text:
            return text
        records = json.loads(text)
        for record in records.values():
            if "directory" in record:
                record["directory"] = absolute(record["directory"])
        return json.dumps(records, sort_keys=True)

    rows = frame.to_dicts()
    for row in rows:
        row["tables"] = [{**t, "path": absolute(t["path"])} for t in row["tables"] or []]
        row["operators"] = operators(row["operators"])
    old = pl.DataFrame(rows, schema=frame.schema)
    write_deltalake(str(state / "manifest"), old.to_arrow(), mode="overwrite")


def test_a_directory_written_with_absolute_paths_still_works_after_a_move(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    _project(a)
    _run(a)
    _absolutize(a / "st", a / "st")
    assert all(os.path.isabs(p) for p in _recorded_paths(a / "st"))
    shutil.move(a, b)

    # Readers map the old absolute paths under the original location to the current one.
    history = engine.open(b / "st")
    assert history.state("totals").get_column("__rows").sum() == 40
    assert all(Path(p).is_relative_to(b) for p in history.tables().get_column("path").to_list())
    rows = read_checkpoints(b / "st" / "manifest")
    assert all(Path(t["path"]).is_relative_to(b) for ts in rows.get_column("tables").to_list() for t in ts or [])
    assert json.loads(_cli("verify", b / "st", "--json").stdout)["problems"] == []
    state = json.loads(_cli("state", b / "st", "totals", "--json").stdout)
    assert sum(r["__rows"] for r in state) == 40

    # The runner too: it resumes from the moved tables and writes relative paths from now on.
    _append(b, 40, 20)
    _run(b)
    _assert_sinks_equal_oracle(b, pl.concat([_rows(0, 40), _rows(40, 20)]))
    latest = pl.read_delta(str(b / "st" / "manifest")).sort("committed_at").row(-1, named=True)
    assert all(not os.path.isabs(t["path"]) for t in latest["tables"])
    # And a rollback to an epoch written with absolute paths restores the moved tables.
    first = int(rows.filter(pl.col("kind") == "epoch").get_column("epoch").min())
    _cli("rollback", b / "st", "--to-epoch", str(first))
    assert engine.open(b / "st").state("totals").get_column("__rows").sum() == 15
    assert pl.read_delta(str(b / "out" / "seen")).height == 15
