"""The engine's error classes map to the CLI's exit codes by their base class, and the manifest's typed rows
keep the on-disk row format (table entries as structs, paths stored relative to the state directory)."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from engine.branching import create_branch
from engine.cli import UsageError, guarded
from engine.damage import DamagedFiles, StateDamaged
from engine.history import HistoryError
from engine.manifest import Checkpoint, Manifest, TableEntry
from engine.operators.decimals import DecimalOverflow
from engine.paths import PathNotAllowed
from engine.retention import RetentionError
from engine.sources.base import ConnectorError, SourceFileError
from engine.state_dir import LeaseLost, StateDirBusy
from engine.upgrade import UpgradeRefused
from engine.versioning import VersioningError
from sql.errors import SqlError

# (class, the builtin base it has always had, exit code): the codes are the CLI's documented ones.
CASES = [
    (UsageError, Exception, 2),
    (ConnectorError, ValueError, 2),
    (SourceFileError, ValueError, 2),
    (PathNotAllowed, ValueError, 2),
    (VersioningError, ValueError, 2),
    (RetentionError, ValueError, 2),
    (UpgradeRefused, ValueError, 2),
    (HistoryError, LookupError, 2),
    (DecimalOverflow, ValueError, 2),
    (StateDirBusy, RuntimeError, 3),
    (LeaseLost, RuntimeError, 3),
    (StateDamaged, RuntimeError, 5),
    (DamagedFiles, RuntimeError, 5),
]


@pytest.mark.parametrize(("cls", "builtin", "code"), CASES, ids=[c[0].__name__ for c in CASES])
def test_an_engine_error_exits_with_its_code_and_one_line(
    cls: type[Exception], builtin: type[Exception], code: int, capsys: pytest.CaptureFixture[str]
) -> None:
    assert issubclass(cls, builtin)

    def fail() -> int:
        raise cls("the reason")

    assert guarded(fail) == code
    assert capsys.readouterr().err == "error: the reason\n"


def test_sql_errors_and_missing_directories_are_user_errors(capsys: pytest.CaptureFixture[str]) -> None:
    def bad_sql() -> int:
        raise SqlError("unknown column 'x'", 2, 7)

    def missing() -> int:
        raise FileNotFoundError("state is not a timelapse state directory")

    assert guarded(bad_sql) == 2
    assert capsys.readouterr().err == "error: line 2, column 7: unknown column 'x'\n"
    assert guarded(missing) == 2
    assert capsys.readouterr().err == "error: state is not a timelapse state directory\n"


def test_a_checkpoint_row_stores_its_table_entries_as_before(tmp_path: Path) -> None:
    state = tmp_path / "state"
    inside = state / "operators" / "totals" / "state"
    beside = tmp_path / "out" / "totals"
    tables = [
        TableEntry("totals", "state", str(inside), 3, '{"keys": ["k"]}', "60 s processing time"),
        TableEntry("totals", "sink", str(beside), 7),
    ]
    Manifest(state / "manifest").commit(Checkpoint(epoch=1, source_offsets={}, watermark=None, tables=tables))

    stored = pl.read_delta(str(state / "manifest")).get_column("tables").to_list()
    assert stored == [
        [
            {
                "name": "totals",
                "role": "state",
                "path": "operators/totals/state",
                "version": 3,
                "schema": '{"keys": ["k"]}',
                "ttl": "60 s processing time",
            },
            {"name": "totals", "role": "sink", "path": "../out/totals", "version": 7, "schema": None, "ttl": None},
        ]
    ]
    latest = Manifest(state / "manifest").latest()
    assert latest is not None and latest.tables == tables


def test_a_branch_needs_a_state_directory(tmp_path: Path) -> None:
    with pytest.raises(VersioningError, match="is not a timelapse state directory"):
        create_branch(tmp_path / "nothing", tmp_path / "branch", epoch=1)
