"""`timelapse token` and `timelapse ui` as a user runs them: a token is printed once and only its hash kept, a
revoked token is refused, `ui` refuses to serve beyond this machine without tokens, and a real `timelapse ui`
answers with the roles of its tokens."""

from __future__ import annotations

import json
from pathlib import Path

from fastapi.testclient import TestClient

from engine.console.app import Console, create_app
from tests.console_server import console, get, make_tokens, pipeline_once, timelapse


def test_token_create_list_revoke(tmp_path: Path) -> None:
    work = pipeline_once(tmp_path / "p", epochs=1)
    state = str(work.state)
    made = timelapse("token", "create", "--state", state, "--name", "alice", "--role", "operator")
    assert made.returncode == 0, made.stderr
    token = made.stdout.split()[0]
    assert token.startswith("tl_") and "shown once" in made.stdout
    stored = (work.state / "tokens.json").read_text()
    assert token not in stored and "sha256" in stored
    again = timelapse("token", "create", "--state", state, "--name", "alice", "--role", "admin")
    assert again.returncode == 2 and "already exists" in again.stderr and "Traceback" not in again.stderr
    listing = timelapse("token", "list", "--state", state, "--json")
    records = json.loads(listing.stdout)
    assert [(r["name"], r["role"]) for r in records] == [("alice", "operator")]
    assert "sha256" not in listing.stdout and token not in listing.stdout

    client = TestClient(create_app(Console.serving([work.state])))
    me = client.get("/api/me", headers={"Authorization": f"Bearer {token}"})
    assert me.json() == {"pipelines": {"state": {"user": "alice", "role": "operator"}}}
    revoked = timelapse("token", "revoke", "--state", state, "--name", "alice")
    assert revoked.returncode == 0, revoked.stderr
    import time

    time.sleep(0.1)
    assert client.get("/api/me", headers={"Authorization": f"Bearer {token}"}).status_code == 401
    bad = timelapse("token", "create", "--state", str(tmp_path / "nowhere"), "--name", "x", "--role", "viewer")
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1


def test_ui_refusals_and_a_real_server(tmp_path: Path) -> None:
    work = pipeline_once(tmp_path / "p", epochs=2)
    wide = timelapse("ui", str(work.state), "--host", "0.0.0.0", "--port", "0")
    assert wide.returncode == 2, wide.stderr
    assert len(wide.stderr.strip().splitlines()) == 1 and "without tokens" in wide.stderr
    (tmp_path / "plain").mkdir()
    for missing in (tmp_path / "plain", tmp_path / "absent", work.root / "pipeline.sql"):
        refused = timelapse("ui", str(missing))
        assert refused.returncode == 2, (missing, refused.stderr)
        assert len(refused.stderr.strip().splitlines()) == 1 and "Traceback" not in refused.stderr

    roles = make_tokens(work.state)
    with console([work.state], roles) as url:
        assert get(url + "/api/pipelines")[0] == 401
        status, body = get(url + "/api/pipelines", roles["viewer"])
        assert status == 200 and json.loads(body)[0]["last_epoch"] == 2
        status, body = get(url + "/api/me", roles["admin"])
        assert json.loads(body)["pipelines"]["state"] == {"user": "admin", "role": "admin"}
        status, body = get(url + "/metrics", roles["viewer"])
        assert status == 200 and b"timelapse_last_epoch" in body
        assert get(url + "/")[0] == 200 and get(url + "/api/openapi.json")[0] == 200
