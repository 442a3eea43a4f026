"""The console's compare endpoint (`GET /api/compare`) over the A/B pair of tests/test_compare.py: the answers
computed by hand there, a viewer on both pipelines required."""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from engine.console import tokens
from engine.console.app import Console, create_app
from engine.state_dir import StateDir
from tests.test_compare import make_ab


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, str, str]]:
    """A (`state`) and B (`whatif`) served; `both` may view both (B shares A's tokens, as a branch made in the
    console does), `a_only` was made on A afterwards."""
    root = make_ab(tmp_path_factory.mktemp("console_compare"))
    both = tokens.create(root / "state", "ann", "viewer")
    shutil.copy(StateDir(root / "state").tokens, StateDir(root / "whatif").tokens)
    a_only = tokens.create(root / "state", "bob", "viewer")
    with TestClient(create_app(Console.serving([root / "state", root / "whatif"])), raise_server_exceptions=False) as c:
        yield c, both, a_only


def test_the_compare_endpoint(served: tuple[TestClient, str, str]) -> None:
    client, both, a_only = served

    def get(query: str, token: str | None = both) -> tuple[int, dict]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        res = client.get(f"/api/compare?{query}", headers=headers)
        return res.status_code, res.json()

    status, body = get("a=state&b=whatif&sink=totals")
    assert status == 200, body
    assert body["counts"] == {"only_a": 1, "only_b": 1, "changed": 1} and body["key"] == ["cust"]
    assert body["origin"] == {"parent": "a", "epoch": 2, "savepoint": "sp"}
    assert body["only_a"]["rows"] == [[5, 1, 3]] and body["only_b"]["rows"] == [[4, 2, 120]]
    assert [c["name"] for c in body["changed"]["columns"]] == ["cust", "n_a", "n_b", "amount_a", "amount_b"]
    assert body["changed"]["rows"] == [[2, 2, 1, 25, 20]] and body["changed"]["total"] == 1
    assert [(r["epoch_a"], r["only_a"], r["only_b"], r["changed"]) for r in body["per_epoch"]] == [
        (2, 0, 0, 0),
        (3, 0, 1, 1),
        (4, 1, 1, 1),
    ]
    status, body = get("a=state&b=whatif&operator=totals&at=3")
    assert status == 200 and body["counts"] == {"only_a": 0, "only_b": 1, "changed": 1}
    status, body = get("a=state&b=whatif")
    assert status == 200 and {(r["kind"], r["name"], r["present"]) for r in body["summary"]} >= {
        ("sink", "extra", "b only"),
        ("operator", "totals", "both"),
    }
    # refused: an unknown sink (one line naming the known ones), an unserved pipeline, a token without B, none
    status, body = get("a=state&b=whatif&sink=nope")
    assert status == 404 and "sinks: kept, totals" in body["detail"]
    assert get("a=state&b=elsewhere&sink=totals")[0] == 404
    status, body = get("a=state&b=whatif&sink=totals", a_only)
    assert status == 403 and "whatif" in body["detail"]
    assert get("a=state&b=whatif", None)[0] == 401


def test_what_cannot_be_done_is_400_and_what_is_missing_404(served: tuple[TestClient, str, str]) -> None:
    client, both, _ = served

    def get(query: str) -> tuple[int, str]:
        res = client.get(f"/api/compare?{query}", headers={"Authorization": f"Bearer {both}"})
        return res.status_code, res.json().get("detail", "")

    for query, status, text in [
        ("a=state&b=whatif&sink=kept&key=cust", 400, "not unique in A's 'kept'"),
        ("a=state&b=whatif&sink=totals&operator=totals", 400, "not both"),
        ("a=state&b=whatif&sink=totals&key=nope", 400, "no column nope"),
        ("a=state&b=whatif&operator=nope", 404, "no operator 'nope' in A"),
        ("a=state&b=whatif&sink=totals&at=nosuch", 404, "no savepoint named 'nosuch'"),
        ("a=state&b=whatif&sink=totals&at=1", 404, "B ("),
    ]:
        assert get(query)[0] == status, query
        assert text in get(query)[1] and "--" not in get(query)[1], query
    summary = client.get("/api/compare?a=state&b=whatif", headers={"Authorization": f"Bearer {both}"}).json()
    # the summary's totals (tests/test_compare.py: kept 2, 2, 0; the totals sink and operator 1, 1, 1 each)
    assert summary["counts"] == {"only_a": 4, "only_b": 4, "changed": 2}
