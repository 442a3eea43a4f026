"""The console's REST API in-process (FastAPI's TestClient) over directories made by real `timelapse run --once`
runs: every endpoint with each role, 401 and 403 (logged, changing nothing), the audit's token names, and reads
that equal `engine.open(dir)`'s."""

from __future__ import annotations

import csv
import io
import logging
import shutil
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest
from fastapi.testclient import TestClient
from polars.testing import assert_frame_equal

import engine
from engine.console import tokens
from engine.console.app import Console, create_app
from tests.console_server import ROLES, Workdir, pipeline_once

READS = [
    "/api/me",
    "/api/pipelines",
    "/api/pipelines/{p}",
    "/api/pipelines/{p}/checkpoints",
    "/api/pipelines/{p}/series?limit=2",
    "/api/pipelines/{p}/tree",
    "/api/pipelines/{p}/plan",
    "/api/pipelines/{p}/operators/{op}/state?at=2",
    "/api/pipelines/{p}/operators/{op}/diff?a=1&b=3",
    "/api/pipelines/{p}/operators/{op}/late?at=2",
    "/api/pipelines/{p}/dead-letters",
    "/api/pipelines/{p}/dead-letters/readings",
    "/api/pipelines/{p}/savepoints",
    "/api/pipelines/{p}/rollback/preview?epoch=2",
    "/metrics",
]
# (method, path, body, the role it needs)
ACTIONS = [
    ("POST", "/api/pipelines/{p}/savepoints", {"name": "sp"}, "operator"),
    ("POST", "/api/pipelines/{p}/checkpoints", None, "operator"),
    ("DELETE", "/api/pipelines/{p}/savepoints/kept", None, "admin"),
    ("POST", "/api/pipelines/{p}/rollback", {"epoch": 2}, "admin"),
    ("POST", "/api/pipelines/{p}/branches", {"name": "b1", "epoch": 2}, "admin"),
    ("POST", "/api/pipelines/{p}/retention", {"count": "1"}, "admin"),
]


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> tuple[Workdir, Workdir]:
    """Two stopped pipelines (3 epochs each), made once per module: tests that change one work on a copy."""
    root = tmp_path_factory.mktemp("console_api")
    return pipeline_once(root / "a", epochs=3), pipeline_once(root / "b", epochs=1)


def copy(work: Workdir, target: Path) -> Workdir:
    shutil.copytree(work.root, target)
    return Workdir(target)


@pytest.fixture
def setup(
    made: tuple[Workdir, Workdir], tmp_path: Path
) -> Iterator[tuple[Workdir, dict[str, str], dict[str, str], TestClient]]:
    """Copies of both pipelines served by one console (names `a` and `b`), with tokens of each role on each."""
    a, b = copy(made[0], tmp_path / "a"), copy(made[1], tmp_path / "b")
    engine_a = engine.open(a.state)
    # in-process (`timelapse token create` is tested in test_console_cli.py): fast
    tokens_a = {role: tokens.create(a.state, role, role) for role in ROLES}
    tokens_b = {role: tokens.create(b.state, f"b-{role}", role) for role in ROLES}
    from engine import control

    control.savepoint(a.state, "kept", 1, user="setup")
    assert engine_a.checkpoints().height == 3
    app = create_app(Console.serving([a.state, b.state]))
    with TestClient(app, raise_server_exceptions=False) as client:
        yield a, tokens_a, tokens_b, client


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def operators(work: Workdir) -> list[str]:
    return sorted(engine.open(work.state).operators().get_column("operator").to_list())


def manifest_rows(work: Workdir) -> int:
    from engine.manifest import read_checkpoints

    return read_checkpoints(work.state / "manifest").height


def fill(path: str, op: str) -> str:
    return path.replace("{p}", "state").replace("{op}", op)


def test_every_read_with_each_role(setup: tuple[Workdir, dict[str, str], dict[str, str], TestClient]) -> None:
    a, tokens, _, client = setup
    op = operators(a)[0]
    for role, token in tokens.items():
        for path in READS:
            response = client.get(fill(path, op), headers=auth(token))
            assert response.status_code == 200, (role, path, response.text)
    me = client.get("/api/me", headers=auth(tokens["operator"])).json()
    assert me == {"pipelines": {"state": {"user": "operator", "role": "operator"}}}
    listed = client.get("/api/pipelines", headers=auth(tokens["viewer"])).json()
    assert [p["name"] for p in listed] == ["state"] and listed[0]["last_epoch"] == 3 and not listed[0]["running"]
    assert {"watermark_lag_s", "rows_in_per_s", "rows_out_per_s", "branch_of", "holder"} <= set(listed[0])
    detail = client.get("/api/pipelines/state", headers=auth(tokens["viewer"])).json()
    assert sorted(o["operator"] for o in detail["operators"]) == operators(a)
    assert [s["name"] for s in detail["sources"]] == ["readings"]
    assert {s["name"] for s in detail["sinks"]} == {"per_window", "per_sensor"}
    assert [s["name"] for s in detail["savepoints"]] == ["kept"]
    series = client.get("/api/pipelines/state/series", headers=auth(tokens["viewer"])).json()
    checkpoints = engine.open(a.state).checkpoints()
    assert [s["epoch"] for s in series] == checkpoints.get_column("epoch").to_list()
    assert [s["rows_in"] for s in series] == checkpoints.get_column("rows_in").to_list()
    assert all(s["epoch_ms"] > 0 and s["watermark_lag_s"] > 0 for s in series)
    assert series[1]["rows_in_per_s"] > 0 and sum(series[-1]["state_rows"].values()) == checkpoints["state_rows"][-1]
    plan = client.get("/api/pipelines/state/plan", headers=auth(tokens["viewer"])).json()
    stateful = {n["state_id"] for n in plan["nodes"] if n["stateful"]}
    assert stateful == set(operators(a)) and all(
        set(n["inputs"]) <= {m["id"] for m in plan["nodes"]} for n in plan["nodes"]
    )
    preview = client.get("/api/pipelines/state/rollback/preview?savepoint=kept", headers=auth(tokens["viewer"])).json()
    assert preview["to_epoch"] == 1 and preview["from_epoch"] == 3 and preview["refused"] is None
    assert client.get("/api/pipelines/state/rollback/preview", headers=auth(tokens["viewer"])).status_code == 400
    openapi = client.get("/api/openapi.json").json()
    assert "/api/pipelines/{name}/rollback" in openapi["paths"]
    assert all(op.get("summary") for p in openapi["paths"].values() for op in p.values())


def test_no_token_or_a_wrong_one_is_401_and_logged(
    setup: tuple[Workdir, dict[str, str], dict[str, str], TestClient], caplog: pytest.LogCaptureFixture
) -> None:
    a, _, _, client = setup
    op = operators(a)[0]
    caplog.set_level(logging.WARNING, logger="timelapse.console")
    for headers in ({}, auth("tl_wrong"), {"Authorization": "Basic abc"}):
        for path in READS:
            response = client.get(fill(path, op), headers=headers)
            assert response.status_code == 401, (path, headers, response.text)
        for method, path, body, _role in ACTIONS:
            response = client.request(method, fill(path, op), json=body, headers=headers)
            assert response.status_code == 401, (path, response.text)
    assert sum("denied 401" in r.getMessage() for r in caplog.records) == 3 * (len(READS) + len(ACTIONS))


def test_a_role_too_low_is_403_changes_nothing_and_is_logged(
    setup: tuple[Workdir, dict[str, str], dict[str, str], TestClient], caplog: pytest.LogCaptureFixture
) -> None:
    a, tokens, tokens_b, client = setup
    caplog.set_level(logging.WARNING, logger="timelapse.console")
    before = manifest_rows(a)
    denied = 0
    for method, path, body, needed in ACTIONS:
        for role in ("viewer", "operator", "admin"):
            if role == needed or (role == "admin" and needed == "operator"):
                continue
            response = client.request(method, fill(path, ""), json=body, headers=auth(tokens[role]))
            assert response.status_code == 403, (role, path, response.text)
            assert needed in response.json()["detail"]
            denied += 1
        # a token of another directory, however high its role, has no access here
        response = client.request(method, fill(path, ""), json=body, headers=auth(tokens_b["admin"]))
        assert response.status_code == 403 and "no access" in response.json()["detail"]
        denied += 1
    assert client.get("/api/pipelines/state/tree", headers=auth(tokens_b["viewer"])).status_code == 403
    assert [p["name"] for p in client.get("/api/pipelines", headers=auth(tokens_b["viewer"])).json()] == ["state-2"]
    assert manifest_rows(a) == before and not (a.root / "b1").exists()
    assert sum("denied 403" in r.getMessage() for r in caplog.records) == denied + 1


def test_actions_are_audited_under_the_token_name(
    setup: tuple[Workdir, dict[str, str], dict[str, str], TestClient],
) -> None:
    from engine import versioning

    a, tokens, _, client = setup
    operator, admin = auth(tokens["operator"]), auth(tokens["admin"])
    made = client.post(
        "/api/pipelines/state/savepoints", json={"name": "sp2", "epoch": 2, "reason": "check"}, headers=operator
    )
    assert made.status_code == 201 and made.json()["epoch"] == 2
    assert client.post("/api/pipelines/state/savepoints", json={"name": "sp2"}, headers=operator).status_code == 400
    assert client.post(
        "/api/pipelines/state/savepoints", json={"name": "x", "epoch": 99}, headers=operator
    ).status_code in (400, 404)
    checkpoint = client.post("/api/pipelines/state/checkpoints", headers=operator)
    assert checkpoint.status_code == 200 and checkpoint.json() == {"requested": True, "running": False}
    # what the page checks, the API checks too: one-line 400s, 404 for what does not exist
    for body in ({"name": "bad name!"}, {"name": "../../etc"}, {"name": ""}):
        wrong = client.post("/api/pipelines/state/savepoints", json=body, headers=operator)
        assert wrong.status_code == 400 and "\n" not in wrong.json()["detail"], body
    for body in ({"epoch": 2}, {"epoch": 2, "reason": " "}):
        assert client.post("/api/pipelines/state/rollback", json=body, headers=admin).status_code == 400, body
    unknown = [
        ("GET", "/api/pipelines/state/rollback/preview?savepoint=nope"),
        ("DELETE", "/api/pipelines/state/savepoints/nope"),
        ("GET", "/api/pipelines/state/dead-letters/nosuch"),
    ]
    for method, url in unknown:
        assert client.request(method, url, headers=admin).status_code == 404, url
    assert (
        "epoch -1"
        in client.get(f"/api/pipelines/state/operators/{operators(a)[0]}/state?at=-1", headers=operator).json()[
            "detail"
        ]
    )

    for bad in ("../escape", "a/b", "a\\b", ".hidden", "", " x"):
        refused = client.post("/api/pipelines/state/branches", json={"name": bad, "epoch": 2}, headers=admin)
        assert refused.status_code == 400 and isinstance(refused.json()["detail"], str), bad
    assert not (a.root.parent / "escape").exists()
    branch = client.post("/api/pipelines/state/branches", json={"name": "fork", "savepoint": "sp2"}, headers=admin)
    assert branch.status_code == 201, branch.text
    assert branch.json()["pipeline"] == "fork" and Path(branch.json()["branch"]) == a.root / "fork"
    listed = client.get("/api/pipelines", headers=admin).json()
    assert {"state", "fork"} <= {p["name"] for p in listed}
    fork = next(p for p in listed if p["name"] == "fork")
    assert fork["last_epoch"] == 2 and Path(fork["branch_of"]) == a.state

    rolled = client.post("/api/pipelines/state/rollback", json={"savepoint": "sp2", "reason": "oops"}, headers=admin)
    assert rolled.status_code == 200 and rolled.json()["rolled_back_to"] == 2
    both = client.post("/api/pipelines/state/rollback", json={"savepoint": "sp2", "epoch": 1}, headers=admin)
    assert both.status_code == 400
    kept = client.post("/api/pipelines/state/retention", json={"count": "1", "reason": "space"}, headers=admin)
    assert kept.status_code == 200, kept.text
    deleted = client.delete("/api/pipelines/state/savepoints/sp2?reason=done", headers=admin)
    assert deleted.status_code == 200, deleted.text
    assert client.delete("/api/pipelines/state/savepoints/nope", headers=admin).status_code in (400, 404)

    events = versioning.history(a.state)
    users = {(e["kind"], e.get("name")): e.get("user") for e in events}
    assert users[("savepoint", "sp2")] == "operator"
    assert next(e for e in events if e["kind"] == "rollback")["user"] == "admin"
    assert next(e for e in events if e["kind"] == "rollback")["reason"] == "oops"
    assert next(e for e in events if e["kind"] == "retention")["user"] == "admin"
    assert next(e for e in events if e["kind"] == "branch")["user"] == "admin"
    assert any(e.get("name") == "sp2" and e["kind"] != "savepoint" and e["user"] == "admin" for e in events)

    tree = client.get("/api/pipelines/state/tree", headers=admin).json()
    kinds = [n["kind"] for n in tree["nodes"]]
    assert {"run", "savepoint", "branch", "rollback", "retention"} <= set(kinds)
    rollback = next(n for n in tree["nodes"] if n["kind"] == "rollback")
    assert rollback["lane"] == 1 and rollback["user"] == "admin" and rollback["epoch"] == 2
    assert any(e["to"] == rollback["id"] for e in tree["edges"])
    assert next(n for n in tree["nodes"] if n["kind"] == "branch")["pipeline"] == "fork"
    ids = {n["id"] for n in tree["nodes"]}
    assert all(e["from"] in ids and e["to"] in ids for e in tree["edges"])


def test_state_equals_the_engine_state(setup: tuple[Workdir, dict[str, str], dict[str, str], TestClient]) -> None:
    a, tokens, _, client = setup
    history = engine.open(a.state)
    when = history.checkpoints().get_column("committed_at")[1].isoformat()
    for op in operators(a):
        keys = client.get(f"/api/pipelines/state/operators/{op}/state", headers=auth(tokens["viewer"])).json()["keys"]
        for at, k in ((1, 1), (2, 2), (3, 3), ("kept", 1), (when, 2), (None, 3)):
            body = client.get(
                f"/api/pipelines/state/operators/{op}/state",
                params={} if at is None else {"at": at},
                headers=auth(tokens["viewer"]),
            ).json()
            expected = history.state(op, at=k).sort(keys, nulls_last=True)
            assert body["at"]["epoch"] == k and body["total"] == expected.height
            assert [c["name"] for c in body["columns"]] == expected.columns
            got = pl.DataFrame(body["rows"], schema=expected.columns, orient="row")
            plain = expected.with_columns(pl.col(pl.Datetime).dt.to_string("%Y-%m-%dT%H:%M:%S%.f%:z"))
            assert_frame_equal(got, plain, check_dtypes=False)
        # paging and filtering
        page = client.get(
            f"/api/pipelines/state/operators/{op}/state?at=3&offset=1&limit=2", headers=auth(tokens["viewer"])
        ).json()
        assert page["offset"] == 1 and page["limit"] == 2 and len(page["rows"]) == min(2, page["total"] - 1)
        found = client.get(f"/api/pipelines/state/operators/{op}/state?q=S1", headers=auth(tokens["viewer"])).json()
        assert found["total"] == 1 and found["rows"][0][0] == "s1"
        assert (
            client.get(
                f"/api/pipelines/state/operators/{op}/state?limit=1001", headers=auth(tokens["viewer"])
            ).status_code
            == 400
        )
    for missing in (
        "/operators/nope/state",
        f"/operators/{operators(a)[0]}/state?at=99",
        f"/operators/{operators(a)[0]}/state?at=nosuch",
    ):
        response = client.get(f"/api/pipelines/state{missing}", headers=auth(tokens["viewer"]))
        assert response.status_code == 404 and "\n" not in response.json()["detail"], missing
    assert client.get("/api/pipelines/nope/tree", headers=auth(tokens["viewer"])).status_code == 404


def test_diff_equals_history_diff(setup: tuple[Workdir, dict[str, str], dict[str, str], TestClient]) -> None:
    a, tokens, _, client = setup
    history = engine.open(a.state)
    for op in operators(a):
        for first, second in ((1, 3), (1, 2), ("kept", 3)):
            body = client.get(
                f"/api/pipelines/state/operators/{op}/diff?a={first}&b={second}", headers=auth(tokens["viewer"])
            ).json()
            expected = history.diff(op, first, second)
            plain = expected.with_columns(pl.col(pl.Datetime).dt.to_string("%Y-%m-%dT%H:%M:%S%.f%:z"))
            assert body["total"] == expected.height
            got = pl.DataFrame(body["rows"], schema=expected.columns, orient="row")
            assert_frame_equal(got, plain, check_dtypes=False)


def test_sql_as_json_and_csv(setup: tuple[Workdir, dict[str, str], dict[str, str], TestClient]) -> None:
    a, tokens, _, client = setup
    query = "SELECT sensor, n FROM per_sensor AS OF EPOCH 2 ORDER BY sensor"
    expected = engine.open(a.state).sql(query)
    body = client.post("/api/pipelines/state/sql", json={"query": query}, headers=auth(tokens["viewer"])).json()
    assert [c["name"] for c in body["columns"]] == ["sensor", "n"] and not body["truncated"]
    assert body["rows"] == [list(r) for r in expected.rows()]
    cut = client.post("/api/pipelines/state/sql", json={"query": query, "limit": 1}, headers=auth(tokens["viewer"]))
    assert cut.json()["truncated"] and len(cut.json()["rows"]) == 1
    text = client.post(
        "/api/pipelines/state/sql", json={"query": query, "format": "csv"}, headers=auth(tokens["viewer"])
    )
    assert text.headers["content-type"].startswith("text/csv")
    assert list(csv.reader(io.StringIO(text.text))) == [["sensor", "n"], *([r[0], str(r[1])] for r in expected.rows())]
    for bad in ("SELECT nope FROM per_sensor", "DELETE FROM per_sensor", "SELECT 1; SELECT 2"):
        refused = client.post("/api/pipelines/state/sql", json={"query": bad}, headers=auth(tokens["viewer"]))
        assert refused.status_code == 400 and "\n" not in refused.json()["detail"], bad


def test_an_internal_error_is_one_line_without_traceback(
    setup: tuple[Workdir, dict[str, str], dict[str, str], TestClient],
) -> None:
    a, tokens, _, client = setup
    fingerprint = engine.open(a.state).row()["plan_fingerprint"]
    plan = a.state / "plans" / f"{fingerprint}.json"
    plan.parent.mkdir(exist_ok=True)
    plan.write_text("{not json")
    response = client.get("/api/pipelines/state/plan", headers=auth(tokens["viewer"]))
    assert response.status_code == 500
    assert response.json()["detail"].startswith("internal error: ") and "Traceback" not in response.text
    plan.write_text(
        '{"nodes": [{"id": "scan", "kind": "scan", "label": "Scan readings", "stateful": false, "inputs": []}]}'
    )
    served = client.get("/api/pipelines/state/plan", headers=auth(tokens["viewer"])).json()
    assert served["fingerprint"] == fingerprint and served["nodes"][0]["id"] == "scan"


def test_actions_on_a_running_pipeline(tmp_path: Path) -> None:
    """A running pipeline owns its directory: the console's actions are carried out by it, audited all the same."""
    from engine import versioning
    from tests.console_server import running_pipeline

    with running_pipeline(tmp_path / "live", epochs=2) as work:
        operator = tokens.create(work.state, "olga", "operator")
        admin = tokens.create(work.state, "adam", "admin")
        client = TestClient(create_app(Console.serving([work.state])), raise_server_exceptions=False)
        listed = client.get("/api/pipelines", headers=auth(operator)).json()
        assert listed[0]["running"] and listed[0]["holder"]["pid"] == work.process.pid  # type: ignore[union-attr]
        made = client.post("/api/pipelines/state/savepoints", json={"name": "live1"}, headers=auth(operator))
        assert made.status_code == 201, made.text
        checkpoint = client.post("/api/pipelines/state/checkpoints", headers=auth(operator))
        assert checkpoint.status_code in (200, 202) and checkpoint.json().get("running", True)
        work.append(20)
        rolled = client.post(
            "/api/pipelines/state/rollback", json={"savepoint": "live1", "reason": "live"}, headers=auth(admin)
        )
        assert rolled.status_code == 200, rolled.text
        work.append(20)
        work.wait_epochs(work.epochs() + 1)
    events = versioning.history(work.state)
    assert next(e for e in events if e["kind"] == "savepoint" and e["name"] == "live1")["user"] == "olga"
    assert next(e for e in events if e["kind"] == "rollback")["user"] == "adam"


def test_the_pages_load_nothing_from_elsewhere_and_forbid_it(
    setup: tuple[Workdir, dict[str, str], dict[str, str], TestClient],
) -> None:
    """Offline machines: every file the pages use is in the package, and the CSP lets them load nothing else."""
    from engine.console.app import STATIC

    _, _, _, client = setup
    for path in STATIC.iterdir():
        text = path.read_text().replace("http://www.w3.org/2000/svg", "")  # a namespace name, never fetched
        assert "http://" not in text and "https://" not in text and "//cdn" not in text, path.name
        served = client.get(f"/static/{path.name}")
        assert served.status_code == 200, path.name
    index = client.get("/")
    policy = index.headers["content-security-policy"]
    assert "default-src 'self'" in policy and "script-src 'self'" in policy and "frame-ancestors 'none'" in policy
    assert index.headers["x-content-type-options"] == "nosniff"
    assert client.get("/api/docs").status_code == 404  # Swagger UI would load its scripts from a CDN


def test_a_directory_without_tokens_beside_ones_with_tokens_is_named(
    setup: tuple[Workdir, dict[str, str], dict[str, str], TestClient], tmp_path: Path
) -> None:
    """`timelapse ui a b` where only `a` has tokens: no session token is made, so `timelapse ui` warns about `b`."""
    from engine.cli_console import unreachable

    a, _, _, _ = setup
    bare = copy(a, tmp_path / "bare")
    (bare.state / "tokens.json").unlink()
    assert unreachable(Console.serving([a.state, bare.state])) == ["state-2"]
