"""Savepoint exports: a self-contained, checksummed copy of one cut that pipelines start from anywhere."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
from deltalake import DeltaTable
from polars.testing import assert_frame_equal

from engine import Pipeline, export_savepoint, state_at, versioning
from engine import open as engine_open
from engine.branching import create_branch
from engine.errors import UserError
from engine.history import checkpoint
from engine.savepoint_export import ExportDamaged, export_problems, refuse_run_on_export, start_from_export
from engine.storage import location
from engine.verify import verify
from tests.helpers import read_sink, run, sort_all
from tests.test_versioning import STATEFUL, _inputs, _sinks

SINKS = ("w", "totals", "pairs")
ROWS = 40  # rows per source per epoch: 5 epochs over the input
OPERATORS = ("totals", "per10")


def cli(cwd: Path, *args: str, crash_at: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("TIMELAPSE_CRASH_AT", "TIMELAPSE_FAIL_AT")}
    env |= {"TIMELAPSE_CRASH_AT": crash_at} if crash_at else {}
    return subprocess.run(
        [sys.executable, "-m", "engine.cli", *args], capture_output=True, text=True, cwd=cwd, timeout=120, env=env
    )


def _original(root: Path, name: str = "sp") -> dict[str, pl.DataFrame]:
    """A pipeline run 4 epochs, savepoint `name` at epoch 3, then to the end; the operators' state at the savepoint."""
    _inputs(root)
    run(root, STATEFUL, max_epoch_rows=ROWS, max_epochs=4)
    versioning.create_savepoint(root / "state", name, epoch=3, reason="before the deploy")
    run(root, STATEFUL, max_epoch_rows=ROWS)
    return {op: sort_all(state_at(root / "state", op, 3).collect()) for op in OPERATORS}


def _straight(root: Path) -> dict[str, pl.DataFrame]:
    _inputs(root)
    run(root, STATEFUL, max_epoch_rows=ROWS)
    return _sinks(root)


def test_export_delete_the_original_then_branch_and_run_from_it_equal_a_straight_run(tmp_path: Path) -> None:
    expected = _straight(tmp_path / "straight")
    root = tmp_path / "p"
    at_savepoint = _original(root)
    sinks_at_savepoint = {
        name: sort_all(pl.read_delta(str(root / name), version=_version(root / "state", 3, name))) for name in SINKS
    }
    logged = {
        t["name"]: pl.read_delta(t["path"], version=t["version"]) for t in checkpoint(root / "state", 3)["tables"]
    }
    done = export_savepoint(root / "state", "sp", tmp_path / "exported", with_sinks=True)
    assert (done["epoch"], done["sinks"]) == (3, sorted(SINKS))

    # The original is gone, with its sinks; the export is moved elsewhere (it is relocatable).
    for path in ["state", *SINKS]:
        shutil.rmtree(root / path)
    export = tmp_path / "elsewhere" / "snapshot"
    export.parent.mkdir()
    shutil.move(tmp_path / "exported", export)

    # Only the cut: every state table is one version of live rows, one per key, no tombstone; no older epochs.
    row = checkpoint(export, 3)
    for table in row["tables"]:
        delta = DeltaTable(table["path"])
        assert delta.version() == 0 and len(delta.history()) == 1, table["name"]
        if table["role"] == "state":
            rows = pl.read_delta(table["path"])
            keys = json.loads(table["schema"])["keys"]
            assert not rows["_deleted"].any() and rows.select(keys).is_duplicated().sum() == 0
            assert logged[table["name"]].height >= rows.height
    assert logged["per10"].height > pl.read_delta(str(export / "operators" / "per10" / "state")).height  # compacted
    assert [p.name for p in sorted((export / "offsets").iterdir())] == ["000000000003.json", "base.json"]
    for op in OPERATORS:
        assert_frame_equal(sort_all(state_at(export, op).collect()), at_savepoint[op])
    for name in SINKS:
        assert_frame_equal(sort_all(read_sink(export / "tables" / name)), sinks_at_savepoint[name])
    assert verify(export)["problems"] == []
    assert versioning.savepoints(export)["name"].to_list() == ["sp"]

    # A branch from the export (the CLI): its sinks default to copies inside the branch; it runs to the end.
    made = cli(tmp_path, "branch", str(export), "b", "--from", "savepoint", "sp", "--json")
    assert made.returncode == 0, made.stderr
    assert json.loads(made.stdout)["sinks"]["totals"] == str((tmp_path / "b" / "tables" / "totals").resolve())
    for op in OPERATORS:
        assert_frame_equal(sort_all(state_at(tmp_path / "b", op).collect()), at_savepoint[op])
    (root / "pipeline.sql").write_text(STATEFUL)
    Pipeline.from_sql(root / "pipeline.sql", state=tmp_path / "b").run(once=True, max_epoch_rows=ROWS)
    for name, frame in expected.items():
        assert_frame_equal(sort_all(read_sink(tmp_path / "b" / "tables" / name)), frame, check_dtypes=False)

    # A new pipeline from the export (the CLI's run --from-savepoint): sinks where the SQL declares them, copied
    # from the export since those paths are empty now.
    # Killed once after copying, before its manifest row: the directory is refused as it is, and the same
    # command starts over (removing what the cut-short start copied, its sinks too).
    command = ["run", "pipeline.sql", "--state", "state", "--from-savepoint", str(export), "--once", "--quiet"]
    killed = cli(root, *command, crash_at="from-savepoint.copied")
    assert killed.returncode == -signal.SIGKILL and (root / "totals" / "_delta_log").is_dir()
    with pytest.raises(UserError, match="cut short"):
        refuse_run_on_export(root / "state")
    ran = cli(root, *command, "--max-epoch-rows", str(ROWS), "--json")
    assert ran.returncode == 0, ran.stderr
    assert json.loads(ran.stdout)["epochs"] == 2  # epochs 4 and 5 of the straight run
    for name, frame in _sinks(root).items():
        assert_frame_equal(frame, expected[name], check_dtypes=False)
    straight_state = {op: sort_all(state_at(tmp_path / "straight" / "state", op).collect()) for op in OPERATORS}
    for op in OPERATORS:
        assert_frame_equal(sort_all(state_at(root / "state", op).collect()), straight_state[op])
    assert export_problems(export) == []  # nothing wrote into the export
    assert not (export / "branches").exists()


def _version(state: Path, epoch: int, sink: str) -> int:
    return int(next(t["version"] for t in checkpoint(state, epoch)["tables"] if t["name"] == sink))


def test_a_damaged_export_is_refused_naming_the_file(tmp_path: Path) -> None:
    root = tmp_path / "p"
    _original(root)
    export = tmp_path / "exp"
    made = cli(tmp_path, "savepoint", "export", "p/state", "--name", "sp", "--to", "exp", "--json")
    assert made.returncode == 0, made.stderr
    assert json.loads(made.stdout)["sinks"] == [] and not (export / "tables").exists()
    listed = json.loads((export / "export.json").read_text())
    assert listed["savepoint"] == "sp" and listed["epoch"] == 3 and not listed["with_sinks"]
    data = next(name for name in listed["files"] if name.startswith("operators/totals/") and name.endswith(".parquet"))

    # A changed data file: the CLI refuses to branch or run from it with exit 4, naming the file; verify finds it.
    (export / data).write_bytes((export / data).read_bytes() + b"x")
    branched = cli(tmp_path, "branch", "exp", "b", "--from", "savepoint", "sp")
    assert branched.returncode == 4 and data in branched.stderr and len(branched.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "b").exists()
    (root / "pipeline.sql").write_text(STATEFUL)
    ran = cli(root, "run", "pipeline.sql", "--state", "fresh", "--from-savepoint", "../exp", "--once", "--quiet")
    assert ran.returncode == 4 and data in ran.stderr, ran.stderr
    checked = cli(tmp_path, "verify", "exp")
    assert checked.returncode == 4 and data in checked.stdout

    # Missing, unlisted, and the listing itself missing: each refused, nothing made.
    original = (export / data).read_bytes()[:-1]
    (export / data).unlink()
    with pytest.raises(ExportDamaged, match=re.escape(f"{data} is missing")):
        create_branch(export, tmp_path / "b", savepoint="sp")
    (export / data).write_bytes(original)
    assert export_problems(export) == []
    (export / "operators" / "totals" / "stray.txt").write_text("?")
    with pytest.raises(ExportDamaged, match=re.escape("operators/totals/stray.txt is not in the export's listing")):
        start_from_export(export, tmp_path / "c", {})
    (export / "operators" / "totals" / "stray.txt").unlink()
    (export / "export.json").unlink()
    with pytest.raises(ExportDamaged, match=re.escape("export.json is missing")):
        create_branch(export, tmp_path / "b", savepoint="sp")
    assert "export.json is missing" in verify(export)["problems"][0]["what"]
    # Without its folded offsets: verify names base.json alone, not the epochs the export never held.
    (export / "export.json").write_text(json.dumps(listed))
    (export / "offsets" / "base.json").unlink()
    assert [p["what"] for p in verify(export)["problems"]] == ["export: offsets/base.json is missing"]
    assert not (tmp_path / "b").exists() and not (tmp_path / "c").exists()


def test_refusals_of_export_and_run_from_it(tmp_path: Path) -> None:
    root = tmp_path / "p"
    _original(root)
    with pytest.raises(versioning.VersioningError, match="no savepoint named 'nope'"):
        export_savepoint(root / "state", "nope", tmp_path / "x")
    export_savepoint(root / "state", "sp", tmp_path / "exp")
    with pytest.raises(versioning.VersioningError, match="not empty"):
        export_savepoint(root / "state", "sp", tmp_path / "exp")
    (tmp_path / "afile").write_text("x")
    with pytest.raises(versioning.VersioningError, match="afile is a file; an export needs a new directory"):
        export_savepoint(root / "state", "sp", tmp_path / "afile")
    # The state directory copied alone: its sinks (recorded beside it) are not there.
    shutil.copytree(root / "state", tmp_path / "alone" / "state")
    with pytest.raises(versioning.VersioningError, match=r"\(.*\) not found; export without --with-sinks"):
        export_savepoint(tmp_path / "alone" / "state", "sp", tmp_path / "y", with_sinks=True)
    assert not (tmp_path / "y").exists()
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "file").write_text("x")
    with pytest.raises(Exception, match="not empty: --from-savepoint"):
        start_from_export(tmp_path / "exp", tmp_path / "busy", {})
    with pytest.raises(Exception, match=r"sink 'totals': .* already holds a table"):
        start_from_export(tmp_path / "exp", tmp_path / "new", {"totals": root / "totals"})
    assert not (tmp_path / "new").exists()
    with pytest.raises(Exception, match="is not a savepoint export"):
        start_from_export(root / "state", tmp_path / "new", {})
    with pytest.raises(Exception, match="is a savepoint export and is only read"):
        refuse_run_on_export(tmp_path / "exp")
    for change in (  # nothing that takes a state directory's lock writes into an export
        lambda: versioning.create_savepoint(tmp_path / "exp", "later"),
        lambda: versioning.rollback(tmp_path / "exp", savepoint="sp"),
    ):
        with pytest.raises(UserError, match="is a savepoint export and is only read"):
            change()
    assert export_problems(tmp_path / "exp") == []


def test_export_to_s3_and_branch_back_to_a_local_directory(s3: object, tmp_path: Path) -> None:
    bucket = s3.bucket()  # type: ignore[attr-defined]
    root = tmp_path / "p"
    at_savepoint = _original(root)
    remote = f"s3://{bucket}/exports/sp"
    done = export_savepoint(root / "state", "sp", remote, with_sinks=True)
    assert done["export"] == remote
    assert export_problems(location(remote)) == []
    result = create_branch(remote, tmp_path / "b", savepoint="sp")
    assert result["sinks"]["totals"] == str(tmp_path / "b" / "tables" / "totals")
    for op in OPERATORS:
        assert_frame_equal(sort_all(state_at(tmp_path / "b", op).collect()), at_savepoint[op])
    expected = sort_all(pl.read_delta(str(root / "totals"), version=_version(root / "state", 3, "totals")))
    assert_frame_equal(sort_all(read_sink(tmp_path / "b" / "tables" / "totals")), expected)


def test_encrypted_columns_stay_encrypted_in_an_export(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from engine import encryption
    from tests import test_encryption as enc

    enc.write_input(tmp_path / "payments")
    (tmp_path / "pipeline.sql").write_text(enc.SQL.format(src="payments", out="out"))
    monkeypatch.setenv("TIMELAPSE_KEY", enc.KEY)
    enc.forget_keys()
    try:
        Pipeline.from_sql(tmp_path / "pipeline.sql", state=tmp_path / "state").run(once=True, max_epoch_rows=30)
        versioning.create_savepoint(tmp_path / "state", "sp", epoch=2)
        export_savepoint(tmp_path / "state", "sp", tmp_path / "exp", with_sinks=True)
        enc.assert_no_plaintext(enc.all_bytes_local(tmp_path / "exp"))
        history = engine_open(tmp_path / "exp")
        for op in history.operators()["operator"]:
            assert_frame_equal(sort_all(history.state(op)), sort_all(state_at(tmp_path / "state", op, 2).collect()))
        # Without the key: an encrypted key column cannot be resolved, so the export is refused in one line.
        enc.forget_keys()
        monkeypatch.delenv("TIMELAPSE_KEY")
        with pytest.raises(encryption.KeyError_, match=r"its key column 'card' is encrypted .* not set"):
            export_savepoint(tmp_path / "state", "sp", tmp_path / "exp2")
        assert not (tmp_path / "exp2").exists()
    finally:
        enc.forget_keys()


def test_a_branch_of_an_export_without_sinks_keeps_its_sinks_inside_itself(tmp_path: Path) -> None:
    root = tmp_path / "p"
    _original(root)
    before = {name: DeltaTable(str(root / name)).version() for name in SINKS}
    export_savepoint(root / "state", "sp", tmp_path / "exp")
    made = create_branch(tmp_path / "exp", tmp_path / "b", savepoint="sp", sink_paths={"totals": str(tmp_path / "t")})
    assert made["sinks"] == {"totals": str(tmp_path / "t")}
    # The same SQL, whose sink paths are the original pipeline's: the branch writes its own tables instead.
    Pipeline.from_sql(root / "pipeline.sql", state=tmp_path / "b").run(once=True, max_epoch_rows=ROWS, max_epochs=2)
    assert {name: DeltaTable(str(root / name)).version() for name in SINKS} == before
    assert read_sink(tmp_path / "t").height > 0
    assert {p.name for p in (tmp_path / "b" / "tables").iterdir()} == {"w", "pairs"}
    assert "branched from" in versioning.render_history(versioning.history(tmp_path / "b"))
