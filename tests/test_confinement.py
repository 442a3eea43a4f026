"""Nothing escapes its root: symlinks under an allowed root that lead out of it (Delta sinks and sources, lookup
tables), and `timelapse sql`, which runs read-only queries and nothing else. All through the CLI, as a user would."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
from deltalake import write_deltalake

from engine import paths
from tests.helpers import read_sink, write_jsonl

ORDERS = """
CREATE TABLE orders (id BIGINT, cust BIGINT, ts TIMESTAMP(3), WATERMARK FOR ts AS ts - INTERVAL '1' SECOND)
WITH ('connector' = 'filesystem', 'path' = 'data/orders', 'format' = 'json');
"""
TO_SINK = ORDERS + """
CREATE TABLE out (id BIGINT, cust BIGINT) WITH ('connector' = 'delta', 'path' = 'data/out');
INSERT INTO out SELECT id, cust FROM orders;
"""
LOOKUP = ORDERS + """
CREATE TABLE customers (id BIGINT, name STRING) WITH ('connector' = 'filesystem', 'path' = 'data/dim',
  'format' = '{fmt}', 'csv.header' = 'true');
CREATE TABLE out (oid BIGINT, name STRING) WITH ('connector' = 'delta', 'path' = 'data/out');
INSERT INTO out SELECT o.id, c.name FROM orders AS o LEFT JOIN customers FOR SYSTEM_TIME AS OF o.ts AS c
  ON o.cust = c.id;
"""
FROM_DELTA = """
CREATE TABLE src (id BIGINT, cust BIGINT) WITH ('connector' = 'delta', 'path' = 'data/src');
CREATE TABLE out (id BIGINT, cust BIGINT) WITH ('connector' = 'delta', 'path' = 'data/out');
INSERT INTO out SELECT id, cust FROM src;
"""


def cli(cwd: Path, *args: str, roots: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != paths.ROOTS_VARIABLE}
    if roots is not None:
        env[paths.ROOTS_VARIABLE] = str(roots)
    return subprocess.run(
        [sys.executable, "-m", "engine.cli", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


def refused(done: subprocess.CompletedProcess[str], *words: str) -> str:
    """The one-line error of a run that exited 2, checked to name `words`."""
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    assert "Traceback" not in done.stderr and "panicked" not in done.stderr
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """`tmp_path/project/data` is the allowed root; `tmp_path/outside` holds what must stay out of reach."""
    root = tmp_path / "project"
    write_jsonl(
        root / "data" / "orders" / "a.json",
        [{"id": i, "cust": i % 3, "ts": f"2026-01-01 00:00:{i:02d}"} for i in range(6)],
    )
    (tmp_path / "outside").mkdir()
    return root


def run(root: Path, sql: str) -> subprocess.CompletedProcess[str]:
    (root / "pipeline.sql").write_text(sql)
    return cli(root, "run", "pipeline.sql", "--state", "data/state", "--once", roots=root / "data")


# -- Delta sinks ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("entry", ["_delta_log", "id=1"])
def test_a_delta_sink_with_a_symlink_out_of_the_root_is_refused(project: Path, entry: str) -> None:
    """A symlinked `_delta_log`, or a symlinked sub-directory new files could be written into, leads out."""
    outside = project.parent / "outside" / "taken"
    outside.mkdir()
    (project / "data" / "out").mkdir()
    (project / "data" / "out" / entry).symlink_to(outside)
    message = refused(run(project, TO_SINK), "table 'out'", str(outside), "outside the allowed roots")
    assert f"data/out/{entry}" in message
    assert list(outside.iterdir()) == []  # nothing was written there


def test_a_delta_sink_with_data_files_outside_the_root_is_refused(project: Path) -> None:
    """An existing sink whose data file is a symlink out of the root: a MERGE or a reader would open it."""
    assert run(project, TO_SINK).returncode == 0
    data = next((project / "data" / "out").glob("*.parquet"))
    moved = project.parent / "outside" / data.name
    shutil.move(data, moved)
    data.symlink_to(moved)
    refused(run(project, TO_SINK), "table 'out'", data.name, "outside the allowed roots")


def test_symlinks_that_stay_inside_the_root_work(project: Path) -> None:
    (project / "data" / "logs").mkdir()
    (project / "data" / "out").mkdir()
    (project / "data" / "out" / "_delta_log").symlink_to(project / "data" / "logs")
    done = run(project, TO_SINK)
    assert done.returncode == 0, done.stderr
    assert read_sink(project / "data" / "out").height == 6
    assert any((project / "data" / "logs").iterdir())


# -- lookup tables -------------------------------------------------------------------------------------------------
def write_dimension(path: Path, fmt: str, rows: dict[str, list[object]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    frame = pl.DataFrame(rows)
    {"parquet": frame.write_parquet, "csv": frame.write_csv, "json": frame.write_ndjson}[fmt](path)


@pytest.mark.parametrize("fmt", ["parquet", "csv", "json"])
def test_a_lookup_table_file_leading_out_of_the_root_is_refused(project: Path, fmt: str) -> None:
    secret = project.parent / "outside" / f"secret.{fmt}"
    write_dimension(secret, fmt, {"id": [2], "name": ["SECRET"]})
    write_dimension(project / "data" / "dim" / f"a.{fmt}", fmt, {"id": [0, 1], "name": ["ann", "bob"]})
    link = project / "data" / "dim" / f"b.{fmt}"
    link.symlink_to(secret)
    message = refused(run(project, LOOKUP.format(fmt=fmt)), "table 'customers'", str(link), str(secret))
    assert "outside the allowed roots" in message
    assert not (project / "data" / "out").exists() or "SECRET" not in str(read_sink(project / "data" / "out"))
    # The same link to a file inside the root is read like any other file.
    inside = project / "data" / "shared" / f"c.{fmt}"
    write_dimension(inside, fmt, {"id": [2], "name": ["cy"]})
    link.unlink()
    link.symlink_to(inside)
    done = run(project, LOOKUP.format(fmt=fmt))
    assert done.returncode == 0, done.stderr
    joined = dict(read_sink(project / "data" / "out").iter_rows())
    assert joined == {i: ["ann", "bob", "cy"][i % 3] for i in range(6)}


def test_a_delta_lookup_table_leading_out_of_the_root_is_refused(project: Path) -> None:
    outside = project.parent / "outside" / "customers"
    write_deltalake(str(outside), pl.DataFrame({"id": [0, 1, 2], "name": ["a", "b", "c"]}).to_arrow())
    (project / "data" / "dim").mkdir()
    (project / "data" / "dim" / "_delta_log").symlink_to(outside / "_delta_log")
    sql = LOOKUP.replace("'connector' = 'filesystem', 'path' = 'data/dim'", "'connector' = 'delta', 'path' = 'data/dim'")
    refused(run(project, sql.format(fmt="parquet")), "table 'customers'", "_delta_log", "outside the allowed roots")


# -- Delta sources -------------------------------------------------------------------------------------------------
def delta_source(project: Path) -> Path:
    source = project / "data" / "src"
    write_deltalake(str(source), pl.DataFrame({"id": [1, 2, 3], "cust": [1, 1, 2]}).to_arrow())
    return source


def test_a_delta_source_whose_log_names_a_file_outside_the_root_is_refused(project: Path) -> None:
    source = delta_source(project)
    data = next(source.glob("*.parquet"))
    moved = project.parent / "outside" / data.name
    shutil.move(data, moved)
    log = source / "_delta_log" / f"{0:020d}.json"
    actions = [json.loads(line) for line in log.read_text().splitlines()]
    for action in actions:
        if "add" in action:
            action["add"]["path"] = str(moved)  # an absolute path: a log may name any file
    log.write_text("\n".join(json.dumps(a) for a in actions) + "\n")
    refused(run(project, FROM_DELTA), "table 'src'", str(moved), "outside the allowed roots")
    assert not (project / "data" / "out").exists() or read_sink(project / "data" / "out").is_empty()


def test_a_delta_source_with_a_symlinked_log_or_file_out_of_the_root_is_refused(project: Path) -> None:
    source = delta_source(project)
    data = next(source.glob("*.parquet"))
    moved = project.parent / "outside" / data.name
    shutil.move(data, moved)
    data.symlink_to(moved)
    refused(run(project, FROM_DELTA), "table 'src'", data.name, "outside the allowed roots")
    # Moved back inside the root (still through a symlink), the same table is read.
    inside = project / "data" / "elsewhere" / data.name
    inside.parent.mkdir()
    shutil.move(moved, inside)
    data.unlink()
    data.symlink_to(inside)
    done = run(project, FROM_DELTA)
    assert done.returncode == 0, done.stderr
    assert sorted(read_sink(project / "data" / "out").get_column("id")) == [1, 2, 3]
