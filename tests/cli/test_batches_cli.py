"""Sweeps, workers, concurrency keys and cancellation, driven through real `orchestrator`
processes on one state file, against the local API."""

from __future__ import annotations

import re
import signal
import time
from pathlib import Path
from typing import Any

import anyio
import pytest

from tests.cli.helpers import popen, start_service, state, wait_for, wait_for_state
from tests.cli.test_finetune_pipelines import FAST, LORA, local_count
from tests.conftest import CLI, REPO, write
from tests.engine.harness import held_spans, max_overlap

SWEEP = REPO / "pipelines" / "sweep.yaml"
GATE = """
  gate:        # added by the test: fails while a marker file for the cell exists
    uses: python:gates:check
    with: {marker: "fail-${{ matrix.learning_rate }}"}
    needs: [wait]
    retry: null
"""


def sweep_with_gate(tmp_path: Path) -> Path:
    """pipelines/sweep.yaml with a gate step between wait and register, in `tmp_path`."""
    text = SWEEP.read_text().replace("  register:\n", GATE + "  register:\n", 1)
    text = text.replace("    uses: registry/record-model\n",
                        "    uses: registry/record-model\n    needs: [gate]\n", 1)
    for name in ("train.jsonl", "validation.jsonl"):
        write(tmp_path / "data" / name, (REPO / "pipelines" / "data" / name).read_text())
    write(tmp_path / "gates.py", """
        from pathlib import Path

        async def check(ctx, marker: str) -> dict:
            if (ctx.pipeline_dir / marker).exists():
                raise RuntimeError(f"gate closed: {marker} exists")
            return {"passed": True}
    """)
    return write(tmp_path / "sweep.yaml", text)


def launches_per_run(tmp_path: Path) -> dict[str, int]:
    rows = state(tmp_path, "SELECT run_id, count(*) FROM events WHERE kind = 'step_succeeded' "
                           "AND step_id = 'launch' GROUP BY run_id")
    return {str(r[0]): int(str(r[1])) for r in rows}


@pytest.mark.slow
def test_a_sweep_killed_and_failing_resumes_to_green_without_relaunching(
        cli: CLI, tmp_path: Path) -> None:
    """3x4 sweep: SIGKILL mid-flight, resume with 3 cells failing their gate, resume again:
    all 12 green, and the local API holds exactly 12 jobs (no cell launched twice)."""
    sweep = sweep_with_gate(tmp_path)
    for marker in ("fail-3e-05",):
        (tmp_path / marker).write_text("closed")
    env = {**FAST, "ORCH_LOCAL_JOB_DURATION": "2s"}
    fast_poll = ("-i", "poll_interval=100ms")
    proc = popen(tmp_path, "run", str(sweep), *fast_poll, env=env)
    # Kill once some cells are done and others have a job in flight.
    wait_for_state(tmp_path, "SELECT 1 FROM runs WHERE status = 'succeeded'",
                   "a cell succeeded", timeout=60)
    wait_for_state(tmp_path, "SELECT 1 FROM steps s WHERE step_id = 'launch' AND status = "
                             "'succeeded' AND NOT EXISTS (SELECT 1 FROM steps w WHERE "
                             "w.run_id = s.run_id AND w.step_id = 'wait' AND w.status = "
                             "'succeeded')", "a job is in flight", timeout=60)
    proc.kill()
    proc.communicate()
    batch = str(state(tmp_path, "SELECT id FROM batches")[0][0])
    before = launches_per_run(tmp_path)
    assert 0 < len(before) < 12

    first = cli("resume", batch, env=env, timeout=120, check_code=1)
    assert re.search(r"cells to resume, \d+ succeeded cells kept", first.stderr)
    failed = [line for line in first.stdout.splitlines() if "learning_rate=3e-05" in line]
    assert len(failed) == 3 and all(" failed " in line for line in failed), first.stdout
    assert "gate closed: fail-3e-05 exists" in first.stdout

    (tmp_path / "fail-3e-05").unlink()
    second = cli("resume", batch, env=env, timeout=120, check_code=0)
    assert "3 cells to resume, 9 succeeded cells kept" in second.stderr
    assert f"batch {batch} succeeded" in second.stdout
    assert local_count(tmp_path, "finetunes") == 12
    assert launches_per_run(tmp_path) == {f"{batch}.{i}": 1 for i in range(12)}
    shown = cli("show", batch, check_code=0).stdout
    assert "12 cells (12 succeeded), max_parallel 12" in shown
    assert len(re.findall(r"local-user/\S+-sweep-", shown)) == 12
    assert len(cli("models", check_code=0).stdout.splitlines()) == 13  # header + 12
    # The account's limit held: at most 4 cells between launch start and wait end.
    assert max_overlap(job_spans(tmp_path)) <= 4


def job_spans(tmp_path: Path) -> list[tuple[float, float]]:
    """Per run, [the launch slot acquired, released] from the event log."""
    return held_spans(state(tmp_path, "SELECT run_id, kind, ts FROM events WHERE step_id = "
                                      "'launch' AND kind IN ('slot_acquired', 'slot_released') "
                                      "ORDER BY seq"))


LIMITED = """
name: limited
concurrency: {key: gpu, limit: 2}
steps:
  work: {uses: core/sleep, with: {duration: 1s}}
"""
MATRIX = "matrix: {i: [1, 2, 3, 4, 5, 6, 7, 8, 9]}\n"


@pytest.mark.slow
def test_ten_runs_limit_two_across_two_worker_processes(cli: CLI, tmp_path: Path) -> None:
    """10 detached runs, two workers on one state file: never more than 2 at once (event-log
    timestamps), the waiting shows in `show`, and every run succeeds."""
    write(tmp_path / "limited.yaml", LIMITED)
    write(tmp_path / "batch.yaml", LIMITED.replace("name: limited", "name: limited\n" + MATRIX))
    fast = {"ORCH_WORKER_POLL_INTERVAL": "100ms"}
    # Both workers are serving before anything is queued: each then claims five runs within
    # a poll (100 ms), far inside a run's 1 s, so both hold runs waiting for the one limit,
    # through the store, however long either took to start.
    workers = [start_service(tmp_path, "worker", "--max-runs", "5", env=fast) for _ in range(2)]
    try:
        single = cli("run", "--detach", "limited.yaml", check_code=0)
        assert re.fullmatch(r"r-\d{6}-\d{6}-[0-9a-z]{6}\n", single.stdout)
        assert "queued run" in single.stderr
        batch = cli("run", "--detach", "batch.yaml", check_code=0).stdout.strip()
        assert re.fullmatch(r"b-\d{6}-\d{6}-[0-9a-z]{6}", batch)
        # The last runs wait a few seconds: long enough to catch one waiting in `show` (a run
        # seen waiting may get its slot before `show` looks: then another is looked at).

        def shown_waiting() -> bool:
            rows = state(tmp_path, "SELECT id FROM runs WHERE waiting_for = 'gpu' ORDER BY "
                                   "created_at DESC, id DESC")
            return bool(rows) and re.search(
                rf"run {rows[0][0]}  limited  waiting for gpu",
                cli("show", str(rows[0][0]), check_code=0).stdout) is not None

        wait_for(shown_waiting, "show says a run waits for gpu")
        wait_for_state(tmp_path, "SELECT 1 WHERE (SELECT count(*) FROM runs WHERE status = "
                                 "'succeeded') = 10", "all ten runs succeeded", timeout=60)
    finally:
        codes = [worker.stop() for worker in workers]
    assert codes == [0, 0], [worker.lines for worker in workers]
    rows = state(tmp_path, "SELECT run_id, kind, ts FROM events WHERE kind IN "
                           "('slot_acquired', 'slot_released', 'step_started', "
                           "'step_succeeded') ORDER BY seq")
    held: dict[str, dict[str, float]] = {}
    for run_id, kind, ts in rows:
        held.setdefault(str(run_id), {})[str(kind)] = float(str(ts))
    slots = [(e["slot_acquired"], e["slot_released"]) for e in held.values()]
    work = [(e["step_started"], e["step_succeeded"]) for e in held.values()]
    assert len(slots) == len(work) == 10
    assert max_overlap(slots) == 2
    assert max_overlap(work) <= 2
    owners = {str(r[0]) for r in state(tmp_path, "SELECT DISTINCT json_extract(data, "
                                                 "'$.owner') FROM events WHERE kind = "
                                                 "'run_started'")}
    assert len(owners) == 2, "both workers executed runs"


def test_cancel_from_another_terminal_cancels_the_run_and_its_job(cli: CLI,
                                                                   tmp_path: Path) -> None:
    env = {**FAST, "ORCH_LOCAL_JOB_DURATION": "60s"}
    proc = popen(tmp_path, "run", LORA, "-i", "poll_interval=100ms", env=env)
    run_id = str(wait_for_state(tmp_path, "SELECT run_id FROM steps WHERE step_id = 'wait' "
                                          "AND status = 'running'", "the job is waited for",
                                timeout=30)[0][0])
    started = time.monotonic()
    result = cli("cancel", run_id, env=env, check_code=0)
    assert time.monotonic() - started < 10
    assert f"{run_id}: cancelled by its executor" in result.stdout
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 1
    assert f"run {run_id} cancelled" in out
    job = local_job(tmp_path)
    assert job["status"] in ("cancel_requested", "cancelled")


def local_jobs(tmp_path: Path) -> list[dict[str, Any]]:
    """The fine-tune jobs the local API on disk holds, as `GET /fine-tunes` shows them."""
    from orchestrator.localapi import LocalAPIConfig, local_client

    async def fetch() -> list[dict[str, Any]]:
        config = LocalAPIConfig(data_dir=tmp_path / ".orchestrator" / "local-api")
        async with local_client(config) as client:
            response = await client.get("/fine-tunes")
            return list(response.json()["data"])

    return anyio.run(fetch)


def local_job(tmp_path: Path) -> dict[str, Any]:
    jobs = local_jobs(tmp_path)
    assert len(jobs) == 1, jobs
    return jobs[0]


def test_a_cancel_while_the_executor_is_down_is_carried_out_by_the_cancel(
        cli: CLI, tmp_path: Path) -> None:
    env = {**FAST, "ORCH_LOCAL_JOB_DURATION": "60s"}
    proc = popen(tmp_path, "run", LORA, "-i", "poll_interval=100ms", env=env)
    run_id = str(wait_for_state(tmp_path, "SELECT run_id FROM steps WHERE step_id = 'wait' "
                                          "AND status = 'running'", "the job is waited for",
                                timeout=30)[0][0])
    proc.kill()
    proc.communicate()
    result = cli("cancel", run_id, env=env, check_code=0)
    assert f"{run_id}: cancelled" in result.stdout
    assert local_job(tmp_path)["status"] in ("cancel_requested", "cancelled")
    shown = cli("show", run_id, check_code=0).stdout
    assert f"run {run_id}  lora-finetune  cancelled" in shown
    assert local_count(tmp_path, "finetunes") == 1
    again = cli("cancel", run_id, env=env, check_code=0)
    assert "already cancelled" in again.stdout


def test_ctrl_c_can_leave_the_job_running_or_cancel_it(tmp_path: Path) -> None:
    env = {**FAST, "ORCH_LOCAL_JOB_DURATION": "60s"}
    results = {}
    for choice in ("leave", "cancel"):
        proc = popen(tmp_path, "run", LORA, "-i", "poll_interval=100ms", "--on-interrupt",
                     choice, env=env)
        run_id = str(wait_for_state(
            tmp_path, "SELECT run_id FROM steps WHERE step_id = 'wait' AND status = 'running' "
                      "AND run_id NOT IN (SELECT id FROM runs WHERE status != 'running')",
            f"the job is waited for ({choice})", timeout=30)[0][0])
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == (130 if choice == "leave" else 1), err
        status = state(tmp_path, f"SELECT status FROM runs WHERE id = '{run_id}'")[0][0]
        results[choice] = (status, err, out.splitlines()[-1:] == [f"run {run_id} cancelled"])
    assert results["leave"][0] == "interrupted"
    assert "Remote jobs were left running" in results["leave"][1]
    assert results["cancel"][0] == "cancelled"
    assert results["cancel"][2], "the cancelled run's own message ends the output"
    statuses = sorted(str(j["status"]) for j in local_jobs(tmp_path))
    assert statuses[0] in ("cancel_requested", "cancelled")
    assert statuses[1] in ("pending", "queued", "running")


def test_resume_batch_from_a_step_reruns_it_in_every_resumed_cell(cli: CLI,
                                                                   tmp_path: Path) -> None:
    """`resume BATCH --from STEP` re-runs STEP and what follows in each cell that failed;
    the succeeded cell is kept as it is."""
    write(tmp_path / "gates.py", """
        async def check(ctx, cell: int) -> dict:
            if (ctx.pipeline_dir / f"fail-{cell}").exists():
                raise RuntimeError("gate closed")
            return {"cell": cell}
    """)
    write(tmp_path / "m.yaml", """
        name: m
        matrix: {i: [1, 2, 3]}
        steps:
          first: {uses: core/echo, with: {i: "${{ matrix.i }}"}}
          gate: {uses: python:gates:check, with: {cell: "${{ matrix.i }}"}, needs: [first],
                 retry: null}
    """)
    (tmp_path / "fail-2").touch()
    (tmp_path / "fail-3").touch()
    failed = cli("run", "m.yaml", check_code=1)
    batch_id = failed.stderr.split("starting batch ", 1)[1].split()[0]
    (tmp_path / "fail-2").unlink()
    (tmp_path / "fail-3").unlink()
    resumed = cli("resume", batch_id, "--from", "first", check_code=0)
    assert "re-running first and everything after it in every cell resumed" in resumed.stderr
    firsts = dict(state(tmp_path, "SELECT run_id, count(*) FROM events WHERE kind = "
                                  "'step_succeeded' AND step_id = 'first' GROUP BY run_id"))
    assert firsts == {f"{batch_id}.0": 1, f"{batch_id}.1": 2, f"{batch_id}.2": 2}


def test_plan_schedules_and_bad_ids(cli: CLI, tmp_path: Path) -> None:
    plan = cli("plan", str(SWEEP), check_code=0).stdout
    assert "matrix: 12 cells, one run each (base_model (3) x learning_rate (4))" in plan
    listed = cli("schedules", str(REPO / "pipelines"), check_code=0).stdout
    assert re.search(r"nightly-retrain\s+0 2 \* \* \*\s+Europe/Berlin\s+skip\s+latest\s+"
                     r"\d{4}-\d\d-\d\d 02:00 CES?T\s+-", listed), listed
    unknown = cli("cancel", "nope", check_code=2)
    assert "no run or batch with id 'nope'" in unknown.stderr
    assert "Traceback" not in unknown.stderr
    shown = cli("show", "b-nope", check_code=2)
    assert "batches with `orchestrator batches`" in shown.stderr
    write(tmp_path / "sched" / "bad.yaml", "name: bad\nschedule: {cron: '0 2 * *'}\n"
                                           "steps: {a: {uses: core/echo}}\n")
    broken = cli("scheduler", "sched", check_code=2)
    assert broken.stderr.startswith("sched/bad.yaml:2:18: schedule.cron: cron '0 2 * *' must "
                                    "have five fields"), broken.stderr
