"""Secrets never reach the state store, logs or CLI output, even when a step leaks them."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.cli.helpers import run_id_from
from tests.conftest import CLI, write

SECRET = "sk-test-4f9a1c2e7b"


def test_secret_is_used_but_never_written(cli: CLI, tmp_path: Path) -> None:
    """A step receives the secret; every place that stores or prints text has it masked."""
    write(tmp_path / "leaky_steps.py", """
        from orchestrator import TransientError

        async def leak(ctx, token: str) -> dict:
            ctx.log.info("calling the API", token=token)
            assert token.startswith("sk-")  # the real value arrived
            await ctx.checkpoint(token=token)
            if ctx.attempt == 1:
                raise TransientError(f"401 for key {token}")
            return {"echo": token, "length": len(token)}
    """)
    write(tmp_path / "leaky.yaml", """
        name: leaky
        steps:
          s:
            uses: python:leaky_steps:leak
            with: {token: "${{ secrets.DEMO_API_KEY }}"}
            retry: {initial_delay: 1ms}
    """)
    run = cli("run", "leaky.yaml", "--log-format", "json", env={"DEMO_API_KEY": SECRET},
              check_code=0)
    run_id = run_id_from(run.stderr)
    show = cli("show", run_id, "--outputs", check_code=0)
    logs = cli("logs", run_id, check_code=0)
    everything = run.stdout + run.stderr + show.stdout + logs.stdout
    assert SECRET not in everything
    assert "***" in show.stdout and "length: 18" in show.stdout
    assert '"token": "***"' in run.stderr
    state_bytes = b"".join(p.read_bytes() for p in (tmp_path / ".orchestrator").iterdir())
    assert SECRET.encode() not in state_bytes


def test_missing_secret_is_bad_input_before_the_run(cli: CLI, tmp_path: Path) -> None:
    write(tmp_path / "needs_secret.yaml", """
        name: needs-secret
        steps:
          s: {uses: core/echo, with: {key: "${{ secrets.NOT_SET_ANYWHERE }}"}}
    """)
    result = cli("run", "needs_secret.yaml", check_code=2)
    assert result.stderr.strip() == (
        "error: the pipeline uses secrets.NOT_SET_ANYWHERE but NOT_SET_ANYWHERE is not set; "
        "export NOT_SET_ANYWHERE=... or put it in .env")
    assert "no runs yet" in cli("runs", check_code=0).stdout


def test_secret_from_dotenv(cli: CLI, tmp_path: Path) -> None:
    (tmp_path / ".env").write_text(f"DEMO_API_KEY={SECRET}\n")
    write(tmp_path / "p.yaml", """
        name: p
        steps:
          s: {uses: core/echo, with: {n: 1, key: "${{ secrets.DEMO_API_KEY }}"}}
    """)
    result = cli("run", "p.yaml", check_code=0)
    assert "s.key: ***" in result.stdout


CANARY = "canary-7f3e9d2b1a\"ü"
"""A secret with a quote and a non-ASCII letter: masked however it is written (JSON too)."""
LEAKY_STEPS = """
    import anyio

    async def leak(ctx, token: str, fail: bool = True, pause: float = 0.0) -> dict:
        ctx.log.info("using the token", token=token)
        ctx.report({"status": f"working with {token}"})
        await ctx.checkpoint(token=token)
        await anyio.sleep(pause)
        if fail:
            raise RuntimeError(f"the API refused {token}")  # a traceback in the event log
        return {"echo": token}
"""
CANARY_PIPELINE = """
    name: canary
    inputs:
      fail: {type: boolean, default: true}
      pause: {type: number, default: 0}
    steps:
      leak:
        uses: python:leaky:leak
        with: {token: "${{ secrets.CANARY }}", fail: "${{ inputs.fail }}",
               pause: "${{ inputs.pause }}"}
        retry: null
"""
REMOTE_PIPELINE = """
    name: remote
    steps:
      upload: {uses: together/upload-file, with: {path: train.jsonl}}
      launch:
        uses: together/launch-fine-tune
        with: {training_file: "${{ steps.upload.outputs.file_id }}", model: BASE,
               wandb_api_key: "${{ secrets.CANARY }}"}
      register:
        uses: together/register-adapter
        with: {model_name: canary-adapter, source: "https://huggingface.co/acme/adapter",
               base_model: BASE, hf_token: "${{ secrets.CANARY }}", poll_interval: 100ms}
      record:
        uses: registry/record-model
        with: {model: "${{ steps.register.outputs.model_name }}",
               tags: {note: "${{ secrets.CANARY }}"}}
"""


def in_terminal(tmp_path: Path, *args: str, env: dict[str, str]) -> tuple[int, str]:
    """`orchestrator ARGS...` on a pseudo-terminal (live progress lines on); code and text."""
    import os
    import pty
    import subprocess
    import sys
    import threading

    main, child = pty.openpty()
    full = {k: v for k, v in os.environ.items() if not k.startswith("ORCH_")}
    process = subprocess.Popen([sys.executable, "-m", "orchestrator", *args], cwd=tmp_path,
                               env={**full, **env, "TERM": "xterm", "COLUMNS": "120"},
                               stdin=child, stdout=child, stderr=child)
    os.close(child)
    chunks: list[bytes] = []

    def read() -> None:
        while True:
            try:
                chunk = os.read(main, 4096)
            except OSError:  # the terminal closed with the process
                return
            if not chunk:
                return
            chunks.append(chunk)

    reader = threading.Thread(target=read)
    reader.start()
    code = process.wait(timeout=60)
    reader.join(timeout=10)
    os.close(main)
    return code, b"".join(chunks).decode(errors="replace")


@pytest.mark.slow
def test_a_canary_secret_reaches_no_terminal_and_no_file(cli_process: CLI,
                                                         tmp_path: Path) -> None:
    """Through every command that prints or stores (run and resume failure summaries, the
    live line, show, logs, runs, batches, a worker's log, cancel, the registry), in JSON and
    console formats, the secret appears in no output, no state file (WAL included) and no file
    of the local API."""
    from tests.cli.helpers import popen, wait_for_state
    from tests.localapi.conftest import BASE, INSTRUCTIONS

    write(tmp_path / "leaky.py", LEAKY_STEPS)
    write(tmp_path / "canary.yaml", CANARY_PIPELINE)
    write(tmp_path / "sweep.yaml", CANARY_PIPELINE + "    matrix: {i: [1, 2]}\n")
    write(tmp_path / "remote.yaml", REMOTE_PIPELINE.replace("BASE", BASE))
    (tmp_path / "train.jsonl").write_bytes(INSTRUCTIONS)
    (tmp_path / "quiet").mkdir()
    env = {"CANARY": CANARY, "ORCH_LOCAL_JOB_DURATION": "1s",
           "ORCH_LOCAL_UPLOAD_DURATION": "200ms"}
    seen: list[str] = []

    def run(*args: str, code: int) -> str:
        result = cli_process(*args, env=env, check_code=code)
        seen.extend([result.stdout, result.stderr])
        return result.stdout + result.stderr

    failed = run("run", "canary.yaml", code=1)
    run_id = run_id_from(failed)
    assert f"run {run_id} failed: step leak failed: RuntimeError: the API refused ***" in failed
    assert "the API refused ***" in run("resume", run_id, "--log-format", "console", code=1)
    assert "Traceback" in run("logs", run_id, code=0)
    for args in (("logs", run_id, "--json"), ("show", run_id, "--outputs"), ("runs",)):
        run(*args, code=0)
    batch = run("run", "sweep.yaml", "--log-format", "console", code=1)
    batch_id = batch.split("starting batch ", 1)[1].split()[0]
    run("show", batch_id, code=0)
    run("batches", code=0)
    run("resume", batch_id, code=1)
    run("cancel", run_id, code=0)
    run("run", "remote.yaml", code=0)
    run("models", code=0)
    detached = cli_process("run", "canary.yaml", "--detach", "-i", "fail=false", env=env,
                           check_code=0)
    seen.append(detached.stderr)
    queued = detached.stdout.strip()
    worker = popen(tmp_path, "serve", "quiet", "--log-format", "console", "--ui-port", "0",
                   env=env)
    wait_for_state(tmp_path, f"SELECT 1 FROM runs WHERE id = '{queued}' AND status = "
                             "'succeeded'", "the worker ran the queued run")
    worker.terminate()
    seen.extend(worker.communicate(timeout=30))
    code, live = in_terminal(tmp_path, "run", "canary.yaml", "-i", "fail=false", "-i",
                             "pause=0.5", env=env)
    assert code == 0 and "working with ***" in live, live
    seen.append(live)

    leaked = [text for text in seen if CANARY in text or CANARY[:-2] in text]
    assert not leaked, leaked[0]
    files = [p for p in (tmp_path / ".orchestrator").rglob("*") if p.is_file()]
    assert any(p.name == "state.db" for p in files)  # its WAL, if any is left, is checked too
    assert any(p.parent.name == "local-api" for p in files)
    for path in files:
        data = path.read_bytes()
        assert CANARY.encode() not in data and CANARY[:-2].encode() not in data, path
