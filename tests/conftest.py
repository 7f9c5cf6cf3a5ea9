"""Shared fixtures: a clean environment per test, real stores, and the CLI as a subprocess."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from orchestrator import process
from orchestrator.store.base import StateStore
from orchestrator.store.opening import open_store
from orchestrator.testing import FakeClock, write_text

REPO = Path(__file__).resolve().parent.parent


def pytest_report_header() -> str:
    """Say at the top of the run whether the web view's browser tests run, and on what."""
    import shutil

    chromium = os.environ.get("ORCH_TEST_CHROMIUM") or shutil.which("chromium")
    if chromium:
        return f"browser tests: Chromium at {chromium} (screenshots in test-output/screenshots)"
    return "browser tests: SKIPPED, no Chromium installed (apt-get install chromium)"


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """Each test runs in its own empty directory with no ORCH_* settings, and with the
    process's state (caches, secrets, armed faults, logging) as a fresh process has it."""
    for name in list(os.environ):
        if name.startswith("ORCH_") or name in ("TOGETHER_API_KEY", "TOGETHER_BASE_URL"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    process.reset()
    yield
    process.reset()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


POSTGRES = os.environ.get("TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
"""The machine's PostgreSQL server (`.ci/run` starts it); each test gets a schema of its own."""


def pg_rows(url: str, query: str) -> list[tuple[object, ...]]:
    """Run `query` in the schema a `postgres_url` names, as another client would; its rows
    (none for a statement that returns none)."""
    import psycopg

    schema = url.rpartition("schema=")[2]
    with psycopg.connect(POSTGRES, autocommit=True, options=f"-c search_path={schema}") as conn:
        cursor = conn.execute(query)
        return cursor.fetchall() if cursor.description else []


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A state URL naming a fresh schema of the test database, dropped after the test."""
    import psycopg

    schema = f"t_{uuid.uuid4().hex[:16]}"
    yield f"{POSTGRES}?schema={schema}"
    with psycopg.connect(POSTGRES, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty state database of each kind the contract suite covers."""
    if request.param == "postgresql":
        return str(request.getfixturevalue("postgres_url"))
    return f"sqlite:///{tmp_path / 'state' / 'state.db'}"


@pytest.fixture
async def store(store_url: str, clock: FakeClock) -> AsyncIterator[StateStore]:
    """An open store of each kind, on the test's fake clock."""
    async with open_store(store_url, clock=clock) as opened:
        yield opened


write = write_text
"""Write dedented text to a path (creating folders); returns the path."""


CLI = Callable[..., subprocess.CompletedProcess[str]]


def _checked(args: tuple[str, ...], result: subprocess.CompletedProcess[str],
             check_code: int | None) -> subprocess.CompletedProcess[str]:
    if check_code is not None and result.returncode != check_code:
        pytest.fail(f"orchestrator {' '.join(args)} exited {result.returncode}, expected "
                    f"{check_code}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}")
    return result


@pytest.fixture
def cli_process(tmp_path: Path) -> CLI:
    """Run `orchestrator ARGS...` as a real process in the test's directory: for tests where
    the process is the point (its start-up, what reaches its pipes, signals, kill -9)."""

    def run(*args: str, env: dict[str, str] | None = None, timeout: float = 60,
            check_code: int | None = None) -> subprocess.CompletedProcess[str]:
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("ORCH_")}
        full_env.update(env or {})
        result = subprocess.run(
            [sys.executable, "-m", "orchestrator", *args], cwd=tmp_path, env=full_env,
            capture_output=True, text=True, timeout=timeout, check=False,
        )
        return _checked(args, result, check_code)

    return run


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CLI:
    """Run `orchestrator ARGS...` in this process, as the console script would (its exit
    code, stdout and stderr; nothing else): the same command line, parsed and handled by the
    same `main`, without the cost of starting Python. Tests where a real process is the
    point use `cli_process`."""

    def run(*args: str, env: dict[str, str] | None = None, timeout: float = 60,
            check_code: int | None = None) -> subprocess.CompletedProcess[str]:
        del timeout  # pytest-timeout bounds the test
        assert "ORCH_FAULTS" not in (env or {}), "a crash point would kill pytest: cli_process"
        from orchestrator.cli import main

        out, err = io.StringIO(), io.StringIO()
        modules, path = set(sys.modules), list(sys.path)
        saved = sys.stdout, sys.stderr
        with monkeypatch.context() as patch:
            for name, value in (env or {}).items():
                patch.setenv(name, value)
            sys.stdout, sys.stderr = out, err
            try:
                code = main(list(args))
            except SystemExit as exc:  # argparse: a bad flag
                code = exc.code if isinstance(exc.code, int) else 2
            finally:
                sys.stdout, sys.stderr = saved
                process.reset()
                # A user's step modules beside a pipeline are imported by name: forget them,
                # so the next test's module of the same name is its own.
                sys.path[:] = path
                for name in set(sys.modules) - modules:
                    if str(getattr(sys.modules[name], "__file__", "")).startswith(
                            str(tmp_path)):
                        del sys.modules[name]
        return _checked(args, subprocess.CompletedProcess(list(args), code, out.getvalue(),
                                                          err.getvalue()), check_code)

    return run
