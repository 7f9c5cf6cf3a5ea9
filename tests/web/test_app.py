"""The web view over a real state file: pages and the JSON API they are built from."""

from __future__ import annotations

import functools
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import anyio.from_thread
import httpx
import pytest
from anyio.from_thread import BlockingPortal

from orchestrator.store.opening import open_store
from orchestrator.web.app import create_app
from tests.cli.helpers import run_id_from, wait_for
from tests.conftest import CLI, REPO, write
from tests.localapi.test_server import free_port

LORA = str(REPO / "pipelines" / "lora-finetune.yaml")
FAST = {"ORCH_LOCAL_JOB_DURATION": "1s"}


class Web:
    """The web view of a state file, in process: the app and its store on an event loop of
    their own (a thread), requests made from the test's thread over httpx's ASGI transport."""

    def __init__(self, portal: BlockingPortal, client: httpx.AsyncClient) -> None:
        self._portal = portal
        self._client = client

    def get(self, path: str, params: dict[str, Any] | None = None,
            headers: dict[str, str] | None = None) -> httpx.Response:
        return self._portal.call(functools.partial(self._client.get, path, params=params,
                                                   headers=headers))

    def post(self, path: str, data: dict[str, str],
             headers: dict[str, str] | None = None) -> httpx.Response:
        return self._portal.call(functools.partial(self._client.post, path, data=data,
                                                   headers=headers))


@pytest.fixture
def web(tmp_path: Path) -> Iterator[Web]:
    url = f"sqlite:///{tmp_path / '.orchestrator' / 'state.db'}"
    with anyio.from_thread.start_blocking_portal() as portal, \
            portal.wrap_async_context_manager(open_store(url)) as store:
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(store)),
                                   base_url="http://ui")
        try:
            yield Web(portal, client)
        finally:
            portal.call(client.aclose)


def sweep(tmp_path: Path) -> None:
    """A 2 x 3 matrix of echo steps whose eval loss is their learning rate."""
    write(tmp_path / "sweep.yaml", """\
        name: sweep
        matrix: {model: [a, b], lr: [1, 2, 3]}
        steps:
          fit:
            uses: core/echo
            with: {eval_loss: "${{ matrix.lr }}", model_name: "m-${{ matrix.model }}"}
    """)


def test_a_fine_tunes_page_shows_its_graph_losses_model_and_answer(
        cli: CLI, tmp_path: Path, web: Web) -> None:
    run_id = run_id_from(cli("run", LORA, "-i", "poll_interval=100ms", env=FAST,
                             check_code=0).stderr)
    page = web.get(f"/runs/{run_id}")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    html = page.text
    steps = re.findall(r'<g class="step status-(\w+)[^"]*" data-step="([\w.]+)"', html)
    assert sorted(s for _, s in steps) == sorted(["upload", "upload_validation", "launch",
                                                  "wait", "smoke", "register"])
    assert {status for status, _ in steps} == {"succeeded"}
    series = json.loads(cli("metrics", run_id, "--json", check_code=0).stdout)
    assert html.count('class="point train-loss"') == len(series["points"]) > 0
    assert "Paris" in html and "local-user/Meta-Llama" in html
    document = (web.get(f"/api/runs/{run_id}")).json()
    assert document == json.loads(cli("show", run_id, "-o", "json", check_code=0).stdout)
    assert (web.get(f"/api/runs/{run_id}/metrics")).json() == series
    events = (web.get(f"/api/runs/{run_id}/events", params={"after": 3})).json()
    assert events and events[0]["seq"] > 3
    models = web.get("/models")
    assert document["steps"][3]["outputs"]["model_name"] in models.text
    assert "passed" in models.text


def test_the_runs_page_filters_and_pages(cli: CLI, tmp_path: Path,
                                               web: Web) -> None:
    write(tmp_path / "ok.yaml", "name: ok\nsteps:\n  a: {uses: core/echo}\n")
    write(tmp_path / "bad.yaml", "name: bad\nsteps:\n  a:\n    uses: core/fail\n"
                                 "    with: {transient: false, message: '<script>x()</script>'}\n")
    ids = [run_id_from(cli("run", "ok.yaml", check_code=0).stderr) for _ in range(3)]
    bad = run_id_from(cli("run", "bad.yaml", check_code=1).stderr)
    front = web.get("/")
    assert "script-src 'self'" in front.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in front.headers["content-security-policy"]
    assert front.headers["x-content-type-options"] == "nosniff"
    everything = front.text
    assert all(run in everything for run in [*ids, bad])
    failed = web.get("/", params={"status": "failed"}).text
    assert bad in failed and not any(run in failed for run in ids)
    first = web.get("/", params={"limit": 2})
    assert "older runs" in first.text
    older = re.search(r'href="\?([^"]+)">older runs', first.text)
    assert older
    rest = web.get("/?" + older.group(1).replace("&amp;", "&"))
    shown = [r for r in [*ids, bad] if r in first.text] + [r for r in ids if r in rest.text]
    assert len(shown) == 4 and len(set(shown)) == 4
    assert [r["id"] for r in (web.get("/api/runs", params={"pipeline": "ok"})).json()] \
        == ids[::-1]
    page = web.get(f"/runs/{bad}").text
    assert "&lt;script&gt;x()&lt;/script&gt;" in page and "<script>x()" not in page
    refused = web.get("/api/runs", params={"status": "sideways"})
    assert refused.status_code == 400 and "not a run status" in refused.json()["error"][
        "message"]
    assert (web.get("/", params={"limit": "0"})).status_code == 400
    missing = web.get("/runs/r-nope")
    assert missing.status_code == 404 and "no run with id" in missing.text
    assert (web.get("/api/runs/r-nope")).status_code == 404


def test_a_batch_is_a_grid_with_the_best_cell_of_each_row(
        cli: CLI, tmp_path: Path, web: Web) -> None:
    sweep(tmp_path)
    cli("run", "sweep.yaml", check_code=0)
    batch = json.loads(cli("batches", "-o", "json", check_code=0).stdout)[0]["id"]
    page = web.get(f"/batches/{batch}").text
    rows = re.findall(r"<tr><th>(\w+)</th>", page)
    assert rows == ["model", "a", "b"]  # the header's corner names the rows' axis
    assert re.findall(r"<th>(lr=\d)</th>", page) == ["lr=1", "lr=2", "lr=3"]
    cells = re.findall(r'<a class="cell status-succeeded( best)?" href="/runs/([\w.-]+)"', page)
    assert len(cells) == 6
    assert [bool(best) for best, _ in cells] == [True, False, False, True, False, False]
    assert (web.get(f"/api/batches/{batch}")).json() == json.loads(
        cli("show", batch, "-o", "json", check_code=0).stdout)


def test_a_batch_with_an_objective_is_a_heat_map_with_its_winner_and_curves(
        cli: CLI, tmp_path: Path, web: Web) -> None:
    """`select:` ranks the cells: each shows its score on a heat scale, the best is starred,
    cells left out are said; a cell's page tables its scores beside the baseline's."""
    write(tmp_path / "judged.yaml", """\
        name: judged
        matrix: {lr: [1, 2, 3]}
        select: {by: eval.exact_match}
        steps:
          evaluate:
            uses: core/echo
            with:
              model_name: "m-${{ matrix.lr }}"
              count: 4
              scores: {exact_match: "${{ matrix.lr }}"}
              baseline: {model: base, scores: {exact_match: 0.5}}
              lift: {exact_match: 0.25}
    """)
    cli("run", "judged.yaml", check_code=0)
    batch = json.loads(cli("batches", "-o", "json", check_code=0).stdout)[0]["id"]
    page = web.get(f"/batches/{batch}").text
    cells = re.findall(r'class="cell status-succeeded( best)? heat-(\d)" href="/runs/[\w.-]+"'
                       r'[^>]*>([^<]+)<', page)
    assert cells == [("", "0", "1.0000"), ("", "2", "2.0000"), (" best", "4", "★ 3.0000")]
    assert f'Ranked by max eval.exact_match: best <a href="/runs/{batch}.2">' in page
    run_page = web.get(f"/runs/{batch}.2").text
    assert "<h2>Evaluation: evaluate</h2>" in run_page and "beside base" in run_page
    assert "<tr><td>exact_match</td><td>3.0000</td><td>0.5000</td><td>0.2500</td></tr>" in \
        run_page


def test_a_finished_runs_stream_replays_its_events_and_ends(
        cli: CLI, tmp_path: Path, web: Web) -> None:
    write(tmp_path / "ok.yaml", "name: ok\nsteps:\n  a: {uses: core/echo}\n")
    run_id = run_id_from(cli("run", "ok.yaml", check_code=0).stderr)
    body = web.get(f"/api/runs/{run_id}/stream").text
    kinds = re.findall(r"^event: (\w+)$", body, re.M)
    assert kinds[-2:] == ["status", "end"] and kinds.count("event") >= 4
    assert '"kind": "run_finished"' in body


def test_ui_serves_on_loopback_only(cli: CLI, tmp_path: Path) -> None:
    refused = cli("ui", "--host", "0.0.0.0", check_code=2)
    assert "not a loopback address" in refused.stderr
    write(tmp_path / "ok.yaml", "name: ok\nsteps:\n  a: {uses: core/echo}\n")
    run_id = run_id_from(cli("run", "ok.yaml", check_code=0).stderr)
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "orchestrator", "ui", "--port", str(port)],
                              cwd=tmp_path, stderr=subprocess.PIPE, text=True)
    try:
        def answers() -> httpx.Response | None:
            assert server.poll() is None, server.communicate()[1]
            try:
                return httpx.get(f"http://127.0.0.1:{port}/", timeout=1)
            except httpx.TransportError:
                return None

        page = wait_for(answers, "the web view answers", timeout=20)
        assert page.status_code == 200 and run_id in page.text
        assert httpx.get(f"http://127.0.0.1:{port}/static/live.js").status_code == 200
    finally:
        server.terminate()
        server.communicate(timeout=10)


def _client(tmp_path: Path, portal: BlockingPortal, store: Any, *, actions: bool = False,
            **options: Any) -> Web:
    """The app over `store`; with `actions`, its buttons do what the commands do."""
    from orchestrator.engine.orchestrator import Orchestrator
    from orchestrator.schedule.actions import StoreActions

    app = create_app(store, actions=StoreActions(store, Orchestrator(store),
                                                 scheduled=options.get("scheduled") or ())
                     if actions else None, **options)
    return Web(portal, httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                         base_url="http://ui"))


def test_cancel_is_an_action_refused_unless_on_and_without_the_pages_token(
        cli: CLI, tmp_path: Path) -> None:
    """Off by default (403, nothing requested); on, a POST without the page's CSRF token or
    from another origin is refused; with it, the run's cancellation is requested."""
    queued = cli("run", _pipeline_file(tmp_path), "--detach", check_code=0).stdout.strip()
    url = f"sqlite:///{tmp_path / '.orchestrator' / 'state.db'}"
    with anyio.from_thread.start_blocking_portal() as portal, \
            portal.wrap_async_context_manager(open_store(url)) as store:
        off = _client(tmp_path, portal, store)
        assert 'id="cancel"' not in off.get(f"/runs/{queued}").text
        refused = off.post(f"/runs/{queued}/cancel", data={"csrf": "x"})
        assert refused.status_code == 403 and "--allow-actions" in refused.text
        on = _client(tmp_path, portal, store, actions=True)
        page = on.get(f"/runs/{queued}").text
        token = re.search(r'name="csrf" value="([^"]+)"', page)
        assert token and 'id="cancel"' in page
        assert on.post(f"/runs/{queued}/cancel", data={"csrf": "forged"}).status_code == 403
        assert on.post(f"/runs/{queued}/cancel", data={"csrf": token.group(1)},
                       headers={"origin": "http://evil.example"}).status_code == 403
        assert on.get(f"/api/runs/{queued}").json()["run"]["cancel_requested"] is False
        done = on.post(f"/runs/{queued}/cancel", data={"csrf": token.group(1)},
                       headers={"origin": "http://ui"})
        assert done.status_code == 303 and done.headers["location"] == f"/runs/{queued}"
        assert on.get(f"/api/runs/{queued}").json()["run"]["cancel_requested"] is True
        assert "cancel requested" in on.get(f"/runs/{queued}").text


def test_a_token_gates_every_request(cli: CLI, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / '.orchestrator' / 'state.db'}"
    secret = "s3cret-token-0123456789"
    with anyio.from_thread.start_blocking_portal() as portal, \
            portal.wrap_async_context_manager(open_store(url)) as store:
        gated = _client(tmp_path, portal, store, token=secret)
        refused = gated.get("/api/runs")
        assert refused.status_code == 401 and secret not in refused.text
        assert gated.get("/", params={"token": "wrong"}).status_code == 401
        assert gated.get("/api/runs", headers={"authorization": f"Bearer {secret}"}
                         ).status_code == 200
        first = gated.get("/", params={"token": secret})
        assert first.status_code == 303 and first.headers["location"] == "/"
        assert "orchestrator_ui=" in first.headers["set-cookie"]
        assert "httponly" in first.headers["set-cookie"].lower()
        assert gated.get("/").status_code == 200  # the cookie now carries it
    tokenless = cli("ui", "--host", "0.0.0.0", "--allow-remote", check_code=2)
    assert "ORCH_UI_TOKEN" in tokenless.stderr


def _pipeline_file(tmp_path: Path) -> str:
    write(tmp_path / "ok.yaml", "name: ok\nsteps:\n  a: {uses: core/echo}\n")
    return "ok.yaml"


@pytest.mark.slow
def test_serve_runs_the_worker_the_scheduler_and_the_page(cli: CLI, tmp_path: Path) -> None:
    """`orchestrator serve` also serves the web view, on the worker's own store: a run queued
    from another process is executed and shows on the page; a taken port is one line."""
    from tests.cli.helpers import start_service

    port = free_port()
    service = start_service(tmp_path, "serve", ".", "--ui-port", str(port))
    try:
        assert any(f"web view on http://127.0.0.1:{port}/" in line for line in service.lines), \
            service.lines
        queued = cli("run", _pipeline_file(tmp_path), "--detach", check_code=0).stdout.strip()

        def shown_done() -> bool:
            found = httpx.get(f"http://127.0.0.1:{port}/api/runs/{queued}", timeout=2).json()
            return bool(found["run"]["status"] == "succeeded")

        wait_for(shown_done, "the page shows the run succeeded", timeout=30)
        assert queued in httpx.get(f"http://127.0.0.1:{port}/", timeout=2).text
        taken = cli("serve", ".", "--ui-port", str(port), check_code=2)
        assert f"cannot listen on 127.0.0.1:{port}" in taken.stderr
    finally:
        service.stop()


def test_schedules_show_their_next_fire_and_last_runs(cli: CLI, tmp_path: Path) -> None:
    from orchestrator.schedule.scheduler import load_scheduled

    write(tmp_path / "nightly.yaml", """\
        name: nightly
        schedule: {cron: "0 2 * * *", timezone: Europe/Paris}
        steps:
          a: {uses: core/echo}
    """)
    scheduled = load_scheduled([tmp_path / "nightly.yaml"])
    url = f"sqlite:///{tmp_path / '.orchestrator' / 'state.db'}"
    cli("runs", check_code=0)  # the state file exists
    with anyio.from_thread.start_blocking_portal() as portal, \
            portal.wrap_async_context_manager(open_store(url)) as store:
        web = _client(tmp_path, portal, store, scheduled=scheduled)
        listed = web.get("/api/schedules").json()
        assert [(s["id"], s["cron"], s["timezone"]) for s in listed] == [
            ("nightly", "0 2 * * *", "Europe/Paris")]
        assert listed[0]["recent"] == [] and listed[0]["next_fire"] > 0
        assert listed[0]["last_run"] is None
        page = web.get("/schedules").text
        assert 'data-schedule="nightly"' in page and "none yet" in page
        broken = _client(tmp_path, portal, store, scheduled="pipelines: no such file")
        assert "could not be read: pipelines: no such file" in broken.get("/schedules").text


def test_the_pages_read_a_postgresql_store(cli: CLI, tmp_path: Path, postgres_url: str) -> None:
    """The same pages over the fleet's database."""
    sweep(tmp_path)
    cli("run", "sweep.yaml", "--state-url", postgres_url, check_code=0)
    bad = run_id_from(cli("run", _pipeline_file(tmp_path), "--state-url", postgres_url,
                          check_code=0).stderr)
    with anyio.from_thread.start_blocking_portal() as portal, \
            portal.wrap_async_context_manager(open_store(postgres_url)) as store:
        web = _client(tmp_path, portal, store)
        runs = web.get("/api/runs").json()
        assert len(runs) == 7 and runs[0]["id"] == bad
        batch = runs[1]["batch_id"]
        assert web.get(f"/batches/{batch}").text.count('class="cell status-succeeded') == 6
        page = web.get(f"/runs/{bad}").text
        assert 'data-step="a" data-status="succeeded"' in page
        body = web.get(f"/api/runs/{bad}/stream").text
        assert body.rstrip().endswith("event: end\ndata: {}")


def test_resume_from_the_page_queues_the_run_for_a_worker(cli: CLI, tmp_path: Path) -> None:
    """A failed run resumed from its page goes back to the queue; a worker finishes it,
    keeping its succeeded steps. A succeeded run needs a step to run again from; --from
    clears that step and everything after it; a queued run is refused."""
    write(tmp_path / "flaky.yaml", """\
        name: flaky
        steps:
          first: {uses: core/echo, with: {x: 1}}
          second:
            uses: core/fail
            with: {times: 1, transient: false}
            needs: [first]
            retry: null
    """)
    run_id = run_id_from(cli("run", "flaky.yaml", check_code=1).stderr)
    url = f"sqlite:///{tmp_path / '.orchestrator' / 'state.db'}"

    def page_csrf(web: Web) -> str:
        found = re.search(r'name="csrf" value="([^"]+)"', web.get(f"/runs/{run_id}").text)
        assert found
        return found.group(1)

    with anyio.from_thread.start_blocking_portal() as portal, \
            portal.wrap_async_context_manager(open_store(url)) as store:
        web = _client(tmp_path, portal, store, actions=True)
        csrf = page_csrf(web)
        assert web.post(f"/runs/{run_id}/resume", data={"csrf": csrf}).status_code == 303
        assert web.get(f"/api/runs/{run_id}").json()["run"]["status"] == "queued"
        again = web.post(f"/runs/{run_id}/resume", data={"csrf": csrf})
        assert again.status_code == 403 and "already queued" in again.text
    worker = subprocess.Popen([sys.executable, "-m", "orchestrator", "worker"], cwd=tmp_path,
                              stderr=subprocess.PIPE, text=True,
                              env={k: v for k, v in os.environ.items()
                                   if not k.startswith("ORCH_")})
    try:
        wait_for(lambda: json.loads(cli("show", run_id, "-o", "json", check_code=0).stdout)[
            "run"]["status"] == "succeeded", "a worker resumed the run", timeout=30)
    finally:
        worker.terminate()
        worker.communicate(timeout=10)
    with anyio.from_thread.start_blocking_portal() as portal, \
            portal.wrap_async_context_manager(open_store(url)) as store:
        web = _client(tmp_path, portal, store, actions=True)
        csrf = page_csrf(web)
        plain = web.post(f"/runs/{run_id}/resume", data={"csrf": csrf})
        assert plain.status_code == 403 and "choose a step" in plain.text
        unknown = web.post(f"/runs/{run_id}/resume", data={"csrf": csrf, "from": "nope"})
        assert unknown.status_code == 403 and "has no such step" in unknown.text
        assert web.post(f"/runs/{run_id}/resume",
                        data={"csrf": csrf, "from": "second"}).status_code == 303
        steps = {s["id"]: s["status"] for s in web.get(f"/api/runs/{run_id}").json()["steps"]}
        assert steps == {"first": "succeeded", "second": "pending"}


def test_live_streams_are_bounded(cli: CLI, tmp_path: Path, web: Web,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    import orchestrator.web.app

    run_id = run_id_from(cli("run", _pipeline_file(tmp_path), check_code=0).stderr)
    monkeypatch.setattr(orchestrator.web.app, "MAX_STREAMS", 0)
    busy = web.get(f"/api/runs/{run_id}/stream")
    assert busy.status_code == 503 and busy.headers["retry-after"] == "5"
    monkeypatch.setattr(orchestrator.web.app, "MAX_STREAMS", 1)
    assert "event: end" in web.get(f"/api/runs/{run_id}/stream").text  # and it was let go
    assert "event: end" in web.get(f"/api/runs/{run_id}/stream").text


def _web(portal: BlockingPortal, store: Any, **options: Any) -> Web:
    return Web(portal, httpx.AsyncClient(transport=httpx.ASGITransport(
        app=create_app(store, **options)), base_url="http://ui"))


def test_a_runs_page_shows_inputs_price_outputs_and_files_and_no_python_reprs(
        cli: CLI, tmp_path: Path) -> None:
    """A fine-tune's page: its inputs, the provider's price estimate, each step's outputs
    (folded), the files of its folder (the loss curves) served from it and nothing else; no
    `None` anywhere; the loss chart labels its axes, the learning rate on its own."""
    run_id = run_id_from(cli("run", LORA, "-i", "poll_interval=100ms", "-i", "epochs=2",
                             env=FAST, check_code=0).stderr)
    url = f"sqlite:///{tmp_path / '.orchestrator' / 'state.db'}"
    artifacts = tmp_path / ".orchestrator" / "artifacts"
    (artifacts / run_id / "notes.exe").write_text("not linked")
    with anyio.from_thread.start_blocking_portal() as portal, \
            portal.wrap_async_context_manager(open_store(url)) as store:
        web = _web(portal, store, artifacts=artifacts)
        page = web.get(f"/runs/{run_id}").text
        assert "None" not in page
        assert re.search(r"<b>epochs</b> 2</span>", page)
        assert re.search(r"<dt>estimated price</dt><dd>\$\d+\.\d\d", page)
        assert page.count("<details>") >= 5 and "<dt>job_id</dt>" in page
        assert 'href="/runs/' + run_id + '/artifacts/loss-wait.svg"' in page
        assert "notes.exe" not in page
        assert ">learning rate</text>" in page and ">training step</text>" in page
        ticks = re.findall(r'class="x-tick"[^>]*>(\d+)</text>', page)
        assert ticks and len(ticks) == len(set(ticks))
        svg = web.get(f"/runs/{run_id}/artifacts/loss-wait.svg")
        assert svg.status_code == 200 and svg.headers["content-type"] == "image/svg+xml"
        for name in ("notes.exe", "..%2Fstate.db", "%2Fetc%2Fpasswd", "missing.svg"):
            assert web.get(f"/runs/{run_id}/artifacts/{name}").status_code == 404, name


def test_batches_are_listed_with_counts_and_laid_out_by_their_axes(
        cli: CLI, tmp_path: Path) -> None:
    """/batches (in the navigation) counts each batch's cells by status; a batch of one axis
    is a list, of two a grid, of three a table with a column per axis."""
    shapes = {"one": "{lr: [1, 2]}", "two": "{model: [a, b], lr: [1, 2]}",
              "three": "{model: [a], lr: [1, 2], seed: [7]}"}
    for name, matrix in shapes.items():
        write(tmp_path / f"{name}.yaml", f"""\
            name: {name}
            matrix: {matrix}
            steps:
              fit: {{uses: core/echo, with: {{eval_loss: "${{{{ matrix.lr }}}}"}}}}
        """)
        cli("run", f"{name}.yaml", check_code=0)
    url = f"sqlite:///{tmp_path / '.orchestrator' / 'state.db'}"
    with anyio.from_thread.start_blocking_portal() as portal, \
            portal.wrap_async_context_manager(open_store(url)) as store:
        web = _web(portal, store)
        listed = web.get("/api/batches").json()
        assert [b["pipeline"] for b in listed] == ["three", "two", "one"]
        assert [b["counts"] for b in listed] == [{"succeeded": 2}, {"succeeded": 4},
                                                 {"succeeded": 2}]
        index = web.get("/batches").text
        assert '<a href="/batches">Batches</a>' in index and index.count("data-batch=") == 3
        ids = {b["pipeline"]: b["id"] for b in listed}
        one = web.get(f"/batches/{ids['one']}").text
        assert "matrix-list" in one and one.count('class="cell status-succeeded') == 2
        assert "matrix-grid" in web.get(f"/batches/{ids['two']}").text
        three = web.get(f"/batches/{ids['three']}").text
        assert "matrix-table" in three
        assert re.findall(r"<th>(\w+)</th>", three)[:3] == ["model", "lr", "seed"]
        assert three.count('class="cell status-succeeded best"') == 1


def test_schedules_fire_now_and_pause_from_the_page(cli: CLI, tmp_path: Path) -> None:
    """With actions on: next fire time in the schedule's own zone; Run now queues a run of
    it at once; Pause keeps it from firing (shown paused, no next fire), Resume from now."""
    from orchestrator.engine.orchestrator import Orchestrator
    from orchestrator.schedule.actions import StoreActions
    from orchestrator.schedule.scheduler import load_scheduled

    write(tmp_path / "nightly.yaml", """\
        name: nightly
        schedule: {cron: "0 2 * * *", timezone: Europe/Paris}
        steps:
          a: {uses: core/echo}
    """)
    scheduled = load_scheduled([tmp_path / "nightly.yaml"])
    cli("runs", check_code=0)
    url = f"sqlite:///{tmp_path / '.orchestrator' / 'state.db'}"

    async def recorded(store: Any) -> None:
        from orchestrator.store.records import ScheduleEntry

        await store.sync_schedule(ScheduleEntry("nightly", "nightly", "/n.yaml", "0 2 * * *",
                                                "Europe/Paris"))

    with anyio.from_thread.start_blocking_portal() as portal, \
            portal.wrap_async_context_manager(open_store(url)) as store:
        portal.call(recorded, store)
        web = _web(portal, store, scheduled=scheduled,
                   actions=StoreActions(store, Orchestrator(store), scheduled=scheduled))
        page = web.get("/schedules").text
        assert re.search(r'class="next">\d{4}-\d\d-\d\d 02:00 CES?T<', page), page
        csrf = re.search(r'name="csrf" value="([^"]+)"', page)
        assert csrf and 'data-confirm="Pause nightly?' in page
        fired = web.post("/schedules/nightly/run", data={"csrf": csrf.group(1)})
        assert fired.status_code == 303 and fired.headers["location"].startswith("/runs/r-")
        queued = web.get("/api/runs").json()
        assert [(r["status"], r["schedule_id"]) for r in queued] == [("queued", "nightly")]
        assert web.post("/schedules/nightly/pause", data={"csrf": csrf.group(1)}
                        ).status_code == 303
        shown = web.get("/api/schedules").json()[0]
        assert shown["paused_at"] is not None and shown["next_fire"] is None
        assert "paused" in web.get("/schedules").text
        web.post("/schedules/nightly/resume", data={"csrf": csrf.group(1)})
        assert web.get("/api/schedules").json()[0]["paused_at"] is None
        assert web.post("/schedules/weekly/run", data={"csrf": csrf.group(1)}
                        ).status_code == 403
    listed = cli("schedules", "nightly.yaml", check_code=0).stdout
    assert "CET" in listed or "CEST" in listed


def test_a_batch_pages_curves_overlay_each_cell_and_mark_the_winner() -> None:
    from orchestrator.store.records import MetricPoint
    from orchestrator.views.charts import cells_svg

    curves = {f"b-1.{n}": [MetricPoint("wait", "ft", s, train_loss=(n + 1) / s)
                           for s in range(1, 6)] for n in range(3)}
    curves["b-1.3"] = []  # a cell that never trained draws nothing
    svg = cells_svg(curves, winner="b-1.1")
    lines = re.findall(r'<polyline class="cell-curve( winner)?" data-run="([\w.-]+)"[^>]*'
                       r'stroke-width="([\d.]+)"', svg)
    assert lines == [("", "b-1.0", "1.2"), (" winner", "b-1.1", "3"), ("", "b-1.2", "1.2")]
    assert "training step" in svg and "train loss" in svg
