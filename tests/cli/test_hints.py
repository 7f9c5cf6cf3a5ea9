"""The hint after a failure or a cancel names the command that will succeed, and following it
succeeds: a changed file needs `--reload`, a cancelled job needs `--from` the step that made
it (a plain resume would follow the cancelled job, fail again and call `on_failure` again)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from tests.cli.helpers import popen, run_id_from, wait_for_state
from tests.cli.test_finetune_pipelines import FAST, local_count
from tests.conftest import CLI, REPO, write

BROKEN = """\
name: tidy
steps:
  fetch: {uses: core/echo, with: {rows: 3}}
  clean: {uses: core/fail, with: {transient: false, message: "bad rows"}, needs: [fetch],
          retry: null}
  report: {uses: core/echo, with: {done: true}, needs: [clean]}
"""
FIXED = BROKEN.replace('core/fail, with: {transient: false, message: "bad rows"}',
                       "core/echo, with: {rows: fixed}")


def test_after_the_file_is_fixed_the_hint_says_reload_and_plan_shows_what_reruns(
        cli: CLI, tmp_path: Path) -> None:
    write(tmp_path / "tidy.yaml", BROKEN)
    failed = cli("run", "tidy.yaml", check_code=1)
    run_id = run_id_from(failed.stderr)
    assert f"fix the cause, then: orchestrator resume {run_id} (with --reload if the fix is " \
           "in the pipeline file)" in failed.stdout
    write(tmp_path / "tidy.yaml", FIXED.replace("rows: 3", "rows: 4"))
    again = cli("resume", run_id, check_code=1)  # the kept text: the same failure
    hint = (f"its pipeline file {tmp_path / 'tidy.yaml'} changed since it started; to resume "
            f"with the change: orchestrator resume {run_id} --reload")
    assert hint in again.stdout
    planned = [[part.strip() for part in line.split(None, 2)] for line in
               cli("plan", run_id, "--reload", check_code=0).stdout.splitlines()[2:]]
    assert planned == [["fetch", "succeeded", "run again: changed in the file"],
                       ["clean", "failed", "run again"],
                       ["report", "pending", "run"]]
    cli("resume", run_id, "--reload", check_code=0)


CANCELLABLE = """
on_failure:
  mark:
    uses: python:marks:failed
"""


def test_after_a_cancel_the_hint_is_from_the_launch_and_a_plain_resume_is_refused(
        cli: CLI, tmp_path: Path) -> None:
    """A cancelled LoRA run: `cancel` says to resume --from launch; a plain resume is one
    line naming that (it would follow the cancelled job, fail, call on_failure); --from
    launch starts a new job and succeeds, the cancelled job never followed again."""
    text = (REPO / "pipelines" / "lora-finetune.yaml").read_text() + CANCELLABLE
    for name in ("train.jsonl", "validation.jsonl"):
        write(tmp_path / "data" / name, (REPO / "pipelines" / "data" / name).read_text())
    write(tmp_path / "marks.py", """
        async def failed(ctx) -> dict:
            with (ctx.pipeline_dir / "failures.log").open("a") as log:
                log.write(ctx.run_id + "\\n")
            return {}
    """)
    write(tmp_path / "lora.yaml", text)
    env = {**FAST, "ORCH_LOCAL_JOB_DURATION": "60s"}
    proc = popen(tmp_path, "run", "lora.yaml", "-i", "poll_interval=100ms", env=env)
    run_id = str(wait_for_state(tmp_path, "SELECT run_id FROM steps WHERE step_id = 'wait' "
                                          "AND status = 'running'", "the job is followed",
                                timeout=60)[0][0])
    cancelled = cli("cancel", run_id, env=env, check_code=0)
    proc.communicate(timeout=60)
    assert f"to start them again: orchestrator resume {run_id} --from launch" in \
        cancelled.stderr
    refused = cli("resume", run_id, env=FAST, check_code=2)
    assert refused.stderr == (
        f"error: run {run_id} was cancelled, and the remote work of step launch (its job) "
        f"with it: resumed as it is, it would follow a cancelled job. To start that again: "
        f"orchestrator resume {run_id} --from launch\n")
    resumed = cli("resume", run_id, "--from", "launch", "--log-level",
                  "warning", env=FAST, check_code=0)
    assert f"run {run_id} succeeded" in resumed.stdout
    assert local_count(tmp_path, "finetunes") == 2
    assert not (tmp_path / "failures.log").exists(), "on_failure was never called"
    shown = json.loads(cli("show", run_id, "-o", "json", check_code=0).stdout)
    launch, wait = (next(s for s in shown["steps"] if s["id"] == sid)
                    for sid in ("launch", "wait"))
    assert wait["outputs"]["job_id"] == launch["outputs"]["job_id"]
    events = cli("logs", run_id, "--json", check_code=0).stdout
    assert len(re.findall(r'"kind": "remote_cancelled"', events)) >= 1
