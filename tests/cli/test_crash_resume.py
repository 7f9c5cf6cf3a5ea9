"""SIGKILL a real `orchestrator run` at several points, resume it: every effect happens once."""

from __future__ import annotations

import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.cli.helpers import run_id_from, start_run, state, wait_for_state
from tests.conftest import CLI, write

STEPS_MODULE = '''
from pathlib import Path

from orchestrator import StepContext


def _append_once(log: str, key: str) -> None:
    """Append `key` unless a previous, crashed attempt already did (the idempotency key)."""
    path = Path(log)
    if path.exists() and key in path.read_text().splitlines():
        return
    with path.open("a") as f:
        f.write(key + "\\n")


async def append(ctx: StepContext, log: str, text: str) -> dict:
    _append_once(log, ctx.idempotency_key)
    return {"text": text}


async def two_phase(ctx: StepContext, log: str) -> dict:
    # Phase 1 trusts the checkpoint alone: if the checkpoint were lost, it would run twice.
    if not ctx.last_checkpoint.get("phase1_done"):
        with open(log, "a") as f:
            f.write(ctx.idempotency_key + ":phase1\\n")
        await ctx.checkpoint(phase1_done=True)
    _append_once(log, ctx.idempotency_key + ":phase2")
    return {"phases": 2}
'''

PIPELINE = """
name: crashy
inputs:
  log: {type: path, default: effects.log}
steps:
  a:
    uses: python:crashsteps:append
    with: {log: "${{ inputs.log }}", text: A}
  b:
    uses: python:crashsteps:append
    with: {log: "${{ inputs.log }}", text: "${{ steps.a.outputs.text }}B"}
  twophase:
    uses: {python: "crashsteps:two_phase"}
    with: {log: "${{ inputs.log }}"}
    needs: [b]
  c:
    uses: python:crashsteps:append
    with: {log: "${{ inputs.log }}", text: "${{ steps.b.outputs.text }}C"}
    needs: [twophase]
"""

@pytest.mark.parametrize("fault", [
    "after_step_started:b",
    "before_step_commit:b",
    "after_step_commit:a",
    "after_checkpoint:twophase",
    "before_step_commit:twophase",
    "after_step_commit:c",
])
def test_sigkill_then_resume_runs_each_effect_once(cli: CLI, cli_process: CLI, tmp_path: Path,
                                                   fault: str) -> None:
    """Killed at `fault`, the run resumes to success with every side effect exactly once."""
    write(tmp_path / "crashsteps.py", STEPS_MODULE)
    write(tmp_path / "crashy.yaml", PIPELINE)

    crashed = cli_process("run", "crashy.yaml", env={"ORCH_FAULTS": fault})
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    run_id = run_id_from(crashed.stderr)
    assert state(tmp_path, f"SELECT status FROM runs WHERE id = '{run_id}'") == [("running",)]

    resumed = cli("resume", run_id, check_code=0)
    assert f"run {run_id} succeeded" in resumed.stdout

    effects = Counter((tmp_path / "effects.log").read_text().splitlines())
    expected = {f"{run_id}:{s}" for s in ("a", "b", "c")} | {
        f"{run_id}:twophase:phase1", f"{run_id}:twophase:phase2"}
    assert set(effects) == expected
    assert all(count == 1 for count in effects.values()), effects
    statuses = state(tmp_path, f"SELECT step_id, status FROM steps WHERE run_id = '{run_id}'")
    assert sorted(statuses) == [(s, "succeeded") for s in ("a", "b", "c", "twophase")]
    assert state(tmp_path, f"SELECT recoveries FROM runs WHERE id = '{run_id}'") == [(1,)]


def test_killed_from_outside_mid_sleep_resumes_the_remaining_time(cli: CLI,
                                                                    tmp_path: Path) -> None:
    """The test itself SIGKILLs the process mid-step; the durable sleep only finishes its rest."""
    write(tmp_path / "nap.yaml", """
        name: nap
        steps:
          before: {uses: core/echo, with: {x: 1}}
          nap: {uses: core/sleep, with: {duration: 3s}, needs: [before]}
          after: {uses: core/echo, with: {slept: "${{ steps.nap.outputs.slept }}"}}
    """)
    proc = start_run(tmp_path, "nap.yaml")
    wait_for_state(tmp_path, "SELECT 1 FROM steps WHERE step_id = 'nap' AND checkpoint LIKE "
                             "'%until%'", "the sleep step checkpointed its timer")
    proc.send_signal(signal.SIGKILL)
    _, stderr = proc.communicate(timeout=10)
    assert proc.returncode == -signal.SIGKILL
    run_id = run_id_from(stderr)

    started = time.monotonic()
    resumed = cli("resume", run_id, check_code=0)
    assert time.monotonic() - started < 3.0 + 2.0  # the remainder plus start-up, not 3s twice
    assert "after.slept: 3.0" in resumed.stdout
    kinds = state(tmp_path, f"SELECT kind, step_id FROM events WHERE run_id = '{run_id}' "
                            "AND kind = 'step_succeeded'")
    assert Counter(step for _, step in kinds) == {"before": 1, "nap": 1, "after": 1}


@pytest.mark.slow
def test_lora_killed_at_random_moments_against_a_real_http_provider(tmp_path: Path) -> None:
    """Runs of the LoRA pipeline on provider together (`orchestrator local-api` over loopback)
    are SIGKILLed at random moments, over and over, and resumed until each succeeds (new runs
    start until at least three have succeeded and a dozen kills landed): the provider holds
    one job per run and two files in all, the registry one model per run."""
    import random
    import sqlite3

    from tests.cli.helpers import popen
    from tests.cli.test_finetune_pipelines import FAST_POLL, LORA
    from tests.localapi.test_server import KEY, free_port, serving

    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    runs: list[str] = []
    kills = 0
    deadline = time.monotonic() + 60
    with serving(tmp_path, free_port(), local_job_duration="1s",
                 local_upload_url_ttl="2s") as base:
        env = {"TOGETHER_API_KEY": KEY, "TOGETHER_BASE_URL": base,
               "ORCH_MAX_RECOVERIES": "1000"}
        while True:
            assert time.monotonic() < deadline, f"seed {seed}: not done in a minute"
            known = set(runs)
            current = next(iter({str(r[0]) for r in state(tmp_path, "SELECT id FROM runs")}
                                - known), None)
            if current is None and len(runs) >= 3 and kills >= 12:
                break
            args = ("resume", current) if current else (
                "run", LORA, "--provider", "together", *FAST_POLL)
            process = popen(tmp_path, *args, env=env)
            try:
                process.wait(timeout=rng.uniform(0.35, 0.9) if kills < 10 * (len(runs) + 1)
                             else 30)
            except subprocess.TimeoutExpired:
                process.kill()
                kills += 1
            _, err = process.communicate()
            if process.returncode == 0:
                assert current or "starting run" in err, err
                runs.append(current or run_id_from(err))
            else:
                assert process.returncode == -signal.SIGKILL, f"seed {seed}: {err}"
    print(f"seed {seed}: {kills} kills")

    conn = sqlite3.connect(tmp_path / "api-data" / "local-api.db")
    try:
        files = conn.execute("SELECT count(*) FROM files WHERE state = 'processed'").fetchone()
        jobs = dict(conn.execute("SELECT json_extract(request, '$.suffix'), count(*) FROM "
                                 "finetunes GROUP BY 1").fetchall())
    finally:
        conn.close()
    assert files == (2,), f"seed {seed}"
    assert len(jobs) == len(runs) and set(jobs.values()) == {1}, f"seed {seed}: {jobs}"
    models = state(tmp_path, "SELECT run_id, count(*) FROM models GROUP BY run_id")
    assert sorted(models) == sorted((run_id, 1) for run_id in runs), f"seed {seed}"
    assert state(tmp_path, "SELECT DISTINCT status FROM runs") == [("succeeded",)]
