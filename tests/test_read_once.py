"""Each input is read once (docs/sql.md, "Files" and "Joins"): the filesystem source reads each byte of its files
from disk once (the bytes counted at planning are the bytes read), and a lookup join's dimension is read through
the source connectors, so a value that does not convert is a dead letter with its reason, never a silent NULL.

The byte count is the process's own: `rchar` of /proc/self/io, every byte passed to read() (page cache or not).
Expected rows and dead letters are written out by hand.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
from deltalake import write_deltalake

import engine
from engine import paths
from engine.sources import make_source
from sql import plan_script
from tests.helpers import read_sink, run, write_jsonl

IO = Path("/proc/self/io")


def bytes_read() -> int:
    return int(next(line for line in IO.read_text().splitlines() if line.startswith("rchar:")).split()[1])


def read_all(root: Path, max_rows: int | None) -> tuple[pl.DataFrame, int]:
    """Every row of the JSON files under `root/in`, epoch by epoch, and the bytes the source read doing it."""
    plan = plan_script(
        "CREATE TABLE t (id BIGINT, name STRING, v DOUBLE) WITH ('connector' = 'filesystem', 'path' = 'in', "
        "'format' = 'json'); CREATE TABLE o (id BIGINT) WITH ('connector' = 'blackhole'); "
        "INSERT INTO o SELECT id FROM t;"
    )
    source = make_source(plan.sources["t"], root)
    source.restore(None, [])
    frames = []
    before = bytes_read()
    while (piece := source.plan(max_rows)) is not None:
        frames.append(source.read(piece).rows)
        source.advance(piece)
    return pl.concat(frames), bytes_read() - before


@pytest.mark.skipif(not IO.exists(), reason="needs /proc/self/io")
@pytest.mark.parametrize("max_rows", [None, 700])
def test_the_file_source_reads_each_byte_once(tmp_path: Path, max_rows: int | None) -> None:
    warm = tmp_path / "warm"
    write_jsonl(warm / "in" / "a.json", [{"id": 0, "name": "w", "v": 0.5}])
    read_all(warm, max_rows)  # imports and first-use setup are not the source's reads
    root = tmp_path / "big"
    for f in range(20):
        write_jsonl(
            root / "in" / f"{f:02d}.json", [{"id": f * 500 + i, "name": f"n{i}", "v": i / 2} for i in range(500)]
        )
    size = sum(p.stat().st_size for p in (root / "in").iterdir())
    rows, read = read_all(root, max_rows)
    assert sorted(rows.get_column("id").to_list()) == list(range(10_000))
    # Once, and a little more: the folder listing and Python's reads outside the files.
    assert size <= read < size + 64 * 1024, (size, read)


# -- lookup dimensions with bad values -------------------------------------------------------------------------
ORDERS = """
CREATE TABLE orders (id BIGINT, cust BIGINT, ts TIMESTAMP(3), WATERMARK FOR ts AS ts - INTERVAL '1' SECOND)
WITH ('connector' = 'filesystem', 'path' = 'orders', 'format' = 'json');
CREATE TABLE out (oid BIGINT, name STRING, tier INT) WITH ('connector' = 'delta', 'path' = 'out');
INSERT INTO out SELECT o.id, c.name, c.tier FROM orders AS o
  LEFT JOIN customers FOR SYSTEM_TIME AS OF o.ts AS c ON o.cust = c.id;
"""
DIMENSION = (
    "CREATE TABLE customers (id BIGINT, name STRING, tier INT) WITH ('connector' = '{connector}', "
    "'path' = 'dim'{options});"
)
#: the dimension's rows as text: the third has a tier that is not an INT, the fourth an id that is not a BIGINT
ROWS = [["1", "ann", "1"], ["2", "bob", "2"], ["3", "cy", "gold"], ["x4", "dee", "4"]]
REASONS = ["column 'tier': cannot read 'gold' as INT", "column 'id': cannot read 'x4' as BIGINT"]


def write_dimension(root: Path, fmt: str) -> str:
    """The dimension in `fmt`; the table's options."""
    (root / "dim").mkdir(parents=True, exist_ok=True)
    if fmt == "delta":
        frame = pl.DataFrame(ROWS, schema=["id", "name", "tier"], orient="row")  # all STRING: converted on reading
        write_deltalake(str(root / "dim"), frame.to_arrow(), mode="overwrite")
        return DIMENSION.format(connector="delta", options="")
    if fmt == "csv":
        (root / "dim" / "a.csv").write_text("id,name,tier\n" + "".join(",".join(r) + "\n" for r in ROWS))
        return DIMENSION.format(connector="filesystem", options=", 'format' = 'csv', 'csv.header' = 'true'")
    lines = [json.dumps({"id": int(r[0]) if r[0].isdigit() else r[0], "name": r[1], "tier": r[2]}) for r in ROWS]
    (root / "dim" / "a.json").write_text("\n".join(lines))  # the last line without its newline: complete
    return DIMENSION.format(connector="filesystem", options=", 'format' = 'json'")


def write_orders(root: Path, ids: range, name: str = "1.json") -> None:
    write_jsonl(root / "orders" / name, [{"id": i, "cust": i % 5, "ts": 1_767_225_600_000 + i * 1000} for i in ids])


def joined(root: Path) -> dict[int, tuple[str | None, int | None]]:
    return {oid: (name, tier) for oid, name, tier in read_sink(root / "out").iter_rows()}


def expected(ids: range) -> dict[int, tuple[str | None, int | None]]:
    good = {1: ("ann", 1), 2: ("bob", 2)}  # customers 3 and "x4" are dead letters: no partner, not a NULL tier
    return {i: good.get(i % 5, (None, None)) for i in ids}


def dead(root: Path) -> list[tuple[int, int, str]]:
    letters = engine.open(root / "state").dead_letters("customers")
    return sorted((r["epoch"], r["position"], r["reason"]) for r in letters.iter_rows(named=True))


@pytest.mark.parametrize("fmt", ["json", "csv", "delta"])
def test_a_lookup_dimension_with_bad_values_gives_dead_letters(tmp_path: Path, fmt: str) -> None:
    results = []
    for max_rows in (1, None):
        root = tmp_path / f"{fmt}-{max_rows}"
        sql = write_dimension(root, fmt) + ORDERS
        write_orders(root, range(10))
        run(root, sql, max_epoch_rows=max_rows)
        assert joined(root) == expected(range(10))
        # Positions count records from the file's first line (the CSV header is line 0), rows of a Delta version.
        first = {"json": 2, "csv": 3, "delta": 2}[fmt]
        assert dead(root) == [(1, first, REASONS[0]), (1, first + 1, REASONS[1])]
        letters = engine.open(root / "state").dead_letters("customers")
        assert letters.get_column("raw").null_count() == 0  # what the bad record held is shown
        # A restart against the same version records nothing again; the new orders still find their partners.
        write_orders(root, range(10, 15), "2.json")
        run(root, sql, max_epoch_rows=max_rows)
        assert joined(root) == expected(range(15))
        assert len(dead(root)) == 2
        results.append((joined(root), [(p, r) for _, p, r in dead(root)]))
    assert results[0] == results[1]  # the same whatever the epoch size


# -- a replay joins against the logged version ------------------------------------------------------------------
def cli(root: Path, crash: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in (paths.ROOTS_VARIABLE, "TIMELAPSE_CRASH_AT")}
    if crash is not None:
        env["TIMELAPSE_CRASH_AT"] = crash
    return subprocess.run(
        [sys.executable, "-m", "engine.cli", "run", "p.sql", "--state", "state", "--once", "--quiet"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_replay_joins_against_the_logged_dimension_version(tmp_path: Path) -> None:
    root = tmp_path
    (root / "p.sql").write_text(write_dimension(root, "delta") + ORDERS)
    write_orders(root, range(10))
    crashed = cli(root, crash="epoch.offsets-logged")
    assert crashed.returncode < 0  # killed once the epoch and its dimension version were logged
    # The dimension changes before the restart: the replayed epoch still joins against version 0.
    renamed = pl.DataFrame([["1", "ANN", "1"], ["2", "BOB", "2"]], schema=["id", "name", "tier"], orient="row")
    write_deltalake(str(root / "dim"), renamed.to_arrow(), mode="overwrite")
    done = cli(root)
    assert done.returncode == 0, done.stderr
    assert joined(root) == expected(range(10))
    assert dead(root) == [(1, 2, REASONS[0]), (1, 3, REASONS[1])]  # recorded once, by the replayed epoch
    write_orders(root, range(10, 15), "2.json")  # the next epoch joins against the new version
    assert cli(root).returncode == 0
    assert {k: v for k, v in joined(root).items() if k >= 10} == {
        i: {1: ("ANN", 1), 2: ("BOB", 2)}.get(i % 5, (None, None)) for i in range(10, 15)
    }
    assert len(dead(root)) == 2  # the new version has no bad values


def test_a_replay_reads_the_logged_bytes_of_dimension_files(tmp_path: Path) -> None:
    """Files: the logged registration is read again; a file rewritten since stops the run, naming it."""
    root = tmp_path
    (root / "p.sql").write_text(write_dimension(root, "json") + ORDERS)
    write_orders(root, range(10))
    assert cli(root, crash="epoch.offsets-logged").returncode < 0
    done = cli(root)  # unchanged: replayed from the logged bytes
    assert done.returncode == 0, done.stderr
    assert joined(root) == expected(range(10)) and len(dead(root)) == 2
    write_orders(root, range(10, 15), "2.json")
    assert cli(root, crash="epoch.offsets-logged").returncode < 0
    (root / "dim" / "a.json").write_text('{"id": 1, "name": "ANN", "tier": 1}\n')
    refused = cli(root)
    assert refused.returncode == 2
    assert "a.json changed after it was registered" in refused.stderr and "Traceback" not in refused.stderr
