"""JSON lines and CSV read whole by Polars (engine/sources/text_slices.py) or line by line: the rows are DuckDB's
reading of the same good lines, whatever slices the epochs cut (mid-file included), and every bad line is one dead
letter at its line number with its reason, whichever path its slice took."""

from __future__ import annotations

import json
import random
from pathlib import Path

import polars as pl
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from tests.helpers import examples, read_sink, run, sort_all

COLUMNS = "id BIGINT, v DOUBLE, s STRING, flag BOOLEAN, t TIMESTAMP(3), n INT"
DUCK_COLUMNS = "{id: 'BIGINT', v: 'DOUBLE', s: 'VARCHAR', flag: 'BOOLEAN', t: 'TIMESTAMP', n: 'INTEGER'}"
NAMES = ["id", "v", "s", "flag", "t", "n"]
#: bad lines, and the start of the reason each gives (the CSV ones have the columns in NAMES' order)
BAD_JSON = [
    ('{"id": "x1", "t": "2026-01-01 00:00:01"}', "column 'id': cannot read 'x1' as BIGINT"),
    ('{"id": 7, "n": 99999999999, "t": "2026-01-01 00:00:02"}', "column 'n': cannot read '99999999999' as INT"),
    ('{"id": 8, "v": 2.5}', "column 't' is NULL or missing, and it is the event time"),
    ('{"id": 9, "t": "soon"}', "column 't': cannot read 'soon' as TIMESTAMP"),
    ('{"id": 10, "t": "2026-01-01 00:00:03"', "malformed JSON"),
    ("[1, 2]", "malformed JSON: the record is not a JSON object"),
]
BAD_CSV = [
    ("x1,,,,2026-01-01 00:00:01,", "column 'id': cannot read 'x1' as BIGINT"),
    ("7,,,,2026-01-01 00:00:02,99999999999", "column 'n': cannot read '99999999999' as INT"),
    ("8,2.5,,,,", "column 't' is NULL or missing, and it is the event time"),
    ("9,,,,soon,", "column 't': cannot read 'soon' as TIMESTAMP"),
    ("10,1,2", "expected 6 fields, found 3"),
]


def good_row(rng: random.Random, i: int) -> dict[str, object]:
    return {
        "id": i,
        "v": rng.choice([None, 0.5, -3.0, 1e-7, 12345.678, 7]),
        "s": rng.choice([None, "a", "b c", "é", "x;y"]),
        "flag": rng.choice([None, True, False]),
        "t": f"2026-01-01 00:{(i // 60) % 60:02d}:{i % 60:02d}.{rng.randrange(1000):03d}",
        "n": rng.choice([None, 1, -2, 2147483647]),
    }


def csv_field(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def write_inputs(root: Path, fmt: str, seed: int, files: int = 3, rows: int = 100) -> list[tuple[str, int, str]]:
    """Input files (`in/`) and the same good lines alone (`good/`); returns the bad lines: (file, line, reason)."""
    rng = random.Random(seed)
    bad_lines = BAD_JSON if fmt == "json" else BAD_CSV
    bad: list[tuple[str, int, str]] = []
    header = [",".join(NAMES)] if fmt == "csv" else []
    for f in range(files):
        good = [good_row(rng, f * 1000 + i) for i in range(rows)]
        if fmt == "json":
            lines = [
                json.dumps({k: v for k, v in r.items() if v is not None or rng.random() < 0.5}, ensure_ascii=f == 2)
                for r in good
            ]
        else:
            lines = [",".join(csv_field(r[n]) for n in NAMES) for r in good]
        mixed = list(lines)
        if f != 1:  # the middle file is clean: all its slices take the fast path
            for text, _reason in rng.sample(bad_lines, k=3):
                at = rng.randrange(len(mixed) + 1)
                mixed.insert(at, text)
        name = f"part-{f}.{fmt}"
        for at, text in enumerate(mixed):
            for bad_text, reason in bad_lines:
                if text == bad_text:
                    bad.append((name, at + len(header), reason))
        for folder, content in (("in", mixed), ("good", lines)):
            (root / folder).mkdir(exist_ok=True)
            (root / folder / name).write_text("".join(line + "\n" for line in header + content))
    return bad


def check(root: Path, fmt: str, epoch_rows: int, bad: list[tuple[str, int, str]]) -> None:
    # a last line without its newline is complete at once (else it waits for the file to be left alone)
    options = ", 'source.partial-line-timeout' = '0 s'" + (", 'csv.header' = 'true'" if fmt == "csv" else "")
    run(
        root,
        f"""
        CREATE TABLE src ({COLUMNS}, WATERMARK FOR t AS t - INTERVAL '1' SECOND)
        WITH ('connector' = 'filesystem', 'path' = 'in', 'format' = '{fmt}', 'scan.max-epoch-rows' = '{epoch_rows}'
              {options});
        CREATE TABLE out ({COLUMNS}) WITH ('connector' = 'delta', 'path' = 'out');
        INSERT INTO out SELECT * FROM src;
        """,
    )
    got = read_sink(root / "out").with_columns(pl.col("t").dt.replace_time_zone(None).dt.cast_time_unit("us"))
    import duckdb

    reader = (
        f"read_json('{root}/good/*.json', format = 'newline_delimited', columns = {DUCK_COLUMNS})"
        if fmt == "json"
        else f"read_csv('{root}/good/*.csv', header = true, columns = {DUCK_COLUMNS})"
    )
    expected = duckdb.connect().sql(f"SELECT * FROM {reader}").pl()
    assert_frame_equal(sort_all(got), sort_all(expected), check_dtypes=False)
    dead = pl.read_delta(str(root / "state" / "dead_letters" / "src")).sort("file", "position")
    found = [(Path(f).name, p, r) for f, p, r in dead.select("file", "position", "reason").iter_rows()]
    assert len(found) == len(bad), found
    for (file, position, reason), (want_file, want_position, want_reason) in zip(found, sorted(bad), strict=True):
        assert (file, position) == (want_file, want_position)
        assert reason.startswith(want_reason), (reason, want_reason)


@settings(
    max_examples=examples(8),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
    phases=[Phase.explicit, Phase.reuse, Phase.generate],  # a failure's example is already small enough to read
)
@given(fmt=st.sampled_from(["json", "csv"]), epoch_rows=st.integers(25, 400), seed=st.integers(0, 10_000))
def test_slices_read_as_duckdb_reads_them(tmp_path_factory, fmt: str, epoch_rows: int, seed: int) -> None:
    root = tmp_path_factory.mktemp("text")
    bad = write_inputs(root, fmt, seed)
    check(root, fmt, epoch_rows, bad)


def test_whole_files_with_a_bom_and_no_final_newline(tmp_path: Path) -> None:
    """Whole-file slices (the usual fast case), one file starting with a byte-order mark and ending without a
    newline."""
    bad = write_inputs(tmp_path, "json", 3, files=2, rows=300)
    for folder in ("in", "good"):
        path = tmp_path / folder / "part-1.json"
        path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes().rstrip(b"\n"))
    (tmp_path / "good" / "part-1.json").write_bytes((tmp_path / "good" / "part-1.json").read_bytes()[3:])
    check(tmp_path, "json", 10_000, bad)


def test_a_key_given_twice_takes_its_last_value_whatever_its_name_is_written_in(tmp_path: Path) -> None:
    """Also for a column named beyond ASCII, written as is: the fast reader (which takes the first value) is not
    used for such a line."""
    (tmp_path / "in").mkdir()
    lines = [json.dumps({"é": i, "t": f"2026-01-01 00:00:{i:02d}"}, ensure_ascii=False) for i in range(50)]
    lines[7] = '{"é": 1, "t": "2026-01-01 00:00:07", "é": 2}'
    (tmp_path / "in" / "a.json").write_text("".join(line + "\n" for line in lines))
    run(
        tmp_path,
        """
        CREATE TABLE src (`é` BIGINT, t TIMESTAMP(3))
        WITH ('connector' = 'filesystem', 'path' = 'in', 'format' = 'json');
        CREATE TABLE out (`é` BIGINT, t TIMESTAMP(3)) WITH ('connector' = 'delta', 'path' = 'out');
        INSERT INTO out SELECT * FROM src;
        """,
    )
    got = read_sink(tmp_path / "out").sort("t").get_column("é").to_list()
    assert got == [*range(7), 2, *range(8, 50)]
