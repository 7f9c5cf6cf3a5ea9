"""A run keeps the provider it was created with: resume, worker and cancel use it.

Provider `together` here is `orchestrator local-api` over loopback, as a user would point it
(TOGETHER_BASE_URL=http://127.0.0.1:PORT/v1); the simulated provider `local` lives in the
test's `.orchestrator/local-api`, which a together run must never touch.
"""

from __future__ import annotations

import signal
import sqlite3
from pathlib import Path

import pytest

from tests.cli.helpers import popen, run_id_from, state, wait_for_state
from tests.cli.test_finetune_pipelines import FAST_POLL, LORA
from tests.conftest import CLI
from tests.localapi.test_server import KEY, free_port, serving


def server_jobs(tmp_path: Path) -> list[tuple[str, float | None]]:
    """(id, cancelled_at) of every fine-tune job the loopback server holds."""
    conn = sqlite3.connect(tmp_path / "api-data" / "local-api.db")
    try:
        return conn.execute("SELECT id, cancelled_at FROM finetunes").fetchall()
    finally:
        conn.close()


def events(tmp_path: Path, run_id: str) -> list[tuple[object, ...]]:
    return state(tmp_path, f"SELECT seq, kind FROM events WHERE run_id = '{run_id}'")


def test_resume_follows_the_run_on_its_provider(cli: CLI, cli_process: CLI,
                                                tmp_path: Path) -> None:
    """Killed after launching on `together`, the run is refused on another provider and
    without its key (untouched both times), then resumed on `together` by a plain resume."""
    with serving(tmp_path, free_port(), local_job_duration="1s") as base:
        env = {"TOGETHER_API_KEY": KEY, "TOGETHER_BASE_URL": base}
        crashed = cli_process("run", LORA, "--provider", "together", *FAST_POLL,
                              env={**env, "ORCH_FAULTS": "after_remote_create:launch"})
        assert crashed.returncode == -signal.SIGKILL, crashed.stderr
        run_id = run_id_from(crashed.stderr)
        before = events(tmp_path, run_id)

        moved = cli("resume", run_id, "--provider", "local", env=env, check_code=2)
        assert moved.stderr.startswith(f"error: run {run_id} is bound to provider together "
                                       f"({base}), not local (")
        assert "add --move-provider to move it there" in moved.stderr
        assert len(moved.stderr.splitlines()) == 1
        keyless = cli("resume", run_id, env={"TOGETHER_BASE_URL": base}, check_code=2)
        assert keyless.stderr == (f"error: provider together ({base}) needs an API key: "
                                  "export TOGETHER_API_KEY=... (or put it in .env)\n")
        assert events(tmp_path, run_id) == before, "a refused resume wrote to the run"

        # TOGETHER_BASE_URL left out: the run knows where its provider is.
        resumed = cli("resume", run_id, env={"TOGETHER_API_KEY": KEY}, check_code=0)
        assert f"(provider: together ({base})," in resumed.stderr
        assert len(server_jobs(tmp_path)) == 1, "the job launched before the kill was adopted"
    assert not (tmp_path / ".orchestrator" / "local-api").exists(), "the simulator was used"
    shown = cli("show", run_id, check_code=0).stdout
    assert f"  provider  together ({base})" in shown


@pytest.mark.slow
def test_a_worker_and_cancel_use_the_runs_provider(cli: CLI, tmp_path: Path) -> None:
    """A run queued on `together` is executed there by a worker configured for nothing; a
    run killed mid-wait is cancelled there, its job with it."""
    with serving(tmp_path, free_port(), local_job_duration="1s") as base:
        env = {"TOGETHER_API_KEY": KEY, "TOGETHER_BASE_URL": base}
        queued = cli("run", LORA, "--provider", "together", "--detach", *FAST_POLL, env=env,
                     check_code=0).stdout.strip()
        worker = popen(tmp_path, "worker", env={"TOGETHER_API_KEY": KEY})
        try:
            wait_for_state(tmp_path, f"SELECT 1 FROM runs WHERE id = '{queued}' AND status IN "
                                     "('succeeded', 'failed')", "the worker finished the run")
        finally:
            worker.send_signal(signal.SIGTERM)
            worker.communicate(timeout=30)
        assert state(tmp_path, f"SELECT status FROM runs WHERE id = '{queued}'") == \
            [("succeeded",)]
        assert len(server_jobs(tmp_path)) == 1

    with serving(tmp_path, free_port(), local_job_duration="60s") as base:
        env = {"TOGETHER_API_KEY": KEY, "TOGETHER_BASE_URL": base}
        running = popen(tmp_path, "run", LORA, "--provider", "together", *FAST_POLL, env=env)
        run_id = str(wait_for_state(
            tmp_path, "SELECT run_id FROM steps WHERE step_id = 'wait' AND status = "
                      f"'running' AND run_id != '{queued}'", "the job is waited for")[0][0])
        running.kill()
        running.communicate()
        before = events(tmp_path, run_id)
        keyless = cli("cancel", run_id, check_code=2)
        assert "needs an API key: export TOGETHER_API_KEY" in keyless.stderr
        assert events(tmp_path, run_id) == before, "a refused cancel wrote to the run"
        cancelled = cli("cancel", run_id, env={"TOGETHER_API_KEY": KEY}, check_code=0)
        assert f"{run_id}: cancelled" in cancelled.stdout
        assert [cancelled_at is not None for _, cancelled_at in server_jobs(tmp_path)] == \
            [False, True]
    assert not (tmp_path / ".orchestrator" / "local-api").exists(), "the simulator was used"


def test_moving_a_run_to_another_provider_is_explicit_and_logged(cli: CLI,
                                                                 tmp_path: Path) -> None:
    """`--move-provider` binds the run to the new provider and says so in the event log."""
    failed = cli("run", str(Path(LORA).parent / "hello.yaml"), "-i", "failures=5",
                 check_code=1)
    run_id = run_id_from(failed.stderr)
    with serving(tmp_path, free_port()) as base:
        env = {"TOGETHER_API_KEY": KEY, "TOGETHER_BASE_URL": base}
        refused = cli("resume", run_id, "--move-provider", env=env, check_code=2)
        assert "--move-provider needs --provider" in refused.stderr
        cli("resume", run_id, "--provider", "together", "--move-provider", env=env,
            check_code=0)
    moved = state(tmp_path, f"SELECT json_extract(data, '$.from'), json_extract(data, '$.to'), "
                            f"json_extract(data, '$.to_url') FROM events WHERE run_id = "
                            f"'{run_id}' AND kind = 'provider_moved'")
    assert moved == [("local", "together", base)]
    assert state(tmp_path, f"SELECT provider, provider_url FROM runs WHERE id = '{run_id}'") \
        == [("together", base)]
