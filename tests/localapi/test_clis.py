"""Together's CLIs, both generations, as programs against `orchestrator local-api` over
loopback: every call a fine-tuner makes from a shell, each exiting 0 with the output the CLI
reads (tests/localapi/cli_program.py runs them; 2.x from the project's environment, 3.x from
.venv/together3: they cannot share one)."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.localapi.conftest import BASE, INSTRUCTIONS
from tests.localapi.test_sdk3 import SDK3, sdk3_env
from tests.localapi.test_server import free_port, serving

PROGRAM = Path(__file__).with_name("cli_program.py")
FINE_TUNING = {"files check", "files upload", "files list", "files retrieve", "ft create",
               "ft retrieve", "ft list", "ft list-events", "ft list-checkpoints",
               "ft list-metrics", "ft download", "ft download-tokenized-dataset",
               "ft preview", "ft model-limits", "ft create (to cancel)", "ft cancel",
               "models list", "models public", "models create"}
CALLS = {"3": FINE_TUNING | {"models upload", "models ls-files"},
         "2": FINE_TUNING | {"models upload (v0 import)"}}
"""The calls each generation makes (2.x's `beta models upload` is left out: it sends to
api.together.ai whatever the base URL says)."""


def s3_etag(path: Path, part: int = 20 << 20) -> str:
    """The hash the CLI declares for a file: S3's ETag of its 20 MiB parts."""
    data = path.read_bytes()
    md5s = [hashlib.md5(data[i:i + part], usedforsecurity=False).digest()
            for i in range(0, len(data), part)]
    if len(md5s) == 1:
        return md5s[0].hex()
    return f"{hashlib.md5(b''.join(md5s), usedforsecurity=False).hexdigest()}-{len(md5s)}"


@pytest.mark.slow
@pytest.mark.parametrize("generation", ["2", "3"])
def test_each_cli_makes_every_call_of_a_fine_tuner(tmp_path: Path, generation: str) -> None:
    data = tmp_path / "train.jsonl"
    data.write_bytes(INSTRUCTIONS)
    work = tmp_path / "work"
    work.mkdir()
    with serving(tmp_path, free_port(), local_job_duration="1s") as base:
        env = sdk3_env(tmp_path, base.removesuffix("/v1"))
        if generation == "2":  # the project's own SDK, with the base URL it documents
            env = {**{k: v for k, v in env.items() if k != "PYTHONPATH"},
                   "TOGETHER_BASE_URL": base}
        assert generation == "2" or (SDK3 / "together").is_dir()
        done = subprocess.run([sys.executable, str(PROGRAM), str(work), str(data), BASE],
                              env=env, capture_output=True, text=True, timeout=240,
                              check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    calls = seen["calls"]
    assert seen["version"].startswith(f"{generation}.")
    assert set(calls) == CALLS[generation]
    failed = {name: call["tail"] for name, call in calls.items()
              if call["rc"] != 0 or "unreadable" in call}
    assert not failed, failed
    value = {name: call.get("seen") for name, call in calls.items()}
    assert value["files list"] == [value["files upload"]]
    assert value["files retrieve"] == "COMPLETED"
    assert value["ft retrieve"] == "completed"
    assert value["ft list"] == [value["ft create"]]  # listed before the second was made
    assert value["ft list-events"] == ["job_complete"]
    assert value["ft list-checkpoints"] == ["Final"]
    assert value["ft download"] > 0 and value["ft download-tokenized-dataset"] > 0
    assert value["ft preview"] == 3
    assert value["ft model-limits"] == BASE
    assert value["ft cancel"] in ("cancel_requested", "cancelled")
    assert value["models public"] == [BASE]
    if generation == "3":
        folder = work / "adapter"
        declared = {path.name: s3_etag(path) for path in folder.iterdir()}
        assert value["models ls-files"] == declared
        assert value["models upload"].startswith("rev-")
        kept = tmp_path / "api-data" / "model-files"
        assert (kept / declared["adapter_model.safetensors"]).read_bytes() == \
            (folder / "adapter_model.safetensors").read_bytes()
    else:
        assert value["models upload (v0 import)"] == "huggingface"
