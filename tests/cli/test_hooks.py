"""on_success / on_failure hooks, and core/http against a real HTTP server on loopback."""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.cli.helpers import run_id_from
from tests.conftest import CLI, write


class Receiver:
    """A webhook receiver: answers each request with the next scripted status (then 200),
    and keeps what it was sent."""

    def __init__(self) -> None:
        self.statuses: list[int] = []
        self.received: list[dict[str, object]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                receiver.received.append({"path": self.path, "headers": dict(self.headers),
                                          "json": json.loads(body or b"null")})
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                self.send_response(status)
                if status == 429:
                    self.send_header("Retry-After", "0")
                self.end_headers()
                self.wfile.write(b'{"ok": true}' if status == 200 else b"nope")

            def log_message(self, *args: object) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    found = Receiver()
    thread = threading.Thread(target=found.server.serve_forever, daemon=True)
    thread.start()
    yield found
    found.server.shutdown()
    found.server.server_close()


def _hooked(tmp_path: Path, url: str, *, fail_times: int | None) -> None:
    times = "" if fail_times is None else f", times: {fail_times}"
    write(tmp_path / "hooked.yaml", f"""\
        name: hooked
        steps:
          work:
            uses: core/fail
            with: {{transient: false{times}}}
            retry: null
        on_failure:
          notify:
            uses: core/http
            with:
              url: "{url}/hooks/${{{{ secrets.HOOK_TOKEN }}}}"
              headers: {{Authorization: "Bearer ${{{{ secrets.HOOK_TOKEN }}}}"}}
              json:
                text: "${{{{ run.name }}}} ${{{{ run.id }}}} ${{{{ run.status }}}}"
                error: "${{{{ run.error }}}}"
                step: "${{{{ run.failed_step }}}}"
            retry: {{max_attempts: 3, initial_delay: 10ms}}
        on_success:
          done:
            uses: core/echo
            with: {{said: "${{{{ run.status }}}}", work: "${{{{ steps.work.outputs.failures }}}}"}}
    """)


SECRET = {"HOOK_TOKEN": "tok-3a9f-secret"}


def test_a_failure_hook_posts_once_with_retries_and_keeps_no_secret(
        cli: CLI, tmp_path: Path, receiver: Receiver) -> None:
    """The run fails; its on_failure hook posts the outcome, retried through a 503 and a
    429; the run is still failed (exit 1); the token is in the request, never in the store
    or the output; on_success did not run."""
    _hooked(tmp_path, receiver.url, fail_times=1)
    receiver.statuses = [503, 429]
    result = cli("run", "hooked.yaml", env=SECRET, check_code=1)
    run_id = run_id_from(result.stderr)
    assert len(receiver.received) == 3
    sent = receiver.received[-1]
    assert sent["path"] == "/hooks/tok-3a9f-secret"
    headers = sent["headers"]
    assert isinstance(headers, dict)
    assert headers["Authorization"] == "Bearer tok-3a9f-secret"
    assert headers["Idempotency-Key"] == f"{run_id}:on_failure.notify"
    assert sent["json"] == {"text": f"hooked {run_id} failed",
                            "error": "step work failed: PermanentError: planned failure "
                                     "(core/fail) (1 of 1)", "step": "work"}
    shown = json.loads(cli("show", run_id, "-o", "json", check_code=0).stdout)
    statuses = {s["id"]: (s["status"], s["attempts"]) for s in shown["steps"]}
    assert statuses == {"work": ("failed", 1), "on_failure.notify": ("succeeded", 3)}
    assert shown["run"]["status"] == "failed"
    db = (tmp_path / ".orchestrator" / "state.db").read_bytes()
    assert b"tok-3a9f-secret" not in db
    assert "tok-3a9f-secret" not in result.stdout + result.stderr

    # Resumed, the run succeeds: on_success runs; the failure notice is not sent again.
    cli("resume", run_id, env=SECRET, check_code=0)
    assert len(receiver.received) == 3
    shown = json.loads(cli("show", run_id, "-o", "json", check_code=0).stdout)
    done = next(s for s in shown["steps"] if s["id"] == "on_success.done")
    assert done["outputs"] == {"said": "succeeded", "work": 1}


def test_a_failing_hook_does_not_change_the_outcome_and_resume_retries_it(
        cli: CLI, tmp_path: Path, receiver: Receiver) -> None:
    """A hook refused with 400 fails at once (no retries): the run keeps its own outcome
    and says so. An on_success hook that failed makes a succeeded run resumable: resume
    runs that hook alone."""
    write(tmp_path / "ok.yaml", f"""\
        name: ok
        steps:
          work: {{uses: core/echo, with: {{x: 1}}}}
        on_success:
          tell:
            uses: core/http
            with: {{url: "{receiver.url}/done", json: {{x: "${{{{ steps.work.outputs.x }}}}"}}}}
    """)
    receiver.statuses = [400]
    result = cli("run", "ok.yaml", check_code=0)
    run_id = run_id_from(result.stderr)
    assert "warning: hook on_success.tell failed" in result.stderr
    assert len(receiver.received) == 1
    plan = cli("resume", run_id, check_code=0)
    assert "nothing to resume" not in plan.stderr
    assert len(receiver.received) == 2 and receiver.received[-1]["json"] == {"x": 1}
    again = cli("resume", run_id, check_code=0)
    assert "nothing to resume" in again.stderr and len(receiver.received) == 2
    conn = sqlite3.connect(tmp_path / ".orchestrator" / "state.db")
    kinds = [k for (k,) in conn.execute(
        "SELECT kind FROM events WHERE step_id = 'work' ORDER BY seq")]
    conn.close()
    assert kinds.count("step_succeeded") == 1  # the step itself ran once


@pytest.mark.parametrize(("text", "message"), [
    ("on_failure:\n  n:\n    uses: core/echo\n    needs: [a]\n",
     "on_failure.n.needs: hooks run in the order they are written"),
    ("on_success: [1]\n", "on_success: expected a mapping of steps"),
    ("on_failure:\n  n:\n    uses: core/nope\n", "on_failure.n.uses: unknown step type"),
    ("on_failure:\n  n:\n    uses: core/http\n    with: {url: 'ftp://x'}\n",
     "on_failure.n.with.url"),
    ("on_failure:\n  n:\n    uses: core/echo\n    with: {x: '${{ steps.b.outputs.y }}'}\n",
     "unknown step 'b'"),
])
def test_bad_hooks_are_refused_with_their_line(cli: CLI, tmp_path: Path, text: str,
                                               message: str) -> None:
    write(tmp_path / "p.yaml", "name: p\nsteps:\n  a: {uses: core/echo}\n" + text)
    result = cli("validate", "p.yaml", check_code=2)
    assert message in result.stderr, result.stderr
    assert result.stderr.startswith("p.yaml:") and "Traceback" not in result.stderr


def test_only_hooks_read_the_outcome(cli: CLI, tmp_path: Path) -> None:
    write(tmp_path / "p.yaml", """\
        name: p
        steps:
          a: {uses: core/echo, with: {s: "${{ run.status }}"}}
    """)
    result = cli("validate", "p.yaml", check_code=2)
    assert "run has only run.id, run.name (hooks also read run.status" in result.stderr
