"""What happens inside a run, seen from outside it: a worker's run's logs and metrics, the live
line on a terminal, and the README's Python API example."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.cli.helpers import start_service
from tests.conftest import CLI, REPO
from tests.localapi.test_server import KEY, free_port, serving

LORA = str(REPO / "pipelines" / "lora-finetune.yaml")
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


@pytest.mark.slow
def test_a_workers_fine_tune_keeps_its_job_events_losses_and_smoke_answer(
        cli: CLI, tmp_path: Path) -> None:
    """Provider together pointed at `orchestrator local-api` over loopback; the run queued by
    one process, executed by a worker process, read by a third: `logs` holds the job's events
    with their losses and the smoke test's prompt and answer, `metrics --json` a series in
    training-step order."""
    with serving(tmp_path, free_port(), local_job_duration="3s") as base:
        env = {"TOGETHER_BASE_URL": base, "TOGETHER_API_KEY": KEY}
        worker = start_service(tmp_path, "worker", env=env)
        try:
            queued = cli("run", LORA, "--detach", "--provider", "together", "-i",
                         "poll_interval=200ms", env=env, check_code=0)
            run_id = queued.stdout.strip()
            cli("wait", run_id, "--timeout", "60", check_code=0)
        finally:
            worker.stop()
    logs = cli("logs", run_id, check_code=0).stdout
    job_events = [line for line in logs.splitlines() if "job event" in line]
    assert any("type=epoch_complete" in line and "train loss" in line for line in job_events)
    assert any("type=job_complete" in line for line in job_events)
    smoke = [line for line in logs.splitlines() if "smoke test answer" in line]
    assert len(smoke) == 1 and "text= Paris" in smoke[0] and "prompt=Q: The capital" in smoke[0]
    assert "passed=true" in smoke[0]
    series = json.loads(cli("metrics", run_id, "--json", check_code=0).stdout)
    steps = [point["train_step"] for point in series["points"]]
    assert steps and steps == sorted(set(steps))
    assert {point["job_id"] for point in series["points"]} == {
        json.loads(cli("show", run_id, "-o", "json", check_code=0).stdout)["steps"][2][
            "outputs"]["job_id"]}


def _terminal_run(tmp_path: Path, *args: str, timeout: float = 60) -> tuple[int, str]:
    """`orchestrator ARGS` on a pseudo-terminal, 120 columns: its exit code and everything
    it drew, escape sequences removed."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORCH_")}
    env.update(COLUMNS="120", LINES="40", TERM="xterm-256color")
    leader, follower = pty.openpty()
    process = subprocess.Popen([sys.executable, "-m", "orchestrator", *args], cwd=tmp_path,
                               env=env, stdin=follower, stdout=follower, stderr=follower)
    os.close(follower)
    drawn = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([leader], [], [], 1.0)
        if not ready:
            if process.poll() is not None:
                break
            continue
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the process closed the terminal
            break
        if not chunk:
            break
        drawn += chunk
    os.close(leader)
    code = process.wait(timeout=10)
    return code, ANSI.sub("", drawn.decode("utf-8", "replace"))


@pytest.mark.slow
def test_the_live_line_shows_every_status_of_a_10s_job(tmp_path: Path) -> None:
    """On a terminal, the wait step's live line moves through every status the local
    provider's 10 s job goes through (each lasts a second or more), in order, and shows the
    training step with its loss."""
    code, drawn = _terminal_run(tmp_path, "run", LORA)
    assert code == 0, drawn[-2000:]
    live = [line.strip() for line in re.split(r"[\r\n]", drawn) if line.startswith("wait ")]
    seen: list[str] = []
    for line in live:
        status = re.search(r"\s(pending|queued|running|compressing|uploading)\s", line)
        if status and (not seen or seen[-1] != status.group(1)):
            seen.append(status.group(1))
    assert seen == ["pending", "queued", "running", "compressing", "uploading"], live
    assert any(re.search(r"step \d+/\d+\s+loss \d\.\d{4}", line) for line in live)


def test_the_readmes_python_api_example_runs(tmp_path: Path) -> None:
    """The README's example of the Python API, run as written from the repository's root:
    it resolves a defaulted input as the CLI does and prints what it promises."""
    readme = (REPO / "README.md").read_text()
    block = re.search(r"<!-- python-api-example -->\n```python\n(.*?)```", readme, re.S)
    assert block, "README.md has no python-api-example block"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORCH_")}
    env.update(ORCH_STATE_URL=f"sqlite:///{tmp_path}/state.db",
               ORCH_LOCAL_DATA_DIR=str(tmp_path / "local-api"),
               ORCH_ARTIFACTS_DIR=str(tmp_path / "artifacts"),
               ORCH_LOCAL_JOB_DURATION="1s")
    done = subprocess.run([sys.executable, "-c", block.group(1)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert re.search(r"^succeeded local-user/\S+ train loss \d\.\d+$", done.stdout, re.M), \
        done.stdout


def test_a_crash_mid_wait_logs_each_job_event_and_keeps_each_point_once(
        cli: CLI, cli_process: CLI) -> None:
    """Killed right after the wait step's first checkpoint, resumed: every job event is in
    the log once, and every training step's figures once."""
    fast = {"ORCH_LOCAL_JOB_DURATION": "2s"}
    crashed = cli_process("run", LORA, "-i", "poll_interval=100ms",
                          env={**fast, "ORCH_FAULTS": "after_checkpoint:wait"})
    assert crashed.returncode == -9, crashed.stderr[-2000:]
    run_id = re.search(r"run (r-\S+) of lora-finetune", crashed.stderr)
    assert run_id
    cli("resume", run_id.group(1), env=fast, check_code=0)
    logs = cli("logs", run_id.group(1), "--json", "--step", "wait", check_code=0).stdout
    events = [json.loads(line) for line in logs.splitlines()]
    job_events = [(e["data"]["fields"]["type"], e["data"]["fields"]["message"])
                  for e in events if e["kind"] == "log" and e["data"]["message"] == "job event"]
    assert job_events[0][0] == "job_pending" and job_events[-1][0] == "job_complete"
    assert len(job_events) == len(set(job_events)), job_events  # each message once
    assert {e["attempt"] for e in events if e["kind"] == "log"} == {1}
    series = json.loads(cli("metrics", run_id.group(1), "--json", check_code=0).stdout)
    steps = [p["train_step"] for p in series["points"]]
    assert steps and len(steps) == len(set(steps))
