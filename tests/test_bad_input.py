"""A corpus of malformed input, per format: every bad record lands in the dead-letter table once, with its
file, position, raw text (and bytes) and reason; the good records give exactly DuckDB's result.

Policy under test (docs/sql.md, "Bad input and schema drift"): fields the table does not declare are ignored;
a declared field that is missing is NULL, except the event time, whose absence makes a dead letter; a value
that does not convert to its column's type makes a dead letter.
"""

from __future__ import annotations

import io
import json
import os
import random
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from polars.testing import assert_frame_equal

from engine.runner import EpochReport
from tests.helpers import duck, read_sink, run, sort_all

BASE_MS = 1_767_225_600_000
LIMIT = 20_000  # 'scan.max-record-bytes' in these tests


def sql(fmt: str, extra: str = "") -> str:
    return f"""
    CREATE TABLE ev (k STRING, v INT, ts TIMESTAMP(3), WATERMARK FOR ts AS ts - INTERVAL '1' SECOND)
    WITH ('connector' = 'filesystem', 'path' = 'in', 'format' = '{fmt}',
          'scan.max-record-bytes' = '{LIMIT}'{extra});
    CREATE TABLE totals (k STRING, n BIGINT, s BIGINT, PRIMARY KEY (k) NOT ENFORCED)
    WITH ('connector' = 'delta', 'path' = 'totals');
    INSERT INTO totals SELECT k, COUNT(*), SUM(v) FROM ev GROUP BY k;
    """


def good_rows(seed: int, count: int) -> list[dict[str, object]]:
    rng = random.Random(seed)
    return [
        {"k": rng.choice(["a", "b", "c", None]), "v": rng.choice([None, 1, 2, 3, 40]), "ts": BASE_MS + i * 500}
        for i in range(count)
    ]


def expected(rows: list[dict[str, object]]) -> pl.DataFrame:
    frame = pl.DataFrame(rows, schema={"k": pl.String, "v": pl.Int32, "ts": pl.Int64})
    return duck("SELECT k, count(*) AS n, sum(v) AS s FROM ev GROUP BY k", ev=frame)


def check(root: Path, summary: dict[str, object], good: list[dict[str, object]], reasons: list[str]) -> pl.DataFrame:
    assert_frame_equal(sort_all(read_sink(root / "totals")), sort_all(expected(good)), check_dtypes=False)
    dead = pl.read_delta(str(root / "state" / "dead_letters" / "ev"))
    assert dead.height == len(reasons), dead.select("position", "reason").to_dicts()
    assert dead.select("file", "position").n_unique() == dead.height
    found = sorted(dead.get_column("reason").to_list())
    for reason in reasons:
        match = next((f for f in found if reason in f), None)
        assert match is not None, f"no dead letter says '{reason}': {found}"
        found.remove(match)
    assert summary["dead_letters"] == {"ev": len(reasons)}  # the --json summary
    assert summary["rows_in"] == {"ev": len(good)}  # good rows only
    assert summary["records_read"] == {"ev": len(good) + len(reasons)}  # both (blank lines are neither)
    metrics = pl.read_delta(str(root / "state" / "manifest")).filter(pl.col("kind") == "epoch")
    per_epoch = [json.loads(m).get("dead_letters", {}).get("ev", 0) for m in metrics.get_column("metrics")]
    assert sum(per_epoch) == len(reasons)  # and the epoch metrics
    return dead


# -- JSON ------------------------------------------------------------------------------------
JSON_BAD: list[tuple[bytes, str]] = [
    (b'{"k": "a", "v": 1, "ts": ', "malformed JSON"),
    (b'{"k": "a", "v": "many", "ts": 1767225600000}', "cannot read 'many' as INT"),
    (b'{"k": "a", "v": 99999999999, "ts": 1767225600000}', "cannot read '99999999999' as INT"),
    (b'{"k": "a", "v": 1}', "'ts' is NULL or missing"),
    (b'{"k": "a", "v": 1, "ts": null}', "'ts' is NULL or missing"),
    (b'{"k": "a", "v": 1, "ts": "10000-01-01 00:00:00"}', "years 1-9999"),
    (b'{"k": "a", "v": 1, "ts": 100000000000000000}', "years 1-9999"),
    (b'{"k": "a", "v": 1, "ts": "2026-13-45 99:00:00"}', "cannot read '2026-13-45"),
    (b'{"k": "\xff\xfe", "v": 1, "ts": 1767225600000}', "invalid UTF-8"),
    (b"[1, 2, 3]", "not a JSON object"),
    (b'"just text"', "not a JSON object"),
    (('{"k": "' + "x" * LIMIT + '", "v": 1, "ts": 1767225600000}').encode(), "longer than 'scan.max-record-bytes'"),
]


def json_line(row: dict[str, object]) -> bytes:
    return json.dumps(row).encode()


@pytest.mark.parametrize("max_rows", [None, 7, 1])
def test_malformed_json_goes_to_dead_letters_and_good_rows_match_duckdb(tmp_path: Path, max_rows: int | None) -> None:
    good = good_rows(1, 60)
    # Schema drift and legal oddities that are good records: an extra field, a missing non-time field, a null
    # key, a long string under the limit, a value of another JSON type that converts (a number as text).
    odd: list[tuple[bytes, dict[str, object]]] = [
        (b'{"k": "a", "v": 2, "ts": 1767225601000, "new_column": {"nested": true}}', {"k": "a", "v": 2}),
        (b'{"k": "b", "ts": 1767225602000}', {"k": "b", "v": None}),
        (b'{"k": null, "v": 3, "ts": 1767225603000}', {"k": None, "v": 3}),
        (b'{"k": "c", "v": "4", "ts": "2026-01-01T00:00:04Z"}', {"k": "c", "v": 4}),
        (('{"k": "' + "y" * 5000 + '", "v": 5, "ts": 1767225605000}').encode(), {"k": "y" * 5000, "v": 5}),
    ]
    lines = [json_line(r) for r in good[:30]] + [b for b, _ in JSON_BAD] + [b for b, _ in odd]
    lines += [b"", b"   "] + [json_line(r) for r in good[30:]]
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.json").write_bytes(b"\n".join(lines) + b"\n")
    (tmp_path / "in" / "b.json").write_bytes(b"")  # an empty file
    # a truncated file: its last line stops mid-record, without a newline
    (tmp_path / "in" / "c.json").write_bytes(json_line(good[0]) + b'\n{"k": "a", "v": 1, "t')
    # ... written long ago: a last line without its newline waits for 'source.partial-line-timeout' (10 s)
    os.utime(tmp_path / "in" / "c.json", (1_700_000_000, 1_700_000_000))
    summary = run(tmp_path, sql("json"), max_epoch_rows=max_rows)
    reasons = [r for _, r in JSON_BAD] + ["malformed JSON"]
    dead = check(tmp_path, summary, good + [o for _, o in odd] + [good[0]], reasons)
    utf8 = dead.filter(pl.col("reason") == "invalid UTF-8").row(0, named=True)
    assert utf8["raw_bytes"] == JSON_BAD[8][0] and "\ufffd" in utf8["raw"]  # the exact bytes are kept
    assert utf8["position"] == 30 + 8 and utf8["file"].endswith("a.json")
    huge = dead.filter(pl.col("reason").str.contains("max-record-bytes")).row(0, named=True)
    assert huge["raw"].startswith('{"k": "xxx')
    broken = dead.filter(pl.col("raw") == '{"k": "a", "v": 1, "ts": ').row(0, named=True)
    assert broken["position"] == 30


# -- CSV -------------------------------------------------------------------------------------
CSV_BAD: list[tuple[bytes, str]] = [
    (b"a,1", "expected 3 fields, found 2"),
    (b"a,1,1767225600000,extra", "expected 3 fields, found 4"),
    (b"a,many,1767225600000", "cannot read 'many' as INT"),
    (b"a,1,", "'ts' is NULL or missing"),
    (b"a,1,10000-01-01 00:00:00", "years 1-9999"),
    (b"\xff,1,1767225600000", "invalid UTF-8"),
    (("z" * LIMIT + ",1,1767225600000").encode(), "longer than 'scan.max-record-bytes'"),
]


def csv_line(row: dict[str, object], order: tuple[str, ...] = ("k", "v", "ts")) -> bytes:
    return ",".join("" if row[c] is None else str(row[c]) for c in order).encode()


def test_malformed_csv_goes_to_dead_letters(tmp_path: Path) -> None:
    good = good_rows(2, 40)
    odd = [(b'"quoted, with comma",6,1767225606000', {"k": "quoted, with comma", "v": 6})]
    lines = [csv_line(r) for r in good] + [b for b, _ in CSV_BAD] + [b for b, _ in odd]
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.csv").write_bytes(b"\n".join(lines) + b"\n")
    (tmp_path / "in" / "b.csv").write_bytes(b"")
    summary = run(tmp_path, sql("csv"), max_epoch_rows=9)
    check(tmp_path, summary, good + [o for _, o in odd], [r for _, r in CSV_BAD])


def test_csv_with_a_header_matches_columns_by_name_and_ignores_new_ones(tmp_path: Path) -> None:
    """Schema drift: a later file reorders the columns and adds one; a file without `v` gives NULLs."""
    good = good_rows(3, 30)
    (tmp_path / "in").mkdir()
    first = [b"k,v,ts"] + [csv_line(r) for r in good[:10]]
    drifted = (
        [b"ts,region,k,v"]
        + [csv_line({**r, "region": "eu"}, ("ts", "region", "k", "v")) for r in good[10:20]]
        + [b"1767225600000,eu,a,lots"]
    )
    missing = [b"ts,k"] + [csv_line(r, ("ts", "k")) for r in good[20:]]
    (tmp_path / "in" / "1.csv").write_bytes(b"\n".join(first) + b"\n")
    (tmp_path / "in" / "2.csv").write_bytes(b"\n".join(drifted) + b"\n")
    (tmp_path / "in" / "3.csv").write_bytes(b"\n".join(missing) + b"\n")
    summary = run(tmp_path, sql("csv", ", 'csv.header' = 'true'"), max_epoch_rows=4)
    expected_rows = good[:20] + [{**r, "v": None} for r in good[20:]]
    dead = check(tmp_path, summary, expected_rows, ["cannot read 'lots' as INT"])
    assert dead.row(0, named=True)["file"].endswith("2.csv")


# -- Parquet ---------------------------------------------------------------------------------
def parquet_bytes(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    pq.write_table(table, sink)
    return sink.getvalue()


def test_malformed_parquet_goes_to_dead_letters(tmp_path: Path) -> None:
    good = good_rows(4, 40)
    typed = pa.table(
        {
            "k": pa.array([r["k"] for r in good], pa.string()),
            "v": pa.array([r["v"] for r in good], pa.int32()),
            "ts": pa.array([r["ts"] for r in good], pa.timestamp("ms", "UTC")),
        }
    )
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "1-good.parquet").write_bytes(parquet_bytes(typed.slice(0, 20)))
    # Schema drift: `v` became text, and a new column arrived. Text that converts is kept; the rest is dead.
    drifted = pa.table(
        {
            "k": ["a", "b", "c"],
            "v": ["7", "many", None],
            "ts": pa.array([BASE_MS, BASE_MS + 1, BASE_MS + 2], pa.timestamp("ms", "UTC")),
            "region": ["eu", "us", "eu"],
        }
    )
    (folder / "2-drifted.parquet").write_bytes(parquet_bytes(drifted))
    nulls = pa.table(
        {
            "k": ["a", "b"],
            "v": pa.array([1, 2], pa.int32()),
            "ts": pa.array([None, BASE_MS], pa.timestamp("ms", "UTC")),
        }
    )
    (folder / "3-null-time.parquet").write_bytes(parquet_bytes(nulls))
    far = pa.table(
        {
            "k": ["a"],
            "v": pa.array([1], pa.int32()),
            "ts": pa.array([400_000_000_000_000_000], pa.timestamp("us", "UTC")),  # year ~14,600
        }
    )
    (folder / "4-far-future.parquet").write_bytes(parquet_bytes(far))
    (folder / "5-empty.parquet").write_bytes(b"")
    whole = parquet_bytes(typed.slice(20))
    (folder / "6-truncated.parquet").write_bytes(whole[: len(whole) // 2])
    (folder / "7-good.parquet").write_bytes(parquet_bytes(typed.slice(20)))
    (folder / "8-no-rows.parquet").write_bytes(parquet_bytes(typed.slice(0, 0)))
    summary = run(tmp_path, sql("parquet"), max_epoch_rows=6)
    drifted_good = [{"k": "a", "v": 7}, {"k": "c", "v": None}]
    reasons = [
        "cannot read 'many' as INT",
        "'ts' is NULL or missing",
        "years 1-9999",
        "unreadable Parquet file",
        "unreadable Parquet file",
    ]
    check(tmp_path, summary, good + drifted_good + [{"k": "b", "v": 2}], reasons)


def test_each_epoch_reports_good_rows_and_dead_letters_apart(tmp_path: Path) -> None:
    """The per-epoch report (what the progress line shows) counts as the manifest does: rows_in good rows only."""
    good = good_rows(5, 20)
    lines = [json_line(r) for r in good[:8]] + [b for b, _ in JSON_BAD[:3]] + [json_line(r) for r in good[8:]]
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.json").write_bytes(b"\n".join(lines) + b"\n")
    reports: list[EpochReport] = []
    summary = run(tmp_path, sql("json"), max_epoch_rows=7, on_epoch=reports.append)
    metrics = {
        row["epoch"]: json.loads(row["metrics"])
        for row in pl.read_delta(str(tmp_path / "state" / "manifest")).iter_rows(named=True)
        if row["kind"] == "epoch"
    }
    assert [r.records_read.get("ev", 0) for r in reports] == [7, 7, 7, 2]
    for report in reports:
        assert report.rows_in == metrics[report.epoch]["rows_in"]
        assert report.dead_letters == metrics[report.epoch].get("dead_letters", {})
        assert report.records_read["ev"] == report.rows_in["ev"] + report.dead_letters.get("ev", 0)
    assert sum(r.dead_letters.get("ev", 0) for r in reports) == 3 == summary["dead_letters"]["ev"]
    assert sum(r.rows_in["ev"] for r in reports) == len(good) == summary["rows_in"]["ev"]
