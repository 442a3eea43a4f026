"""Nested types (ROW, ARRAY, MAP) end to end: declared in DDL, read from JSON lines, Avro and Parquet, written
to Delta and read back with Polars and DuckDB; values that do not match their type are dead letters; the
expressions over them and UNNEST compared with DuckDB (or a Python reference where Flink and DuckDB differ)."""

from __future__ import annotations

import io
import json
import random
import re
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
    return (
        pl.read_delta(str(path)) if path.exists() else pl.DataFrame(schema={"position": pl.Int64, "reason": pl.String})
    )


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

    inner = {
        "type": "record",
        "name": "record_r_c",
        "fields": [{"name": "d", "type": nullable({"type": "array", "items": nullable(small)}), "default": None}],
    }
    row = {
        "type": "record",
        "name": "record_r",
        "fields": [
            {"name": "t", "type": nullable(small), "default": None},
            {"name": "b", "type": nullable("string"), "default": None},
            {"name": "c", "type": nullable(inner), "default": None},
        ],
    }
    longs = {"type": "array", "items": nullable("long")}
    fields = [
        {"name": "id", "type": nullable("long"), "default": None},
        {"name": "r", "type": nullable(row), "default": None},
        {"name": "m", "type": nullable({"type": "map", "values": nullable(longs)}), "default": None},
    ]
    return {"type": "record", "name": "record", "fields": fields}


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


def test_parquet_maps_and_structs_written_by_arrow(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "in").mkdir()
    table = pa.table(
        {
            "id": pa.array([1, 2, 3], pa.int64()),
            "r": pa.array([{"a": 1, "b": "x"}, None, {"a": None, "b": "y"}]),
            "m": pa.array([[("k", [1, 2])], [], None], pa.map_(pa.string(), pa.list_(pa.int64()))),
        }
    )
    pq.write_table(table, tmp_path / "in" / "a.parquet")
    ddl = "id BIGINT, r ROW<a INT, b STRING>, m MAP<STRING, ARRAY<INT>>"
    sql = (
        f"CREATE TABLE src ({ddl}) WITH ('connector' = 'filesystem', 'path' = 'in', 'format' = 'parquet');\n"
        f"CREATE TABLE out ({ddl}, k INT) WITH ('connector' = 'delta', 'path' = 'out');\n"
        "INSERT INTO out SELECT *, m['k'][2] FROM src;"
    )
    assert run(tmp_path, sql)["dead_letters"] == {}
    assert read_sink(tmp_path / "out").sort("id").to_dicts() == [
        {"id": 1, "r": {"a": 1, "b": "x"}, "m": [{"key": "k", "value": [1, 2]}], "k": 2},
        {"id": 2, "r": None, "m": [], "k": None},
        {"id": 3, "r": {"a": None, "b": "y"}, "m": None, "k": None},
    ]


def test_delta_source_reads_nested_values_and_refuses_what_does_not_fit(tmp_path: Path) -> None:
    from deltalake import write_deltalake

    stored = pl.DataFrame(
        {
            "id": [1, 2, 3],
            "r": [{"a": 1, "tags": ["x"]}, {"a": 2**40, "tags": None}, None],
            "m": [[{"key": "k", "value": 1}], [], None],
        },
        schema={"id": pl.Int64, "r": pl.Struct({"a": pl.Int64, "tags": pl.List(pl.String)}), "m": MAP_T},
    )
    write_deltalake(str(tmp_path / "src"), stored.to_arrow())
    ddl = "id BIGINT, r ROW<a INT, tags ARRAY<STRING>>, m MAP<STRING, INT>"
    sql = (
        f"CREATE TABLE src ({ddl}) WITH ('connector' = 'delta', 'path' = 'src');\n"
        f"CREATE TABLE out ({ddl}) WITH ('connector' = 'delta', 'path' = 'out');\n"
        "INSERT INTO out SELECT * FROM src;"
    )
    assert run(tmp_path, sql)["dead_letters"] == {"src": 1}
    assert read_sink(tmp_path / "out").sort("id").to_dicts() == [
        {"id": 1, "r": {"a": 1, "tags": ["x"]}, "m": [{"key": "k", "value": 1}]},
        {"id": 3, "r": None, "m": None},
    ]
    (reason,) = dead_letters(tmp_path).get_column("reason").to_list()
    assert reason.startswith("column 'r': cannot read '{\"a\":1099511627776"), reason


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
    assert (
        decoded.dead.get_column("reason").to_list()
        == ["column 'r': a value inside does not fit ROW<`t` TINYINT, `b` STRING, `c` ROW<`d` ARRAY<SMALLINT>>>"] * 2
    )


# -- expressions --------------------------------------------------------------------------------------------------
EXPRESSIONS = [
    # (sink column, its type, timelapse expression, DuckDB expression over `src` with `mm` the map as a MAP)
    ("a", "INT", "r.a", "r.a"),
    ("qualified", "STRING", "src.r.b", "r.b"),
    ("deep", "INT", "r.c.d[2]", "r.c.d[2]"),
    ("first", "INT", "arr[1]", "arr[1]"),
    ("far", "INT", "arr[9]", "arr[9]"),
    ("by_column", "INT", "arr[CAST(id % 4 AS INT)]", "CASE WHEN id % 4 >= 1 THEN arr[id % 4] END"),
    ("field_of_element", "STRING", "rs[1].b", "rs[1].b"),
    ("k1", "INT", "m['k1']", "mm['k1']"),
    ("card", "INT", "CARDINALITY(arr)", "len(arr)"),
    ("card_map", "INT", "CARDINALITY(m)", "cardinality(mm)"),
    ("keys", "ARRAY<STRING>", "MAP_KEYS(m)", "map_keys(mm)"),
    ("vals", "ARRAY<INT>", "MAP_VALUES(m)", "map_values(mm)"),
    ("has3", "BOOLEAN", "ARRAY_CONTAINS(arr, 3)", "list_contains(arr, 3)"),
    ("built", "ARRAY<BIGINT>", "ARRAY[id, 2, r.a]", "[id, 2, r.a]"),
    (
        "built_map",
        "MAP<STRING, BIGINT>",
        "MAP['a', id, 'b', 2]",
        "[{'key': 'a', 'value': id}, {'key': 'b', 'value': 2}]",
    ),
    ("built_row", "ROW<x BIGINT, y STRING>", "ROW(id, r.b)", "{'x': id, 'y': r.b}"),
    (
        "cast_row",
        "ROW<p BIGINT, q STRING, z ROW<d ARRAY<BIGINT>>>",
        "CAST(r AS ROW<p BIGINT, q STRING, z ROW<d ARRAY<BIGINT>>>)",
        "CASE WHEN r IS NOT NULL THEN {'p': r.a, 'q': r.b, 'z': CASE WHEN r.c IS NOT NULL THEN {'d': r.c.d} END} END",
    ),
    ("cast_arr", "ARRAY<STRING>", "CAST(arr AS ARRAY<STRING>)", "CAST(arr AS VARCHAR[])"),
    ("is_null", "BOOLEAN", "r.c IS NULL", "r.c IS NULL"),
    ("reversed", "ARRAY<INT>", "ARRAY_REVERSE(arr)", "list_reverse(arr)"),
    ("biggest", "INT", "ARRAY_MAX(arr)", "list_max(arr)"),
    ("smallest", "INT", "ARRAY_MIN(arr)", "list_min(arr)"),
    ("entries", "ARRAY<ROW<key STRING, value INT>>", "MAP_ENTRIES(m)", "m"),
]


def _element(row: dict[str, Any]) -> Any:
    return row["s"][0] if row["s"] is not None and len(row["s"]) == 1 else None


def _has_null(row: dict[str, Any]) -> bool | None:
    return None if row["arr"] is None else None in row["arr"]


def _distinct(row: dict[str, Any]) -> list[str | None] | None:
    return None if row["s"] is None else list(dict.fromkeys(row["s"]))


def _joined(row: dict[str, Any], null: str | None = None) -> str | None:
    if row["s"] is None:
        return None
    return "-".join(null if x is None else x for x in row["s"] if x is not None or null is not None)


def _position(row: dict[str, Any]) -> int | None:
    return None if row["arr"] is None else next((i + 1 for i, x in enumerate(row["arr"]) if x == 3), 0)


def _removed(row: dict[str, Any]) -> list[int | None] | None:
    return None if row["arr"] is None else [x for x in row["arr"] if x != 3]


def _concat(row: dict[str, Any]) -> list[int | None] | None:
    return (
        None
        if row["arr"] is None or row["r"] is None or row["r"]["c"] is None or row["r"]["c"]["d"] is None
        else row["arr"] + row["r"]["c"]["d"]
    )


#: where Flink's semantics differ from DuckDB's (or DuckDB has no such function): a Python reference
REFERENCE = [
    ("only", "STRING", "ELEMENT(s)", _element),
    ("has_null", "BOOLEAN", "ARRAY_CONTAINS(arr, CAST(NULL AS INT))", _has_null),
    ("distinct", "ARRAY<STRING>", "ARRAY_DISTINCT(s)", _distinct),
    ("joined", "STRING", "ARRAY_JOIN(s, '-')", _joined),
    ("joined_n", "STRING", "ARRAY_JOIN(s, '-', 'N')", lambda row: _joined(row, "N")),
    ("position", "INT", "ARRAY_POSITION(arr, 3)", _position),  # (DuckDB gives NULL where Flink gives 0)
    ("removed", "ARRAY<INT>", "ARRAY_REMOVE(arr, 3)", _removed),
    ("concat", "ARRAY<INT>", "ARRAY_CONCAT(arr, r.c.d)", _concat),  # (DuckDB skips a NULL array)
]


def test_expressions_match_duckdb(tmp_path: Path) -> None:
    rows = make_rows(3, 60)
    write_jsonl(tmp_path / "in" / "a.json", rows)
    every = [(n, t, e) for n, t, e, _ in EXPRESSIONS] + [(n, t, e) for n, t, e, _ in REFERENCE]
    sink = "CREATE TABLE out (id BIGINT, " + ", ".join(f"{n} {t}" for n, t, _ in every) + ")"
    sink += " WITH ('connector' = 'delta', 'path' = 'out');\n"
    query = "INSERT INTO out SELECT id, " + ", ".join(e for _, _, e in every) + " FROM src;"
    run(tmp_path, SOURCE + sink + query, max_epoch_rows=17)
    got = read_sink(tmp_path / "out").sort("id")
    data = frame(rows)
    expected = duck(
        "SELECT id, " + ", ".join(f"{e} AS {n}" for n, _, _, e in EXPRESSIONS) + " FROM "
        "(SELECT *, map_from_entries(m) AS mm FROM src) ORDER BY id",
        src=data,
    )
    for name, *_ in EXPRESSIONS:
        assert got.get_column(name).to_list() == expected.get_column(name).to_list(), name
    for name, _, _, reference in REFERENCE:
        assert got.get_column(name).to_list() == [reference(r) for r in data.to_dicts()], name


# -- UNNEST ---------------------------------------------------------------------------------------------------------
UNNEST_SINKS = """
CREATE TABLE o_arr (id BIGINT, x INT, n INT) WITH ('connector' = 'delta', 'path' = 'o_arr');
CREATE TABLE o_map (id BIGINT, k STRING, v INT) WITH ('connector' = 'delta', 'path' = 'o_map');
CREATE TABLE o_rows (id BIGINT, a INT, b STRING) WITH ('connector' = 'delta', 'path' = 'o_rows');
CREATE TABLE o_left (id BIGINT, x STRING) WITH ('connector' = 'delta', 'path' = 'o_left');
INSERT INTO o_arr SELECT id, x, n FROM src CROSS JOIN UNNEST(arr) WITH ORDINALITY AS t (x, n);
INSERT INTO o_map SELECT src.id, t.k, t.v FROM src CROSS JOIN UNNEST(src.m) AS t (k, v) WHERE k <> 'x';
INSERT INTO o_rows SELECT id, a, b FROM src, UNNEST(rs) AS u (a, b);
INSERT INTO o_left SELECT id, x FROM src LEFT JOIN UNNEST(s) AS t (x) ON TRUE;
"""
UNNEST_DUCK = {
    "o_arr": "SELECT id, unnest(arr) AS x, generate_subscripts(arr, 1) AS n FROM src",
    "o_map": "SELECT id, e.key AS k, e.value AS v FROM (SELECT id, unnest(m) AS e FROM src) WHERE e.key <> 'x'",
    "o_rows": "SELECT id, e.a AS a, e.b AS b FROM (SELECT id, unnest(rs) AS e FROM src)",
    "o_left": "SELECT id, x FROM src LEFT JOIN LATERAL (SELECT unnest(src.s) AS x) t ON TRUE",
}


@settings(max_examples=examples(6), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 10_000), n=st.integers(0, 25), max_rows=st.one_of(st.none(), st.integers(1, 7)))
def test_cross_join_unnest_matches_duckdb(seed: int, n: int, max_rows: int | None) -> None:
    root = Path(tempfile.mkdtemp())
    try:
        rows = make_rows(seed, n)
        write_jsonl(root / "in" / "a.json", rows)
        run(root, SOURCE + UNNEST_SINKS, max_epoch_rows=max_rows)
        for table, query in UNNEST_DUCK.items():
            expected = duck(query, src=frame(rows))
            got = read_sink(root / table) if (root / table).exists() else expected.clear()
            assert_frame_equal(sort_all(got), sort_all(expected), check_dtypes=False)
    finally:
        shutil.rmtree(root)


def test_unnest_passes_an_updating_input_through(tmp_path: Path) -> None:
    """A changelog source: the rows an update retracts are the ones its old array expanded to."""
    messages = [
        {"op": "c", "after": {"id": 1, "tags": ["a", "b"]}},
        {"op": "c", "after": {"id": 2, "tags": ["c"]}},
        {"op": "u", "before": {"id": 1, "tags": ["a", "b"]}, "after": {"id": 1, "tags": ["b", "d"]}},
        {"op": "d", "before": {"id": 2, "tags": ["c"]}},
        {"op": "c", "after": {"id": 3, "tags": []}},
    ]
    write_jsonl(tmp_path / "in" / "a.json", messages)
    sql = """
    CREATE TABLE src (id BIGINT, tags ARRAY<STRING>)
    WITH ('connector' = 'filesystem', 'path' = 'in', 'format' = 'debezium-json');
    CREATE TABLE out (id BIGINT, tag STRING, PRIMARY KEY (id, tag) NOT ENFORCED)
    WITH ('connector' = 'delta', 'path' = 'out');
    INSERT INTO out SELECT id, tag FROM src CROSS JOIN UNNEST(tags) AS t (tag);
    """
    for max_rows in (1, None):
        shutil.rmtree(tmp_path / "out", ignore_errors=True)
        shutil.rmtree(tmp_path / "state", ignore_errors=True)
        run(tmp_path, sql, max_epoch_rows=max_rows)
        assert sort_all(read_sink(tmp_path / "out")).rows() == [(1, "b"), (1, "d")]


@pytest.mark.parametrize(
    ("statement", "fragment"),
    [
        ("SELECT id, x FROM src CROSS JOIN UNNEST(r) AS t (x)", "UNNEST needs an ARRAY or a MAP, not ROW"),
        ("SELECT id, k FROM src CROSS JOIN UNNEST(m) AS t (k)", "a MAP gives 2 (key, value)"),
        ("SELECT id, x FROM src LEFT JOIN UNNEST(s) AS t (x) ON x = 'a'", "no condition but ON TRUE"),
        ("SELECT id, x FROM src CROSS JOIN UNNEST(s, arr) AS t (x, y)", "several collections"),
        ("SELECT m[CAST(id AS STRING)] FROM src", "must be a constant"),
        ("SELECT r.zz FROM src", "has no field 'zz'"),
        ("SELECT arr.a FROM src", "unknown table or alias 'arr'"),
        ("SELECT CAST(r AS ROW<a INT>) FROM src", "cannot CAST ROW"),
        ("SELECT ARRAY_CONTAINS(r, 1) FROM src", "expected an ARRAY, got ROW"),
    ],
)
def test_unsupported_or_wrong_uses_are_refused_when_planning(statement: str, fragment: str) -> None:
    sink = "CREATE TABLE out (x STRING) WITH ('connector' = 'print');\n"
    with pytest.raises(SqlError, match=re.escape(fragment)) as caught:
        plan_script(SOURCE + sink + f"INSERT INTO out {statement};")
    assert caught.value.line == 3, caught.value


def test_json_format_writes_maps_as_objects_and_reads_its_output_back() -> None:
    columns: dict[str, pl.DataType] = {
        "id": pl.Int64(),
        "r": pl.Struct({"a": pl.Int32(), "m": MAP_T}),
        "m": pl.List(pl.Struct({"key": pl.String(), "value": pl.List(pl.Int32())})),
    }
    rows = pl.DataFrame(
        {
            "id": [1, 2],
            "r": [{"a": 1, "m": [{"key": "x", "value": 1}]}, None],
            "m": [[{"key": 'k"q', "value": [1, None]}, {"key": "z", "value": None}], []],
        },
        schema=columns,
    )
    fmt = make_format("json", columns, {})
    encoded = fmt.encode(rows)
    assert [json.loads(v) for v in encoded.to_list()] == [
        {"id": 1, "r": {"a": 1, "m": [{"key": "x", "value": 1}]}, "m": {'k"q': [1, None], "z": None}},
        {"id": 2, "r": None, "m": {}},
    ]
    decoded = fmt.decode(encoded)
    assert decoded.dead.height == 0
    assert_frame_equal(decoded.rows, rows)
