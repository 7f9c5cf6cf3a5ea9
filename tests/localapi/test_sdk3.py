"""Together's current SDK (3.x) against `orchestrator local-api` over loopback: files,
fine-tunes, the v2 model API (register, remote upload, revisions) and inference on the model
imported that way. The SDK runs as a separate program (tests/localapi/sdk3_program.py) from
.venv/together3, which `make install` fills: one environment cannot hold both SDKs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.localapi.conftest import BASE, INSTRUCTIONS
from tests.localapi.test_server import KEY, free_port, serving

ROOT = Path(__file__).resolve().parents[2]
SDK3 = ROOT / ".venv" / "together3"
PROGRAM = Path(__file__).with_name("sdk3_program.py")


def sdk3_env(tmp_path: Path, base_url: str) -> dict[str, str]:
    assert (SDK3 / "together").is_dir(), f"{SDK3} is missing: run `make install`"
    return {**os.environ, "PYTHONPATH": str(SDK3), "TOGETHER_BASE_URL": base_url,
            "TOGETHER_API_KEY": KEY, "TOGETHER_PROJECT_ID": "proj-local",
            "TOGETHER_DISABLE_VERSION_CHECK": "1", "TOGETHER_TELEMETRY_DISABLED": "1",
            "HOME": str(tmp_path), "XDG_CACHE_HOME": str(tmp_path / ".cache")}


@pytest.mark.slow
@pytest.mark.parametrize("suffix", ["", "/v1"], ids=["root", "v1"])
def test_sdk3_trains_registers_imports_and_serves(tmp_path: Path, suffix: str) -> None:
    """The SDK's base URL is the server's root; one ending in /v1 (as for SDK 2.x) works too."""
    data = tmp_path / "train.jsonl"
    data.write_bytes(INSTRUCTIONS)
    port = free_port()
    with serving(tmp_path, port, local_job_duration="2s", local_upload_duration="1s") as base:
        root = base.removesuffix("/v1")
        done = subprocess.run([sys.executable, str(PROGRAM), str(data), BASE],
                              env=sdk3_env(tmp_path, root + suffix), capture_output=True,
                              text=True, timeout=120, check=False)
        assert done.returncode == 0, done.stderr[-3000:]
        seen = json.loads(done.stdout.strip().splitlines()[-1])
        v0_listed = httpx.get(f"{base}/models", headers={"Authorization": f"Bearer {KEY}"},
                              timeout=5).json()
    assert seen["sdk"].startswith("3.")
    assert seen["file_again"] is True  # deduplicated by checksum
    assert seen["job"]["status"] == "completed"
    model = seen["model"]
    assert model["name"] == "local-user/sdk3-adapter"
    assert model["projectId"] == "proj-local" and model["baseModelId"] == BASE
    assert model["weights"]["type"] == "WEIGHTS_TYPE_ADAPTER"
    assert seen["upload"]["statuses"][0] == "REMOTE_UPLOAD_STATUS_PENDING"
    assert seen["upload"]["statuses"][-1] == "REMOTE_UPLOAD_STATUS_SUCCEEDED"
    assert seen["upload"]["model_id"] == model["id"]
    assert "hf_secret" not in seen["upload"]["dump"]  # the source credential is write-only
    assert seen["events"] == ["upload.queued", "download.started", "upload.succeeded"]
    assert len(seen["uploads_listed"]) == 1
    assert seen["retrieved"] == seen["listed"][0] == "local-user/sdk3-adapter"
    assert seen["revisions"] == ["REVISION_VALIDATION_STATUS_SUCCESS"]
    assert seen["files"] == ["adapter_config.json", "adapter_model.safetensors"]
    assert seen["answer"] == " Paris"  # the imported files are the fine-tune's: it learnt this
    assert "local-user/sdk3-adapter" in {m["id"] for m in v0_listed}
    assert "hf_secret" not in (tmp_path / "api-data" / "local-api.db").read_bytes().decode(
        "latin-1")


FIELDS = Path(__file__).with_name("sdk3_fields.py")
LEFT_OUT = {
    # empty for these jobs (no checkpoint, Hugging Face model, validation file, W&B, early
    # stopping, images), left out rather than null: Together's OpenAPI document types them
    # as strings
    "from_checkpoint", "from_hf_model", "hf_model_revision", "validation_file",
    "wandb_base_url", "wandb_entity", "wandb_name", "wandb_project_name",
    "early_stopping_best_metric", "early_stopping_best_step",
    "early_stopping_best_metric_value", "multimodal_params",
    "started_at",  # a job just created or cancelled before it started
    "suffix",  # a job created without one
    "events",  # the truncated shapes (create, list, cancel) carry none
    "TrainingFileNumLines", "TrainingFileSize",  # the old spelling; trainingfile_* are sent
    # Together's own model registry and tokenizer cache, which the local API does not have
    "adapter_object_id", "adapter_object_name", "adapter_object_revision_id",
    "model_object_id", "model_object_name", "model_object_revision_id",
    "tokenized_dataset_path", "tokenized_dataset_uploaded_at",
    "checkpoint", "object_id", "object_name", "object_revision_id",
    "architecture",  # a supported model's weights metadata: not read from any weights
    "decodingSpeedTps", "timeToFirstTokenMs",  # a deployment profile's benchmarks: none run
}
"""The SDK 3.x response fields the local API leaves out, each for a stated reason."""


@pytest.mark.slow
def test_sdk3_strict_validation_field_by_field(tmp_path: Path) -> None:
    """Every call a fine-tuner makes parses with strict validation into the SDK's own types
    (create raised before `adapter_output_name`; training `from_checkpoint`, by job id or
    output name, each with or without `:step`, failed: the SDK asks the job's limits first),
    and each field those types have that an answer leaves out is one left out on purpose."""
    data = tmp_path / "train.jsonl"
    data.write_bytes(INSTRUCTIONS)
    with serving(tmp_path, free_port(), local_job_duration="1s") as base:
        done = subprocess.run([sys.executable, str(FIELDS), str(data), BASE],
                              env=sdk3_env(tmp_path, base.removesuffix("/v1")),
                              capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["errors"] == {}
    calls = {"files.list", "files.retrieve", "fine_tuning.create", "fine_tuning.retrieve",
             "fine_tuning.list", "fine_tuning.list_events", "fine_tuning.list_checkpoints",
             "fine_tuning.cancel", "models.list", "models.list_supported",
             "models.retrieve_supported", "models.list_supported search",
             "fine_tuning.preview", "fine_tuning.retrieve_tokenized_dataset"}
    resumed = {c for c in seen["missing"] if "from_checkpoint" in c}
    assert set(seen["missing"]) - resumed == calls and len(resumed) == 4  # id, name, and :step
    unexplained = {call: [path for path in paths
                          if path.rsplit(".", 1)[-1].removeprefix("data[]") not in LEFT_OUT]
                   for call, paths in seen["missing"].items()}
    assert all(not paths for paths in unexplained.values()), {
        call: paths for call, paths in unexplained.items() if paths}
    created = seen["missing"]["fine_tuning.create"]
    assert not {"adapter_output_name", "job_id", "total_steps", "param_count",
                "max_seq_length", "output_name"} & set(created)
