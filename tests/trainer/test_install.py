"""Without the train extra, the real trainer is refused in one line that says what to install;
torch is never loaded by anything but the trainer process."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from typing import Any

import pytest

from tests.conftest import CLI


def test_without_the_extra_the_trainer_is_refused_in_one_line(
        cli: CLI, monkeypatch: pytest.MonkeyPatch) -> None:
    found = importlib.util.find_spec

    def no_peft(name: str, *args: Any) -> Any:
        return None if name == "peft" else found(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", no_peft)
    refused = cli("local-api", "--trainer", "peft", "--port", "1", check_code=2)
    assert refused.stderr.count("\n") == 1, refused.stderr
    assert "peft" in refused.stderr and "orchestrator[train]" in refused.stderr
    assert "Traceback" not in refused.stderr


def test_the_server_and_engine_never_import_torch() -> None:
    """The local API with the real trainer configured, its routes and the engine load no
    torch, transformers or peft: those live in the trainer process alone."""
    code = ("import sys; from orchestrator.localapi import LocalAPI; "
            "from orchestrator.localapi.config import LocalAPIConfig; "
            "import orchestrator.engine.orchestrator, orchestrator.localapi.training, "
            "orchestrator.trainer.client, orchestrator.trainer.store; "
            "from pathlib import Path; import tempfile; "
            "LocalAPI(LocalAPIConfig(data_dir=Path(tempfile.mkdtemp()), trainer='peft')); "
            "print(sorted(m for m in ('torch', 'transformers', 'peft', 'safetensors') "
            "if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
