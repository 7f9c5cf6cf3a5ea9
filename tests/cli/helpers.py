"""Helpers for tests that drive real `orchestrator` processes and read their state file."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar

import pytest

from bench import ProcessCost, measure_process

T = TypeVar("T")

RUN_ID = re.compile(r"run (r-\d{6}-\d{6}-[0-9a-z]{6})")


def run_id_from(stderr: str) -> str:
    """The run id a `run` command announced on stderr."""
    match = RUN_ID.search(stderr)
    assert match, stderr
    return match.group(1)


def state(tmp_path: Path, sql: str) -> list[tuple[Any, ...]]:
    """Rows from the state file; none while the file or its schema is still being created."""
    db = tmp_path / ".orchestrator" / "state.db"
    if not db.exists():
        return []
    conn = sqlite3.connect(db)
    try:
        return conn.execute(sql).fetchall()
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            return []
        raise
    finally:
        conn.close()


def wait_for(check: Callable[[], T | Literal[False] | None], what: str, timeout: float = 30,
             every: float = 0.05) -> T:
    """Poll `check` until it returns something true, and return that (a deadline, never a
    blind sleep); `what` names the condition in the failure."""
    deadline = time.monotonic() + timeout
    while not (value := check()):
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(every)
    return value


def wait_for_state(tmp_path: Path, sql: str, what: str,
                   timeout: float = 30) -> list[tuple[object, ...]]:
    """Poll the state file until `sql` returns rows."""
    return wait_for(lambda: state(tmp_path, sql), what, timeout)


def popen(tmp_path: Path, *args: str, env: dict[str, str] | None = None,
          prefix: Sequence[str] = ()) -> subprocess.Popen[str]:
    """`orchestrator ARGS...` in the background, in the test's directory, without the
    environment's ORCH_* settings (plus `env`); `prefix` runs it through another command
    (`ip netns exec NAME`)."""
    full = {k: v for k, v in os.environ.items() if not k.startswith("ORCH_")}
    full.update(env or {})
    return subprocess.Popen([*prefix, sys.executable, "-m", "orchestrator", *args], cwd=tmp_path,
                            env=full, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


@dataclasses.dataclass
class Service:
    """A background `orchestrator worker|scheduler|serve`, and the stderr lines it wrote."""

    proc: subprocess.Popen[str]
    lines: list[str]
    reader: threading.Thread

    def stop(self, timeout: float = 30, *, how: signal.Signals = signal.SIGINT) -> int:
        """Ctrl-C it (or send `how`: SIGKILL), wait for it to end, close its pipes; its exit
        code."""
        self.proc.send_signal(how)
        code = self.proc.wait(timeout=timeout)
        self.reader.join(timeout)
        for pipe in (self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                pipe.close()
        return code


def start_service(tmp_path: Path, *args: str, env: dict[str, str] | None = None,
            timeout: float = 30, prefix: Sequence[str] = ()) -> Service:
    """`orchestrator worker|scheduler|serve ...` in the background, returned once it says it
    is serving ("Ctrl-C stops"). Its stderr lines go on being collected (`Service.lines`)."""
    proc = popen(tmp_path, *args, env=env, prefix=prefix)
    lines: list[str] = []
    ready = threading.Event()

    def read() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.append(line)
            if "Ctrl-C stops" in line:
                ready.set()
        ready.set()  # it ended: the caller finds out below

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    service = Service(proc, lines, reader)
    if not ready.wait(timeout) or proc.poll() is not None:
        service.stop()
        msg = f"orchestrator {' '.join(args)} did not start serving:\n{''.join(lines)}"
        raise AssertionError(msg)
    return service


def start_run(tmp_path: Path, pipeline: str) -> subprocess.Popen[str]:
    """`orchestrator run PIPELINE` in the background, in the test's directory."""
    return subprocess.Popen([sys.executable, "-m", "orchestrator", "run", pipeline],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def end_sleeps_now(tmp_path: Path) -> None:
    """Make every durable `core/sleep` timer due, so a resumed run need not wait it out."""
    conn = sqlite3.connect(tmp_path / ".orchestrator" / "state.db")
    try:
        with conn:
            conn.execute("UPDATE steps SET checkpoint = json_set(checkpoint, '$.until', 0) "
                         "WHERE json_extract(checkpoint, '$.until') IS NOT NULL")
    finally:
        conn.close()


def measured(*args: str, cwd: Path | None = None) -> ProcessCost:
    """`orchestrator ARGS...` run to its end: its exit code, output, CPU time and peak memory."""
    return measure_process([sys.executable, "-m", "orchestrator", *args], cwd=cwd, timeout=120)


@contextlib.contextmanager
def if_the_machine_allows() -> Iterator[None]:
    """Skip the test, in one line saying why, where the machine cannot give what the block
    asks for (a private PostgreSQL server, network namespaces: bench.pgserver.NotHere)."""
    from bench.pgserver import NotHere

    try:
        yield
    except NotHere as exc:
        pytest.skip(str(exc))
