"""Input files that must never stop a pipeline, or be read twice, or be read at all when they lead outside the
allowed roots (docs/sql.md, "Bad input and schema drift" and "Files").

The expected results are written out by hand: every good record, every dead letter's line and reason.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from engine import Pipeline, paths
from engine.sources.base import SourceFileError
from engine.sources.file_registry import migrate

SQL = """
CREATE TABLE ev (id BIGINT, k STRING, d DOUBLE) WITH ('connector' = 'filesystem', 'path' = 'data', 'format' = 'json'
    {options});
CREATE TABLE out (id BIGINT, k STRING, d DOUBLE) WITH ('connector' = 'delta', 'path' = 'out');
INSERT INTO out SELECT id, k, d FROM ev;
"""

OLD = 1_700_000_000  # an mtime long past: the file is finished


def cli(root: Path, *args: str, crash: str | None = None, roots: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in (paths.ROOTS_VARIABLE, "TIMELAPSE_CRASH_AT")}
    if crash is not None:
        env["TIMELAPSE_CRASH_AT"] = crash
    if roots is not None:
        env[paths.ROOTS_VARIABLE] = roots
    return subprocess.run(
        [sys.executable, "-m", "engine.cli", *args], cwd=root, env=env, capture_output=True, text=True, timeout=120
    )


def project(root: Path, options: str = "") -> Path:
    (root / "data").mkdir(parents=True, exist_ok=True)
    (root / "p.sql").write_text(SQL.format(options=options))
    return root


def run(root: Path, **options: object) -> dict[str, object]:
    """A run in this process, as `timelapse run p.sql --state st --once` (the CLI costs seconds to start)."""
    if not options.get("drain"):
        options["once"] = True
    return Pipeline.from_sql(root / "p.sql", state=root / "st").run(**options)  # type: ignore[arg-type]


def sink(root: Path) -> list[tuple[object, ...]]:
    if not (root / "out").exists():
        return []
    return sorted(pl.read_delta(str(root / "out")).select("id", "k", "d").rows(), key=lambda r: (r[0], str(r[1:])))


def dead(root: Path) -> list[tuple[str, int | None, str]]:
    path = root / "st" / "dead_letters" / "ev"
    if not path.exists():
        return []
    frame = pl.read_delta(str(path))
    return sorted((Path(f).name, p, r) for f, p, r in frame.select("file", "position", "reason").rows())  # type: ignore[misc]


def line(**fields: object) -> bytes:
    return json.dumps(fields).encode()


# -- the hostile corpus ---------------------------------------------------------------------------
def deep(depth: int) -> str:
    return "[" * depth + "]" * depth


CORPUS: list[tuple[bytes, tuple[object, ...] | str]] = [
    # (line, the row it gives, or the start of its dead letter's reason)
    (line(id=1, k="a", d=1.5), (1, "a", 1.5)),
    (b'{"id": 2, "k": "first", "k": "second", "d": 2}', (2, "second", 2.0)),  # the last value of a key
    (b'{"id": 3, "k": "x", "d": NaN}', "malformed JSON: NaN is not a JSON number"),
    (b'{"id": 4, "k": "x", "d": Infinity}', "malformed JSON: Infinity is not a JSON number"),
    (b'{"id": 5, "k": "x", "d": -Infinity}', "malformed JSON: -Infinity is not a JSON number"),
    (b'{"id": 6, "k": "x", "d": 1E400}', "malformed JSON: the number 1E400 is out of DOUBLE's range"),
    (b'{"id": 7, "k": "nan as text", "d": "NaN"}', (7, "nan as text", float("nan"))),
    (('{"id": 8, "k": "x", "extra": ' + deep(1000) + "}").encode(), "malformed JSON: nested deeper than 500"),
    (('{"id": 9, "k": "x", "extra": ' + deep(100_000) + "}").encode(), "malformed JSON: nested deeper than 500"),
    (('{"id": 10, "k": "ok", "extra": ' + deep(400) + "}").encode(), (10, "ok", None)),
    (b'{"id": 11, "k": "\\ud800", "d": 1}', "malformed JSON: a lone UTF-16 surrogate"),
    (b'{"id": 12, "k": "\\ud83d\\ude00", "d": 1}', (12, "\U0001f600", 1.0)),
    (b'{"id": 1.0, "k": "float id", "d": 1e5}', (1, "float id", 100000.0)),  # 1.0 reads as 1 on both paths
    (b'{"id": 13, "k": "a", "d": ', "malformed JSON"),
    (b'{"id": 14, "\\u006b": "escaped key", "k": "plain"}', (14, "plain", None)),
    (b'{"id": 15, "k": "y", "k": "z", "meta": {"k": "nested"}}', (15, "z", None)),
    (line(id=16, k="last", d=-0.25), (16, "last", -0.25)),
]


def write_corpus(root: Path) -> None:
    data = root / "data"
    data.mkdir(parents=True, exist_ok=True)
    # a byte-order mark, then the corpus; a second file, also with a mark, whose first record is good
    (data / "a.json").write_bytes(b"\xef\xbb\xbf" + b"\n".join(text for text, _ in CORPUS) + b"\n")
    (data / "b.json").write_bytes(b"\xef\xbb\xbf" + line(id=20, k="bom", d=0.5) + b"\n" + line(id=21, k="b") + b"\n")


def expected_corpus() -> tuple[list[tuple[object, ...]], list[tuple[str, int, str]]]:
    rows = [r for _, r in CORPUS if isinstance(r, tuple)] + [(20, "bom", 0.5), (21, "b", None)]
    letters = [("a.json", i, r) for i, (_, r) in enumerate(CORPUS) if isinstance(r, str)]
    return sorted(rows, key=lambda r: (r[0], str(r[1:]))), sorted(letters)


def same_rows(found: list[tuple[object, ...]], wanted: list[tuple[object, ...]]) -> bool:
    def norm(rows: list[tuple[object, ...]]) -> list[str]:
        return [repr(tuple("nan" if isinstance(v, float) and v != v else v for v in r)) for r in rows]

    return norm(found) == norm(wanted)


@pytest.mark.parametrize("max_rows", [1, 7, None])
def test_the_hostile_corpus_reads_the_same_at_every_epoch_size(tmp_path: Path, max_rows: int | None) -> None:
    root = project(tmp_path)
    write_corpus(root)
    run(root, max_epoch_rows=max_rows)
    rows, letters = expected_corpus()
    assert same_rows(sink(root), rows), sink(root)
    found = dead(root)
    assert [(f, p) for f, p, _ in found] == [(f, p) for f, p, _ in letters]
    for (_, _, reason), (_, _, start) in zip(found, letters, strict=True):
        assert reason.startswith(start), (reason, start)


# -- registered files that go away -------------------------------------------------------------------
def numbered(first: int, count: int) -> bytes:
    return b"".join(line(id=i, k="n") + b"\n" for i in range(first, first + count))


def two_files(root: Path) -> None:
    (root / "data" / "a.json").write_bytes(numbered(0, 10))
    (root / "data" / "b.json").write_bytes(numbered(10, 10))
    (root / "data" / "c.json").write_bytes(numbered(20, 10))
    # the first run registers all three files and reads a.json's first 4 records only
    run(root, max_epoch_rows=4, max_epochs=1)


@pytest.mark.parametrize("damage", ["delete", "truncate"])
def test_a_registered_file_that_goes_away_is_an_error_naming_it(tmp_path: Path, damage: str) -> None:
    root = project(tmp_path)
    two_files(root)
    if damage == "delete":
        (root / "data" / "b.json").unlink()
    else:
        (root / "data" / "b.json").write_bytes(numbered(10, 3))
    what = "was deleted" if damage == "delete" else "was truncated from 210 to 63 bytes"
    if damage == "delete":  # the CLI: exit 2, one line
        result = cli(root, "run", "p.sql", "--state", "st", "--once", "--quiet")
        assert result.returncode == 2, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert "b.json" in result.stderr and what in result.stderr and "Traceback" not in result.stderr
        assert "'source.missing-files' = 'skip'" in result.stderr
    with pytest.raises(SourceFileError, match=f"b.json {what} before all of it was read .10 records not read."):
        run(root)  # and on every restart
    assert [r[0] for r in sink(root)] == [0, 1, 2, 3]


@pytest.mark.parametrize("damage", ["delete", "truncate"])
def test_skip_reads_every_other_file_and_records_the_skip(tmp_path: Path, damage: str) -> None:
    root = project(tmp_path, ", 'source.missing-files' = 'skip'")
    two_files(root)
    if damage == "delete":
        (root / "data" / "b.json").unlink()
    else:
        (root / "data" / "b.json").write_bytes(numbered(100, 3))  # truncated, then 3 new records written
    run(root)
    ids = [r[0] for r in sink(root)]
    assert ids == list(range(10)) + list(range(20, 30)) + ([] if damage == "delete" else [100, 101, 102])
    (letter,) = dead(root)
    assert letter[0] == "b.json" and letter[1] == 0
    assert ("deleted" if damage == "delete" else "truncated from 210 to 66 bytes") in letter[2]
    assert "records 0 to 9 (10) skipped" in letter[2]
    run(root)
    assert len(dead(root)) == 1  # recorded once


def test_a_file_deleted_after_it_was_read_is_no_error(tmp_path: Path) -> None:
    root = project(tmp_path)
    (root / "data" / "a.json").write_bytes(numbered(0, 5))
    run(root)
    (root / "data" / "a.json").unlink()  # processed input cleaned up
    (root / "data" / "b.json").write_bytes(numbered(5, 5))
    run(root)
    assert [r[0] for r in sink(root)] == list(range(10)) and dead(root) == []
    (root / "data" / "b.json").write_bytes(numbered(50, 6))  # but a read file rewritten is not what was read
    with pytest.raises(SourceFileError, match=r"b\.json was rewritten after it was read; its new content is not"):
        run(root)


# -- files that grow or are rewritten -------------------------------------------------------------
def test_a_growing_file_is_read_once_per_line_across_runs(tmp_path: Path) -> None:
    root = project(tmp_path)
    path = root / "data" / "log.json"
    path.write_bytes(numbered(0, 3) + b'{"id": 3, "k": "ha')  # a writer mid-line
    run(root)
    assert [r[0] for r in sink(root)] == [0, 1, 2]
    with open(path, "ab") as handle:
        handle.write(b'lf"}\n' + numbered(4, 2) + b'{"id": 6')
    run(root, max_epoch_rows=2)
    assert [r[0] for r in sink(root)] == [0, 1, 2, 3, 4, 5]
    assert (3, "half", None) in sink(root)
    with open(path, "ab") as handle:
        handle.write(b', "k": "no newline"}')  # the writer finishes without a newline ...
    run(root)
    assert len(sink(root)) == 6  # ... which is not known until the file has been left alone
    os.utime(path, (OLD, OLD))  # ... for 'source.partial-line-timeout'
    run(root)
    assert [r[0] for r in sink(root)] == [0, 1, 2, 3, 4, 5, 6] and dead(root) == []
    run(root)
    assert len(sink(root)) == 7
    logged = [json.loads(p.read_text()) for p in sorted((root / "st" / "offsets").glob("0*.json"))]
    segments = [e for entry in logged for e in entry["sources"]["ev"]["files_added"]]
    assert [(s["path"], s["first"], s["records"]) for s in segments] == [
        ("log.json", 0, 3),
        ("log.json", 3, 3),
        ("log.json", 6, 1),
    ]


def test_drain_reads_a_last_line_without_its_newline(tmp_path: Path) -> None:
    root = project(tmp_path)
    (root / "data" / "a.json").write_bytes(numbered(0, 2) + line(id=2, k="last"))
    run(root)
    assert len(sink(root)) == 2
    run(root, drain=True)
    assert [r[0] for r in sink(root)] == [0, 1, 2]


def test_a_rewritten_file_is_an_error_or_under_skip_a_new_file(tmp_path: Path) -> None:
    for mode in ("fail", "skip"):
        root = project(tmp_path / mode, f", 'source.missing-files' = '{mode}'")
        path = root / "data" / "a.json"
        path.write_bytes(numbered(0, 4))
        run(root, max_epoch_rows=2, max_epochs=1)
        path.write_bytes(numbered(50, 4))  # the same size, other content
        os.utime(path, (OLD, OLD))
        if mode == "fail":
            with pytest.raises(SourceFileError, match=r"a\.json was rewritten"):
                run(root)
            assert [r[0] for r in sink(root)] == [0, 1]
        else:
            run(root)
            assert [r[0] for r in sink(root)] == [0, 1, 50, 51, 52, 53]
            assert [(f, p) for f, p, _ in dead(root)] == [("a.json", 2)]
            assert "was rewritten before it was read: records 2 to 3 (2) skipped" in dead(root)[0][2]


def test_a_replay_after_a_crash_reads_the_logged_bytes_of_a_grown_file(tmp_path: Path) -> None:
    root = project(tmp_path)
    path = root / "data" / "log.json"
    path.write_bytes(numbered(0, 3))
    run(root)
    with open(path, "ab") as handle:
        handle.write(numbered(3, 2) + b'{"id": 5, "k": "pa')
    crashed = cli(root, "run", "p.sql", "--state", "st", "--once", "--quiet", crash="epoch.offsets-logged")
    assert crashed.returncode < 0  # killed after the slice was logged, before anything was read
    with open(path, "ab") as handle:  # the file grows again before the restart
        handle.write(b'rt"}\n' + numbered(6, 2))
    run(root)
    assert [r[0] for r in sink(root)] == list(range(8)) and dead(root) == []
    epochs = [json.loads(p.read_text())["sources"]["ev"] for p in sorted((root / "st" / "offsets").glob("0*.json"))]
    assert [e["files_added"][0]["records"] for e in epochs] == [3, 2, 3]  # the replay read the 2 logged records


# -- moving the project ---------------------------------------------------------------------------
def test_moving_the_project_folder_reads_no_file_twice(tmp_path: Path) -> None:
    root = project(tmp_path / "A")
    (root / "data" / "sub").mkdir()
    (root / "data" / "a.json").write_bytes(numbered(0, 3))
    (root / "data" / "sub" / "b.json").write_bytes(numbered(3, 3))
    run(root)
    moved = tmp_path / "B"
    shutil.move(root, moved)
    (moved / "data" / "c.json").write_bytes(numbered(6, 2))
    run(moved)
    assert [r[0] for r in sink(moved)] == list(range(8))


def test_offset_logs_with_absolute_paths_are_migrated_after_a_move(tmp_path: Path) -> None:
    """An offset log written before files were named relative to the folder: [absolute path, size, records]."""
    root = project(tmp_path / "A")
    (root / "data" / "sub").mkdir()
    (root / "data" / "a.json").write_bytes(numbered(0, 3))
    (root / "data" / "sub" / "b.json").write_bytes(numbered(3, 3))
    run(root)
    for log in (root / "st" / "offsets").glob("0*.json"):
        entry = json.loads(log.read_text())
        piece = entry["sources"]["ev"]
        piece["files_added"] = [[str(root / "data" / f["path"]), f["end"], f["records"]] for f in piece["files_added"]]
        log.write_text(json.dumps(entry))
    moved = tmp_path / "B"
    shutil.move(root, moved)
    (moved / "data" / "sub" / "c.json").write_bytes(numbered(6, 2))
    run(moved)
    assert [r[0] for r in sink(moved)] == list(range(8))


def test_the_old_folder_is_found_from_the_recorded_paths(tmp_path: Path) -> None:
    base = tmp_path / "new" / "data"
    (base / "x").mkdir(parents=True)
    (base / "x" / "1.json").write_text("")
    (base / "2.json").write_text("")
    recorded = ["/old/proj/data/x/1.json", "/old/proj/data/2.json", str(base / "3.json")]
    assert migrate(recorded, base) == {recorded[0]: "x/1.json", recorded[1]: "2.json", recorded[2]: "3.json"}
    # all in one subfolder: the common path is deeper than the old folder
    assert migrate(["/old/proj/data/x/1.json"], base) == {"/old/proj/data/x/1.json": "x/1.json"}
    # nothing left to match: the ancestor with the folder's name
    gone = ["/old/proj/data/y/9.json", "/old/proj/data/y/8.json"]
    assert migrate(gone, base)[gone[0]] == "y/9.json"


# -- symlinks -------------------------------------------------------------------------------------
def test_symlinks_out_of_the_allowed_root_are_dead_letters_and_never_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = project(tmp_path / "project")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.json").write_bytes(line(id=666, k="SECRET-IN-FILE") + b"\n")
    (outside / "passwd").write_text("root:x:0:0:SECRET-PASSWD:/root:/bin/bash\n")
    (outside / "dir").mkdir()
    (outside / "dir" / "more.json").write_bytes(line(id=667, k="SECRET-IN-DIR") + b"\n")
    (root / "data" / "good.json").write_bytes(numbered(0, 2))
    (root / "elsewhere").mkdir()
    (root / "elsewhere" / "inside.json").write_bytes(numbered(2, 1))
    (root / "elsewhere" / "sub").mkdir()
    (root / "elsewhere" / "sub" / "deeper.json").write_bytes(numbered(3, 1))
    (root / "data" / "passwd.json").symlink_to(outside / "passwd")
    (root / "data" / "secret.json").symlink_to(outside / "secret.json")
    (root / "data" / "ext").symlink_to(outside / "dir")
    (root / "data" / "inside.json").symlink_to(root / "elsewhere" / "inside.json")  # stays inside: read
    (root / "data" / "linked").symlink_to(root / "elsewhere" / "sub")  # a folder inside: read
    monkeypatch.setenv(paths.ROOTS_VARIABLE, str(root))
    for _ in range(2):
        run(root)
    assert [r[0] for r in sink(root)] == [0, 1, 2, 3]
    letters = dead(root)
    assert [(f, p) for f, p, _ in letters] == [("ext", None), ("passwd.json", None), ("secret.json", None)]
    assert all("leads outside the allowed roots" in reason for _, _, reason in letters)
    for path in [*(root / "st").rglob("*"), *(root / "out").rglob("*")]:
        if path.is_file():
            assert b"SECRET" not in path.read_bytes(), path


def test_a_replay_of_a_file_changed_since_its_slice_was_logged_stops_naming_it(tmp_path: Path) -> None:
    root = project(tmp_path)
    path = root / "data" / "a.json"
    path.write_bytes(numbered(0, 4))
    crashed = cli(root, "run", "p.sql", "--state", "st", "--once", "--quiet", crash="epoch.offsets-logged")
    assert crashed.returncode < 0
    path.write_bytes(numbered(0, 2))  # truncated before the restart: the logged bytes are gone
    with pytest.raises(SourceFileError, match=r"a\.json changed after it was registered, before records 0 to 3"):
        run(root)
    assert sink(root) == []


def test_csv_with_a_header_and_a_byte_order_mark_grows_by_lines(tmp_path: Path) -> None:
    root = tmp_path
    (root / "data").mkdir()
    (root / "p.sql").write_text(
        SQL.replace("'format' = 'json'", "'format' = 'csv', 'csv.header' = 'true'").format(options="")
    )
    path = root / "data" / "a.csv"
    path.write_bytes(b"\xef\xbb\xbfk,id,d\na,1,0.5\nb,2,\n")
    run(root)
    with open(path, "ab") as handle:
        handle.write(b"c,3,1.5\nd,x,2\n")
    run(root, max_epoch_rows=1)
    assert sink(root) == [(1, "a", 0.5), (2, "b", None), (3, "c", 1.5)]
    assert [(f, p) for f, p, _ in dead(root)] == [("a.csv", 4)]  # line 4: the header is line 0
