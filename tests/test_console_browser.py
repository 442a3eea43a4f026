"""The console's pages in a real Chromium (Playwright), against a pipeline RUNNING in a `timelapse run --trigger`
subprocess and a real `timelapse ui` server: every page loads (and is captured), the state page's slider shows
exactly `engine.open(dir).state(op, at=k)`, an operator takes a savepoint, an admin rolls back through the
confirmation dialog (audited under the token's name; the sinks end as a run that never rolled back), and a
viewer's buttons are disabled and its POST answered 403.

Screenshots go to the module's tmp folder, so that running the tests leaves the checkout clean. To refresh the
ones the docs show, name a folder in TIMELAPSE_SCREENSHOTS (a relative one is taken from the repository's root):

    TIMELAPSE_SCREENSHOTS=docs/console python -m pytest -q tests/test_console_browser.py

One browser, one pipeline and one console for the whole module: the tests run in file order and share them.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.console_server import PIPELINE_SQL, RunningPipeline, console, running_pipeline, workdir

CHROMIUM = Path("/usr/bin/chromium")
ROOT = Path(__file__).resolve().parent.parent
NAME = "state"  # the console names a pipeline after its directory's folder
SINK = "per_sensor"

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="install Debian's chromium (.ci/run does)")
sync_api = pytest.importorskip(
    "playwright.sync_api", reason="the ui extra's test dependencies: pip install '.[ui,test]'"
)


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningPipeline]:
    """The running pipeline, with 4 epochs of 20 readings each committed (4 files read 20 rows per epoch)."""
    root = tmp_path_factory.mktemp("console") / "live"
    with running_pipeline(root, PIPELINE_SQL, "--max-epoch-rows", "20", initial=4, epochs=4) as work:
        yield work


@pytest.fixture(scope="module")
def tokens(live: RunningPipeline) -> dict[str, str]:
    from engine.console import tokens as made  # in this process: 3 CLI subprocesses cost seconds on a busy machine

    return {role: made.create(live.state, f"ui-{role}", role) for role in ("viewer", "operator", "admin")}


@pytest.fixture(scope="module")
def server(live: RunningPipeline, tokens: dict[str, str]) -> Iterator[str]:
    with console([live.state], tokens) as url:
        yield url


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the screenshots go: TIMELAPSE_SCREENSHOTS if set, else a tmp folder (see the module's docstring)."""
    wanted = os.environ.get("TIMELAPSE_SCREENSHOTS")
    folder = ROOT / wanted if wanted else tmp_path_factory.mktemp("screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox", "--disable-gpu"]
        )
        yield chromium
        chromium.close()


def open_as(browser: Any, server: str, token: str, route: str = "#/") -> Any:
    """A fresh page (its own session storage) signed in with `token` through the URL fragment, then at `route`."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda err: errors.append(str(err)))
    # a module that fails to load (a 404, a missing export) is only a console message, not a page error
    page.on("console", lambda msg: msg.type == "error" and errors.append(f"console: {msg.text}"))
    page.errors = errors
    page.goto(f"{server}/#token={token}")
    page.wait_for_selector("#pipelines-table tbody tr[data-pipeline]")
    if route != "#/":
        page.evaluate("route => { location.hash = route }", route)
    return page


def shoot(page: Any, folder: Path, name: str, full_page: bool = True) -> None:
    page.screenshot(path=str(folder / f"{name}.png"), full_page=full_page)


def test_pages_load_and_are_captured(
    browser: Any, server: str, tokens: dict[str, str], live: RunningPipeline, shots: Path
) -> None:
    page = open_as(browser, server, tokens["admin"])
    row = page.locator(f"#pipelines-table tr[data-pipeline='{NAME}']")
    assert row.locator(".badge").inner_text() == "running"
    shoot(page, shots, "pipelines")

    row.locator("a").first.click()
    page.wait_for_selector("#charts polyline")
    page.wait_for_timeout(300)
    assert page.locator("#action-rollback").is_enabled()
    # the operators table reads as prose (no JSON lists, no null) and fits the page
    operators = page.inner_text("#operators-table")
    assert '["' not in operators and "null" not in operators, operators
    assert page.evaluate("document.documentElement.scrollWidth <= document.documentElement.clientWidth")
    # a duration chart says its unit, picked from the data
    lag_title = page.inner_text("[data-chart='Watermark lag'] h3")
    assert lag_title.split("(")[-1].rstrip(")") in ("ms", "s", "min", "h", "d"), lag_title
    # every epoch of this pipeline is a checkpoint: the checkpoint dialog says so
    page.click("#action-checkpoint")
    page.wait_for_selector("#checkpoint-every-epoch")
    page.click("#dialog-cancel")
    shoot(page, shots, "pipeline")

    page.evaluate(f"location.hash = '#/p/{NAME}/tree'")
    page.wait_for_selector("#tree-svg .node.run")
    page.locator("#tree-svg .node.run").last.click()
    page.wait_for_selector("#tree-state-link")
    last = page.get_attribute("#tree-svg .node.run >> nth=-1", "data-epoch")
    assert page.inner_text("#tree-state-link") == f"state at epoch {last}"

    page.locator("#tree-state-link").click()
    page.wait_for_selector("#state-table[data-epoch]")
    assert page.locator("#plan-svg .node.stateful").count() == 2
    # the chosen epoch is said once beside the slider
    assert page.inner_text(".slider").count(f"epoch {last}") == 1, page.inner_text(".slider")
    shoot(page, shots, "state")

    page.evaluate(f"location.hash = '#/p/{NAME}/sql'")
    page.wait_for_selector("#sql-query")
    page.fill("#sql-query", f"SELECT * FROM {SINK} AS OF EPOCH 2 ORDER BY sensor")
    page.click("#sql-run")
    page.wait_for_selector("#sql-table tbody tr")
    assert page.locator("#sql-table tbody tr").count() == 4
    with page.expect_download() as download:
        page.click("#sql-csv")
    assert download.value.path().read_text().splitlines()[0].startswith("sensor")
    shoot(page, shots, "sql")
    assert page.errors == []


def _same(shown: Any, expected: Any) -> bool:
    if isinstance(expected, dt.datetime):
        parsed = dt.datetime.fromisoformat(str(shown).replace("Z", "+00:00"))
        if (parsed.tzinfo is None) != (expected.tzinfo is None):
            parsed, expected = parsed.replace(tzinfo=None), expected.replace(tzinfo=None)
        return parsed == expected
    if isinstance(expected, float):
        return shown is not None and math.isclose(float(shown), expected, rel_tol=1e-9)
    return bool(shown == expected)


def test_state_slider_shows_state_at_each_epoch(
    browser: Any, server: str, tokens: dict[str, str], live: RunningPipeline
) -> None:
    import engine

    history = engine.open(live.state)
    op = next(o for o in history.operators().get_column("operator") if str(o).startswith("group-agg"))
    page = open_as(browser, server, tokens["viewer"], f"#/p/{NAME}/state/{op}")
    page.wait_for_selector("#state-table[data-epoch]")
    slider = page.locator("#epoch-slider")
    epochs = [
        int(c["epoch"])
        for c in json.loads(page.evaluate(_FETCH, [f"/api/pipelines/{NAME}/checkpoints", "GET"])["body"])
        if c["kind"] == "epoch"
    ]
    for index in (0, 1, len(epochs) // 2, len(epochs) - 1):
        epoch = epochs[index]
        slider.fill(str(index))
        page.wait_for_selector(f"#state-table[data-epoch='{epoch}']")
        columns = page.eval_on_selector_all("#state-table thead th", "ths => ths.map(th => th.textContent)")
        shown = page.eval_on_selector_all(
            "#state-table tbody tr", "trs => trs.map(tr => [...tr.cells].map(td => JSON.parse(td.dataset.value)))"
        )
        expected = history.state(op, at=epoch)
        assert columns == expected.columns, epoch
        assert len(shown) == expected.height, epoch
        # the same rows; the page shows them sorted by the key columns (engine.state keeps the key groups' order)
        order = lambda row: json.dumps(row, default=str)
        for got, want in zip(sorted(shown, key=order), sorted(expected.rows(), key=order), strict=True):
            assert all(_same(g, w) for g, w in zip(got, want, strict=True)), (epoch, got, want)

    # the other tabs answer too: the diff between two epochs, late rows, dead letters
    page.click("#tab-diff")
    page.wait_for_selector("#diff-table[data-total]", state="attached")
    changed = history.diff(op, epochs[-2], epochs[-1]).height
    assert page.get_attribute("#diff-table", "data-total") == str(changed)
    page.click("#tab-late")
    page.wait_for_selector("#late-table[data-total]", state="attached")
    assert _stray_null(page) == 0
    page.click("#tab-dead-letters")
    page.wait_for_selector("#dl-none, #dl-table", state="attached")
    assert _stray_null(page) == 0
    assert page.errors == []


def _stray_null(page: Any) -> int:
    """Text nodes reading "null" outside table cells (a null child written out as text)."""
    return int(
        page.evaluate(
            """() => [...document.querySelectorAll('#state-body, #state-body *')].flatMap(e => [...e.childNodes])
          .filter(n => n.nodeType === 3 && n.textContent.trim() === 'null'
                       && n.parentElement.tagName !== 'TD').length"""
        )
    )


# A fetch from inside the page with its own token (what a hand-written script in the browser could do).
_FETCH = """async ([path, method, body]) => {
  const headers = {"Authorization": "Bearer " + sessionStorage.getItem("timelapse-token"),
    "Content-Type": "application/json"};
  const res = await fetch(path, {method, headers, body: body ? JSON.stringify(body) : undefined});
  return {status: res.status, body: await res.text()};
}"""


def test_operator_creates_a_savepoint(browser: Any, server: str, tokens: dict[str, str], live: RunningPipeline) -> None:
    import engine

    page = open_as(browser, server, tokens["operator"], f"#/p/{NAME}")
    page.wait_for_selector("#action-savepoint")
    assert page.locator("#action-rollback").is_disabled()
    assert "admin" in (page.locator("#action-rollback").get_attribute("title") or "")
    page.click("#action-savepoint")
    page.fill("#f-name", "from_the_console")
    page.fill("#f-reason", "before trying something")
    sync_api.expect(page.locator("#dialog-confirm")).to_be_enabled()  # no eval: the pages' CSP forbids it
    page.click("#dialog-confirm")
    page.wait_for_selector("#toast:not([hidden])")
    assert "from_the_console" in page.inner_text("#toast"), page.inner_text("#toast")
    page.wait_for_selector("#savepoints-table tr[data-savepoint='from_the_console']", timeout=30_000)
    names = [n for names in engine.open(live.state).checkpoints().get_column("savepoints").to_list() for n in names]
    assert "from_the_console" in names


def test_admin_rolls_back_through_the_dialog(
    browser: Any, server: str, tokens: dict[str, str], live: RunningPipeline, tmp_path: Path, shots: Path
) -> None:
    import engine
    from engine.versioning import history

    target = 2
    page = open_as(browser, server, tokens["admin"], f"#/p/{NAME}")
    page.click("#action-rollback")
    # a savepoint is chosen from the live ones; switching the kind of target clears the value
    page.select_option("#f-target-kind", "savepoint")
    assert page.eval_on_selector("#f-target", "el => el.tagName") == "SELECT"
    page.select_option("#f-target", "from_the_console")
    page.wait_for_selector("#rollback-preview")
    page.select_option("#f-target-kind", "timestamp")
    assert page.input_value("#f-target") == ""
    page.wait_for_selector("#rollback-preview", state="detached")
    # an error from the preview is one line (the API's detail)
    page.fill("#f-target", "not a time")
    page.wait_for_selector("#dialog-error:not([hidden])")
    error = page.inner_text("#dialog-error")
    assert "not an ISO time" in error and "\n" not in error and not error.startswith(("[", "{")), error
    # the browser logs that 400 answer: it was the point
    page.errors[:] = [e for e in page.errors if "status of 400" not in e]
    # an epoch is a number between the first and the last retained one
    page.select_option("#f-target-kind", "epoch")
    assert page.get_attribute("#f-target", "type") == "number"
    assert page.get_attribute("#f-target", "min") == "1"
    page.fill("#f-target", str(target))
    page.fill("#f-reason", "bad deploy after epoch 2")
    page.wait_for_selector("#rollback-preview")
    assert f"back to epoch {target}" in page.inner_text("#rollback-preview")
    sync_api.expect(page.locator("#dialog-confirm")).to_be_enabled()  # no eval: the pages' CSP forbids it
    shoot(page, shots, "rollback", full_page=False)
    page.click("#dialog-confirm")
    page.wait_for_selector("#toast:not([hidden])", timeout=70_000)
    assert "epoch 2" in page.inner_text("#toast"), page.inner_text("#toast")

    deadline = time.monotonic() + 30
    while not (rollbacks := [e for e in history(live.state) if e["kind"] == "rollback"]):
        assert time.monotonic() < deadline, "no rollback row in the manifest"
        time.sleep(0.2)
    assert rollbacks[-1]["to_epoch"] == target
    assert rollbacks[-1]["user"] == "ui-admin"
    assert rollbacks[-1]["reason"] == "bad deploy after epoch 2"

    # The running pipeline processes the rolled-back input again: once it has caught up, its sink equals a run
    # that never rolled back (exactly once across the rollback).
    reference = workdir(tmp_path / "reference", (live.root / "pipeline.sql").read_text())
    shutil.copytree(live.root / "in", reference.root / "in", dirs_exist_ok=True)
    reference.run_once()
    want = engine.open(reference.state).sink(SINK).sort("sensor")
    deadline = time.monotonic() + 30
    while True:
        got = engine.open(live.state).sink(SINK).sort("sensor")
        if int(got.get_column("n").sum() or 0) == live.rows:
            break
        assert time.monotonic() < deadline, f"the pipeline did not catch up after the rollback: {got}"
        time.sleep(0.2)
    assert got.select(want.columns).equals(want)

    page.evaluate(f"location.hash = '#/p/{NAME}/tree'")
    page.wait_for_selector("#tree-svg .node.rollback")
    page.locator("#tree-svg .node.rollback").last.click()
    assert "ui-admin" in page.inner_text("#tree-details")
    assert page.errors == []


def test_admin_branches_and_the_branch_says_where_from(
    browser: Any, server: str, tokens: dict[str, str], live: RunningPipeline, shots: Path
) -> None:
    page = open_as(browser, server, tokens["admin"], f"#/p/{NAME}")
    page.wait_for_selector("#action-branch")
    answer = page.evaluate(_FETCH, [f"/api/pipelines/{NAME}/branches", "POST", {"name": "whatif", "epoch": 2}])
    assert answer["status"] == 201, answer
    branch = json.loads(answer["body"])["pipeline"]

    page.evaluate(f"location.hash = '#/p/{NAME}/tree'")
    page.wait_for_selector("#tree-svg .node.branch")
    # a branch node is labelled with its folder; the whole text is its tooltip
    assert page.text_content("#tree-svg .node.branch text") == "branch whatif"
    assert str(live.root) in (page.text_content("#tree-svg .node.branch title") or "")
    page.locator("#tree-svg .node.branch").last.click()
    page.wait_for_selector("#tree-branch-link")
    shoot(page, shots, "tree")

    page = open_as(browser, server, tokens["admin"], f"#/p/{branch}")
    page.wait_for_selector("#branch-of")
    sync_api.expect(page.locator("#branch-of")).to_have_text(f"branched from {NAME} at epoch 2")
    page.wait_for_selector("#charts svg")
    assert page.errors == []


def test_viewer_cannot_act(browser: Any, server: str, tokens: dict[str, str]) -> None:
    page = open_as(browser, server, tokens["viewer"], f"#/p/{NAME}")
    page.wait_for_selector("#action-rollback")
    for button in ("#action-rollback", "#action-savepoint", "#action-checkpoint", "#action-branch"):
        assert page.locator(button).is_disabled(), button
    assert "needs the admin role" in (page.locator("#action-rollback").get_attribute("title") or "")
    answer = page.evaluate(_FETCH, [f"/api/pipelines/{NAME}/rollback", "POST", {"epoch": 1, "reason": "no"}])
    assert answer["status"] == 403, answer
    assert "detail" in json.loads(answer["body"])


def test_unknown_token_shows_the_login_form(browser: Any, server: str, shots: Path) -> None:
    page = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
    page.goto(f"{server}/#token=tl_not_a_token")
    page.wait_for_selector("#login-form #login-error")
    assert page.evaluate("sessionStorage.getItem('timelapse-token')") is None
    shoot(page, shots, "login", full_page=False)


def test_compare_view_shows_what_engine_compare_finds(
    browser: Any, server: str, tokens: dict[str, str], live: RunningPipeline, shots: Path
) -> None:
    """The branch made above against its parent: the compare view's counts and per-epoch rows are engine.compare's."""
    import engine

    page = open_as(browser, server, tokens["viewer"], f"#/compare?a={NAME}&b=whatif&sink={SINK}")
    page.wait_for_selector("#compare-counts")
    shown = page.locator("#compare-counts")
    found = engine.compare(live.state, live.state.parent / "whatif", sink=SINK)
    assert {k: int(shown.get_attribute(f"data-{k}") or -1) for k in found.counts()} == found.counts()
    assert page.locator("#compare-epochs tbody tr").count() == found.per_epoch.height
    assert page.inner_text("#compare-origin").endswith("B branched from A at epoch 2; keyed by sensor")
    shoot(page, shots, "compare")
    page.click("text=‹ every sink and operator")
    page.wait_for_selector(f"#compare-summary tr[data-name='{SINK}']")
    assert page.errors == []
