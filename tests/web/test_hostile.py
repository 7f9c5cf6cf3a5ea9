"""The web view against what people and programs throw at it: odd stored content, odd query
values, foreign Host headers, and heavy pages while the same process executes runs."""

from __future__ import annotations

import json
import sqlite3
import statistics
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import anyio
import anyio.from_thread
import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator.store.opening import open_store
from orchestrator.store.records import text_hash
from orchestrator.web.app import EVENTS_SHOWN, STEPS_SHOWN, create_app
from orchestrator.web.gates import SECURITY_HEADERS, allowed_hosts
from tests.cli.helpers import popen, run_id_from, start_service, wait_for
from tests.conftest import CLI, write
from tests.localapi.test_server import free_port
from tests.web.test_app import Web

ODD_STEPS = '''\
import math

async def logs(ctx):
    ctx.log.info("a line without fields")
    ctx.log.info("unicode \\u2603 \\U0001F600, a NUL \\x00, <b>markup</b>", odd="\\x00\\u2028")
    ctx.log.warning("")
    ctx.log.info("nested", deep={"a": [1, {"b": None}]}, number=math.inf)
    return {"text": "\\x00" * 5 + "Paris" * 50_000, "latency": "slow", "model_name": 12345,
            "eval_loss": math.nan, "train_loss": "low", "nothing": None}

async def huge(ctx):
    return {"blob": "x" * 3_000_000, "list": list(range(10_000)), "nan": math.nan}
'''

ODD_PIPELINE = '''\
name: odd
matrix: {lr: [1, "two"]}
steps:
  logs: {uses: "python: oddsteps:logs"}
  huge: {uses: "python: oddsteps:huge", needs: [logs]}
  fit: {uses: core/echo, with: {eval_loss: "${{ matrix.lr }}", model_name: null}}
  broken:
    uses: core/fail
    with: {transient: false, message: "\\u00e9\\u00e8 <i>x</i>"}
    needs: [fit]
'''


def _state(tmp_path: Path) -> Path:
    return tmp_path / ".orchestrator" / "state.db"


def odd_history(cli: CLI, tmp_path: Path) -> dict[str, list[str]]:
    """A state file holding runs of odd content (see ODD_STEPS), a batch of them, and rows
    only an older or hand-edited database holds (events whose data is not what the engine
    writes, times out of any calendar); the ids of each kind of thing in it."""
    write(tmp_path / "oddsteps.py", ODD_STEPS)
    write(tmp_path / "odd.yaml", ODD_PIPELINE)
    cli("run", "odd.yaml", check_code=1)
    batch = json.loads(cli("batches", "-o", "json", check_code=0).stdout)[0]["id"]
    runs = [r["id"] for r in json.loads(cli("runs", "-o", "json", check_code=0).stdout)]
    write(tmp_path / "empty.yaml", "name: empty\nsteps:\n  a: {uses: core/echo}\n")
    runs.append(run_id_from(cli("run", "empty.yaml", check_code=0).stderr))
    conn = sqlite3.connect(_state(tmp_path))
    with conn:
        target = runs[-1]
        conn.execute("DELETE FROM events WHERE run_id = ?", (target,))  # an empty log
        conn.executemany(
            "INSERT INTO events (run_id, seq, ts, kind, step_id, attempt, data) "
            "VALUES (?, (SELECT max(seq) + 1 FROM events), ?, ?, ?, ?, ?)",
            [(runs[0], 1e30, "log", "logs", 1, '{"fields": [1, 2]}'),
             (runs[0], -5.0, "log", None, None, '{"level": null, "message": {"x": 1}}'),
             (runs[0], time.time(), "weird", "x" * 300, 10**12, "[1, 2, 3]"),
             (runs[0], time.time(), "log", "logs", 1, '"just a string"')])
        conn.execute("UPDATE runs SET started_at = 1e30, finished_at = -1 WHERE id = ?",
                     (runs[1],))
        conn.execute("UPDATE steps SET started_at = 5, finished_at = 1e300 WHERE run_id = ?",
                     (runs[1],))
    conn.close()
    return {"runs": runs, "batches": [batch]}


def _routes(ids: dict[str, list[str]]) -> list[str]:
    paths = ["/", "/models", "/schedules", "/api/runs", "/api/models", "/api/schedules",
             "/?status=failed", "/?limit=500"]
    for run in ids["runs"]:
        paths += [f"/runs/{run}", f"/api/runs/{run}", f"/api/runs/{run}/metrics",
                  f"/api/runs/{run}/events", f"/api/runs/{run}/events?before=3",
                  f"/api/runs/{run}/stream", f"/runs/{run}?events_before=2&steps=1"]
    for batch in ids["batches"]:
        paths += [f"/batches/{batch}", f"/api/batches/{batch}"]
    return paths


@pytest.fixture
def odd(cli: CLI, tmp_path: Path) -> Iterator[tuple[Web, dict[str, list[str]]]]:
    ids = odd_history(cli, tmp_path)
    with anyio.from_thread.start_blocking_portal() as portal, \
            portal.wrap_async_context_manager(open_store(f"sqlite:///{_state(tmp_path)}")
                                              ) as store:
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(store)),
                                   base_url="http://ui")
        try:
            yield Web(portal, client), ids
        finally:
            portal.call(client.aclose)


def _secured(response: httpx.Response) -> bool:
    return all(response.headers.get(name.decode()) == value.decode()
               for name, value in SECURITY_HEADERS)


def test_every_page_answers_for_runs_of_odd_content(
        odd: tuple[Web, dict[str, list[str]]]) -> None:
    """A log line without fields made the run page a 500; so did a NaN loss, a time past
    the year 9999, an event whose data is a list. Every page and API route answers them, the
    JSON is valid for any reader (no NaN), and stored markup is text."""
    web, ids = odd
    def no_constants(constant: str) -> None:
        pytest.fail(f"a JSON answer holds {constant}")

    for path in _routes(ids):
        response = web.get(path)
        assert response.status_code < 500, (path, response.text[:300])
        assert _secured(response), path
        if "/api/" in path and "/stream" not in path:
            json.loads(response.text, parse_constant=no_constants)
    page = web.get(f"/runs/{ids['runs'][0]}").text
    assert "a line without fields" in page and "&lt;b&gt;markup&lt;/b&gt;" in page
    assert "(250,005 characters)" in page  # a huge answer is shown cut, whole in the API
    document = web.get(f"/api/runs/{ids['runs'][0]}").json()
    by_id = {s["id"]: s for s in document["steps"]}
    assert len(by_id["logs"]["outputs"]["text"]) == 250_005
    assert by_id["logs"]["outputs"]["eval_loss"] is None  # NaN, as JSON holds it
    assert len(by_id["huge"]["outputs"]["blob"]) == 3_000_000


def test_a_query_value_is_a_400_never_a_500(odd: tuple[Web, dict[str, list[str]]]) -> None:
    """`?after=` with 25 digits was a 500 (SQLite's integers end at 2^63); so is every
    value that cannot be used: too large, negative, not a number, control characters."""
    web, ids = odd
    run = ids["runs"][0]
    cases = [(f"/api/runs/{run}/events", {"after": "9" * 25}),
             (f"/api/runs/{run}/events", {"after": "-1"}),
             (f"/api/runs/{run}/events", {"before": "1e3"}),
             (f"/api/runs/{run}/stream", {"after": "x"}),
             (f"/runs/{run}", {"steps": "9" * 40}),
             ("/", {"before": "inf"}), ("/", {"before": "nan"}), ("/", {"before": "1e400"}),
             ("/api/runs", {"limit": "9" * 30}), ("/api/runs", {"pipeline": "a\x00b"}),
             ("/api/runs", {"batch": "x" * 5000}), ("/api/runs", {"status": "\x00"})]
    for path, params in cases:
        response = web.get(path, params=params)
        assert response.status_code == 400, (path, params, response.text)
        assert "must be" in response.text or "not a run status" in response.text
    assert web.get("/runs/a%00b").status_code == 404
    assert web.get(f"/runs/{'x' * 5000}").status_code == 404


_PATHS = ["/", "/api/runs", "/runs/{run}", "/api/runs/{run}/events", "/batches/{batch}",
          "/api/batches/{batch}", "/api/runs/{run}/metrics"]
_KEYS = ["after", "before", "limit", "status", "pipeline", "batch", "steps", "events_before",
         "token"]


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(path=st.sampled_from(_PATHS), params=st.dictionaries(
    st.sampled_from(_KEYS), st.one_of(st.text(max_size=30), st.integers().map(str),
                                      st.floats().map(str)), max_size=4),
       odd_id=st.text(max_size=20))
def test_no_query_value_or_id_makes_a_5xx(odd: tuple[Web, dict[str, list[str]]],
                                          path: str, params: dict[str, str],
                                          odd_id: str) -> None:
    """Any value of any query parameter, on any route, with a real id or any text as one."""
    web, ids = odd
    run = odd_id if len(params) % 2 else ids["runs"][0]
    url = path.format(run=quote(run, safe="") or "x", batch=ids["batches"][0])
    response = web.get(url, params=params)
    assert response.status_code < 500, (url, params, response.text[:300])


def test_an_unforeseen_failure_is_a_500_page_with_every_security_header(
        cli: CLI, tmp_path: Path) -> None:
    """Through real HTTP to `orchestrator ui`: a row only a hand-edited database holds (a
    step status no version wrote) is a page that says so in one line, with the headers every
    other answer carries (the 500 carried none of them)."""
    write(tmp_path / "ok.yaml", "name: ok\nsteps:\n  a: {uses: core/echo}\n")
    run_id = run_id_from(cli("run", "ok.yaml", check_code=0).stderr)
    conn = sqlite3.connect(_state(tmp_path))
    with conn:
        conn.execute("UPDATE steps SET status = 'pwned'")
    conn.close()
    port = free_port()
    server = popen(tmp_path, "ui", "--port", str(port))
    try:
        base = f"http://127.0.0.1:{port}"
        wait_for(lambda: _answers(f"{base}/"), "the web view answers", timeout=30)
        for path in (f"/runs/{run_id}", f"/api/runs/{run_id}"):
            broken = httpx.get(base + path, timeout=10)
            assert broken.status_code == 500 and _secured(broken), broken.text
            assert "could not be made (ValueError)" in broken.text
            assert "Traceback" not in broken.text
    finally:
        server.terminate()
        server.communicate(timeout=10)


def _answers(url: str, **headers: str) -> httpx.Response | None:
    try:
        return httpx.get(url, timeout=2, headers=headers)
    except httpx.TransportError:
        return None


def test_allowed_hosts_are_the_servers_own_names() -> None:
    """Loopback: its address and localhost, with its port; a listed name with the port or
    bare (as a proxy sends it); port 80 also bare."""
    assert allowed_hosts("127.0.0.1", 8766) == {"127.0.0.1:8766", "localhost:8766",
                                                "[::1]:8766"}
    assert "[::1]:9" in allowed_hosts("::1", 9)
    listed = allowed_hosts("0.0.0.0", 8766, ["UI.example.com", "proxy.example:443"])
    assert listed == {"0.0.0.0:8766", "ui.example.com", "ui.example.com:8766",
                      "proxy.example:443"}
    assert "localhost" in allowed_hosts("localhost", 80)


def test_a_foreign_host_is_refused_before_any_route(cli: CLI, tmp_path: Path) -> None:
    """DNS rebinding: the server answered any Host. Through real HTTP to `orchestrator ui
    --allow-actions`: its own names are served, another name is a 421 (with the security
    headers) for pages, the API and actions alike, and no action is taken."""
    write(tmp_path / "ok.yaml", "name: ok\nsteps:\n  a: {uses: core/sleep, with: {duration: 1h}}\n")
    queued = cli("run", "ok.yaml", "--detach", check_code=0).stdout.strip()
    port = free_port()
    server = popen(tmp_path, "ui", "--port", str(port), "--allow-actions")
    try:
        base = f"http://127.0.0.1:{port}"
        wait_for(lambda: _answers(f"{base}/"), "the web view answers", timeout=30)
        for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"LOCALHOST:{port}"):
            assert httpx.get(f"{base}/api/runs", headers={"host": host}).status_code == 200
        for host in ("evil.example", f"evil.example:{port}", f"127.0.0.1:{port + 1}",
                     "127.0.0.1", ""):
            for method, path in (("GET", "/"), ("GET", f"/api/runs/{queued}"),
                                 ("POST", f"/runs/{queued}/cancel")):
                refused = httpx.request(method, base + path, headers={"host": host},
                                        data={"csrf": "x"} if method == "POST" else None)
                assert refused.status_code == 421, (host, path, refused.text)
                assert _secured(refused) and "DNS rebinding" in refused.text
        assert not json.loads(cli("show", queued, "-o", "json", check_code=0).stdout)[
            "run"]["cancel_requested"]
    finally:
        server.terminate()
        server.communicate(timeout=10)


def test_off_loopback_the_listed_hosts_are_served(cli: CLI, tmp_path: Path) -> None:
    """--allow-remote on every address needs the names it is reached by (--allow-host);
    then those names are served (with the token), others refused."""
    token = "a-token-of-twenty-chars"
    refused = cli("ui", "--host", "0.0.0.0", "--allow-remote", env={"ORCH_UI_TOKEN": token},
                  check_code=2)
    assert "--allow-host" in refused.stderr and token not in refused.stderr
    port = free_port()
    server = popen(tmp_path, "ui", "--host", "0.0.0.0", "--port", str(port), "--allow-remote",
                   "--allow-host", "ui.example", env={"ORCH_UI_TOKEN": token})
    try:
        base = f"http://127.0.0.1:{port}"
        auth = {"authorization": f"Bearer {token}"}
        wait_for(lambda: _answers(f"{base}/api/runs", host="ui.example", **auth),
                 "the web view answers", timeout=30)
        assert httpx.get(f"{base}/api/runs", headers={"host": f"ui.example:{port}", **auth}
                         ).status_code == 200
        assert httpx.get(f"{base}/api/runs", headers={"host": f"127.0.0.1:{port}", **auth}
                         ).status_code == 421
    finally:
        server.terminate()
        server.communicate(timeout=10)


def seed_big_run(state: Path, steps: int = 10_000) -> str:
    """A finished run of a `steps`-step chain, with three events a step, written straight
    into a fresh state file (running it would take longer than the test)."""
    async def create() -> None:
        async with open_store(f"sqlite:///{state}"):
            pass

    anyio.run(create)
    ids = [f"s{i:05d}" for i in range(steps)]
    text = "name: chain\nsteps:\n" + "".join(
        f"  {sid}: {{uses: core/echo, with: {{i: {i}}}}}\n" for i, sid in enumerate(ids))
    conn = sqlite3.connect(state)
    with conn:
        key = text_hash(text)
        conn.execute("INSERT INTO pipeline_texts (hash, text, steps) VALUES (?, ?, ?)",
                     (key, text, json.dumps(ids)))
        conn.execute(
            "INSERT INTO runs (id, pipeline_name, pipeline_path, pipeline_text, pipeline_hash, "
            "inputs, status, created_at, started_at, finished_at, lease_generation) "
            "VALUES ('r-big', 'chain', '/chain.yaml', '', ?, '{}', 'succeeded', 1, 1, 60, 1)",
            (key,))
        conn.executemany(
            "INSERT INTO steps (run_id, step_id, status, attempt, outputs, started_at, "
            "finished_at) VALUES ('r-big', ?, 'succeeded', 1, ?, 1, 2)",
            [(sid, json.dumps({"i": i})) for i, sid in enumerate(ids)])
        conn.executemany(
            "INSERT INTO events (run_id, seq, ts, kind, step_id, attempt, data) "
            "VALUES ('r-big', ?, 1, ?, ?, 1, NULL)",
            [(3 * i + k + 1, kind, sid) for i, sid in enumerate(ids)
             for k, kind in enumerate(("step_started", "log", "step_succeeded"))])
        conn.execute("UPDATE event_seq SET last = ?", (3 * steps,))
    conn.close()
    return "r-big"


def test_a_big_runs_page_comes_in_pages(tmp_path: Path) -> None:
    """A 10,000-step run's page was 5.6 MB (every step, every event, a graph of 10,000
    boxes): now a page of its steps and of its newest events, with links to the others, and
    no graph."""
    state = _state(tmp_path)
    state.parent.mkdir(parents=True)
    run_id = seed_big_run(state)
    with anyio.from_thread.start_blocking_portal() as portal, \
            portal.wrap_async_context_manager(open_store(f"sqlite:///{state}")) as store:
        web = Web(portal, httpx.AsyncClient(transport=httpx.ASGITransport(
            app=create_app(store)), base_url="http://ui"))
        page = web.get(f"/runs/{run_id}").text
        assert page.count("<tr data-step=") == STEPS_SHOWN
        assert 'data-step="s00000"' in page and f'data-step="s{STEPS_SHOWN:05d}"' not in page
        assert "10000 steps: too many to draw" in page and '<svg' not in page.split("Loss")[0]
        assert f'href="?steps={STEPS_SHOWN}"' in page
        assert page.count("<tr><td>") == EVENTS_SHOWN and len(page) < 400_000
        second = web.get(f"/runs/{run_id}", params={"steps": STEPS_SHOWN}).text
        assert f'data-step="s{STEPS_SHOWN:05d}"' in second and 'data-step="s00000"' not in second
        older = web.get("/api/runs/r-big/events", params={"before": 101}).json()
        assert [e["seq"] for e in older] == list(range(1, 101))


@pytest.mark.slow
def test_pages_being_read_never_delay_the_steps_of_serve(cli: CLI, tmp_path: Path) -> None:
    """Under `serve` a 5 s sleep step took 10.7 s while five 10,000-step run pages rendered
    on the event loop that executes runs. The web view now reads and renders in a thread and
    an event loop of its own: a sleep step takes no more than 100 ms longer while pages load
    without pause than the same step with no page loading, a moment before. The machine's own
    delays, which a busy CI has, are in both; they come and go, so the comparison is made
    twice, quiet then busy, and the promise must hold in one round: a delay the pages cause
    is in every round."""
    state = _state(tmp_path)
    state.parent.mkdir(parents=True)
    big = seed_big_run(state)
    write(tmp_path / "nap.yaml", "name: nap\nsteps:\n  nap: {uses: core/sleep, "
                                 "with: {duration: 2s}}\n")
    port = free_port()
    service = start_service(tmp_path, "serve", "nap.yaml", "--ui-port", str(port))
    stop, loading = threading.Event(), threading.Event()
    timings: list[float] = []
    in_flight = [0]
    lock = threading.Lock()

    def nap() -> float:
        queued = cli("run", "nap.yaml", "--detach", check_code=0).stdout.strip()

        def slept() -> float | None:
            steps = json.loads(cli("show", queued, "-o", "json", check_code=0).stdout)["steps"]
            done = steps and steps[0]["status"] == "succeeded"
            return float(steps[0]["duration"]) if done else None

        return wait_for(slept, "the sleep step ended", timeout=60)

    def load_pages() -> None:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            while not stop.is_set():
                if not loading.wait(0.05):
                    continue
                with lock:
                    in_flight[0] += 1
                try:
                    started = time.perf_counter()
                    assert client.get(f"/runs/{big}").status_code == 200
                    timings.append(time.perf_counter() - started)
                finally:
                    with lock:
                        in_flight[0] -= 1

    readers = [threading.Thread(target=load_pages, daemon=True) for _ in range(5)]
    rounds: list[tuple[float, float, int]] = []
    try:
        for reader in readers:
            reader.start()
        for _ in range(2):
            quiet = nap()
            wanted = len(timings) + 5
            loading.set()

            def reading(wanted: int = wanted) -> bool:
                return len(timings) >= wanted

            wait_for(reading, "pages are being read", timeout=60)
            counted = len(timings)
            busy = nap()
            rounds.append((quiet, busy, len(timings) - counted))
            loading.clear()
            wait_for(lambda: in_flight[0] == 0, "the pages in flight are read", timeout=60)
    finally:
        stop.set()
        for reader in readers:
            reader.join(30)
        service.stop()
    assert all(during > 0 for _, _, during in rounds), "pages were loading while it slept"
    assert all(quiet >= 2.0 for quiet, _, _ in rounds), rounds
    assert min(busy - quiet for quiet, busy, _ in rounds) <= 0.1, (
        rounds, statistics.median(timings))
