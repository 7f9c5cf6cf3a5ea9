"""The `orchestrator` package's public names: sorted, complete, and all importable."""

from __future__ import annotations

import subprocess
import sys

import orchestrator


def test_all_is_sorted_and_resolves() -> None:
    assert orchestrator.__all__ == sorted(orchestrator.__all__)
    for name in orchestrator.__all__:
        assert getattr(orchestrator, name) is not None, name
    assert set(orchestrator.__all__) <= set(dir(orchestrator))


def test_unknown_attribute_is_an_attribute_error() -> None:
    try:
        orchestrator.Nope  # noqa: B018
    except AttributeError as exc:
        assert "has no attribute 'Nope'" in str(exc)
    else:
        raise AssertionError("expected AttributeError")


def test_importing_the_package_is_light() -> None:
    """`import orchestrator` loads none of pydantic, structlog or anyio (fast --help)."""
    code = ("import sys, orchestrator; "
            "print(sorted(m for m in ('pydantic', 'structlog', 'anyio', 'yaml') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"


def test_validating_core_steps_does_not_import_the_provider() -> None:
    """Step families load on first use: a core-only pipeline never imports the Together steps."""
    from tests.conftest import REPO

    code = ("import sys; from orchestrator.steps.builtin import load_pipeline; "
            f"load_pipeline({str(REPO / 'pipelines' / 'hello.yaml')!r}); "
            "print(sorted(m for m in ('orchestrator.steps.together', 'httpx', 'anyio.to_thread') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"
