"""The shipped fine-tuning pipelines, run by real `orchestrator` processes on the local API.

Jobs are planned to take a second, so each run takes a few.
"""

from __future__ import annotations

import re
import signal
import sqlite3
from pathlib import Path

import pytest

from tests.cli.helpers import run_id_from, state
from tests.conftest import CLI, REPO, write
from tests.localapi.test_server import KEY, free_port, serving

LORA = str(REPO / "pipelines" / "lora-finetune.yaml")
ADAPTER = str(REPO / "pipelines" / "custom-adapter.yaml")
FAST = {"ORCH_LOCAL_JOB_DURATION": "1s", "ORCH_LOCAL_UPLOAD_DURATION": "500ms"}
FAST_POLL = ("-i", "poll_interval=100ms")


def local_count(tmp_path: Path, table: str) -> int:
    """Rows in the local API's own state (files, finetunes or imports)."""
    conn = sqlite3.connect(tmp_path / ".orchestrator" / "local-api" / "local-api.db")
    try:
        where = " WHERE state IN ('uploaded', 'processed')" if table == "files" else ""
        return int(conn.execute(f"SELECT count(*) FROM {table}{where}").fetchone()[0])
    finally:
        conn.close()


def test_both_pipelines_succeed(cli: CLI, tmp_path: Path) -> None:
    """LoRA fine-tune end to end prints the model and the smoke answer; the adapter too."""
    lora = cli("run", LORA, *FAST_POLL, env=FAST, check_code=0)
    model = re.search(r"register\.model: (\S+)", lora.stdout)  # recorded after its smoke test
    assert model and model.group(1).startswith("local-user/Meta-Llama-3.1-8B-Instruct-"
                                                "Reference-capitals-")
    run_id = re.search(r"run (r-\S+) succeeded", lora.stdout)
    assert run_id
    answer = cli("logs", run_id.group(1), "--step", "smoke", check_code=0).stdout
    assert "smoke test answer" in answer and "text= Paris" in answer
    assert "provider: local" in lora.stderr
    registry = cli("models", check_code=0).stdout
    assert model.group(1) in registry
    adapter = cli("run", ADAPTER, env=FAST, check_code=0)
    assert "smoke.model: local-user/capitals-lora" in adapter.stdout
    assert (local_count(tmp_path, "files"), local_count(tmp_path, "finetunes"),
            local_count(tmp_path, "imports")) == (2, 1, 1)


def test_bad_training_data_fails_before_any_upload(cli: CLI, tmp_path: Path) -> None:
    (tmp_path / "bad.jsonl").write_text('{"prompt": "a", "completion": "b"}\n\n{"text": 1}\n')
    result = cli("run", LORA, "-i", "training_file=bad.jsonl", env=FAST, check_code=1)
    assert "step upload failed: PermanentError:" in result.stdout
    assert "bad.jsonl: 3 problems" in result.stdout
    assert "  line 2: blank line; every line must hold one JSON object" in result.stdout
    assert "  line 3: text must be a string" in result.stdout
    assert "Traceback" not in result.stderr
    assert not (tmp_path / ".orchestrator" / "local-api" / "files").exists() or \
        local_count(tmp_path, "files") == 0


def test_unknown_base_model_is_refused_and_not_retried(cli: CLI) -> None:
    result = cli("run", LORA, "-i", "base_model=acme/unknown-7b", env=FAST, check_code=1)
    assert "step launch failed" in result.stdout
    assert "'acme/unknown-7b' is not available for fine-tuning" in result.stdout
    show = cli("show", run_id_from(result.stderr), check_code=0).stdout
    assert re.search(r"launch\s+failed\s+1\s", show)  # a 4xx is not retried


@pytest.mark.slow
def test_a_failed_job_fails_the_run_and_the_hint_starts_it_again(cli: CLI,
                                                                 tmp_path: Path) -> None:
    """The run fails with the job's own message; the hint printed resumes from the launch (a
    plain resume would follow the dead job again), and doing what it says succeeds."""
    result = cli("run", LORA, *FAST_POLL, env={**FAST, "ORCH_LOCAL_JOB_OUTCOME": "error"},
                 check_code=1)
    assert re.search(r"step wait failed: JobEnded: fine-tuning job ft-\S+ ended error: "
                     r"Training failed \(error\)", result.stdout)
    run_id = run_id_from(result.stderr)
    hint = f"to start it again: orchestrator resume {run_id} --from launch"
    assert hint in result.stdout
    assert "fix the cause" not in result.stdout
    cli("resume", run_id, "--from", "launch", env=FAST, check_code=0)
    assert local_count(tmp_path, "finetunes") == 2


def test_a_failing_smoke_test_fails_the_run(cli: CLI, tmp_path: Path) -> None:
    text = Path(LORA).read_text().replace("expect: {contains: Paris}",
                                          "expect: {contains: Berlin}")
    (tmp_path / "lora.yaml").write_text(text.replace("default: data/",
                                                     f"default: {REPO}/pipelines/data/"))
    result = cli("run", "lora.yaml", *FAST_POLL, env=FAST, check_code=1)
    assert "the answer does not contain 'Berlin' (answer: ' Paris')" in result.stdout


@pytest.mark.parametrize(("pipeline", "fault", "table", "expected"), [
    pytest.param(LORA, "after_remote_create:upload", "files", 2, id="upload"),
    pytest.param(LORA, "after_upload_announced:upload", "files", 2, id="upload-announced"),
    pytest.param(LORA, "after_remote_create:launch", "finetunes", 1, id="launch"),
    pytest.param(ADAPTER, "after_remote_create:register", "imports", 1, id="register"),
])
@pytest.mark.slow
def test_killed_right_after_the_remote_create(cli: CLI, cli_process: CLI, tmp_path: Path, *,
                                              pipeline: str, fault: str, table: str,
                                              expected: int) -> None:
    """SIGKILL between the remote create and the local commit (or between announcing a file
    and sending its bytes), then resume: the provider holds exactly one of what the step
    creates (two files: training and validation data)."""
    crashed = cli_process("run", pipeline, *(FAST_POLL if pipeline == LORA else ()),
                          env={**FAST, "ORCH_FAULTS": fault})
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    if fault.startswith("after_remote_create"):
        assert local_count(tmp_path, table) >= 1  # the create did reach the provider
    cli("resume", run_id_from(crashed.stderr), env=FAST, check_code=0)
    assert local_count(tmp_path, table) == expected


@pytest.mark.slow
def test_the_v2_import_on_provider_together_is_killed_twice_and_makes_one_of_each(
        cli: CLI, cli_process: CLI, tmp_path: Path) -> None:
    """The adapter pipeline with `api: v2` against `orchestrator local-api` over loopback,
    SIGKILLed right after registering the model, then right after starting its remote upload:
    resumed, it adopts both (one model, one upload) and its smoke test gets an answer."""
    with serving(tmp_path, free_port(), local_upload_duration="500ms") as base:
        env = {"TOGETHER_API_KEY": KEY, "TOGETHER_BASE_URL": base}
        crash = {**env, "ORCH_FAULTS": "after_remote_create:register"}
        first = cli_process("run", ADAPTER, "-i", "api=v2", "--provider", "together", env=crash)
        assert first.returncode == -signal.SIGKILL, first.stderr
        run_id = run_id_from(first.stderr)
        second = cli_process("resume", run_id, env=crash)
        assert second.returncode == -signal.SIGKILL, second.stderr
        done = cli("resume", run_id, env=env, check_code=0)
    assert "smoke.model: local-user/capitals-lora" in done.stdout
    conn = sqlite3.connect(tmp_path / "api-data" / "local-api.db")
    try:
        counts = [conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
                  for t in ("project_models", "remote_uploads", "imports")]
    finally:
        conn.close()
    assert counts == [1, 1, 0]


@pytest.mark.slow
def test_both_pipelines_survive_a_fifth_of_requests_failing(cli: CLI, tmp_path: Path) -> None:
    """With 20% of requests answered 429/500/503 or dropped after being handled, both pipelines
    succeed and nothing is created twice."""
    faults = {**FAST, "ORCH_LOCAL_FAULTS": "429=0.05,500=0.05,503=0.05,drop=0.05",
              "ORCH_LOCAL_RETRY_AFTER": "50ms"}
    retried = 0
    for seed, pipeline in ((11, LORA), (12, ADAPTER)):
        env = {**faults, "ORCH_LOCAL_FAULT_SEED": str(seed)}
        run = cli("run", pipeline, *(FAST_POLL if pipeline == LORA else ()), "--log-level",
                  "debug", "--log-format", "json", env=env, check_code=0)
        retried += run.stderr.count('"retrying request"') + run.stderr.count("will retry")
    assert retried >= 5  # the faults were there, and were ridden out
    assert (local_count(tmp_path, "files"), local_count(tmp_path, "finetunes"),
            local_count(tmp_path, "imports")) == (2, 1, 1)


@pytest.mark.slow
def test_no_secret_reaches_the_state_logs_or_output(cli: CLI, tmp_path: Path) -> None:
    """Against a loopback server with provider together: the API key appears nowhere."""
    secret = "tg-live-9f8e7d6c5b4a3f2e1d0c"
    port = free_port()
    with serving(tmp_path, port, local_api_key=secret, local_job_duration="1s") as base:
        env = {"TOGETHER_API_KEY": secret, "TOGETHER_BASE_URL": base, **FAST}
        run = cli("run", LORA, "--provider", "together", "--log-format", "json", *FAST_POLL,
                  env=env, check_code=0)
    assert "provider: together" in run.stderr
    run_id = run_id_from(run.stderr)
    outputs = [run.stdout, run.stderr, cli("show", run_id, "--outputs").stdout,
               cli("logs", run_id).stdout, cli("models").stdout]
    assert all(secret not in text for text in outputs)
    state = tmp_path / ".orchestrator"
    for file in state.glob("state.db*"):
        assert secret.encode() not in file.read_bytes(), file


def test_provider_together_without_a_key_is_bad_input(cli: CLI, tmp_path: Path) -> None:
    """Refused before anything is stored: not even a state database is created."""
    result = cli("run", LORA, "--provider", "together", check_code=2)
    assert result.stderr == ("error: provider together (https://api.together.xyz/v1) needs an "
                             "API key: export TOGETHER_API_KEY=... (or put it in .env)\n")
    assert not (tmp_path / ".orchestrator").exists()


def test_an_upload_beyond_the_servers_limit_fails_with_its_message(cli: CLI,
                                                                   tmp_path: Path) -> None:
    """Provider together against `orchestrator local-api` with a 2 KiB upload limit: the
    upload step's PUT gets 413 and the run fails with the server's words, leaving no file.
    A second run of the same bytes fails the same way at once: the refused upload's
    announcement is forgotten (it answered 409 "on their way" for an hour before, and the
    second run waited for bytes that would never come)."""
    write(tmp_path / "up.yaml", """
        name: up
        steps:
          upload: {uses: together/upload-file, with: {path: train.jsonl}}
    """)
    line = b'{"prompt": "Q: What is 2 + 2?", "completion": " 4"}\n'
    (tmp_path / "train.jsonl").write_bytes(line * 100)
    env = {"TOGETHER_API_KEY": KEY}
    with serving(tmp_path, free_port(), local_max_upload_bytes="2048") as base:
        env["TOGETHER_BASE_URL"] = base
        runs = [cli("run", "up.yaml", "--provider", "together", env=env, check_code=1,
                    timeout=45) for _ in range(2)]
    for run in runs:
        assert "the request body is larger than 2 KiB" in run.stdout, run.stdout + run.stderr
        # A 4xx is not retried; a write the server's early answer cut off may be, once.
        attempts = state(tmp_path, "SELECT attempt FROM steps WHERE run_id = "
                                   f"'{run_id_from(run.stderr)}'")
        assert attempts in ([(1,)], [(2,)]), attempts
    assert not list((tmp_path / "api-data" / "files").iterdir())
