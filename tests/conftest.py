"""Shared fixtures: a clean environment per test, real stores, and the CLI as a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
import structlog

from orchestrator.redact import REDACTOR
from orchestrator.store.base import StateStore
from orchestrator.store.opening import open_store
from orchestrator.testing import FakeClock, write_text

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """Each test runs in its own empty directory with no ORCH_* settings and fresh logging."""
    for name in list(os.environ):
        if name.startswith("ORCH_") or name in ("TOGETHER_API_KEY", "TOGETHER_BASE_URL"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    structlog.reset_defaults()
    REDACTOR.clear()
    yield
    structlog.reset_defaults()
    REDACTOR.clear()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(params=["sqlite"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty state database of each kind the contract suite covers."""
    return f"sqlite:///{tmp_path / 'state' / 'state.db'}"


@pytest.fixture
async def store(store_url: str, clock: FakeClock) -> AsyncIterator[StateStore]:
    """An open store of each kind, on the test's fake clock."""
    async with open_store(store_url, clock=clock) as opened:
        yield opened


write = write_text
"""Write dedented text to a path (creating folders); returns the path."""


CLI = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def cli(tmp_path: Path) -> CLI:
    """Run `orchestrator ARGS...` as a real process in the test's directory."""

    def run(*args: str, env: dict[str, str] | None = None, timeout: float = 60,
            check_code: int | None = None) -> subprocess.CompletedProcess[str]:
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("ORCH_")}
        full_env.update(env or {})
        result = subprocess.run(
            [sys.executable, "-m", "orchestrator", *args], cwd=tmp_path, env=full_env,
            capture_output=True, text=True, timeout=timeout, check=False,
        )
        if check_code is not None and result.returncode != check_code:
            pytest.fail(f"orchestrator {' '.join(args)} exited {result.returncode}, expected "
                        f"{check_code}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}")
        return result

    return run
