"""Prometheus metrics from the manifest: `/metrics` on the console (viewer token) and `timelapse run
--metrics-port N` while a pipeline runs; parsed with prometheus_client's own parser and checked against the
manifest's metrics."""

from __future__ import annotations

import json
import time
from pathlib import Path

import polars as pl
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

import engine
from engine.console import tokens
from engine.console.app import Console, create_app
from engine.manifest import read_checkpoints
from tests.console_server import PIPELINE_SQL, free_port, get, pipeline_once, running_pipeline


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample by (name, sorted labels without `pipeline`)."""
    return {
        (s.name, tuple(sorted((k, v) for k, v in s.labels.items() if k != "pipeline"))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def expected_totals(state: Path) -> dict[str, dict[str, int]]:
    """rows_in / rows_out summed over the manifest's epoch rows (no rollback here: the totals equal them)."""
    rows = read_checkpoints(state / "manifest").filter(pl.col("kind") == "epoch")
    sums: dict[str, dict[str, int]] = {"rows_in": {}, "rows_out": {}}
    for metrics in rows.get_column("metrics").to_list():
        info = json.loads(metrics)
        for key, bucket in sums.items():
            for name, n in info.get(key, {}).items():
                bucket[name] = bucket.get(name, 0) + n
    return sums


def test_console_metrics_match_the_manifest(tmp_path: Path) -> None:
    work = pipeline_once(tmp_path / "p", epochs=3)
    viewer = tokens.create(work.state, "scraper", "viewer")
    client = TestClient(create_app(Console.serving([work.state])))
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers={"Authorization": "Bearer tl_nope"}).status_code == 401
    response = client.get("/metrics", headers={"Authorization": f"Bearer {viewer}"})
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    found = samples(response.text)
    history = engine.open(work.state)
    last = history.row()
    metrics = json.loads(last["metrics"])
    totals = expected_totals(work.state)
    assert found[("timelapse_up", ())] == 0
    assert found[("timelapse_last_epoch", ())] == 3
    assert found[("timelapse_epochs_total", ())] == 3
    for source, n in totals["rows_in"].items():
        assert found[("timelapse_rows_in_total", (("source", source),))] == n
    for sink, n in totals["rows_out"].items():
        assert found[("timelapse_rows_out_total", (("sink", sink),))] == n
    for op, n in metrics["state_rows"].items():
        assert found[("timelapse_state_rows", (("operator", op),))] == n
    assert found[("timelapse_watermark_seconds", ())] == last["watermark"].timestamp()
    lag = (last["committed_at"] - last["watermark"]).total_seconds()
    assert found[("timelapse_watermark_lag_seconds", ())] == pytest.approx(lag)
    assert "totals" in metrics  # the engine records cumulative totals: counters and histograms come from them
    assert found[("timelapse_epoch_duration_seconds_count", ())] == metrics["totals"]["epoch_seconds"]["count"]
    assert found[("timelapse_epoch_duration_seconds_bucket", (("le", "+Inf"),))] == 3
    assert found[("timelapse_checkpoints_total", ())] == metrics["totals"]["checkpoints"]
    for op, n in metrics.get("state_bytes", {}).items():
        assert found[("timelapse_state_bytes", (("operator", op),))] == n


def test_run_serves_metrics_while_running(tmp_path: Path) -> None:
    port = free_port()
    with running_pipeline(tmp_path / "live", PIPELINE_SQL, "--metrics-port", str(port)) as work:
        work.append(20)
        epochs = work.wait_epochs(2)
        deadline = time.monotonic() + 20
        while True:  # the scrape reads the manifest as committed by now
            status, body = get(f"http://127.0.0.1:{port}/metrics")
            found = samples(body.decode()) if status == 200 else {}
            if found.get(("timelapse_last_epoch", ()), 0) >= epochs or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert status == 200
        assert found[("timelapse_up", ())] == 1
        assert found[("timelapse_last_epoch", ())] >= epochs
        assert found[("timelapse_rows_in_total", (("source", "readings"),))] >= 40
    # a port already taken is refused in one line, exit 2, before anything runs
    import socket

    from tests.console_server import timelapse

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        refused = timelapse(
            "run", "pipeline.sql", "--state", "state", "--once", "--metrics-port", str(taken), cwd=work.root
        )
    assert refused.returncode == 2 and len(refused.stderr.strip().splitlines()) == 1, refused.stderr
