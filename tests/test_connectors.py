"""Connectors end to end: csv, parquet, delta as a source, datagen, print; and Python UDFs from SQL."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from engine import Pipeline, udf
from tests.helpers import read_sink, run, sort_all

SINK = "CREATE TABLE out (id BIGINT, name STRING) WITH ('connector' = 'delta', 'path' = 'out');\n"


def test_csv_with_header_bad_rows_and_invalid_utf8(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.csv").write_bytes(b'id,name\n1,ann\n2,"b, quoted"\nthree,x\n4\n5,\xff\xfe\n6,\n')
    (folder / "_in_progress.csv").write_text("id,name\n99,hidden\n")
    sql = (
        "CREATE TABLE src (id BIGINT, name STRING) WITH ('connector' = 'filesystem', 'path' = 'in', "
        "'format' = 'csv', 'csv.header' = 'true');\n" + SINK + "INSERT INTO out SELECT id, name FROM src;"
    )
    summary = run(tmp_path, sql, max_epoch_rows=2)
    out = read_sink(tmp_path / "out").sort("id")
    assert out.to_dicts() == [{"id": 1, "name": "ann"}, {"id": 2, "name": "b, quoted"}, {"id": 6, "name": None}]
    dead = pl.read_delta(str(tmp_path / "state" / "dead_letters" / "src")).sort("position")
    assert dead.get_column("position").to_list() == [3, 4, 5]
    assert [r.split(":")[0] for r in dead.get_column("reason")] == [
        "column 'id'",
        "expected 2 fields, found 1",
        "invalid UTF-8",
    ]
    assert summary["dead_letters"]["src"] == 3


def test_parquet_files_and_unreadable_ones(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    pl.DataFrame({"id": [1, 2, 3], "name": ["a", "b", None], "extra": [0.1, 0.2, 0.3]}).write_parquet(
        folder / "1.parquet"
    )
    (folder / "2.parquet").write_bytes(b"PAR1 this is not parquet")
    sql = (
        "CREATE TABLE src (id BIGINT, name STRING) WITH ('connector' = 'filesystem', 'path' = 'in', "
        "'format' = 'parquet');\n" + SINK + "INSERT INTO out SELECT id, name FROM src WHERE id > 1;"
    )
    summary = run(tmp_path, sql, max_epoch_rows=1)
    assert read_sink(tmp_path / "out").sort("id").to_dicts() == [{"id": 2, "name": "b"}, {"id": 3, "name": None}]
    dead = pl.read_delta(str(tmp_path / "state" / "dead_letters" / "src"))
    assert dead.height == 1 and "unreadable Parquet" in dead.item(0, "reason")
    assert summary["dead_letters"]["src"] == 1


def test_parquet_columns_the_query_does_not_read_are_skipped_unless_they_could_be_dead_letters(tmp_path: Path) -> None:
    """A projection reads only the columns it names (Plan.read_columns), but a column whose stored type might not
    convert (BIGINT declared INT) is still read, so the same rows are dead letters whatever the query reads."""
    folder = tmp_path / "in"
    folder.mkdir()
    frame = pl.DataFrame({"id": [1, 2, 3], "name": ["a", "b", "c"], "big": [1, 2**40, 3], "note": ["x", "y", "z"]})
    frame.write_parquet(folder / "1.parquet")
    source = (
        "CREATE TABLE src (id BIGINT, name STRING, big INT, note STRING) WITH ('connector' = 'filesystem', "
        "'path' = 'in', 'format' = 'parquet');\n"
    )
    sql = source + SINK + "INSERT INTO out SELECT id, name FROM src;"
    from sql import plan_script

    assert plan_script(sql).read_columns("src") == {"id", "name"}
    assert plan_script(source + SINK + "INSERT INTO out SELECT id, note FROM src;").read_columns("src") == {
        "id",
        "note",
    }
    everything = source + "CREATE TABLE n (c BIGINT) WITH ('connector' = 'blackhole');\n"
    assert plan_script(everything + "INSERT INTO n SELECT COUNT(*) FROM src;").read_columns("src") is None
    summary = run(tmp_path, sql)
    assert read_sink(tmp_path / "out").sort("id").to_dicts() == [{"id": 1, "name": "a"}, {"id": 3, "name": "c"}]
    dead = pl.read_delta(str(tmp_path / "state" / "dead_letters" / "src"))
    assert dead.height == 1 and "big" in dead.item(0, "reason")
    assert summary["dead_letters"]["src"] == 1


def test_delta_source_streams_appends_only_once(tmp_path: Path) -> None:
    from deltalake import write_deltalake

    table = tmp_path / "upstream"
    write_deltalake(str(table), pl.DataFrame({"id": [1, 2], "name": ["a", "b"]}).to_arrow())
    sql = (
        "CREATE TABLE src (id BIGINT, name STRING) WITH ('connector' = 'delta', 'path' = 'upstream');\n"
        + SINK
        + "INSERT INTO out SELECT id, UPPER(name) FROM src;"
    )
    run(tmp_path, sql)
    write_deltalake(str(table), pl.DataFrame({"id": [3, 4, 5], "name": ["c", "d", "e"]}).to_arrow(), mode="append")
    write_deltalake(str(table), pl.DataFrame({"id": [6], "name": ["f"]}).to_arrow(), mode="append")
    run(tmp_path, sql, max_epoch_rows=2)
    out = read_sink(tmp_path / "out").sort("id")
    assert out.get_column("id").to_list() == [1, 2, 3, 4, 5, 6]
    assert out.get_column("name").to_list() == ["A", "B", "C", "D", "E", "F"]


def test_datagen_is_deterministic_whatever_the_epoch_size(tmp_path: Path) -> None:
    sql = """
    CREATE TABLE gen (id STRING, v INT, t DOUBLE, s STRING, ts TIMESTAMP(3)) WITH (
      'connector' = 'datagen', 'number-of-rows' = '500', 'seed' = '7', 'rows-per-second' = '100',
      'fields.id.values' = 'a,b,c', 'fields.v.kind' = 'sequence', 'fields.v.start' = '10',
      'fields.t.min' = '-5', 'fields.t.max' = '5', 'fields.s.length' = '4', 'fields.s.null-rate' = '0.2');
    CREATE TABLE out (id STRING, v INT, t DOUBLE, s STRING, ts TIMESTAMP(3))
      WITH ('connector' = 'delta', 'path' = 'out');
    INSERT INTO out SELECT * FROM gen;
    """
    run(tmp_path / "one", sql) if (tmp_path / "one").mkdir() is None else None
    run(tmp_path / "many", sql, max_epoch_rows=37) if (tmp_path / "many").mkdir() is None else None
    one, many = read_sink(tmp_path / "one" / "out"), read_sink(tmp_path / "many" / "out")
    assert_frame_equal(one.sort("v"), many.sort("v"))
    assert one.get_column("v").to_list() == list(range(10, 510)) or sorted(one.get_column("v")) == list(range(10, 510))
    assert set(one.get_column("id")) == {"a", "b", "c"}
    assert one.get_column("t").min() >= -5 and one.get_column("t").max() <= 5  # type: ignore[operator]
    assert 0.1 < one.get_column("s").null_count() / 500 < 0.3
    assert (one.get_column("ts").max() - one.get_column("ts").min()).total_seconds() == pytest.approx(4.99)


def test_datagen_small_slices_from_blocks_equal_large_slices(tmp_path: Path) -> None:
    """Slices of a few rows come from generated blocks of 4096 rows (across block boundaries, too); large ones
    are generated directly: the rows are the same."""
    sql = """
    CREATE TABLE gen (id STRING, v BIGINT, t DOUBLE, s STRING, ts TIMESTAMP(3)) WITH (
      'connector' = 'datagen', 'number-of-rows' = '9000', 'seed' = '3', 'fields.id.values' = 'a,b,c',
      'fields.s.length' = '5', 'fields.s.null-rate' = '0.1');
    CREATE TABLE out (id STRING, v BIGINT, t DOUBLE, s STRING, ts TIMESTAMP(3))
      WITH ('connector' = 'delta', 'path' = 'out');
    INSERT INTO out SELECT * FROM gen;
    """
    sinks = {}
    for name, rows in (("whole", None), ("small", 997), ("large", 3001)):
        (tmp_path / name).mkdir()
        run(tmp_path / name, sql, max_epoch_rows=rows)
        sinks[name] = read_sink(tmp_path / name / "out").sort("ts", "v", "id", "s", nulls_last=True)
    assert sinks["whole"].height == 9000
    assert_frame_equal(sinks["small"], sinks["whole"])
    assert_frame_equal(sinks["large"], sinks["whole"])


def test_print_sink_shows_row_kinds(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sql = """
    CREATE TABLE gen (v INT) WITH ('connector' = 'datagen', 'number-of-rows' = '3', 'fields.v.kind' = 'sequence');
    CREATE TABLE out (v INT, label STRING) WITH ('connector' = 'print');
    INSERT INTO out SELECT v, CASE WHEN v = 1 THEN NULL ELSE 'x' END FROM gen;
    """
    run(tmp_path, sql)
    assert capsys.readouterr().out.splitlines() == ["+I[0, x]", "+I[1, NULL]", "+I[2, x]"]


def test_python_udf_is_vectorised_and_callable_from_sql(tmp_path: Path) -> None:
    calls: list[int] = []

    @udf(pl.Int64, name="count_c")
    def count_c(s: pl.Series) -> pl.Series:
        calls.append(len(s))
        return s.str.count_matches("c")

    sql = """
    CREATE TABLE gen (s STRING) WITH ('connector' = 'datagen', 'number-of-rows' = '200', 'fields.s.length' = '30');
    CREATE TABLE out (s STRING, n BIGINT) WITH ('connector' = 'delta', 'path' = 'out');
    INSERT INTO out SELECT s, COUNT_C(s) FROM gen WHERE COUNT_C(s) > 0;
    """
    script = tmp_path / "p.sql"
    script.write_text(sql)
    Pipeline.from_sql(script, state=tmp_path / "state").run(once=True)
    out = read_sink(tmp_path / "out")
    expected = out.with_columns(n=pl.col("s").str.count_matches("c").cast(pl.Int64))
    assert_frame_equal(sort_all(out), sort_all(expected))
    assert out.height > 0 and max(calls) > 1  # whole batches, not rows


def test_continuous_trigger_runs_epochs_as_data_arrives(tmp_path: Path) -> None:
    sql = """
    CREATE TABLE gen (v BIGINT) WITH ('connector' = 'datagen', 'rows-per-second' = '2000',
                                      'fields.v.kind' = 'sequence');
    CREATE TABLE out (v BIGINT) WITH ('connector' = 'delta', 'path' = 'out');
    INSERT INTO out SELECT v FROM gen;
    """
    script = tmp_path / "p.sql"
    script.write_text(sql)
    reports = []
    summary = Pipeline.from_sql(script, state=tmp_path / "state").run(
        trigger=0.05, max_epochs=4, on_epoch=reports.append
    )
    assert summary["epochs"] == 4 and summary["stopped"] == "max-epochs"
    values = read_sink(tmp_path / "out").get_column("v").sort().to_list()
    assert values == list(range(len(values))) and len(values) == sum(r.rows_in["gen"] for r in reports)


def test_a_bounded_sequence_ends_the_source(tmp_path: Path) -> None:
    sql = """
    CREATE TABLE gen (v INT) WITH ('connector' = 'datagen', 'fields.v.kind' = 'sequence',
                                   'fields.v.start' = '5', 'fields.v.end' = '14');
    CREATE TABLE out (v INT) WITH ('connector' = 'delta', 'path' = 'out');
    INSERT INTO out SELECT v FROM gen;
    """
    run(tmp_path, sql, max_epoch_rows=3)
    assert sorted(read_sink(tmp_path / "out").get_column("v").to_list()) == list(range(5, 15))
