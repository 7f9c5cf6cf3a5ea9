"""The web view in a real browser: Debian's Chromium driven by Playwright, against a real
`orchestrator ui` process over loopback. Screenshots of each page land in
`test-output/screenshots/` at the repository's root."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import expect

from tests.cli.helpers import run_id_from, wait_for
from tests.conftest import CLI, REPO, write
from tests.localapi.test_server import free_port
from tests.web.test_app import sweep

CHROMIUM = os.environ.get("ORCH_TEST_CHROMIUM") or shutil.which("chromium") or ""
SHOTS = REPO / "test-output" / "screenshots"
LORA = str(REPO / "pipelines" / "lora-finetune.yaml")

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM, reason="no Chromium installed (apt-get install chromium): "
                                            "the browser tests are skipped"),
]


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("ORCH_")}


@pytest.fixture
def ui(tmp_path: Path) -> Iterator[str]:
    """`orchestrator ui` on a free loopback port, in the test's folder; its base URL."""
    yield from _serve(tmp_path)


@pytest.fixture
def ui_with_actions(tmp_path: Path) -> Iterator[str]:
    yield from _serve(tmp_path, "--allow-actions")


def _serve(tmp_path: Path, *flags: str) -> Iterator[str]:
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "orchestrator", "ui", "--port", str(port),
                               *flags], cwd=tmp_path, env=_env(), stderr=subprocess.PIPE,
                              text=True)
    base = f"http://127.0.0.1:{port}"

    def answers() -> bool:
        assert server.poll() is None, server.communicate()[1]
        try:
            return httpx.get(base + "/", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    try:
        wait_for(answers, "the web view answers", timeout=20)
        yield base
    finally:
        server.terminate()
        server.communicate(timeout=10)


@pytest.fixture
def browser() -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, headless=True,
                                              args=["--no-sandbox"])
        try:
            yield chromium
        finally:
            chromium.close()


def _shot(page: object, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)  # type: ignore[attr-defined]


def test_runs_run_batch_and_models_pages(cli: CLI, tmp_path: Path, ui: str,
                                         request: pytest.FixtureRequest) -> None:
    """Open the runs page, follow a link to a fine-tune's run: its graph shows every step's
    status, its loss curve as many points as stored metrics; open a batch's grid and the
    models."""
    run_id = run_id_from(cli("run", LORA, "-i", "poll_interval=100ms",
                             env={"ORCH_LOCAL_JOB_DURATION": "1s"}, check_code=0).stderr)
    sweep(tmp_path)
    cli("run", "sweep.yaml", check_code=0)
    batch = json.loads(cli("batches", "-o", "json", check_code=0).stdout)[0]["id"]
    points = len(json.loads(cli("metrics", run_id, "--json", check_code=0).stdout)["points"])
    browser = request.getfixturevalue("browser")  # Playwright's loop, once the CLI is done
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(ui + "/")
    assert page.locator(f'tr[data-run="{run_id}"]').count() == 1
    _shot(page, "runs")
    page.click(f'a[href="/runs/{run_id}"]')
    page.wait_for_url(f"**/runs/{run_id}")
    steps = page.locator("svg.dag g.step")
    assert steps.count() == 6
    assert page.locator('svg.dag g.step[data-status="succeeded"]').count() == 6
    assert page.locator("svg.loss-curve circle.point.train-loss").count() == points > 0
    assert "Paris" in page.inner_text("dd.smoke")
    _shot(page, "run")
    page.goto(f"{ui}/batches/{batch}")
    assert page.locator("table.grid a.cell").count() == 6
    assert page.locator("table.grid a.cell.best").count() == 2
    _shot(page, "batch")
    page.goto(ui + "/models")
    assert page.locator("td.model").count() == 1
    _shot(page, "models")


def test_a_live_runs_status_changes_without_reloading(cli_process: CLI, tmp_path: Path,
                                                      ui: str, browser: object) -> None:
    """A run executing in another process: its page, opened while it runs, shows it
    finish, and its new events, without a reload."""
    write(tmp_path / "slow.yaml", """\
        name: slow
        steps:
          nap: {uses: core/sleep, with: {duration: 3s}}
          after: {uses: core/echo, with: {done: true}, needs: [nap]}
    """)
    runner = subprocess.Popen([sys.executable, "-m", "orchestrator", "run", "slow.yaml"],
                              cwd=tmp_path, stderr=subprocess.PIPE, text=True,
                              env={k: v for k, v in os.environ.items()
                                   if not k.startswith("ORCH_")})
    try:
        def started() -> list[dict[str, object]]:
            return [r for r in httpx.get(ui + "/api/runs").json() if r["status"] == "running"]

        run_id = str(wait_for(started, "the run is running", timeout=20)[0]["id"])
        page = browser.new_page()  # type: ignore[attr-defined]
        page.goto(f"{ui}/runs/{run_id}")
        status = page.locator("#run-status")
        assert status.inner_text() == "running"
        rows_before = page.locator("#events tr").count()
        _shot(page, "live-running")
        expect(status).to_have_text("succeeded", timeout=20_000)
        assert page.locator("#events tr").count() > rows_before
        assert "run_finished" in page.inner_text("#events")
        expect(page.locator('svg.dag g.step[data-status="succeeded"]')).to_have_count(2)
        expect(page.locator("table.steps .badge.status-succeeded")).to_have_count(2)
        _shot(page, "live-succeeded")
    finally:
        runner.communicate(timeout=30)
    assert runner.returncode == 0


@contextlib.contextmanager
def _live_run(tmp_path: Path, ui: str, browser: object
              ) -> Iterator[tuple[subprocess.Popen[str], str, Any]]:
    """A run of a long sleep executing in its own process, once it runs, and a browser page
    open on it: (its process, its id, the page). A process still going at the end is
    interrupted."""
    write(tmp_path / "long.yaml", """\
        name: long
        steps:
          nap: {uses: core/sleep, with: {duration: 2m}}
    """)
    runner = subprocess.Popen([sys.executable, "-m", "orchestrator", "run", "long.yaml",
                               "--on-interrupt", "leave"], cwd=tmp_path, env=_env(),
                              stderr=subprocess.PIPE, text=True)

    def started() -> list[dict[str, object]]:
        assert runner.poll() is None, runner.communicate()[1]
        return [r for r in httpx.get(ui + "/api/runs").json() if r["status"] == "running"]

    try:
        run_id = str(wait_for(started, "the run is running", timeout=20)[0]["id"])
        page = browser.new_page()  # type: ignore[attr-defined]
        page.on("dialog", lambda dialog: dialog.accept())  # cancel and resume ask first
        page.goto(f"{ui}/runs/{run_id}")
        yield runner, run_id, page
    finally:
        if runner.poll() is None:
            runner.send_signal(signal.SIGINT)
        runner.communicate(timeout=30)


def test_cancel_from_the_page_when_actions_are_on(tmp_path: Path, ui_with_actions: str,
                                                  browser: object) -> None:
    with _live_run(tmp_path, ui_with_actions, browser) as (runner, run_id, page):
        _shot(page, "cancel-before")
        page.click("#cancel")
        page.wait_for_url(f"**/runs/{run_id}")
        expect(page.locator("#cancel-form")).to_be_hidden()  # requested, then done
        expect(page.locator("#run-status")).to_have_text("cancelled", timeout=20_000)
        assert page.locator('svg.dag g.step[data-step="nap"]').get_attribute(
            "data-status") == "cancelled"
        _shot(page, "cancel-after")
        assert runner.wait(timeout=30) == 1  # the run ended cancelled: `run` says so


def test_cancel_is_refused_when_actions_are_off(tmp_path: Path, ui: str,
                                                browser: object) -> None:
    with _live_run(tmp_path, ui, browser) as (_, run_id, page):
        assert page.locator("#cancel").count() == 0
        status = page.evaluate(f"""async () => (await fetch('/runs/{run_id}/cancel',
            {{method: 'POST', body: new URLSearchParams({{csrf: 'x'}})}})).status""")
        assert status == 403
        assert httpx.get(f"{ui}/api/runs/{run_id}").json()["run"]["cancel_requested"] is False


def test_the_runs_list_and_a_runs_page_follow_it_without_reloading(
        tmp_path: Path, ui_with_actions: str, browser: object) -> None:
    """The runs list, open before the run exists: its row appears, turns running, then
    succeeded, with no reload. Its page, open while it runs: Cancel shows while it runs and
    goes once it finished; Resume (from a step) shows then."""
    write(tmp_path / "slow.yaml", """\
        name: slow
        steps:
          nap: {uses: core/sleep, with: {duration: 6s}}
          after: {uses: core/echo, with: {done: true}, needs: [nap]}
    """)
    listing = browser.new_page()  # type: ignore[attr-defined]
    listing.goto(ui_with_actions + "/")
    expect(listing.locator("tr[data-run]")).to_have_count(0)
    runner = subprocess.Popen([sys.executable, "-m", "orchestrator", "run", "slow.yaml"],
                              cwd=tmp_path, env=_env(), stderr=subprocess.PIPE, text=True)
    try:
        row = listing.locator("tr[data-run]")
        expect(row).to_have_count(1, timeout=20_000)
        expect(row.locator(".badge")).to_have_text("running", timeout=20_000)
        run_id = row.get_attribute("data-run")
        page = browser.new_page()  # type: ignore[attr-defined]
        page.goto(f"{ui_with_actions}/runs/{run_id}")
        expect(page.locator("#cancel-form")).to_be_visible()
        expect(page.locator("#resume-form")).to_be_hidden()
        expect(page.locator("#run-status")).to_have_text("succeeded", timeout=20_000)
        expect(page.locator("#cancel-form")).to_be_hidden()
        expect(page.locator("#resume-form")).to_be_visible()
        expect(page.locator('tr[data-step="nap"] .duration')).not_to_have_text("-")
        expect(row.locator(".badge")).to_have_text("succeeded", timeout=20_000)
        assert listing.locator("tr[data-run]").count() == 1
        _shot(listing, "runs-live")
        _shot(page, "run-finished-live")
    finally:
        runner.communicate(timeout=30)


def test_batches_in_the_navigation_and_schedules_with_their_actions(
        cli: CLI, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """Batches is in the navigation and lists each batch with its counts; a schedule's
    Run now (confirmed) queues a run and opens it; Pause (confirmed) shows it paused;
    Resume brings back its next fire time."""
    sweep(tmp_path)
    cli("run", "sweep.yaml", check_code=0)
    write(tmp_path / "pipelines" / "nightly.yaml", """\
        name: nightly
        schedule: {cron: "0 2 * * *", timezone: Asia/Tokyo}
        steps:
          a: {uses: core/echo}
    """)
    ui_with_actions = request.getfixturevalue("ui_with_actions")  # it reads the schedules
    browser = request.getfixturevalue("browser")
    page = browser.new_page()
    page.on("dialog", lambda dialog: dialog.accept())
    page.goto(ui_with_actions + "/")
    page.click("nav >> text=Batches")
    page.wait_for_url("**/batches")
    assert page.locator("tr[data-batch] .counts .badge").inner_text() == "6 succeeded"
    _shot(page, "batches")
    page.click("nav >> text=Schedules")
    expect(page.locator('tr[data-schedule="nightly"] td.next')).to_contain_text("02:00 JST")
    page.click("button.run-now")
    page.wait_for_url("**/runs/**")
    expect(page.locator("#run-status")).to_have_text("queued")
    page.goto(ui_with_actions + "/schedules")
    page.click("button.pause-schedule")
    expect(page.locator('tr[data-schedule="nightly"] td.next')).to_contain_text("paused")
    _shot(page, "schedules-paused")
    page.click("button.resume-schedule")
    expect(page.locator('tr[data-schedule="nightly"] td.next')).to_contain_text("JST")


PHONE = {"width": 390, "height": 844}


def test_no_page_scrolls_sideways_on_a_phone(cli: CLI, tmp_path: Path, ui: str,
                                             request: pytest.FixtureRequest) -> None:
    """At 390 px wide, every page fits: wide tables and the graph scroll inside their own
    boxes (the graph keeps its size, legible), ids are not broken mid-word."""
    run_id = run_id_from(cli("run", LORA, "-i", "poll_interval=100ms",
                             env={"ORCH_LOCAL_JOB_DURATION": "1s"}, check_code=0).stderr)
    sweep(tmp_path)
    cli("run", "sweep.yaml", check_code=0)
    batch = json.loads(cli("batches", "-o", "json", check_code=0).stdout)[0]["id"]
    browser = request.getfixturevalue("browser")
    page = browser.new_page(viewport=PHONE)
    for name, path in (("runs", "/"), ("run", f"/runs/{run_id}"), ("batches", "/batches"),
                       ("batch", f"/batches/{batch}"), ("models", "/models"),
                       ("schedules", "/schedules")):
        page.goto(ui + path)
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= PHONE["width"], (path, width)
        _shot(page, f"phone-{name}")
    page.goto(f"{ui}/runs/{run_id}")
    box = page.locator(".dag-box")
    inner, outer = box.evaluate("b => [b.scrollWidth, b.clientWidth]")
    assert inner > outer  # the graph scrolls inside its box, at its own size
    height = page.locator("h1 .id").evaluate("e => e.getBoundingClientRect().height")
    assert height < 40, "the run's id stays on one line"
