"""History on S3 (moto's server): the history tests, rollback, branches between storages, an uploaded project and
retention, with the state directory and the Delta sinks in a bucket, against the same oracles as on a local disk.

One project serves most tests: its first six epochs run on the local disk (state and sinks beside the SQL, stored
as relative paths), the project is uploaded, and the rest runs on S3. So the history tests below (imported from
tests/test_history.py and run here against the bucket) read epochs written on both sides.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from polars.testing import assert_frame_equal

import engine
from engine import HistoryError, delta_tables, versioning
from engine.cli import main
from engine.storage import ObjectPath, copy_tree, location
from tests import test_windows as w
from tests.helpers import duck, naive, sort_all
from tests.s3_server import S3Server
from tests.test_history import (  # noqa: F401  (pytest collects them here, with this module's `history`)
    EPOCH_ROWS,
    SQL,
    test_diff_is_the_set_difference_of_two_states,
    test_state_at_an_epoch_equals_duckdb_over_the_input_of_epochs_up_to_it,
    test_time_travel_sql_forms,
)
from tests.test_versioning import STATEFUL, _inputs, _sinks

SINKS = ("out", "totals")


def _sql_with_sinks_at(sql: str, base: str, names: tuple[str, ...]) -> str:
    """`sql` with each Delta sink's relative 'path' pointing under `base` (a URI) instead."""
    for name in names:
        sql = sql.replace(f"'path' = '{name}'", f"'path' = '{base}/{name}'")
    return sql


def _run(sql_file: Path, state: str | Path, **options: Any) -> dict[str, Any]:
    return engine.Pipeline.from_sql(sql_file, state=state).run(once=True, **options)


def _cli(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "engine.cli", *args],
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, "COLUMNS": "250", **(env or {})},
        cwd=cwd,
    )


def _main(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """`timelapse ARGS` in this process (the subprocess form costs seconds of imports): exit code, out, err."""
    capsys.readouterr()
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def _objects(s3: S3Server, bucket: str, prefix: str) -> list[str]:
    return s3.keys(bucket, prefix)


class Project:
    def __init__(self, local: Path, bucket: str, rows: list[dict[str, object]]) -> None:
        self.local, self.bucket, self.rows = local, bucket, rows
        self.remote = ObjectPath("s3", bucket, "proj")

    def sink(self, name: str) -> pl.DataFrame:
        return delta_tables.read(self.remote / name)


@pytest.fixture(scope="module")
def project(s3: S3Server, tmp_path_factory: pytest.TempPathFactory) -> Project:
    root = tmp_path_factory.mktemp("s3history")
    rows = w.make_rows(17, 120, late_share=0.1)
    w.write_input(root, rows)
    local_sql = root / "pipeline.sql"
    local_sql.write_text(SQL)
    _run(local_sql, root / "state", max_epoch_rows=EPOCH_ROWS, max_epochs=6)
    versioning.create_savepoint(root / "state", "six", epoch=6)

    bucket = s3.bucket()
    remote = ObjectPath("s3", bucket, "proj")
    for folder in ("state", *SINKS):  # the project's tables, as a user would upload them
        copy_tree(root / folder, remote / folder)
    remote_sql = root / "pipeline-s3.sql"  # the same SQL, its sinks in the bucket; its input stays local
    remote_sql.write_text(_sql_with_sinks_at(SQL, str(remote), SINKS))
    summary = _run(remote_sql, str(remote / "state"), max_epoch_rows=EPOCH_ROWS)
    assert (summary["epochs"], summary["last_epoch"]) == (6, 12)
    return Project(root, bucket, rows)


@pytest.fixture(scope="module")
def history(project: Project) -> tuple[ObjectPath, list[dict[str, object]]]:
    """What tests/test_history.py's tests read: `root / "state"` is the state directory in the bucket."""
    return project.remote, project.rows


def _totals_oracle(rows: list[dict[str, object]]) -> pl.DataFrame:
    return duck("SELECT k, count(*) AS n, sum(v) AS s FROM src GROUP BY k", src=w.frame(rows))


def _assert_sinks_match_the_oracle(out: pl.DataFrame, totals: pl.DataFrame, rows: list[dict[str, object]]) -> None:
    assert_frame_equal(sort_all(totals), sort_all(_totals_oracle(rows)), check_dtypes=False)
    w.assert_same(naive(out), w.oracle_window(rows, w.WINDOWS["tumble"][1]))


def test_an_uploaded_project_continues_on_s3_exactly_once(project: Project) -> None:
    # The sinks in the bucket hold every epoch once: as an uninterrupted run's (the DuckDB oracle of all input).
    _assert_sinks_match_the_oracle(project.sink("out"), project.sink("totals"), project.rows)
    h = engine.open(f"s3://{project.bucket}/proj/state")
    assert h.checkpoints().get_column("epoch").to_list() == list(range(1, 13))
    # The state directory stored its sinks relative to itself, so in the bucket they are the bucket's tables.
    paths = dict(zip(h.tables().get_column("name"), h.tables().get_column("path"), strict=True))
    assert paths["totals"] == f"s3://{project.bucket}/proj/totals"
    assert all(p.startswith(f"s3://{project.bucket}/proj/") for p in paths.values())
    # The local copy was left as it was uploaded: six epochs, and no local folder named after the URI.
    assert engine.open(project.local / "state").checkpoints().get_column("epoch").max() == 6
    assert not any(p.name.startswith("s3:") for p in project.local.rglob("*"))


def test_history_commands_on_s3_from_the_cli(
    project: Project, s3: S3Server, capsys: pytest.CaptureFixture[str]
) -> None:
    state = f"s3://{project.bucket}/proj/state"
    h = engine.open(state)
    code, out, err = _main(capsys, "state", state, "per_key", "--at", "six", "--json")
    assert code == 0, err
    assert len(json.loads(out)) == h.state("per_key", at=6).height
    code, out, err = _main(capsys, "diff", state, "per_key", "2", "9", "--csv")
    assert code == 0 and out.startswith("change,k,"), err
    assert len(out.splitlines()) - 1 == h.diff("per_key", 2, 9).height
    code, out, err = _main(capsys, "sql", state, "SELECT count(*) AS n FROM sink.totals AS OF EPOCH 8", "--json")
    assert json.loads(out) == [{"n": h.sink("totals", at=8).height}], err
    code, out, err = _main(capsys, "log", state)
    assert "epochs 7-12" in out and "savepoint 'six' = epoch 6" in out, err
    # Without the environment, the endpoint and keys given as --storage-option reach the same bucket.
    given = {
        "aws_endpoint_url": s3.endpoint,
        "aws_allow_http": "true",
        "aws_region": "us-east-1",
        "aws_access_key_id": s3.key_id,
        "aws_secret_access_key": s3.secret,
    }
    options = [f"--storage-option={key}={value}" for key, value in given.items()]
    clean = {k: v for k, v in os.environ.items() if k not in s3.env()}
    query_3 = "SELECT count(*) AS n FROM per_key AS OF EPOCH 3"
    with_options = subprocess.run(
        [sys.executable, "-m", "engine.cli", "sql", state, query_3, "--json", *options],
        capture_output=True,
        text=True,
        timeout=180,
        env=clean,
    )
    assert with_options.returncode == 0, with_options.stderr
    assert json.loads(with_options.stdout) == [{"n": h.state("per_key", at=3).height}]
    code, out, err = _main(capsys, "log", state, "--storage-option", "no-equals-sign")
    assert code == 2 and "KEY=VALUE" in err and "Traceback" not in err
    # engine.open takes the same options.
    os_env = {k: os.environ.pop(k) for k in s3.env()}
    try:
        opened = engine.open(state, storage_options=given)
        assert opened.state("per_key", at=3).height == h.state("per_key", at=3).height
    finally:
        os.environ.update(os_env)


def test_a_branch_from_s3_to_a_local_disk_and_from_local_to_s3_both_run_correctly(
    project: Project, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # S3 -> local: from the savepoint, with both sinks on the local disk.
    parent = f"s3://{project.bucket}/proj/state"
    branch = tmp_path / "whatif"
    code, out, err = _main(
        capsys,
        "branch",
        parent,
        str(branch),
        "--from",
        "savepoint",
        "six",
        "--sink",
        f"out={tmp_path / 'out'}",
        "--sink",
        f"totals={tmp_path / 'totals'}",
        "--json",
    )
    assert code == 0, err
    assert json.loads(out)["sinks"] == {"out": str(tmp_path / "out"), "totals": str(tmp_path / "totals")}
    at_six = engine.open(parent).state("per_key", at="six")
    assert_frame_equal(sort_all(engine.open(branch).state("per_key")), sort_all(at_six))
    assert _run(project.local / "pipeline.sql", branch)["epochs"] == 1  # the rest in one epoch
    _assert_sinks_match_the_oracle(
        delta_tables.read(tmp_path / "out"), delta_tables.read(tmp_path / "totals"), project.rows
    )
    assert any(b["path"] == str(branch) for b in versioning.branches_of(location(parent)))  # type: ignore[attr-defined]

    # local -> S3: from epoch 4 of the local project; one sink into the bucket, the other beside its parent's.
    target = f"s3://{project.bucket}/branch2/state"
    code, out, err = _main(
        capsys,
        "branch",
        str(project.local / "state"),
        target,
        "--from",
        "epoch",
        "4",
        "--sink",
        f"totals=s3://{project.bucket}/branch2/totals",
        "--json",
    )
    assert code == 0, err
    sinks = json.loads(out)["sinks"]
    assert sinks == {"totals": f"s3://{project.bucket}/branch2/totals", "out": str(project.local / "out-state")}
    assert_frame_equal(
        sort_all(engine.open(target).state("per_key")),
        sort_all(engine.open(project.local / "state").state("per_key", at=4)),
    )
    assert _run(project.local / "pipeline.sql", target)["epochs"] == 1
    _assert_sinks_match_the_oracle(
        delta_tables.read(project.local / "out-state"),
        delta_tables.read(location(f"s3://{project.bucket}/branch2/totals")),
        project.rows,
    )


def test_rollback_on_s3_cut_short_by_a_kill_then_rerun_equals_a_straight_run(s3: S3Server, tmp_path: Path) -> None:
    """The rollback-invariance test of tests/test_versioning.py with its state and sinks in a bucket, and the
    rollback killed half-way (its intent object finishes it)."""
    straight, rolled = tmp_path / "straight", tmp_path / "rolled"
    for root in (straight, rolled):
        _inputs(root)
    (straight / "pipeline.sql").write_text(STATEFUL)
    _run(straight / "pipeline.sql", straight / "state", max_epoch_rows=100)  # results do not depend on epoch size
    base = f"s3://{s3.bucket()}/rolled"
    (rolled / "pipeline.sql").write_text(_sql_with_sinks_at(STATEFUL, base, ("w", "totals", "pairs")))
    assert _run(rolled / "pipeline.sql", f"{base}/state", max_epoch_rows=67)["last_epoch"] == 3
    versioning.create_savepoint(f"{base}/state", "before", epoch=1)

    killed = _cli(
        "rollback",
        f"{base}/state",
        "--savepoint",
        "before",
        env={**s3.env(), "TIMELAPSE_CRASH_AT": "rollback.mid-restore:2"},
    )
    assert killed.returncode == -9, killed.stderr
    assert location(f"{base}/state/rollback-in-progress.json").exists()  # type: ignore[union-attr]
    again = _run(rolled / "pipeline.sql", f"{base}/state", max_epoch_rows=67)  # finishes it, then epochs 2-3
    assert (again["epochs"], again["last_epoch"]) == (2, 5)
    assert not location(f"{base}/state/rollback-in-progress.json").exists()  # type: ignore[union-attr]
    for name, frame in _sinks(straight).items():
        assert_frame_equal(sort_all(delta_tables.read(location(f"{base}/{name}"))), frame, check_dtypes=False)
    for op in ("per10", "totals"):
        a = engine.state_at(straight / "state", op).collect().drop("_kg")
        b = engine.state_at(f"{base}/state", op).collect().drop("_kg")
        assert_frame_equal(sort_all(a), sort_all(b))
    assert "rollback 3 -> 1" in versioning.render_history(versioning.history(f"{base}/state"))


def test_retention_on_s3_frees_objects_and_keeps_savepoints(
    project: Project, s3: S3Server, capsys: pytest.CaptureFixture[str]
) -> None:
    # A copy of the whole project within the bucket (server-side copies): the copy is a project of its own.
    copy = ObjectPath("s3", project.bucket, "retained")
    copy_tree(project.remote / "state", copy / "state")
    for name in SINKS:
        copy_tree(project.remote / name, copy / name)
    state = str(copy / "state")
    before = _objects(s3, project.bucket, "retained/")
    at_six = engine.open(state).state("per_key", at="six")
    code, out, err = _main(capsys, "retention", state, "--count", "2", "--json")
    assert code == 0, err
    report = json.loads(out)
    after = _objects(s3, project.bucket, "retained/")
    assert report["oldest_epoch"] == 11 and report["data_files_removed"] > 0

    def data(keys: list[str]) -> set[str]:
        return {k for k in keys if k.endswith(".parquet") and "/_delta_log/" not in k and "/manifest/" not in k}

    # The data files vacuum reported are gone from the bucket (its log grew by a checkpoint and two commits).
    assert len(data(before)) - len(data(after)) == report["data_files_removed"] and data(after) <= data(before)
    # The offset log was folded up to the oldest kept epoch, but for the epochs the oldest kept checkpoint (11)
    # and the savepoint (6) committed (a checkpoint every epoch: their own), which blame shows.
    offsets = [k for k in after if "/offsets/" in k]
    assert sorted(k.rsplit("/", 1)[1] for k in offsets) == [
        "000000000006.json",
        "000000000011.json",
        "000000000012.json",
        "base.json",
    ]
    h = engine.open(state)
    assert_frame_equal(sort_all(h.state("per_key", at="six")), sort_all(at_six))  # the savepoint reads
    assert_frame_equal(
        sort_all(h.state("per_key", at=12)), sort_all(engine.open(project.remote / "state").state("per_key", at=12))
    )
    with pytest.raises(HistoryError, match="removed by retention"):
        h.state("per_key", at=3)
    assert (
        engine.open(project.remote / "state").state("per_key", at=3).height > 0
    )  # the original project in the same bucket was not touched
