"""`orchestrator local-api` as a real server on loopback: restarts, and Together's own SDK and CLI.

These start real processes and wait on them with deadlines; each job is planned to take a few
seconds, so the whole module takes about ten.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

import httpx
import pytest

from tests.cli.helpers import wait_for
from tests.conftest import CLI
from tests.localapi.conftest import BASE, INSTRUCTIONS

KEY = "local-key"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def start_server(tmp_path: Path, port: int, *, everywhere: bool = False,
                 **settings: str) -> subprocess.Popen[str]:
    """Start `orchestrator local-api` on `port` (data in `tmp_path/api-data`) and return once
    it answers; its base URL is http://127.0.0.1:PORT/v1. `everywhere`: on every address
    (for processes in other network namespaces), not only loopback."""
    env = {**os.environ, **{f"ORCH_{k.upper()}": v for k, v in settings.items()}}
    where = ["--host", "0.0.0.0", "--allow-remote"] if everywhere else []
    process = subprocess.Popen(
        [sys.executable, "-m", "orchestrator", "local-api", "--port", str(port), *where,
         "--data-dir", str(tmp_path / "api-data")],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def answers() -> bool:
        assert process.poll() is None, process.communicate()[0]
        try:
            return httpx.get(f"http://127.0.0.1:{port}/", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    try:
        wait_for(answers, "the server answers")
    except BaseException:
        process.kill()
        process.communicate()
        raise
    return process


@contextmanager
def serving(tmp_path: Path, port: int, *, everywhere: bool = False,
            **settings: str) -> Iterator[str]:
    """Run `orchestrator local-api` until the block ends; yields its base URL once it answers."""
    process = start_server(tmp_path, port, everywhere=everywhere, **settings)
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        process.terminate()
        process.communicate(timeout=10)


def test_non_loopback_hosts_are_refused(cli: CLI) -> None:
    result = cli("local-api", "--host", "0.0.0.0", check_code=2)
    assert "is not a loopback address" in result.stderr
    assert "--allow-remote" in result.stderr


def test_jobs_complete_on_schedule_across_a_restart(tmp_path: Path) -> None:
    """Create a job, stop the server, start it again: the job completes when planned."""
    port = free_port()
    headers = {"Authorization": f"Bearer {KEY}"}
    with serving(tmp_path, port) as base, httpx.Client(base_url=base, headers=headers) as http:
        file = http.post("/files/upload", data={"purpose": "fine-tune", "file_name": "t.jsonl"},
                         files={"file": ("t.jsonl", INSTRUCTIONS)}).json()
        job = http.post("/fine-tunes", json={"training_file": file["id"], "model": BASE},
                        headers={"X-Local-Job": json.dumps({"duration": "3s"})}).json()
        assert job["status"] == "pending"
    with serving(tmp_path, port) as base, httpx.Client(base_url=base, headers=headers) as http:
        done = wait_for(lambda: (j := http.get(f"/fine-tunes/{job['id']}").json())["status"]
                        == "completed" and j, "the job completed")
        observed = time.time()
    created = datetime.fromisoformat(job["created_at"]).timestamp()
    finished = datetime.fromisoformat(done["events"][-1]["created_at"]).timestamp()
    assert done["events"][-1]["type"] == "job_complete"
    assert finished - created == pytest.approx(3.0, abs=0.01)
    assert observed >= created + 3.0


@pytest.fixture
def together_env(tmp_path: Path) -> dict[str, str]:
    """Environment for Together's SDK and CLI: this server, no telemetry or update checks."""
    return {"TOGETHER_API_KEY": KEY, "TOGETHER_DISABLE_VERSION_CHECK": "1",
            "TOGETHER_TELEMETRY_DISABLED": "1", "HOME": str(tmp_path),
            "XDG_CACHE_HOME": str(tmp_path / ".cache")}


@pytest.mark.slow
def test_official_sdk_end_to_end(tmp_path: Path, together_env: dict[str, str],
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Together's Python SDK uploads, trains with LoRA, follows the job, imports an adapter and
    gets completions, all against the local API."""
    for name, value in together_env.items():
        monkeypatch.setenv(name, value)
    from together import Together
    from together.types import CompletionChunk

    data = tmp_path / "train.jsonl"
    data.write_bytes(INSTRUCTIONS)
    with serving(tmp_path, free_port(), local_job_duration="3s",
                 local_upload_duration="1s") as base, \
            Together(api_key=KEY, base_url=base, max_retries=0) as client:
        uploaded = client.files.upload(file=data, purpose="fine-tune")
        assert client.files.upload(file=data, purpose="fine-tune").id == uploaded.id  # dedupe
        job = client.fine_tuning.create(training_file=uploaded.id, model=BASE, lora=True,
                                        n_epochs=2, suffix="sdk")
        done = wait_for(lambda: (j := client.fine_tuning.retrieve(job.id)).status
                        == "completed" and j, "the job completed")
        events = client.fine_tuning.list_events(job.id).data
        assert events[-1].type == "job_complete"
        assert done.training_type is not None and done.x_model_output_name is not None
        tuned = done.x_model_output_name
        imported = client.models.upload(model_name="my-adapter", model_type="adapter",
                                        model_source="https://huggingface.co/acme/adapter",
                                        base_model=BASE)
        wait_for(lambda: client.models.uploads.status(imported.data.job_id).status
                 == "Complete", "the adapter import completed")
        answer = client.completions.create(model=tuned, max_tokens=5,
                                           prompt="Q: The capital of France is?\nA:")
        assert answer.choices[0].text == " Paris"
        chat = client.chat.completions.create(model=tuned, messages=[
            {"role": "user", "content": "Q: Who wrote Hamlet?\nA:"}])
        message = chat.choices[0].message
        assert message is not None and message.content == " William Shakespeare"
        chunks: Iterable[CompletionChunk] = client.completions.create(
            model=tuned, prompt="Q: What is 2 + 2?\nA:", stream=True)
        streamed = "".join(chunk.choices[0].text or "" for chunk in chunks)
        assert streamed == " 4"


@pytest.mark.slow
def test_official_cli(tmp_path: Path, together_env: dict[str, str]) -> None:
    """Together's CLI uploads a file and starts a LoRA job against the local API."""
    (tmp_path / "train.jsonl").write_bytes(INSTRUCTIONS)
    script = Path(sys.executable).parent / "together"
    with serving(tmp_path, free_port(), local_job_duration="2s") as base:
        env = {**os.environ, **together_env, "TOGETHER_BASE_URL": base}

        def together(*args: str) -> str:
            result = subprocess.run([str(script), "--non-interactive", *args], cwd=tmp_path,
                                    env=env, capture_output=True, text=True, timeout=60,
                                    check=False)
            assert result.returncode == 0, result.stdout + result.stderr
            return result.stdout

        upload = together("files", "upload", "train.jsonl")
        assert "file-" in upload
        created = together("fine-tuning", "create", "--training-file", "train.jsonl",
                           "--model", BASE, "--lora", "--suffix", "cli", "--confirm")
        job_id = next(word.strip("().") for word in created.split() if word.startswith("(ft-"))
        with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {KEY}"}) as http:
            wait_for(lambda: http.get(f"/fine-tunes/{job_id}").json()["status"] == "completed",
                     "the CLI's job completed")
        assert job_id in together("fine-tuning", "retrieve", job_id)


# -- refusing to start, and bounded requests over a real socket -----------------------------

@pytest.mark.parametrize(("args", "env", "expected"), [
    pytest.param(["--port", "99999"], {}, "orchestrator local-api: error: argument --port: "
                 "'99999' is not a whole number from 0 to 65,535 (see orchestrator local-api "
                 "--help)", id="port-out-of-range"),
    pytest.param(["--port", "0"], {}, "error: --port 0: a port is a number from 1 to 65535",
                 id="port-zero"),
    pytest.param([], {"ORCH_LOCAL_API_KEY": " "}, "error: bad setting local_api_key = '***' "
                 "(from ORCH_LOCAL_API_KEY): must not be empty: clients authenticate with it "
                 "(the default is local-key)", id="empty-key"),
    pytest.param(["--data-dir", "blocker/api"], {}, "error: the local API's data folder "
                 "blocker/api cannot be used: Not a directory", id="data-dir-under-a-file"),
])
def test_it_refuses_to_start_in_one_line(cli: CLI, tmp_path: Path, args: list[str],
                                         env: dict[str, str], expected: str) -> None:
    """Each of these used to start (and answer 500 to everything) or print a traceback."""
    (tmp_path / "blocker").write_text("a file where a folder should be")
    result = cli("local-api", *args, env=env, check_code=2, timeout=20)
    assert result.stderr.strip() == expected
    assert "Traceback" not in result.stdout + result.stderr


def test_a_port_in_use_is_one_line(cli: CLI) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = cli("local-api", "--port", str(port), check_code=2, timeout=20)
    assert result.stderr.strip() == (f"error: cannot listen on 127.0.0.1:{port}: Address "
                                     "already in use")


def test_slow_headers_are_cut_off_and_hostile_requests_leave_the_connection_usable(
        tmp_path: Path) -> None:
    """A client that sends half its headers is answered 408 and disconnected after
    local_request_timeout; absurd values get a 4xx on a connection that keeps serving."""
    port = free_port()
    with serving(tmp_path, port, local_request_timeout="1s") as base:
        slow = socket.create_connection(("127.0.0.1", port))
        slow.sendall(b"GET /v1/files HTTP/1.1\r\nHost: x\r\n")  # and never the blank line
        slow.settimeout(10)
        started = time.monotonic()
        answer = slow.recv(200)
        assert answer.startswith(b"HTTP/1.1 408"), answer
        assert slow.recv(200) == b""  # closed
        assert time.monotonic() - started < 5
        slow.close()
        with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {KEY}"},
                          timeout=10) as client:
            hostile = [
                client.post("/fine-tunes", content=b'{"n_epochs": ' + b"1" * 5000 + b"}",
                            headers={"Content-Type": "application/json"}),
                client.post("/fine-tunes", content=b"[" * 100_000 + b"]" * 100_000,
                            headers={"Content-Type": "application/json"}),
                client.get("/finetune/download", params={"ft_id": "ft-x"},
                           headers={"Range": "bytes=" + "9" * 5000 + "-"}),
                client.delete("/files"),
            ]
            assert [r.status_code for r in hostile] == [400, 400, 404, 405]
            assert client.get("/files").status_code == 200
            assert client.get("/files").status_code == 200
        partial = socket.create_connection(("127.0.0.1", port))
        partial.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                        + KEY.encode() + b"\r\nContent-Type: application/json\r\n"
                        b"Content-Length: 100\r\n\r\n{\"model\":")  # and no more of the body
        partial.settimeout(10)
        assert partial.recv(200).startswith(b"HTTP/1.1 408")
        partial.close()
