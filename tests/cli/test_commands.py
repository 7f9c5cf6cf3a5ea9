"""The command line as a user meets it: exit codes, one-line errors, tables and logs."""

from __future__ import annotations

import json
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.cli.helpers import end_sleeps_now, run_id_from, start_run, state, wait_for_state
from tests.conftest import CLI, REPO, write

HELLO = REPO / "pipelines" / "hello.yaml"

FAILING = """
name: failing
steps:
  ok: {uses: core/echo, with: {x: 1}}
  broken:
    uses: core/fail
    with: {message: "disk full"}
    retry: {max_attempts: 2, initial_delay: 1ms}
"""


def no_traceback(result: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in result.stderr + result.stdout


def test_validate_ok_and_bad(cli: CLI, tmp_path: Path) -> None:
    """A valid file prints ok; a bad one prints FILE:LINE:COL lines, exit 2, no traceback."""
    write(tmp_path / "bad.yaml", "name: x\nsteps:\n  a: {uses: core/nope}\n")
    good = cli("validate", str(HELLO), check_code=0)
    assert good.stdout.strip() == f"{HELLO}: ok (hello, 4 steps)"
    bad = cli("validate", "bad.yaml", check_code=2)
    assert bad.stderr.startswith("bad.yaml:3:13: steps.a.uses: unknown step type 'core/nope'")
    assert len(bad.stderr.strip().splitlines()) == 1
    no_traceback(bad)


def test_run_hello_then_runs_show_logs(cli_process: CLI, tmp_path: Path) -> None:
    """The demo pipeline succeeds; runs, show and logs describe it (real processes: the
    console script's path, as a user types it)."""
    result = cli_process("run", str(HELLO), check_code=0)
    run_id = run_id_from(result.stderr)
    data = tmp_path.resolve() / ".orchestrator" / "local-api"
    assert f"(provider: local ({data}), state: sqlite:///.orchestrator/state.db)" in result.stderr
    assert "report.text: Hello, world! (after 2 failures)" in result.stdout
    assert result.stdout.strip().endswith(f"run {run_id} succeeded")

    runs = cli_process("runs", check_code=0).stdout.splitlines()
    assert runs[0].split() == ["RUN", "PIPELINE", "STATUS", "STARTED", "DURATION"]
    assert runs[1].split()[:3] == [run_id, "hello", "succeeded"]

    show = cli_process("show", run_id, "--outputs", check_code=0).stdout
    rows = {line.split()[0]: line.split() for line in show.splitlines() if line.strip()}
    assert rows["flaky"][1:3] == ["succeeded", "3"]
    assert "  text: Hello, world! (after 2 failures)" in show

    logs = cli_process("logs", run_id, check_code=0).stdout
    assert re.search(r"flaky#1\s+attempt_failed\s+error=", logs)
    events = [json.loads(line)
              for line in cli_process("logs", run_id, "--json").stdout.splitlines()]
    assert events[0]["kind"] == "run_created" and events[-1]["kind"] == "run_finished"


def test_failed_run_exits_1_and_says_how_to_resume(cli: CLI, tmp_path: Path) -> None:
    write(tmp_path / "failing.yaml", FAILING)
    result = cli("run", "failing.yaml", check_code=1)
    run_id = run_id_from(result.stderr)
    assert f"run {run_id} failed: step broken failed: TransientError: disk full" in result.stdout
    assert f"orchestrator resume {run_id}" in result.stdout
    no_traceback(result)
    show = cli("show", run_id, check_code=0).stdout
    assert re.search(r"broken\s+failed\s+2\s+\S+\s+TransientError: disk full", show)


def test_unexpected_exception_traceback_only_in_event_log(cli: CLI, tmp_path: Path) -> None:
    """A bug in a user step shows type and message on screen, the traceback in `logs`."""
    write(tmp_path / "buggy_steps.py", """
        async def divide(ctx, by: int) -> dict:
            return {"x": 1 / by}
    """)
    write(tmp_path / "buggy.yaml", """
        name: buggy
        steps:
          s: {uses: "python:buggy_steps:divide", with: {by: 0}}
    """)
    result = cli("run", "buggy.yaml", check_code=1)
    no_traceback(result)
    assert "ZeroDivisionError: division by zero" in result.stdout
    logs = cli("logs", run_id_from(result.stderr), check_code=0).stdout
    assert "Traceback (most recent call last)" in logs
    assert 'return {"x": 1 / by}' in logs


def test_python_step_parameters_are_validated_from_annotations(cli: CLI, tmp_path: Path) -> None:
    """A user function's annotations check literal parameters at validate time."""
    write(tmp_path / "typed_steps.py", """
        async def train(ctx, rows: int, lr: float = 0.1) -> dict:
            return {"rows": rows, "lr": lr}

        def not_async(x: int) -> dict:
            return {}
    """)
    write(tmp_path / "typed.yaml", """
        name: typed
        steps:
          s: {uses: "python:typed_steps:train", with: {rows: many, epochs: 3}}
          t: {uses: "python:typed_steps:not_async"}
          u: {uses: "python:typed_steps:missing"}
    """)
    result = cli("validate", "typed.yaml", check_code=2)
    lines = result.stderr.strip().splitlines()
    assert lines[0].startswith("typed.yaml:3:54: steps.s.with.rows: input should be a valid int")
    assert lines[1] == "typed.yaml:3:60: unknown key 'epochs' in steps.s.with"
    assert "must be an async function (async def)" in lines[2]
    assert "module 'typed_steps' has no function 'missing'" in lines[3]


@pytest.mark.parametrize(("args", "message"), [
    pytest.param(["run", "{hello}", "-i", "who"], "error: bad input 'who': use -i name=value",
                 id="input-without-value"),
    pytest.param(["run", "{hello}", "-i", "failures=two"],
                 "error: input 'failures': expected an integer, got 'two'",
                 id="input-wrong-type"),
    pytest.param(["run", "{hello}", "-i", "nap=forever"],
                 "error: input 'nap': bad duration 'forever'", id="input-bad-duration"),
    pytest.param(["run", "{hello}", "-i", "whom=x"], "error: unknown input 'whom'",
                 id="unknown-input"),
    pytest.param(["show", "r-000000-000000-nope00"], "error: no run with id", id="unknown-run"),
    pytest.param(["resume", "r-000000-000000-nope00"], "error: no run with id",
                 id="unknown-run-resume"),
    pytest.param(["logs", "nope"], "error: no run with id 'nope'", id="unknown-run-logs"),
    pytest.param(["run", "missing.yaml"], "missing.yaml:1:1: no such file", id="missing-file"),
    pytest.param(["runs", "--state-url", "mysql://x"],
                 "error: bad setting state_url = 'mysql://x' (from --state-url)", id="bad-flag"),
    pytest.param(["frobnicate"], "invalid choice: 'frobnicate'", id="unknown-command"),
])
def test_bad_input_is_one_line_exit_2(cli: CLI, args: list[str], message: str) -> None:
    result = cli(*[a.replace("{hello}", str(HELLO)) for a in args], check_code=2)
    assert message in result.stderr
    no_traceback(result)


def test_input_of_the_wrong_type_is_refused_before_a_run_exists(cli: CLI) -> None:
    cli("run", str(HELLO), "-i", "failures=two", check_code=2)
    assert "no runs yet" in cli("runs", check_code=0).stdout


def test_bad_setting_from_environment(cli: CLI, tmp_path: Path) -> None:
    write(tmp_path / "p.yaml", "name: p\nsteps:\n  s: {uses: core/echo, with: {x: 1}}\n")
    result = cli("run", "p.yaml", env={"ORCH_MAX_PARALLEL_STEPS": "lots"}, check_code=2)
    assert result.stderr.strip() == (
        "error: bad setting max_parallel_steps = 'lots' (from ORCH_MAX_PARALLEL_STEPS): input "
        "should be a valid integer, unable to parse string as an integer")


def test_a_read_only_command_checks_the_settings_it_reads(cli: CLI) -> None:
    """`runs` reads the store's and the log's settings without pydantic (start-up), and
    refuses a bad one as `run` would; a setting it does not read is `run`'s to check."""
    result = cli("runs", env={"ORCH_DURABILITY": "sometimes"}, check_code=2)
    assert result.stderr.strip() == (
        "error: bad setting durability = 'sometimes' (from ORCH_DURABILITY): input should be "
        "'process', 'machine' or 'none'")
    assert cli("runs", env={"ORCH_MAX_PARALLEL_STEPS": "lots"}, check_code=0)


def test_a_misspelt_setting_stops_every_command_in_one_line(cli: CLI, tmp_path: Path) -> None:
    """`log_fromat` in the config file was silently ignored; now `validate`, `run` and
    `runs` refuse it, exit code 2, one line, no traceback."""
    write(tmp_path / "config" / "orchestrator.toml", 'log_fromat = "json"\n')
    write(tmp_path / "p.yaml", "name: p\nsteps:\n  s: {uses: core/echo, with: {x: 1}}\n")
    for args in (("validate", "p.yaml"), ("run", "p.yaml"), ("runs",)):
        result = cli(*args, check_code=2)
        assert result.stderr == ("config/orchestrator.toml:1: unknown setting 'log_fromat' "
                                 "(did you mean 'log_format'?)\n")


def test_an_unusable_local_data_folder_is_one_line_before_the_run(cli: CLI,
                                                                     tmp_path: Path) -> None:
    """The in-process local API answered 500 to every request of the run instead. (A
    pipeline of core steps opens no provider, and so does not check it.)"""
    (tmp_path / "blocker").write_text("a file where a folder should be")
    write(tmp_path / "p.yaml", "name: p\nsteps:\n  s: {uses: together/smoke-test, "
                               "with: {model: m, prompt: hi}}\n")
    result = cli("run", "p.yaml", env={"ORCH_LOCAL_DATA_DIR": "blocker/api"}, check_code=2)
    assert result.stderr == (f"error: the local API's data folder {tmp_path}/blocker/api cannot "
                             f"be used: {tmp_path}/blocker is not a folder (setting "
                             "local_data_dir)\n")
    assert not (tmp_path / ".orchestrator").exists()


def _foreign_db(path: Path) -> None:
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE invoices (id INTEGER)")
    conn.close()


def _newer_db(path: Path) -> None:
    from orchestrator.store.sqlite.schema import APPLICATION_ID, SCHEMA_VERSION

    with sqlite3.connect(path) as conn:
        conn.execute(f"PRAGMA application_id={APPLICATION_ID}")
        conn.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    conn.close()


@pytest.mark.parametrize(("make", "message"), [
    pytest.param(lambda p: p.write_bytes(b"garbage" * 200),
                 "is not a SQLite database, or is corrupt", id="corrupt"),
    pytest.param(_foreign_db, "belongs to another application", id="foreign"),
    pytest.param(_newer_db, "was written by a newer orchestrator", id="newer-schema"),
])
def test_bad_state_database_is_refused_untouched(cli: CLI, tmp_path: Path, make: Any,
                                                 message: str) -> None:
    db = tmp_path / ".orchestrator" / "state.db"
    db.parent.mkdir()
    make(db)
    content = db.read_bytes()
    for args in (["runs"], ["run", str(HELLO)], ["show", "x"]):
        result = cli(*args, check_code=2)
        assert message in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        no_traceback(result)
    assert db.read_bytes() == content


def test_unwritable_state_path(cli: CLI, tmp_path: Path) -> None:
    (tmp_path / "blocker").write_text("a file where a folder should be")
    result = cli("run", str(HELLO), "--state-url", "sqlite:///blocker/state.db", check_code=2)
    assert "cannot create the state directory blocker" in result.stderr
    no_traceback(result)


def test_json_logs_carry_run_step_and_attempt(cli: CLI) -> None:
    """Every JSON line names run_id, step and attempt (null outside a step)."""
    result = cli("run", str(HELLO), "--log-format", "json", check_code=0)
    lines = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    assert lines, result.stderr
    assert all({"run_id", "step", "attempt", "event", "level"} <= set(line) for line in lines)
    run_id = run_id_from(result.stderr)
    assert {line["run_id"] for line in lines} == {run_id}
    retries = [line for line in lines if line["event"] == "attempt failed, will retry"]
    assert [(line["step"], line["attempt"]) for line in retries] == [("flaky", 1), ("flaky", 2)]


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_interrupts_and_resume_finishes(cli: CLI, tmp_path: Path,
                                               signum: signal.Signals) -> None:
    """Ctrl-C or SIGTERM leaves the run interrupted, states saved (exit 130); resume ends it."""
    write(tmp_path / "slow.yaml", """
        name: slow
        steps:
          first: {uses: core/echo, with: {x: 1}}
          nap: {uses: core/sleep, with: {duration: 60s}, needs: [first]}
    """)
    proc = start_run(tmp_path, "slow.yaml")
    wait_for_state(tmp_path, "SELECT 1 FROM steps WHERE step_id = 'nap' AND checkpoint LIKE "
                             "'%until%'", "the sleep started")
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 130, err
    run_id = run_id_from(err)
    assert f"orchestrator resume {run_id}" in err
    assert "remote" not in err.lower(), "a run that launched no remote job talks of them"
    assert "Traceback" not in err
    assert state(tmp_path, f"SELECT status, lease_owner FROM runs WHERE id = '{run_id}'") == [
        ("interrupted", None)]
    assert dict(state(tmp_path, f"SELECT step_id, status FROM steps WHERE run_id = '{run_id}'")
                ) == {"first": "succeeded", "nap": "interrupted"}
    end_sleeps_now(tmp_path)  # rather than wait out the rest of the minute
    resumed = cli("resume", run_id, check_code=0)
    assert "keeping 1 succeeded step: first" in resumed.stderr


def test_live_run_cannot_be_resumed_twice_but_a_dead_one_can(cli: CLI, tmp_path: Path) -> None:
    """While a process executes a run, `resume` is refused; once it is killed, taken over."""
    write(tmp_path / "slow.yaml", """
        name: slow
        steps:
          nap: {uses: core/sleep, with: {duration: 60s}}
    """)
    proc = start_run(tmp_path, "slow.yaml")
    rows = wait_for_state(tmp_path, "SELECT id FROM runs WHERE status = 'running' AND "
                                    "lease_owner IS NOT NULL", "the run was executing")
    run_id = str(rows[0][0])
    refused = cli("resume", run_id, check_code=2)
    assert f"error: run {run_id} is being executed by" in refused.stderr
    no_traceback(refused)
    proc.kill()
    proc.communicate(timeout=10)
    end_sleeps_now(tmp_path)
    cli("resume", run_id, check_code=0)


def test_plan_file_and_plan_run(cli: CLI, tmp_path: Path) -> None:
    """`plan FILE` shows the DAG with inputs filled; `plan RUN` shows what resume would do."""
    plan = cli("plan", str(HELLO), "-i", "who=team", check_code=0).stdout
    assert "input who = team" in plan
    assert re.search(r"greet\s+core/echo\s+-\s+3x\s+1m00s\s+message=Hello, team!", plan)
    assert re.search(r"report\s+core/echo\s+flaky, greet, nap", plan)
    write(tmp_path / "failing.yaml", FAILING)
    run_id = run_id_from(cli("run", "failing.yaml", check_code=1).stderr)
    resume = cli("plan", run_id, check_code=0).stdout
    assert re.search(r"ok\s+succeeded\s+keep outputs", resume)
    assert re.search(r"broken\s+failed\s+run again", resume)


def test_console_script_is_installed() -> None:
    """`orchestrator` is on the path of the environment the tests run in."""
    script = shutil.which("orchestrator", path=str(Path(sys.executable).parent))
    assert script is not None
    result = subprocess.run([script, "--help"], capture_output=True, text=True, check=True)
    assert "validate" in result.stdout and "resume" in result.stdout


def test_check_data(cli: CLI, tmp_path: Path) -> None:
    """Every problem with FILE:LINE, exit 2; a good file says ok."""
    write(tmp_path / "bad.jsonl", '{"text": "a"}\n\n{"prompt": "p"}\n')
    good = cli("check-data", str(REPO / "pipelines" / "data" / "train.jsonl"), check_code=0)
    assert good.stdout.strip().endswith("ok (8 instruction samples, 562 bytes)")
    bad = cli("check-data", "bad.jsonl", check_code=2)
    assert bad.stderr.splitlines() == [
        "bad.jsonl:2: blank line; every line must hold one JSON object",
        "bad.jsonl:3: no dataset format matches the keys prompt; use text; messages; prompt + "
        "completion; or input + preferred_output + non_preferred_output",
    ]


def test_models_is_empty_at_first(cli: CLI) -> None:
    assert "no models recorded yet" in cli("models", check_code=0).stdout


def test_a_state_database_locked_by_another_process_is_exit_75_and_nothing_written(
        cli: CLI, tmp_path: Path) -> None:
    """While a second real process holds the state database's write lock past busy_timeout,
    `run --detach` says so in one line and exits 75 (try again), writing nothing; once the
    lock is gone the same command succeeds."""
    cli("runs", check_code=0)  # the state database exists
    db = tmp_path / ".orchestrator" / "state.db"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sqlite3, sys\nc = sqlite3.connect(sys.argv[1], "
         "isolation_level=None)\nc.execute('BEGIN IMMEDIATE')\nprint('locked', flush=True)\n"
         "sys.stdin.read()\n", str(db)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
        refused = cli("run", "--detach", str(HELLO), env={"ORCH_BUSY_TIMEOUT": "200ms"})
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(timeout=30)
        assert holder.stdout is not None
        holder.stdout.close()
    assert refused.returncode == 75, refused.stderr
    assert refused.stderr.count("\n") == 1, refused.stderr
    assert "is locked by another process for longer than busy_timeout (0.2s); nothing was " \
           "written" in refused.stderr
    assert "no runs yet" in cli("runs", check_code=0).stdout
    queued = cli("run", "--detach", str(HELLO), check_code=0).stdout.strip()
    assert queued in cli("runs", check_code=0).stdout
