"""Several real `orchestrator` processes on one state database: a second process changes nothing."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.cli.helpers import end_sleeps_now, popen, state, wait_for, wait_for_state
from tests.conftest import CLI, REPO, write
from tests.localapi.test_server import KEY, free_port, serving

ROUNDS = 10
OPEN_AT_ONCE = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    import anyio
    from orchestrator.localapi.state import LocalState
    from orchestrator.store.opening import open_store

    ready, go, what, rounds = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], int(sys.argv[4])
    ready.touch()
    while not go.exists():
        time.sleep(0.001)

    async def main(url: str) -> None:
        async with open_store(url) as store:
            await store.list_runs()

    for round in range(rounds):
        if what == "state":
            anyio.run(main, f"sqlite:///{round}/state.db")
        else:
            LocalState(Path(f"{round}/local-api")).files()
""")


@pytest.mark.parametrize(("what", "database"), [("state", "state.db"),
                                                ("local-api", "local-api/local-api.db")])
def test_processes_opening_a_new_database_at_once_all_succeed(tmp_path: Path, what: str,
                                                              database: str) -> None:
    """Six processes, imports done, open databases none of them finds, together, ten times:
    the first to take the write lock creates the schema, the others find it there (the switch
    to WAL, which SQLite can refuse at once when two ask together, is retried)."""
    go = tmp_path / "go"
    processes = [subprocess.Popen([sys.executable, "-c", OPEN_AT_ONCE, str(tmp_path / f"r{i}"),
                                   str(go), what, str(ROUNDS)], cwd=tmp_path,
                                  env=dict(os.environ), stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)
                 for i in range(6)]
    wait_for(lambda: all((tmp_path / f"r{i}").exists() for i in range(6)),
             "every process is ready")
    go.touch()
    results = [p.communicate(timeout=60) for p in processes]
    assert [p.returncode for p in processes] == [0] * 6, [err for _, err in results]
    for round in range(ROUNDS):
        conn = sqlite3.connect(tmp_path / str(round) / database)
        try:
            assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        finally:
            conn.close()


UPLOADS = """
name: uploads
steps:
  train: {uses: together/upload-file, with: {path: DATA/train.jsonl}}
  validation: {uses: together/upload-file, with: {path: DATA/validation.jsonl}}
"""


def stored_files(data_dir: Path) -> int:
    """Files with bytes in a local API's data folder (announced-only ones not counted)."""
    conn = sqlite3.connect(data_dir / "local-api.db")
    try:
        return int(conn.execute("SELECT count(*) FROM files WHERE state IN ('uploaded', "
                                "'processed')").fetchone()[0])
    finally:
        conn.close()


def test_processes_sharing_a_state_database_upload_identical_bytes_once(tmp_path: Path
                                                                        ) -> None:
    """Six runs started at once on a fresh state database and a fresh local API upload the
    training and validation files once each: the others wait for them and reuse them."""
    write(tmp_path / "uploads.yaml", UPLOADS.replace("DATA", str(REPO / "pipelines" / "data")))
    processes = [popen(tmp_path, "run", "uploads.yaml") for _ in range(6)]
    results = [p.communicate(timeout=60) for p in processes]
    assert [p.returncode for p in processes] == [0] * 6, [err for _, err in results]
    assert stored_files(tmp_path / ".orchestrator" / "local-api") == 2
    reused = state(tmp_path, "SELECT count(*) FROM steps WHERE json_extract(outputs, "
                             "'$.reused')")
    # (Seen twice under load: 8 and 9 reused of 10, with two files stored all the same. The
    # step outputs and every process's log say which steps uploaded, for the next time.)
    assert reused == [(10,)], (state(tmp_path, "SELECT run_id, step_id, attempt, outputs "
                                               "FROM steps ORDER BY step_id"),
                               [err for _, err in results])


def test_processes_on_separate_state_databases_upload_identical_bytes_once(
        tmp_path: Path) -> None:
    """Six runs with a state database each, against one `orchestrator local-api` as provider
    together: the API answers bytes already on their way with that file (409), as Together
    does, so there are two files in all."""
    write(tmp_path / "uploads.yaml", UPLOADS.replace("DATA", str(REPO / "pipelines" / "data")))
    with serving(tmp_path, free_port()) as base:
        env = {"TOGETHER_API_KEY": KEY, "TOGETHER_BASE_URL": base}
        processes = [popen(tmp_path, "run", "uploads.yaml", "--provider", "together",
                           "--state-url", f"sqlite:///state-{i}.db", env=env)
                     for i in range(6)]
        results = [p.communicate(timeout=60) for p in processes]
    assert [p.returncode for p in processes] == [0] * 6, [err for _, err in results]
    assert stored_files(tmp_path / "api-data") == 2


def test_a_worker_takes_over_at_once_a_run_whose_process_died_here(cli: CLI,
                                                                  tmp_path: Path) -> None:
    """SIGKILLed mid-run with a lease of two minutes, the run shows its executor gone, and a
    worker on the same machine resumes it at once instead of waiting out the lease."""
    write(tmp_path / "p.yaml", """
        name: p
        steps:
          nap: {uses: core/sleep, with: {duration: 10m}}
          after: {uses: core/echo, with: {n: 1}, needs: [nap]}
    """)
    env = {"ORCH_LEASE_TTL": "120s"}
    running = popen(tmp_path, "run", "p.yaml", env=env)
    run_id = str(wait_for_state(tmp_path, "SELECT run_id FROM steps WHERE step_id = 'nap' AND "
                                          "checkpoint != '{}'", "the nap started")[0][0])
    running.kill()
    running.communicate()
    assert f"{run_id} p running (executor gone)" in " ".join(
        cli("runs", check_code=0).stdout.split("\n")[1].split())
    assert "is gone; continue with: orchestrator resume" in cli("show", run_id).stdout
    end_sleeps_now(tmp_path)
    started = time.monotonic()
    worker = popen(tmp_path, "worker", env=env)
    try:
        wait_for_state(tmp_path, f"SELECT 1 FROM runs WHERE id = '{run_id}' AND status = "
                                 "'succeeded'", "the worker finished the run", timeout=60)
    finally:
        worker.terminate()
        worker.communicate(timeout=30)
    assert time.monotonic() - started < 30, "the worker waited for the lease to expire"
    assert state(tmp_path, f"SELECT recoveries FROM runs WHERE id = '{run_id}'") == [(1,)]
