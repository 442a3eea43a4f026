"""Epoch-size invariance, incremental runs, and dead letters across epoch boundaries."""

from __future__ import annotations

import json
import random
import shutil
import tempfile
from pathlib import Path

import polars as pl
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from tests.helpers import examples, read_sink, run, sort_all, write_jsonl

SQL = """
CREATE TABLE SensorData (
  id STRING, temperature DOUBLE, ts TIMESTAMP(3),
  WATERMARK FOR ts AS ts - INTERVAL '5' SECOND
) WITH ('connector' = 'filesystem', 'path' = 'data/readings', 'format' = 'json');
CREATE TABLE hot_readings (id STRING, temperature DOUBLE, ts TIMESTAMP(3))
WITH ('connector' = 'delta', 'path' = 'out/hot_readings');
INSERT INTO hot_readings SELECT id, temperature, ts FROM SensorData WHERE temperature > 30;
"""


def readings(seed: int, count: int) -> list[dict[str, object]]:
    rng = random.Random(seed)
    return [
        {
            "id": f"sensor-{rng.randint(1, 4)}",
            "temperature": round(rng.uniform(15, 45), 2),
            "ts": 1767225600000 + i * 250 + rng.randint(-2000, 0),
        }
        for i in range(count)
    ]


def make_input(root: Path, seed: int, files: int, per_file: int) -> None:
    for f in range(files):
        bad = ["{broken json", '{"id": "x", "temperature": "warm", "ts": 1}'] if f % 2 == 0 else []
        write_jsonl(root / "data" / "readings" / f"part-{f:03d}.json", readings(seed * 100 + f, per_file), bad)


def expected(root: Path) -> pl.DataFrame:
    frames = []
    for path in sorted((root / "data" / "readings").glob("*.json")):
        rows = []
        for line in path.read_text().splitlines():
            try:
                row = json.loads(line)
                float(row["temperature"])
            except (ValueError, KeyError):
                continue
            rows.append(row)
        frames.append(pl.DataFrame(rows, schema={"id": pl.String, "temperature": pl.Float64, "ts": pl.Int64}))
    every = pl.concat(frames)
    return sort_all(
        every.filter(pl.col("temperature") > 30).with_columns(
            pl.col("ts").cast(pl.Datetime("ms")).dt.replace_time_zone("UTC").dt.cast_time_unit("us")
        )
    )


@settings(max_examples=examples(12), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    seed=st.integers(0, 1000),
    files=st.integers(1, 4),
    per_file=st.integers(0, 30),
    max_rows=st.one_of(st.none(), st.integers(1, 40)),
)
def test_sinks_do_not_depend_on_epoch_size(seed: int, files: int, per_file: int, max_rows: int | None) -> None:
    root = Path(tempfile.mkdtemp())
    try:
        make_input(root, seed, files, per_file)
        summary = run(root, SQL, max_epoch_rows=max_rows)
        assert_frame_equal(sort_all(read_sink(root / "out" / "hot_readings")), expected(root))
        bad_files = len(range(0, files, 2))
        assert summary["dead_letters"].get("SensorData", 0) == 2 * bad_files
        if bad_files:
            dead = pl.read_delta(str(root / "state" / "dead_letters" / "sensordata"))
            assert dead.height == 2 * bad_files
            assert set(dead.get_column("position").to_list()) == {per_file, per_file + 1}
            assert dead.filter(pl.col("reason").str.contains("temperature")).height == bad_files
    finally:
        shutil.rmtree(root)


def test_incremental_runs_process_only_new_files(tmp_path: Path) -> None:
    make_input(tmp_path, 1, 2, 20)
    first = run(tmp_path, SQL, max_epoch_rows=7)
    again = run(tmp_path, SQL)
    assert again["epochs"] == 0 and again["last_epoch"] == first["last_epoch"]
    # A new file whose name sorts before the processed ones is still picked up, once.
    write_jsonl(tmp_path / "data" / "readings" / "a-late.json", readings(99, 15))
    write_jsonl(tmp_path / "data" / "readings" / "part-999.json", readings(98, 15))
    third = run(tmp_path, SQL, max_epoch_rows=4)
    assert third["rows_in"]["SensorData"] == 30
    assert_frame_equal(sort_all(read_sink(tmp_path / "out" / "hot_readings")), expected(tmp_path))


def test_lines_appended_after_discovery_are_read_once(tmp_path: Path) -> None:
    make_input(tmp_path, 3, 1, 10)
    run(tmp_path, SQL)
    before = read_sink(tmp_path / "out" / "hot_readings").height
    path = tmp_path / "data" / "readings" / "part-000.json"
    path.write_text(path.read_text() + json.dumps({"id": "late", "temperature": 99.0, "ts": 1}) + "\n")
    run(tmp_path, SQL)
    run(tmp_path, SQL)
    assert read_sink(tmp_path / "out" / "hot_readings").filter(pl.col("id") == "late").height == 1
    assert read_sink(tmp_path / "out" / "hot_readings").height == before + 1


def test_manifest_records_every_epoch(tmp_path: Path) -> None:
    make_input(tmp_path, 4, 2, 10)
    summary = run(tmp_path, SQL, max_epoch_rows=5)
    manifest = pl.read_delta(str(tmp_path / "state" / "manifest")).sort("epoch")
    assert manifest.get_column("epoch").to_list() == list(range(1, summary["last_epoch"] + 1))
    last = manifest.row(-1, named=True)
    sink = next(t for t in last["tables"] if t["name"] == "hot_readings")
    # The recorded version is a consistent cut: opening the sink there gives everything committed. Its path is
    # stored relative to the state directory (it lies beside it), so the directory can move.
    assert sink["path"] == "../out/hot_readings"
    at_cut = pl.read_delta(str(tmp_path / "state" / sink["path"]), version=sink["version"])
    assert at_cut.height == read_sink(tmp_path / "out" / "hot_readings").height
    assert last["watermark"] is not None
    offsets = json.loads(last["source_offsets"])
    assert offsets["SensorData"]["position"]["files"] == 2


def test_checkpoint_every_n_epochs(tmp_path: Path) -> None:
    make_input(tmp_path, 6, 3, 20)
    from engine import Pipeline

    script = tmp_path / "pipeline.sql"
    script.write_text(SQL)
    summary = Pipeline.from_sql(script, state=tmp_path / "state").run(
        once=True, max_epoch_rows=5, checkpoint_interval="3 epochs"
    )
    manifest = pl.read_delta(str(tmp_path / "state" / "manifest")).sort("epoch")
    assert manifest.get_column("epoch").to_list() == [3, 6, 9, 12, 13] and summary["last_epoch"] == 13
    assert json.loads(manifest.row(1, named=True)["metrics"])["epochs"] == [4, 6]
    assert_frame_equal(sort_all(read_sink(tmp_path / "out" / "hot_readings")), expected(tmp_path))


def test_a_checkpoint_on_request(tmp_path: Path) -> None:
    from engine import Pipeline
    from engine.pipeline import request_checkpoint
    from engine.runner import EpochReport

    make_input(tmp_path, 7, 2, 20)
    script = tmp_path / "pipeline.sql"
    script.write_text(SQL)
    pipeline = Pipeline.from_sql(script, state=tmp_path / "state")
    pipeline.run(once=True, max_epoch_rows=5, max_epochs=1)  # the state dir exists from here on

    def ask(report: EpochReport) -> None:
        if report.epoch == 3:
            request_checkpoint(tmp_path / "state")

    pipeline.run(once=True, max_epoch_rows=5, checkpoint_interval="100 epochs", on_epoch=ask)
    manifest = pl.read_delta(str(tmp_path / "state" / "manifest")).sort("epoch")
    assert manifest.get_column("epoch").to_list() == [1, 4, 9]  # the request, then the end of the run
    assert not (tmp_path / "state" / "checkpoint-requested").exists()


def test_checkpoint_on_state_growth(tmp_path: Path) -> None:
    from tests import test_joins as j

    j.write(tmp_path, j.make(5, 120, 0), j.make(6, 120, 1000))
    sql = (
        "SET 'checkpoint.interval' = '1 h';\nSET 'checkpoint.state-growth' = '600 B';\n"
        + j.SOURCES
        + """
CREATE TABLE per_order (id BIGINT, n BIGINT, PRIMARY KEY (id) NOT ENFORCED) WITH ('connector' = 'delta', 'path' = 'o');
INSERT INTO per_order SELECT id, COUNT(*) FROM orders GROUP BY id;
"""
    )
    summary = run(tmp_path, sql, max_epoch_rows=5)
    manifest = pl.read_delta(str(tmp_path / "state" / "manifest")).sort("epoch")
    epochs = manifest.get_column("epoch").to_list()
    # Each epoch adds 5 keys (about 125 bytes of state): a checkpoint every 5 epochs, and one at the end.
    assert epochs == [5, 10, 15, 20, 24] and summary["last_epoch"] == 24
    assert read_sink(tmp_path / "o").height == 120
