"""Connector paths confined to allowed roots; who did what, and why, to a state directory's history."""

from __future__ import annotations

import getpass
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from engine import paths
from tests.helpers import write_jsonl

SQL = """
CREATE TABLE ev (k BIGINT, v INT) WITH ('connector' = 'filesystem', 'path' = '{source}', 'format' = 'json');
CREATE TABLE totals (k BIGINT, n BIGINT, PRIMARY KEY (k) NOT ENFORCED) WITH ('connector' = 'delta', 'path' = '{sink}');
INSERT INTO totals SELECT k, COUNT(*) FROM ev GROUP BY k;
"""


def cli(root: Path, *args: str, roots: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != paths.ROOTS_VARIABLE}
    if roots is not None:
        env[paths.ROOTS_VARIABLE] = roots
    return subprocess.run(
        [sys.executable, "-m", "engine.cli", *args], cwd=root, env=env, capture_output=True, text=True, timeout=120
    )


def setup(root: Path, source: str, sink: str) -> None:
    write_jsonl(root / "data" / "in" / "a.json", [{"k": i % 3, "v": i} for i in range(30)])
    (root / "pipeline.sql").write_text(SQL.format(source=source, sink=sink))


def test_paths_inside_the_allowed_roots_are_accepted(tmp_path: Path) -> None:
    setup(tmp_path, "data/in", "data/out")
    done = cli(tmp_path, "run", "pipeline.sql", "--state", "state", "--once", roots=str(tmp_path / "data"))
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "data" / "out" / "_delta_log").is_dir()


@pytest.mark.parametrize(
    ("source", "sink", "offender"),
    [
        ("data/in", "../outside/out", "'path' = '../outside/out'"),
        ("data/../../in", "data/out", "'path' = 'data/../../in'"),
        ("data/link", "data/out", "'path' = 'data/link'"),  # a symlink inside the root, pointing out of it
    ],
)
def test_paths_leading_outside_the_allowed_roots_are_refused(
    tmp_path: Path, source: str, sink: str, offender: str
) -> None:
    root = tmp_path / "project"
    setup(root, source, sink)
    (tmp_path / "elsewhere").mkdir()
    (root / "data" / "link").symlink_to(tmp_path / "elsewhere")
    refused = cli(root, "run", "pipeline.sql", "--state", "state", "--once", "--allowed-root", str(root / "data"))
    assert refused.returncode == 2, refused.stderr
    assert offender in refused.stderr and "outside the allowed roots" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert not (tmp_path / "outside").exists()  # nothing was written
    # Without roots, any path is allowed (as in Flink and Spark).
    assert cli(root, "run", "pipeline.sql", "--state", "state2", "--once").returncode == 0


def test_rollback_savepoints_and_retention_record_who_and_why(tmp_path: Path) -> None:
    setup(tmp_path, "data/in", "data/out")
    run = ["run", "pipeline.sql", "--state", "state", "--once", "--max-epoch-rows", "5"]
    assert cli(tmp_path, *run).returncode == 0
    assert (
        cli(tmp_path, "savepoint", "create", "state", "--name", "before", "--epoch", "2", "--reason", "demo").returncode
        == 0
    )
    assert cli(tmp_path, "rollback", "state", "--savepoint", "before", "--reason", "bad deploy").returncode == 0
    assert cli(tmp_path, "savepoint", "delete", "state", "--name", "before", "--reason", "done with it").returncode == 0
    assert cli(tmp_path, "retention", "state", "--count", "2", "--reason", "disk is tight").returncode == 0
    log = cli(tmp_path, "log", "state", "--json")
    events = {e["kind"]: e for e in json.loads(log.stdout)}
    user = getpass.getuser()
    assert (events["savepoint"]["user"], events["savepoint"]["reason"]) == (user, "demo")
    assert (events["rollback"]["user"], events["rollback"]["reason"]) == (user, "bad deploy")
    assert (events["savepoint_deleted"]["user"], events["savepoint_deleted"]["reason"]) == (user, "done with it")
    assert (events["retention"]["user"], events["retention"]["reason"]) == (user, "disk is tight")
    text = cli(tmp_path, "log", "state").stdout
    assert '"bad deploy"' in text and '"done with it"' in text and '"disk is tight"' in text
