"""The console on state directories in S3 (moto's server): tokens, reads, state through time, actions on a stopped
directory and on a running pipeline (its requests folder in the bucket), and the metrics."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
from fastapi.testclient import TestClient
from polars.testing import assert_frame_equal
from prometheus_client.parser import text_string_to_metric_families

import engine
from engine import versioning
from engine.console import tokens
from engine.console.app import Console, create_app
from engine.storage import ObjectPath, copy_tree
from tests.console_server import PIPELINE_SQL, env, pipeline_once, stop, workdir
from tests.s3_server import S3Server


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def table(answer: dict) -> pl.DataFrame:  # type: ignore[type-arg]
    names = [c["name"] for c in answer["columns"]]
    return pl.DataFrame(answer["rows"], schema=names, orient="row")


def test_an_uploaded_directory_is_served_read_and_acted_on(s3: S3Server, tmp_path: Path) -> None:
    work = pipeline_once(tmp_path / "p", epochs=3)
    remote = ObjectPath("s3", s3.bucket(), "proj")
    for folder in ("state", "out"):  # the project's tables, uploaded as a user would
        copy_tree(work.root / folder, remote / folder)
    state = str(remote / "state")
    viewer = tokens.create(state, "vera", "viewer")
    operator = tokens.create(state, "otto", "operator")
    assert "tokens.json" in " ".join(s3.keys(remote.bucket, "proj/state/"))

    with TestClient(create_app(Console.serving([state])), raise_server_exceptions=False) as client:
        listed = client.get("/api/pipelines", headers=auth(viewer)).json()
        assert [(p["name"], p["path"], p["running"], p["last_epoch"]) for p in listed] == [("state", state, False, 3)]
        history = engine.open(state)
        for op in history.operators().get_column("operator"):
            for at in (1, 3):
                served = client.get(f"/api/pipelines/state/operators/{op}/state?at={at}", headers=auth(viewer))
                assert served.status_code == 200, served.text
                expected = history.state(op, at=at).with_columns(
                    pl.col(pl.Datetime).dt.to_string("%Y-%m-%dT%H:%M:%S%.f%:z")
                )
                got = table(served.json()).select(expected.columns)
                assert_frame_equal(got.sort(expected.columns), expected.sort(expected.columns), check_dtypes=False)

        savepoints = "/api/pipelines/state/savepoints"
        assert client.post(savepoints, json={"name": "x"}, headers=auth(viewer)).status_code == 403
        made = client.post(savepoints, json={"name": "s3-sp", "epoch": 2}, headers=auth(operator))
        assert made.status_code == 201, made.text
        saved = versioning.savepoints(state).row(0, named=True)
        assert (saved["name"], saved["epoch"], saved["user"]) == ("s3-sp", 2, "otto")

        scraped = client.get("/metrics", headers=auth(viewer))
        assert scraped.status_code == 200
        samples = {
            (s.name, s.labels.get("source") or s.labels.get("sink") or ""): s.value
            for family in text_string_to_metric_families(scraped.text)
            for s in family.samples
        }
        assert samples[("timelapse_last_epoch", "")] == 3
        assert samples[("timelapse_rows_in_total", "readings")] == 60


def test_a_running_pipeline_on_s3_answers_the_console(s3: S3Server, tmp_path: Path) -> None:
    """The running pipeline's requests folder lives in the bucket: a savepoint and a rollback asked through the API
    are carried out by it under its lease, and audited."""
    work = workdir(tmp_path / "live", PIPELINE_SQL)
    for _ in range(2):
        work.append(20)
    state = f"s3://{s3.bucket()}/live/state"
    command = [sys.executable, "-m", "engine.cli", "run", "pipeline.sql", "--state", state, "--trigger", "200ms"]
    log = (work.root / "run.log").open("wb")
    process = subprocess.Popen(
        [*command, "--quiet", "--max-epoch-rows", "20"],
        cwd=work.root,
        env={**env(), **s3.env()},
        stdout=log,
        stderr=log,
    )
    try:
        _wait(lambda: _epochs(state) >= 2, process, work.root / "run.log")
        admin = tokens.create(state, "ada", "admin")
        with TestClient(create_app(Console.serving([state])), raise_server_exceptions=False) as client:
            assert client.get("/api/pipelines", headers=auth(admin)).json()[0]["running"]
            made = client.post("/api/pipelines/state/savepoints", json={"name": "two"}, headers=auth(admin))
            assert made.status_code == 201, made.text
            work.append(20)
            _wait(lambda: _epochs(state) >= 3, process, work.root / "run.log")
            rolled = client.post(
                "/api/pipelines/state/rollback", json={"savepoint": "two", "reason": "s3"}, headers=auth(admin)
            )
            assert rolled.status_code == 200, rolled.text
            assert process.poll() is None, "the pipeline keeps running after a rollback"
    finally:
        stop(process)
        log.close()
    events = versioning.history(state)
    assert next(e for e in events if e["kind"] == "savepoint")["user"] == "ada"
    rollback = next(e for e in events if e["kind"] == "rollback")
    assert (rollback["user"], rollback["reason"]) == ("ada", "s3")
    assert not [k for k in s3.keys(state.split("/")[2], "live/state/requests/") if k.endswith(".json")]


def _epochs(state: str) -> int:
    try:
        return int((engine.open(state).checkpoints().get_column("kind") == "epoch").sum())
    except (FileNotFoundError, engine.HistoryError):
        return 0


def _wait(done: object, process: subprocess.Popen[bytes], log: Path, timeout: float = 90) -> None:
    import time

    deadline = time.monotonic() + timeout
    while not done():  # type: ignore[operator]
        if process.poll() is not None:
            pytest.fail(f"timelapse run ended ({process.returncode}): {log.read_text()[-2000:]}")
        if time.monotonic() > deadline:
            pytest.fail(f"timed out: {log.read_text()[-2000:]}")
        time.sleep(0.2)
