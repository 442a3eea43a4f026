"""Nested types (ROW, ARRAY, MAP) end to end: declared in DDL, read from JSON lines, Avro and Parquet, written
to Delta and read back with Polars and DuckDB; values that do not match their type are dead letters; the
expressions over them and UNNEST compared with DuckDB (or a Python reference where Flink and DuckDB differ)."""

from __future__ import annotations

import io
import json
import random
import shutil
import tempfile
from pathlib import Path
from typing import Any

import duckdb
import polars as pl
import pytest
from deltalake import DeltaTable
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from engine.formats import make_format
from sql.errors import SqlError
from sql.planner import plan_script
from tests.helpers import duck, examples, read_sink, run, sort_all, write_jsonl

ROW_T = pl.Struct({"a": pl.Int32(), "b": pl.String(), "c": pl.Struct({"d": pl.List(pl.Int32())})})
MAP_T = pl.List(pl.Struct({"key": pl.String(), "value": pl.Int32()}))
SCHEMA: dict[str, pl.DataType] = {
    "id": pl.Int64(),
    "r": ROW_T,
    "arr": pl.List(pl.Int32()),
    "m": MAP_T,
    "s": pl.List(pl.String()),
    "rs": pl.List(pl.Struct({"a": pl.Int32(), "b": pl.String()})),
}
COLUMNS = (
    "id BIGINT, r ROW<a INT, b STRING, c ROW(d ARRAY<INT>)>, arr ARRAY<INT>, m MAP<STRING, INT>, s ARRAY<STRING>, "
    "rs ARRAY<ROW<a INT, b STRING>>"
)
SOURCE = f"CREATE TABLE src ({COLUMNS}) WITH ('connector' = 'filesystem', 'path' = 'in', 'format' = 'json');\n"


def maybe(rng: random.Random, value: Any, null_rate: float = 0.15) -> Any:
    return None if rng.random() < null_rate else value


def ints(rng: random.Random) -> list[int | None] | None:
    return maybe(rng, [maybe(rng, rng.randint(-3, 5)) for _ in range(rng.randint(0, 4))])


def make_rows(seed: int, n: int) -> list[dict[str, Any]]:
    """Random rows as JSON objects (maps as objects); NULLs at every level, empty arrays and maps."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        keys = rng.sample(["k1", "k2", "k3", "x"], rng.randint(0, 3))
        rows.append(
            {
                "id": i,
                "r": maybe(
                    rng,
                    {
                        "a": maybe(rng, rng.randint(-9, 9)),
                        "b": maybe(rng, rng.choice(["x", "y", "é"])),
                        "c": maybe(rng, {"d": ints(rng)}),
                    },
                ),
                "arr": ints(rng),
                "m": maybe(rng, {k: maybe(rng, rng.randint(0, 9)) for k in keys}),
                "s": maybe(rng, [maybe(rng, rng.choice(["a", "b", "c"])) for _ in range(rng.randint(0, 4))]),
                "rs": maybe(
                    rng, [{"a": maybe(rng, rng.randint(0, 3)), "b": rng.choice("pq")} for _ in range(rng.randint(0, 3))]
                ),
            }
        )
    return rows


def as_layout(row: dict[str, Any]) -> dict[str, Any]:
    """A JSON row in timelapse's layout: a map as its list of key/value entries."""
    m = row["m"]
    return {**row, "m": None if m is None else [{"key": k, "value": v} for k, v in m.items()]}


def frame(rows: list[dict[str, Any]]) -> pl.DataFrame:
    return pl.DataFrame([as_layout(r) for r in rows], schema=SCHEMA)


def delta_by_duckdb(path: Path) -> pl.DataFrame:
    """A Delta table read by DuckDB: the Parquet files the table's current version names."""
    files = DeltaTable(str(path)).file_uris()
    return duckdb.sql(f"SELECT * FROM read_parquet({files!r})").pl()


def dead_letters(root: Path, table: str = "src") -> pl.DataFrame:
    path = root / "state" / "dead_letters" / table
    return pl.read_delta(str(path)) if path.exists() else pl.DataFrame(schema={"position": pl.Int64, "reason": pl.String})


# -- formats -> Delta ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("max_rows", [None, 3])
def test_json_lines_nested_values_reach_delta(tmp_path: Path, max_rows: int | None) -> None:
    rows = make_rows(1, 40)
    write_jsonl(tmp_path / "in" / "a.json", rows)
    sink = f"CREATE TABLE out ({COLUMNS}) WITH ('connector' = 'delta', 'path' = 'out');\n"
    summary = run(tmp_path, SOURCE + sink + "INSERT INTO out SELECT * FROM src;", max_epoch_rows=max_rows)
    assert summary["dead_letters"] == {}
    expected = frame(rows)
    assert_frame_equal(read_sink(tmp_path / "out").sort("id"), expected)
    by_duckdb = delta_by_duckdb(tmp_path / "out").sort("id")
    assert by_duckdb.to_dicts() == expected.to_dicts()


AVRO_COLUMNS: dict[str, pl.DataType] = {
    "id": pl.Int64(),
    "r": pl.Struct({"t": pl.Int8(), "b": pl.String(), "c": pl.Struct({"d": pl.List(pl.Int16())})}),
    "m": pl.List(pl.Struct({"key": pl.String(), "value": pl.List(pl.Int64())})),
}
AVRO_DDL = "id BIGINT, r ROW<t TINYINT, b STRING, c ROW<d ARRAY<SMALLINT>>>, m MAP<STRING, ARRAY<BIGINT>>"


def writer_schema(small: str = "int") -> dict[str, Any]:
    """The schema a producer writes with, spelled out by hand (as Flink's AvroSchemaConverter derives it)."""

    def nullable(kind: Any) -> list[Any]:
        return ["null", kind]

    inner = {"type": "record", "name": "record_r_c", "fields": [
        {"name": "d", "type": nullable({"type": "array", "items": nullable(small)}), "default": None}
    ]}
    row = {"type": "record", "name": "record_r", "fields": [
        {"name": "t", "type": nullable(small), "default": None},
        {"name": "b", "type": nullable("string"), "default": None},
        {"name": "c", "type": nullable(inner), "default": None},
    ]}
    return {"type": "record", "name": "record", "fields": [
        {"name": "id", "type": nullable("long"), "default": None},
        {"name": "r", "type": nullable(row), "default": None},
        {"name": "m", "type": nullable({"type": "map", "values": nullable({"type": "array", "items": nullable("long")})}),
         "default": None},
    ]}  # fmt: skip


def avro_messages(records: list[dict[str, Any]], schema: dict[str, Any]) -> pl.Series:
    from fastavro import parse_schema, schemaless_writer

    parsed = parse_schema(schema)
    out = []
    for record in records:
        buffer = io.BytesIO()
        schemaless_writer(buffer, parsed, record)
        out.append(buffer.getvalue())
    return pl.Series(out, dtype=pl.Binary)


def test_avro_records_arrays_and_maps_reach_delta_through_parquet(tmp_path: Path) -> None:
    records = [
        {"id": 1, "r": {"t": 7, "b": "x", "c": {"d": [1, None, -3]}}, "m": {"a": [1, 2], "b": None, "c": []}},
        {"id": 2, "r": None, "m": None},
        {"id": 3, "r": {"t": None, "b": None, "c": None}, "m": {}},
    ]
    fmt = make_format("avro", AVRO_COLUMNS, {})
    assert fmt.schema == writer_schema()  # the schema timelapse derives is the one Flink's converter gives
    decoded = fmt.decode(avro_messages(records, writer_schema()))
    assert decoded.dead.height == 0
    expected = pl.DataFrame(
        [{**r, "m": None if r["m"] is None else [{"key": k, "value": v} for k, v in r["m"].items()]} for r in records],
        schema=AVRO_COLUMNS,
    )
    assert_frame_equal(decoded.rows, expected)
    assert fmt.decode(fmt.encode(expected)).rows.equals(expected)  # and it writes what it reads
    # the decoded rows, as a Parquet file, through a pipeline into Delta
    (tmp_path / "in").mkdir()
    decoded.rows.write_parquet(tmp_path / "in" / "part.parquet")
    sql = (
        f"CREATE TABLE src ({AVRO_DDL}) WITH ('connector' = 'filesystem', 'path' = 'in', 'format' = 'parquet');\n"
        f"CREATE TABLE out ({AVRO_DDL}) WITH ('connector' = 'delta', 'path' = 'out');\n"
        "INSERT INTO out SELECT * FROM src;"
    )
    run(tmp_path, sql)
    assert_frame_equal(read_sink(tmp_path / "out").sort("id"), expected)
    assert delta_by_duckdb(tmp_path / "out").sort("id").to_dicts() == expected.to_dicts()


# -- dead letters ---------------------------------------------------------------------------------------------------
BAD_LINES = {
    '{"id": 100, "r": {"a": 1.5}}': "column 'r'",  # a fraction for an INT field
    '{"id": 101, "arr": "x"}': "column 'arr'",  # a string for an ARRAY
    '{"id": 102, "arr": [1, "y"]}': "column 'arr'",  # an element that is not an INT
    '{"id": 103, "m": {"k": "v"}}': "column 'm'",  # a MAP value that is not an INT
    '{"id": 104, "r": [1, 2]}': "column 'r'",  # an array for a ROW
    '{"id": 105, "arr": [3000000000]}': "column 'arr'",  # beyond INT's range
    '{"id": 106, "rs": [{"a": true}]}': "column 'rs'",  # a boolean for an INT field inside an array
    '{"id": 107, "r": {"c": {"d": {"x": 1}}}}': "column 'r'",  # an object for an ARRAY two levels down
}


@pytest.mark.parametrize("max_rows", [None, 1, 4])
def test_mismatching_nested_values_are_dead_letters(tmp_path: Path, max_rows: int | None) -> None:
    rows = make_rows(2, 12)
    bad = list(BAD_LINES)
    lines = [json.dumps(r) for r in rows]
    mixed = lines[:5] + bad[:4] + lines[5:] + bad[4:]
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.json").write_text("".join(line + "\n" for line in mixed))
    sink = f"CREATE TABLE out ({COLUMNS}) WITH ('connector' = 'delta', 'path' = 'out');\n"
    summary = run(tmp_path, SOURCE + sink + "INSERT INTO out SELECT * FROM src;", max_epoch_rows=max_rows)
    assert summary["dead_letters"] == {"src": len(bad)}
    dead = dead_letters(tmp_path).sort("position")
    assert dead.get_column("raw").to_list() == bad
    for reason, column in zip(dead.get_column("reason"), BAD_LINES.values(), strict=True):
        assert reason.startswith(column + ": cannot read"), reason
    assert_frame_equal(read_sink(tmp_path / "out").sort("id"), frame(rows))  # never a silent NULL


def test_mismatching_nested_values_in_parquet_and_avro_are_dead_letters(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    wide = pl.DataFrame(
        {"id": [1, 2], "r": [{"a": 5, "b": "ok"}, {"a": 2**40, "b": "too big"}]},
        schema={"id": pl.Int64, "r": pl.Struct({"a": pl.Int64, "b": pl.String})},
    )
    wide.write_parquet(tmp_path / "in" / "part.parquet")
    sql = (
        "CREATE TABLE src (id BIGINT, r ROW<a INT, b STRING>) "
        "WITH ('connector' = 'filesystem', 'path' = 'in', 'format' = 'parquet');\n"
        "CREATE TABLE out (id BIGINT, r ROW<a INT, b STRING>) WITH ('connector' = 'delta', 'path' = 'out');\n"
        "INSERT INTO out SELECT * FROM src;"
    )
    assert run(tmp_path, sql)["dead_letters"] == {"src": 1}
    assert read_sink(tmp_path / "out").to_dicts() == [{"id": 1, "r": {"a": 5, "b": "ok"}}]
    assert dead_letters(tmp_path).get_column("reason").to_list() == [
        'column \'r\': cannot read \'{"a":1099511627776,"b":"too big"}\' as ROW<`a` INT, `b` STRING>'
    ]
    # Avro: a writer with wider numbers than the table's TINYINT and SMALLINT
    fmt = make_format("avro", AVRO_COLUMNS, {})
    messages = avro_messages(
        [{"id": 1, "r": {"t": 1000, "b": "x", "c": None}, "m": None}, {"id": 2, "r": {"c": {"d": [70000]}}}],
        writer_schema("int"),
    )
    decoded = fmt.decode(messages)
    assert decoded.rows.height == 0
    assert decoded.dead.get_column("reason").to_list() == [
        "column 'r': a value inside does not fit ROW<`t` TINYINT, `b` STRING, `c` ROW<`d` ARRAY<SMALLINT>>>"
    ] * 2
