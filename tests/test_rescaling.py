"""Rescaling: GROUP BY state is split over workers by key group, and the worker count may change on restart."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from engine import state_at
from sql import SqlError
from tests.helpers import run, sort_all
from tests.test_versioning import STATEFUL, _inputs, _sinks

SQL = (
    STATEFUL
    + """
CREATE TABLE spread (cust BIGINT, kinds BIGINT, top INT, PRIMARY KEY (cust) NOT ENFORCED)
WITH ('connector' = 'delta', 'path' = 'spread');
INSERT INTO spread SELECT /*+ STATE_ID('spread') */ cust, COUNT(DISTINCT amount), MAX(amount) FROM orders GROUP BY cust;
CREATE TABLE everything (n BIGINT, PRIMARY KEY (n) NOT ENFORCED) WITH ('connector' = 'delta', 'path' = 'everything');
INSERT INTO everything SELECT COUNT(*) FROM orders;
"""
)


def test_changing_the_number_of_workers_across_restarts_gives_the_same_results(tmp_path: Path) -> None:
    single, scaled = tmp_path / "single", tmp_path / "scaled"
    for root in (single, scaled):
        _inputs(root)
    run(single, SQL, max_epoch_rows=5)
    run(scaled, SQL, max_epoch_rows=5, max_epochs=12, parallelism=2)
    run(scaled, SQL, max_epoch_rows=5, max_epochs=12, parallelism=5)
    run(scaled, SQL, max_epoch_rows=5)  # back to one worker
    expected = _sinks(single)
    for name, frame in _sinks(scaled).items():
        assert_frame_equal(frame, expected[name], check_dtypes=False)
    for sink in ("spread", "everything"):
        a, b = pl.read_delta(str(single / sink)), pl.read_delta(str(scaled / sink))
        assert_frame_equal(sort_all(a), sort_all(b))
    for op in ("per10", "totals", "spread"):
        a = state_at(single / "state", op).collect()
        b = state_at(scaled / "state", op).collect()
        assert_frame_equal(sort_all(a), sort_all(b))
    manifest = pl.read_delta(str(scaled / "state" / "manifest")).sort("epoch")
    metrics = [json.loads(m) for m in manifest.get_column("metrics")]
    assert [m["parallelism"] for m in metrics][:1] + [m["parallelism"] for m in metrics][-1:] == [2, 1]
    assert [m.get("rescaled_from") for m in metrics if "rescaled_from" in m] == [2, 5]


def test_parallelism_as_a_pipeline_option(tmp_path: Path) -> None:
    single, parallel = tmp_path / "single", tmp_path / "parallel"
    for root in (single, parallel):
        _inputs(root)
    run(single, SQL, max_epoch_rows=40)
    run(parallel, "SET 'parallelism.default' = '4';\n" + SQL, max_epoch_rows=40)
    expected = _sinks(single)
    for name, frame in _sinks(parallel).items():
        assert_frame_equal(frame, expected[name], check_dtypes=False)
    with pytest.raises(SqlError, match=r"line 1, column 29: 'parallelism\.default' = '0': must be a number of workers"):
        run(parallel, "SET 'parallelism.default' = '0';\n" + SQL)
