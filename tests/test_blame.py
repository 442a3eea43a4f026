"""Blame a key: the epochs that changed it, before and after, the input slices and rows, against hand-computed
answers; across a compaction of the state log and a rollback whose abandoned epochs must not appear."""

from __future__ import annotations

import datetime as dt
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import polars as pl
import pytest

import engine
from engine import retention, state_store, versioning
from engine.branching import create_branch
from engine.cli import main
from engine.delta_tables import delta
from engine.errors import UserError
from engine.key_blame import BlameError, find_changes
from engine.state_dir import StateDir
from tests.helpers import run, write_jsonl

SQL = """
CREATE TABLE src (k STRING, v BIGINT) WITH ('connector' = 'filesystem', 'path' = 'in', 'format' = 'json');
CREATE TABLE out (k STRING, n BIGINT, s BIGINT, PRIMARY KEY (k) NOT ENFORCED)
WITH ('connector' = 'delta', 'path' = 'out');
INSERT INTO out SELECT /*+ STATE_ID('totals') */ k, COUNT(*), SUM(v) FROM src GROUP BY k;
"""

# One file per run (one epoch each); `a` is untouched by f2 and f4.
FILES = {
    "f1.json": [{"k": "a", "v": 1}, {"k": "b", "v": 2}],
    "f2.json": [{"k": "b", "v": 3}],
    "f3.json": [{"k": "b", "v": 4}, {"k": "a", "v": 5}],
    "f4.json": [{"k": "b", "v": 5}],
    "f5.json": [{"k": "a", "v": 10}],
    "f6.json": [{"k": "a", "v": 100}],
}


def _history(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Epochs 1-6 (compactions after epochs 3 and 6: log rows > max(2 x live, 3)), a rollback to epoch 5 (it
    abandons epoch 6), then a re-run: epoch 7 reads f6 again, epoch 8 reads f7, one checkpoint (8) for both."""
    monkeypatch.setattr(state_store, "COMPACT_MIN_ROWS", 3)
    for name, rows in FILES.items():
        write_jsonl(root / "in" / name, rows)
        run(root, SQL)
    versioning.rollback(root / "state", to_epoch=5, reason="test")
    write_jsonl(root / "in" / "f7.json", [{"k": "c", "v": 7}])
    summary = run(root, SQL, max_epoch_rows=1, checkpoint_interval="2 epochs")
    assert summary["last_epoch"] == 8
    operations = [c["operation"] for c in delta(root / "state" / "operators" / "totals" / "state").history()]
    assert operations.count("WRITE") >= 8 and "RESTORE" in operations  # the appends, compactions and the restore
    modes = [
        (c.get("operationParameters") or {}).get("mode")
        for c in delta(root / "state" / "operators" / "totals" / "state").history()
    ]
    assert modes.count("Overwrite") == 2, modes  # else the test proves nothing about compaction


def _size(root: Path, name: str) -> int:
    return (root / "in" / name).stat().st_size


def _slice(root: Path, name: str, records: int) -> dict[str, Any]:
    return {"file": name, "bytes": [0, _size(root, name)], "records": [0, records]}


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One project folder with that history, shared by the tests that only read it."""
    root = tmp_path_factory.mktemp("blame")
    with pytest.MonkeyPatch.context() as monkeypatch:
        _history(root, monkeypatch)
    return root


def test_blame_across_a_compaction_and_a_rollback(history: Path, tmp_path: Path) -> None:
    shutil.copytree(history, tmp_path, dirs_exist_ok=True)  # a copy: retention below changes it
    changes, rows = engine.blame(tmp_path / "state", "totals", {"k": "a"}, rows=True, sql=tmp_path / "pipeline.sql")
    # By hand: a gets 1 (epoch 1), 5 (epoch 3), 10 (epoch 5), 100 (epoch 6, rolled back; read again in epoch 7,
    # committed by checkpoint 8). Epochs 2 and 4 do not touch it; epoch 6 is abandoned.
    got = changes.select("epoch", "change", "count__count_before", "count__count_after", "sum_v__sum_before")
    assert got.rows() == [
        (1, "inserted", None, 1, None),
        (3, "updated", 1, 2, 1),
        (5, "updated", 2, 3, 6),
        (8, "updated", 3, 4, 16),
    ]
    assert changes.get_column("sum_v__sum_after").to_list() == [1, 6, 16, 116]
    assert changes.get_column("epochs").to_list() == [[1], [3], [5], [7, 8]]
    inputs = [json.loads(text) for text in changes.get_column("input")]
    assert inputs[0] == [
        {"epoch": 1, "sources": {"src": {"start": [0, 0], "end": [1, 0], "files": [_slice(tmp_path, "f1.json", 2)]}}}
    ]
    assert inputs[1][0]["sources"]["src"]["files"] == [_slice(tmp_path, "f3.json", 2)]
    assert inputs[2][0]["sources"]["src"]["files"] == [_slice(tmp_path, "f5.json", 1)]
    assert [(i["epoch"], i["sources"]["src"]["files"]) for i in inputs[3]] == [
        (7, [_slice(tmp_path, "f6.json", 1)]),
        (8, [_slice(tmp_path, "f7.json", 1)]),
    ]
    assert rows.select("epoch", "read_in", "source", "file", "k", "v").rows() == [
        (1, 1, "src", "f1.json", "a", 1),
        (3, 3, "src", "f3.json", "a", 5),
        (5, 5, "src", "f5.json", "a", 10),
        (8, 7, "src", "f6.json", "a", 100),
    ]
    # Up to a savepoint-like point in the past: the cut at epoch 3 sees the first two changes only.
    early = engine.blame(tmp_path / "state", "totals", {"k": "a"}, at=3)
    assert early.get_column("epoch").to_list() == [1, 3]
    # b: every epoch but 5 and 7-8 changed it; before/after chain.
    b = engine.blame(tmp_path / "state", "totals", {"k": "b"})
    assert b.select("epoch", "sum_v__sum_after").rows() == [(1, 2), (2, 5), (3, 9), (4, 14)]

    # A branch at epoch 5 starts from a copy of the state: what it holds is shown, marked incomplete.
    create_branch(tmp_path / "state", tmp_path / "branch", epoch=5, sink_paths={"out": str(tmp_path / "b_out")})
    branched = find_changes(engine.open(tmp_path / "branch"), "totals", {"k": "a"})
    assert branched.complete is False and "a branch of" in str(branched.why)
    assert branched.changes.select("epoch", "sum_v__sum_after", "epochs").rows() == [(3, 6, [3]), (5, 16, [5])]

    # Retention keeps the last two resumable rows (the rollback, numbered 6, and epoch 8): the log versions
    # before the compaction of epoch 3, the manifest rows of epochs 1-5 and the slices of epochs 1-4 are freed
    # (the rollback's state is checkpoint 5's: its slice stays, and where its epochs start is recorded). What the
    # log still shows is reported (the compaction kept a's row of epoch 3); checkpoint 3's range is bounded by
    # what is known (nothing before it: from epoch 1), its input marked as freed.
    directory = StateDir(tmp_path / "state")
    with directory.lock():
        retention.apply(directory, retention.RetentionPolicy(count=2))
    found = find_changes(engine.open(tmp_path / "state"), "totals", {"k": "a"})
    assert found.complete is False and "epochs of checkpoint 3 are bounded" in str(found.why)
    assert found.changes.select("epoch", "sum_v__sum_after", "epochs").rows() == [
        (3, 6, [1, 2, 3]),
        (5, 16, [5]),
        (8, 116, [7, 8]),
    ]
    inputs = [json.loads(i) for i in found.changes.get_column("input")]
    assert inputs[0] == [{"epoch": e, "freed": True} for e in (1, 2, 3)]
    assert inputs[1][0]["sources"]["src"]["files"] == [_slice(tmp_path, "f5.json", 1)]


def test_blame_from_the_command_line(history: Path) -> None:
    tmp_path = history
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "engine.cli",
            "blame",
            "state",
            "totals",
            "--key",
            "k=a",
            "--rows",
            "--sql",
            "pipeline.sql",
            "--json",
            "--limit",
            "2",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert [c["epoch"] for c in report["changes"]] == [5, 8] and report["more"] == 2
    assert report["changes"][1]["input"][0]["sources"]["src"]["files"] == [_slice(tmp_path, "f6.json", 1)]
    assert [(r["epoch"], r["file"], r["v"]) for r in report["rows"]] == [(5, "f5.json", 10), (8, "f6.json", 100)]
    assert report["unmatched"] == [] and report["complete"] is True


def test_refused_keys_and_a_key_never_seen(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_jsonl(tmp_path / "in" / "f1.json", [{"k": 1, "v": 1}])
    run(tmp_path, SQL.replace("k STRING", "k BIGINT"))
    state = str(tmp_path / "state")
    with pytest.raises(BlameError, match="'x' is not a key column of totals; key columns: k"):
        engine.blame(state, "totals", {"x": "1"})
    assert main(["blame", state, "totals", "--key", "k=abc"]) == 2
    assert capsys.readouterr().err.strip() == "error: k='abc' is not a BIGINT (the type of totals.k)"
    assert main(["blame", state, "totals", "--key", "nope=1"]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
    assert main(["blame", state, "totals", "--key", "k=42"]) == 0
    assert "the key was never in its state" in capsys.readouterr().out
    assert engine.blame(state, "totals", {"k": "42"}).is_empty()


WINDOWED = """
CREATE TABLE src (k STRING, v BIGINT, ts TIMESTAMP(3), WATERMARK FOR ts AS ts - INTERVAL '1' SECOND)
WITH ('connector' = 'filesystem', 'path' = 'in', 'format' = 'json');
CREATE TABLE out (k STRING, ws TIMESTAMP(3), n BIGINT) WITH ('connector' = 'delta', 'path' = 'out');
INSERT INTO out SELECT /*+ STATE_ID('per10') */ k, window_start, COUNT(*)
FROM TABLE(TUMBLE(TABLE src, DESCRIPTOR(ts), INTERVAL '10' SECOND)) GROUP BY k, window_start, window_end;
"""


def test_blame_a_window_key(tmp_path: Path) -> None:
    """A window's key has its bounds: its input rows are those whose time attribute falls in the window."""
    batches = [
        [{"k": "a", "v": 1, "ts": "2026-01-01 00:00:11"}, {"k": "a", "v": 2, "ts": "2026-01-01 00:00:02"}],
        [{"k": "a", "v": 3, "ts": "2026-01-01 00:00:15"}, {"k": "b", "v": 4, "ts": "2026-01-01 00:00:16"}],
        [{"k": "a", "v": 5, "ts": "2026-01-01 00:00:25"}],  # the watermark passes 00:00:20: the window fires
    ]
    for i, rows in enumerate(batches, 1):
        write_jsonl(tmp_path / "in" / f"f{i}.json", rows)
        run(tmp_path, WINDOWED)
    start = dt.datetime(2026, 1, 1, 0, 0, 10, tzinfo=dt.UTC)
    key = {"k": "a", "window_start": "2026-01-01 00:00:10"}
    changes, rows = engine.blame(tmp_path / "state", "per10", key, rows=True, sql=tmp_path / "pipeline.sql")
    assert changes.select("epoch", "change", "window_start", "count__count_before", "count__count_after").rows() == [
        (1, "inserted", start, None, 1),
        (2, "updated", start, 1, 2),
        (3, "deleted", start, 2, None),
    ]
    assert rows.select("epoch", "file", "v").rows() == [(1, "f1.json", 1), (2, "f2.json", 3)]
    # A part of the key blames every key that matches: a's windows (the row at 00:00:02 was late: the epoch's
    # watermark, 00:00:10, had closed its window, so the state never held it).
    every = engine.blame(tmp_path / "state", "per10", {"k": "a"})
    assert every.select("epoch", "change", pl.col("window_start").dt.second(), "count__count_after").rows() == [
        (1, "inserted", 10, 1),
        (2, "updated", 10, 2),
        (3, "deleted", 10, None),
        (3, "inserted", 20, 1),
    ]


def test_blame_equals_the_state_read_at_every_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The oracle blame avoids: the key's state read at each checkpoint, compared with the one before."""
    monkeypatch.setattr(state_store, "COMPACT_MIN_ROWS", 4)
    write_jsonl(tmp_path / "in" / "f.json", [{"k": "abcde"[(i * 7) % 5 if i % 3 else 0], "v": i} for i in range(60)])
    last = run(tmp_path, SQL, max_epoch_rows=4)["last_epoch"]
    commits = delta(tmp_path / "state" / "operators" / "totals" / "state").history()
    assert any((c.get("operationParameters") or {}).get("mode") == "Overwrite" for c in commits)  # compacted
    h = engine.open(tmp_path / "state")
    for k in "abcde":
        expected: list[tuple[Any, ...]] = []
        before: list[tuple[Any, ...]] = []  # nothing before the first epoch
        for epoch in range(1, last + 1):
            now = h.state("totals", at=epoch).filter(pl.col("k") == k).select("count__count", "sum_v__sum").rows()
            if now != before:
                expected.append((epoch, *(now[0] if now else (None, None))))
            before = now
        got = engine.blame(tmp_path / "state", "totals", {"k": k})
        assert got.select("epoch", "count__count_after", "sum_v__sum_after").rows() == expected, k


def test_blame_a_state_directory_in_s3(history: Path, s3: Any) -> None:
    """Uploaded as it is, the state directory blames the same from a bucket (its input stays on the disk)."""
    from engine.storage import ObjectPath, copy_tree

    remote = ObjectPath("s3", s3.bucket(), "proj") / "state"
    copy_tree(history / "state", remote)
    local, local_rows = engine.blame(history / "state", "totals", {"k": "a"}, rows=True, sql=history / "pipeline.sql")
    there, rows = engine.blame(str(remote), "totals", {"k": "a"}, rows=True, sql=history / "pipeline.sql")
    assert there.equals(local) and rows.equals(local_rows)


def test_blame_after_retention_keeps_the_ranges_and_slices_of_what_it_kept(tmp_path: Path) -> None:
    """Checkpoints every 3 epochs (3, 6, 9), a savepoint at 6, retention keeping one checkpoint: the manifest
    rows of 3 goes. The ranges never overlap: 6 and 9 as retention recorded them (their slices kept), 3 bounded
    by what is known and said to be."""
    for i in range(1, 10):
        write_jsonl(tmp_path / "in" / f"f{i}.json", [{"k": "a", "v": i}])
    assert run(tmp_path, SQL, max_epoch_rows=1, checkpoint_interval="3 epochs")["last_epoch"] == 9
    versioning.create_savepoint(tmp_path / "state", "s6", epoch=6)
    before = find_changes(engine.open(tmp_path / "state"), "totals", {"k": "a"})
    assert before.complete and before.changes.get_column("epochs").to_list() == [[1, 2, 3], [4, 5, 6], [7, 8, 9]]
    directory = StateDir(tmp_path / "state")
    with directory.lock():
        retention.apply(directory, retention.RetentionPolicy(count=1))
    found = find_changes(engine.open(tmp_path / "state"), "totals", {"k": "a"})
    assert found.changes.select("epoch", "change", "epochs").rows() == [
        (3, "inserted", [1, 2, 3]),
        (6, "updated", [4, 5, 6]),
        (9, "updated", [7, 8, 9]),
    ]
    assert found.complete is False and "epochs of checkpoint 3 are bounded" in str(found.why)
    files = [
        [(i["epoch"], i.get("freed") or i["sources"]["src"]["files"][0]["file"]) for i in json.loads(text)]
        for text in found.changes.get_column("input")
    ]
    assert files == [
        [(1, True), (2, True), (3, True)],
        [(4, "f4.json"), (5, "f5.json"), (6, "f6.json")],
        [(7, "f7.json"), (8, "f8.json"), (9, "f9.json")],
    ]
    # The offset log still reads as one history (the kept files are in the summary too): a run continues.
    write_jsonl(tmp_path / "in" / "f10.json", [{"k": "a", "v": 10}])
    run(tmp_path, SQL)
    assert engine.open(tmp_path / "state").state("totals").get_column("count__count").to_list() == [10]


def test_key_values_as_typed_null_and_refusals(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`--key` keeps a value's spaces, takes unquoted NULL as SQL NULL, refuses a column named twice; the Python
    API takes the same string."""
    write_jsonl(tmp_path / "in" / "f1.json", [{"k": " sp", "v": 1}, {"k": None, "v": 2}, {"k": "NULL", "v": 3}])
    run(tmp_path, SQL)
    state = str(tmp_path / "state")
    assert main(["blame", state, "totals", "--key", "k= sp", "--json"]) == 0
    assert [c["sum_v__sum_after"] for c in json.loads(capsys.readouterr().out)["changes"]] == [1]
    assert main(["blame", state, "totals", "--key", "k=null", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["key"] == {"k": None} and [c["sum_v__sum_after"] for c in report["changes"]] == [2]
    assert engine.blame(state, "totals", {"k": "NULL"}).get_column("sum_v__sum_after").to_list() == [3]
    assert engine.blame(state, "totals", key="k= sp").get_column("sum_v__sum_after").to_list() == [1]
    assert main(["blame", state, "totals", "--key", "k=a", "--key", "K=b"]) == 2
    assert capsys.readouterr().err.strip() == "error: --key names K twice: give each key column once"
    with pytest.raises(BlameError, match="key= takes a dict"):
        engine.blame(state, "totals", key=["k", "a"])  # type: ignore[arg-type]


JOINED = """
CREATE TABLE orders (cust STRING, amount BIGINT)
WITH ('connector' = 'filesystem', 'path' = 'orders', 'format' = 'json');
CREATE TABLE customers (cust STRING, region STRING)
WITH ('connector' = 'filesystem', 'path' = 'cust', 'format' = 'json');
CREATE TABLE out (region STRING, n BIGINT, PRIMARY KEY (region) NOT ENFORCED)
WITH ('connector' = 'delta', 'path' = 'out');
INSERT INTO out SELECT /*+ STATE_ID('byreg') */ region, COUNT(*) FROM orders o JOIN customers c ON o.cust = c.cust
GROUP BY region;
"""


def test_rows_of_a_join_key_and_a_rewritten_file(tmp_path: Path) -> None:
    """`unmatched` names only key columns no listed row was filtered by (the customers' rows were, by region;
    the orders have no region and list nothing); a file rewritten since is refused saying so."""
    write_jsonl(tmp_path / "cust" / "c.json", [{"cust": "x", "region": "eu"}, {"cust": "y", "region": "us"}])
    write_jsonl(tmp_path / "orders" / "o.json", [{"cust": "x", "amount": 1}, {"cust": "y", "amount": 2}])
    run(tmp_path, JOINED)
    state, sql = tmp_path / "state", tmp_path / "pipeline.sql"
    changes, rows = engine.blame(state, "byreg", {"region": "eu"}, rows=True, sql=sql)
    assert changes.select("epoch", "count__count_after").rows() == [(1, 1)]
    assert rows.select("source", "cust", "region").rows() == [("customers", "x", "eu")]
    assert rows.get_column("unmatched")[0].to_list() == []
    write_jsonl(tmp_path / "cust" / "c.json", [{"cust": "x", "region": "asia"}, {"cust": "y", "region": "us"}])
    with pytest.raises(UserError) as refused:
        engine.blame(state, "byreg", {"region": "eu"}, rows=True, sql=sql)
    assert str(refused.value) == (
        "the input epoch 1 read cannot be read again: c.json was rewritten since epoch 1 read its records 0 to 1, "
        "so they are no longer there as they were read (blame without --rows still shows the slice)"
    )
