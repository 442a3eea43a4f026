"""Benchmark smoke runs: the object-storage benchmark at CI size, with its request-count bounds; the console's
API latency benchmark at CI size; the scale-out benchmark with 1 and 2 Ray workers on a tiny input; the version-control
benchmark (state edit, export, compare, blame) on 500 keys.

The full benchmark (`python -m benchmarks.object_storage`) measures; this runs the same code for a few epochs
against the session's moto server and checks what must hold at any size: every configuration ran, and an epoch
on S3 makes a small, fixed number of requests (no per-file HEADs, no growth from one epoch to the next).
"""

from __future__ import annotations

from typing import Any

import pytest

from benchmarks import console, object_storage, version_control
from tests.s3_server import S3Server

# Requests per steady-state epoch (every epoch a checkpoint), as measured on 2026-12-02 with a margin: a change
# that adds requests to every epoch should be noticed here and justified in benchmarks/README.md.
MAX_REQUESTS = {"stateless": 15, "stateful": 32, "checkpoint": 24}


@pytest.fixture(scope="module")
def rows(s3: S3Server) -> dict[tuple[str, str], dict[str, Any]]:
    args = object_storage.smoke(object_storage.parser().parse_args([]))
    args.pipelines = ["stateless", "stateful", "checkpoint"]
    found = object_storage.measure(args, in_process=True, server=s3)
    return {(row["pipeline"], row["storage"]): row for row in found}


@pytest.mark.parametrize("pipeline", ["stateless", "stateful", "checkpoint"])
def test_every_configuration_runs_on_both_storages(rows: dict[tuple[str, str], dict[str, Any]], pipeline: str) -> None:
    for storage in ("local disk", "s3 (moto)"):
        row = rows[(pipeline, storage)]
        assert row["epochs"] >= 2
        assert (row.get("p50_ms") or row.get("checkpoint_p50_ms") or 0) > 0


@pytest.mark.parametrize("pipeline", ["stateless", "stateful", "checkpoint"])
def test_an_epoch_on_s3_makes_a_bounded_number_of_requests(
    rows: dict[tuple[str, str], dict[str, Any]], pipeline: str
) -> None:
    row = rows[(pipeline, "s3 (moto)")]
    if "requests_max" not in row:
        pytest.skip("an external S3 endpoint: requests are counted from moto's log only")
    assert 0 < row["requests_max"] <= MAX_REQUESTS[pipeline], row
    assert row["requests_last_block_mean"] <= row["requests_first_block_mean"], row  # no growth per epoch
    assert row["requests_by_method_mean"]["HEAD"] <= 2, row  # no HEAD per file


def test_many_files_are_deleted_in_one_request_and_a_missing_file_costs_one(s3: S3Server, tmp_path: Any) -> None:
    from engine.storage import delete_files, location, read_if_exists

    root = location(f"s3://{s3.bucket()}/log")
    paths = [root / f"{n:04d}.json" for n in range(30)]
    for path in paths:
        path.write_bytes(b"{}")
    before = s3.requests()
    assert read_if_exists(paths[0]) == b"{}"
    assert read_if_exists(root / "absent.json") is None
    assert delete_files([*paths, root / "absent.json"]) == 31
    assert s3.requests() - before == 3  # two GETs, one DeleteObjects
    assert not root.exists()
    local = [tmp_path / "a.json", tmp_path / "b.json"]
    local[0].write_text("{}")
    assert read_if_exists(local[0]) == b"{}" and read_if_exists(local[1]) is None
    assert delete_files(local) == 2 and not local[0].exists()


def test_the_console_benchmark_times_every_read_and_a_live_action() -> None:
    result = console.run(keys=500, epochs=2, repeat=2)
    assert set(result["reads"]) >= {"pipelines", "series", "state page, last epoch", "diff first..last", "metrics"}
    assert all(timing["p50_ms"] > 0 for timing in result["reads"].values())
    assert result["savepoint on a running pipeline (trigger 200 ms)"]["p50_ms"] > 0


def test_the_scaleout_benchmark_runs_one_and_two_ray_workers_beside_the_single_process_executor() -> None:
    from benchmarks import scaleout

    sizes = ["--events=4000", "--epoch-events=2000", "--rows=4000", "--epoch-rows=2000", "--keys=500"]
    args = scaleout.parser().parse_args([*sizes, "--barrier-epochs=3", "--repeats=1", "--workloads=q8,barrier"])
    args.quiet = True
    rows = scaleout.measure(args, [("local", None), ("ray", 1), ("ray", 2)])
    assert {(r["workload"], r["executor"], r["workers"]) for r in rows} == {
        (w, e, n) for w in ("q8", "barrier") for e, n in (("local", None), ("ray", 1), ("ray", 2))
    }
    for row in rows:
        assert row["events_per_s"] > 0 and row["epochs"] >= 2, row
        if row["executor"] == "ray":  # the workers' phases are reported (RayRunner.timings)
            assert row["evaluate_s"] > 0 and row["shuffle_s"] >= 0 and row["operators_s"] > 0, row
    assert set(scaleout.ratios(scaleout.summarise(rows))["barrier"]) == {"ray2/ray1", "ray1/local"}


def test_the_version_control_benchmark_measures_every_operation() -> None:
    row = version_control.measure(500, repeat=1)
    assert row["edit_1_percent_rows"] > 0 and row["blame_changes"] >= 1
    assert row["compare_sink_epochs"] == 6  # the branch point and the 5 epochs both ran after it
    assert row["export_mb"] <= row["original_mb"]
