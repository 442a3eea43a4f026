"""Helpers of the scale-out tests (tests/test_scaleout.py): the same input in several roots, runs with the
single-process and the Ray executor, and everything a run leaves that must not depend on the worker count
(sinks, late rows, dead letters, operator state) read back in a form that compares across roots."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import polars as pl
from polars.testing import assert_frame_equal

import engine
from tests.helpers import naive, read_sink, run, sort_all

Writer = Callable[[Path], None]


def same(actual: pl.DataFrame, expected: pl.DataFrame, label: str) -> None:
    """`assert_frame_equal` (dtypes aside), the failure naming what was compared."""
    try:
        assert_frame_equal(actual, expected, check_dtypes=False)
    except AssertionError as err:
        raise AssertionError(f"{label}: {err}") from None


def roots(tmp: Path, write: Writer, *names: str) -> list[Path]:
    """One root per name, each with the same input written by `write`."""
    made = []
    for name in names:
        root = tmp / name
        root.mkdir(parents=True)
        write(root)
        made.append(root)
    return made


def run_with(root: Path, sql: str, workers: int | None, **options: Any) -> dict[str, Any]:
    """`sql` over `root`'s input: single-process (`workers` None) or on `workers` Ray workers."""
    if workers is None:
        return run(root, sql, **options)
    return run(root, sql, executor="ray", workers=workers, **options)


def sinks(root: Path, names: list[str]) -> dict[str, pl.DataFrame]:
    return {name: sort_all(naive(read_sink(root / name))) for name in names}


def _portable(frame: pl.DataFrame, root: Path) -> pl.DataFrame:
    """Paths of `root` made relative, so that two roots' tables compare."""
    prefix = str(root)
    return frame.with_columns(
        pl.col(c).str.replace(prefix, "<root>", literal=True) for c, t in frame.schema.items() if t == pl.String
    )


def late_rows(root: Path, with_epoch: bool = True) -> dict[str, pl.DataFrame]:
    """Every operator's late rows (the epoch they arrived in is left out if `with_epoch` is False: it depends on
    the epoch size)."""
    history = engine.open(root / "state")
    out = {}
    for op in history.operators().get_column("operator").to_list():
        try:
            frame = history.late(op)
        except engine.HistoryError:  # a join without late rows: `late` looks for a state table named `op`
            continue
        if frame.height:
            frame = frame if with_epoch else frame.drop("epoch", "_epoch", strict=False)
            out[op] = sort_all(_portable(frame, root))
    return out


def dead_letters(root: Path, source: str, with_epoch: bool = True) -> pl.DataFrame:
    frame = engine.open(root / "state").dead_letters(source)
    if not with_epoch and "epoch" in frame.columns:
        frame = frame.drop("epoch")
    return sort_all(_portable(frame, root))


def states(root: Path) -> dict[str, pl.DataFrame]:
    """Every state table's live rows at the last checkpoint, as `engine.open(...).state` reads them."""
    history = engine.open(root / "state")
    return {
        name: sort_all(history.state(name).drop("_epoch", strict=False))
        for name in history.tables(kind="state").get_column("name").to_list()
    }


def metrics(root: Path) -> list[dict[str, Any]]:
    """The epochs' manifest metrics, oldest first."""
    manifest = pl.read_delta(str(root / "state" / "manifest")).filter(pl.col("kind") == "epoch").sort("epoch")
    return [json.loads(m) for m in manifest.get_column("metrics")]


def assert_same_run(
    expected: Path, actual: Path, sink_names: list[str], sources: tuple[str, ...] = (), with_epoch: bool = True
) -> None:
    """`actual`'s sinks, late rows and sources' dead letters equal `expected`'s."""
    want, got = sinks(expected, sink_names), sinks(actual, sink_names)
    for name in sink_names:
        same(got[name], want[name], f"sink {name}")
    want_late, got_late = late_rows(expected, with_epoch), late_rows(actual, with_epoch)
    assert sorted(got_late) == sorted(want_late)
    for op, frame in want_late.items():
        same(got_late[op], frame, f"late rows of {op}")
    for source in sources:
        same(
            dead_letters(actual, source, with_epoch),
            dead_letters(expected, source, with_epoch),
            f"dead letters of {source}",
        )


def clean(*paths: Path) -> None:
    for path in paths:
        shutil.rmtree(path, ignore_errors=True)
