"""Every flag of `resume RUN` works on `resume BATCH`: the test walks the parser's flags of
`resume` and holds a scenario for each, run on a batch whose cells did not all succeed. A
flag added to `resume` without a batch scenario here fails the first test; one that does not
reach the cells fails its own. (`--from`, then `--reload`, were dropped on the way to the
cells; each time the cells resumed as if the flag had not been given.)"""

from __future__ import annotations

import argparse
import json
import signal
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from orchestrator.cli import build_parser
from tests.cli.helpers import popen, wait_for_state
from tests.conftest import CLI, write

MATRIX = """\
name: sweep
matrix: {x: [1, 2]}
steps:
  a: {uses: core/echo, with: {x: "${{ matrix.x }}"}}
  b:
    uses: core/fail
    with: {transient: false, message: "fix me"}
    needs: [a]
    retry: null
"""
FIXED = MATRIX.replace("""    uses: core/fail
    with: {transient: false, message: "fix me"}""", """    uses: core/echo
    with: {fixed: true}""")


def _resume_flags() -> set[str]:
    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    resume = commands.choices["resume"]
    return {a.option_strings[-1] for a in resume._actions
            if a.option_strings and not isinstance(a, argparse._HelpAction)}


def _failed_batch(cli: CLI, tmp_path: Path, text: str = MATRIX) -> str:
    write(tmp_path / "sweep.yaml", text)
    cli("run", "sweep.yaml", check_code=1)
    return str(json.loads(cli("batches", "-o", "json", check_code=0).stdout)[0]["id"])


def _cells(cli: CLI, batch: str) -> dict[str, str]:
    shown = json.loads(cli("show", batch, "-o", "json", check_code=0).stdout)
    return {cell["id"]: cell["status"] for cell in shown["cells"]}


def _sql(tmp_path: Path, statement: str) -> list[tuple[object, ...]]:
    conn = sqlite3.connect(tmp_path / ".orchestrator" / "state.db")
    try:
        with conn:
            return conn.execute(statement).fetchall()
    finally:
        conn.close()


def reload_scenario(cli: CLI, tmp_path: Path) -> None:
    """--reload: the fixed file is read again; without it the cells fail again."""
    batch = _failed_batch(cli, tmp_path)
    write(tmp_path / "sweep.yaml", FIXED)
    cli("resume", batch, check_code=1)  # the stored text: the same failure
    resumed = cli("resume", batch, "--reload", check_code=0)
    assert f"reloaded {tmp_path / 'sweep.yaml'}: each cell resumes with its new text" in \
        resumed.stderr
    assert set(_cells(cli, batch).values()) == {"succeeded"}


def from_scenario(cli: CLI, tmp_path: Path) -> None:
    """--from a: step a runs again in every cell resumed."""
    batch = _failed_batch(cli, tmp_path)
    cli("resume", batch, "--from", "a", check_code=1)
    starts = _sql(tmp_path, "SELECT count(*) FROM events WHERE kind = 'step_started' "
                            "AND step_id = 'a'")[0][0]
    assert starts == 4  # two cells, each twice


def force_scenario(cli: CLI, tmp_path: Path) -> None:
    """--force: stranded cells are left alone without it (one line each), resumed with it."""
    batch = _failed_batch(cli, tmp_path, ONCE)
    _sql(tmp_path, "UPDATE runs SET status = 'stranded', recoveries = 5")
    left = cli("resume", batch, check_code=1)
    assert left.stderr.count("is stranded") == 2 and "Traceback" not in left.stderr
    cli("resume", batch, "--force", check_code=0)
    assert set(_cells(cli, batch).values()) == {"succeeded"}


ONCE = """\
name: once
matrix: {x: [1, 2]}
steps:
  a: {uses: core/fail, with: {times: 1, transient: false}, retry: null}
"""
"""Cells that fail once, then succeed when resumed (the count is in their checkpoint)."""


def provider_scenario(cli: CLI, tmp_path: Path) -> None:
    """--provider with --move-provider: every cell moves (and is refused without it)."""
    batch = _failed_batch(cli, tmp_path, ONCE)
    elsewhere = {"ORCH_LOCAL_DATA_DIR": str(tmp_path / "elsewhere")}
    refused = cli("resume", batch, "--provider", "local", env=elsewhere, check_code=2)
    assert "--move-provider" in refused.stderr
    cli("resume", batch, "--provider", "local", "--move-provider", env=elsewhere,
        check_code=0)
    shown = json.loads(cli("runs", "-o", "json", check_code=0).stdout)
    assert {run["provider_url"] for run in shown} == {str(tmp_path / "elsewhere")}


def detach_scenario(cli: CLI, tmp_path: Path) -> None:
    """--detach: the cells that did not succeed are queued for a worker, with what the other
    flags change committed first (here --reload: a worker resumes the fixed file)."""
    batch = _failed_batch(cli, tmp_path)
    write(tmp_path / "sweep.yaml", FIXED)
    queued = cli("resume", batch, "--reload", "--detach", check_code=0)
    assert queued.stdout.strip() == batch
    assert set(_cells(cli, batch).values()) == {"queued"}
    texts = _sql(tmp_path, "SELECT DISTINCT t.text FROM runs r JOIN pipeline_texts t "
                           "ON t.hash = r.pipeline_hash")
    assert texts == [(FIXED,)]
    for cell in _cells(cli, batch):  # what a worker's plain resume of each will do
        planned = cli("plan", cell, check_code=0).stdout.splitlines()
        assert [line.split() for line in planned[2:]] == [
            ["a", "succeeded", "keep", "outputs"], ["b", "failed", "run", "again"]]


def on_interrupt_scenario(cli: CLI, tmp_path: Path) -> None:
    """--on-interrupt cancel: Ctrl-C during `resume BATCH` cancels its cells (a real
    process: the signal is the point)."""
    batch = _failed_batch(cli, tmp_path, ONCE + "  nap: {uses: core/sleep, with: {duration: "
                                                "1h}, needs: [a]}\n")
    proc = popen(tmp_path, "resume", batch, "--on-interrupt", "cancel")
    wait_for_state(tmp_path, "SELECT count(*) FROM steps WHERE step_id = 'nap' AND "
                             "status = 'running' HAVING count(*) = 2", "both cells nap",
                   timeout=60)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1, err
    assert set(_cells(cli, batch).values()) == {"cancelled"}


def session_scenario(cli: CLI, tmp_path: Path) -> None:
    """--state-url, --log-format, --log-level: the session's own flags, for a batch too."""
    write(tmp_path / "sweep.yaml", MATRIX)
    url = f"sqlite:///{tmp_path / 'other.db'}"
    cli("run", "sweep.yaml", "--state-url", url, check_code=1)
    batch = json.loads(cli("batches", "-o", "json", "--state-url", url,
                           check_code=0).stdout)[0]["id"]
    write(tmp_path / "sweep.yaml", FIXED)
    resumed = cli("resume", batch, "--reload", "--state-url", url, "--log-format", "json",
                  "--log-level", "warning", check_code=0)
    assert "step succeeded" not in resumed.stderr  # info lines held back by --log-level
    assert json.loads(cli("show", batch, "-o", "json", "--state-url", url,
                          check_code=0).stdout)["status"] == "succeeded"


SCENARIOS: dict[str, Callable[[CLI, Path], None]] = {
    "--reload": reload_scenario, "--from": from_scenario, "--force": force_scenario,
    "--provider": provider_scenario, "--move-provider": provider_scenario,
    "--detach": detach_scenario, "--on-interrupt": on_interrupt_scenario,
    "--state-url": session_scenario, "--log-format": session_scenario,
    "--log-level": session_scenario,
}


def _name(scenario: object) -> str:
    return str(getattr(scenario, "__name__", scenario))


def test_every_flag_of_resume_has_a_batch_scenario() -> None:
    assert _resume_flags() == set(SCENARIOS)


@pytest.mark.parametrize("scenario", sorted(set(SCENARIOS.values()), key=_name),
                         ids=_name)
def test_the_flag_reaches_every_cell_of_a_batch(cli: CLI, tmp_path: Path,
                                                scenario: Callable[[CLI, Path], None]) -> None:
    scenario(cli, tmp_path)
