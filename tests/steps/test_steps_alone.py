"""Step types run alone (`orchestrator.testing.StepEnvironment`): given parameters, a real
provider (the local API in-process) or none, no pipeline, store or engine. What a crash leaves
behind is an attempt's checkpoint, handed in."""

from __future__ import annotations

import hashlib
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict

from orchestrator.errors import PermanentError
from orchestrator.providers.together.client import TogetherClient
from orchestrator.steps.builtin import builtin_registry
from orchestrator.steps.context import Clients, StepContext
from orchestrator.steps.together import run_token
from orchestrator.testing import StepEnvironment, local_together
from tests.localapi.conftest import BASE, INSTRUCTIONS

ADAPTER = {"model_name": "my-adapter", "source": "https://huggingface.co/acme/my-adapter",
           "base_model": BASE, "poll_interval": "50ms"}


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[TogetherClient]:
    (tmp_path / "train.jsonl").write_bytes(INSTRUCTIONS)
    async with local_together(tmp_path, job_duration=0.6, upload_duration=0.3) as opened:
        yield opened


def env(tmp_path: Path, client: TogetherClient, run_id: str = "r-test") -> StepEnvironment:
    return StepEnvironment(tmp_path, clients=Clients(client), run_id=run_id)


async def test_upload_checks_the_data_first(tmp_path: Path, client: TogetherClient) -> None:
    (tmp_path / "bad.jsonl").write_bytes(INSTRUCTIONS + b"\n{\"prompt\": 1}\n")
    with pytest.raises(PermanentError) as refused:
        await env(tmp_path, client).run("together/upload-file", {"path": "bad.jsonl"})
    assert "line 4: blank line" in str(refused.value)
    assert "line 5: no dataset format" in str(refused.value)
    assert await client.list_files() == []


async def test_identical_bytes_are_uploaded_once(tmp_path: Path, client: TogetherClient) -> None:
    first = await env(tmp_path, client, "r-1").run("together/upload-file",
                                                   {"path": "train.jsonl"})
    second = await env(tmp_path, client, "r-2").run("together/upload-file",
                                                    {"path": "train.jsonl"})
    assert first["file_id"] == second["file_id"]
    assert (first["reused"], second["reused"]) == (False, True)
    assert len(await client.list_files()) == 1


async def test_a_half_finished_upload_is_finished_not_repeated(tmp_path: Path,
                                                               client: TogetherClient) -> None:
    """Bytes uploaded but never preprocessed (a crash in between) are reused and processed."""
    data = (tmp_path / "train.jsonl").read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    start = await client._http.post(
        "/files", data={"purpose": "fine-tune", "file_name": f"train-{sha[:12]}.jsonl",
                        "checksum": sha}, headers={"Authorization": "Bearer local-key"})
    await client._http.put(start.headers["location"], content=data)
    outputs = await env(tmp_path, client).run("together/upload-file", {"path": "train.jsonl"})
    assert outputs["reused"] is True
    assert outputs["file_id"] == start.headers["x-together-file-id"]
    file = await client.retrieve_file(outputs["file_id"])
    assert (file.processed, file.processing_status) == (True, "COMPLETED")


async def test_launch_adopts_the_job_its_crashed_attempt_created(
        tmp_path: Path, client: TogetherClient) -> None:
    """The process died after the create reached the server: the re-entered attempt finds the
    job by its token instead of creating a second one."""
    file, _ = await client.upload_file(tmp_path / "train.jsonl")
    orphan = await client.create_fine_tune({"training_file": file.id, "model": BASE,
                                            "suffix": run_token("r-crashed:launch")})
    outputs = await env(tmp_path, client, "r-crashed").run(
        "together/launch-fine-tune", {"training_file": file.id, "model": BASE},
        step_id="launch", attempt=2, checkpoint={"creating": True})
    assert (outputs["job_id"], outputs["adopted"]) == (orphan.id, True)
    assert [j.id for j in await client.list_fine_tunes()] == [orphan.id]


@pytest.mark.parametrize("ref", ["{id}", "{id}:1", "{name}", "{name}:1"])
async def test_launch_trains_from_a_checkpoint_without_naming_a_rank(
        tmp_path: Path, client: TogetherClient, ref: str) -> None:
    """`from_checkpoint` (a job id, `id:step`, or its output name) and no `lora_r`: the rank
    comes from the checkpoint's base model's limits, as the SDKs look it up (a 404 before)."""
    file, _ = await client.upload_file(tmp_path / "train.jsonl")
    earlier = await client.create_fine_tune({"training_file": file.id, "model": BASE})
    outputs = await env(tmp_path, client).run(
        "together/launch-fine-tune", {"training_file": file.id, "from_checkpoint": ref.format(
            id=earlier.id, name=earlier.model_output_name)}, step_id="launch")
    job = await client.retrieve_fine_tune(outputs["job_id"])
    assert job.model == BASE and job.id != earlier.id


async def test_register_adopts_its_own_earlier_import(tmp_path: Path,
                                                      client: TogetherClient) -> None:
    """'Model name already exists' for the model this run created is success."""
    await client.upload_model({
        "model_name": "my-adapter", "model_source": ADAPTER["source"], "model_type": "adapter",
        "base_model": BASE, "description": f"[orchestrator {run_token('r-1:register')}]"})
    outputs = await env(tmp_path, client, "r-1").run(
        "together/register-adapter", ADAPTER, step_id="register", attempt=2,
        checkpoint={"creating": True})
    assert outputs["model_name"] == "local-user/my-adapter"
    assert len(await client.list_jobs()) == 1


@pytest.mark.parametrize("crashed_after", ["registering", "uploading"])
async def test_register_v2_adopts_what_an_earlier_attempt_made(
        tmp_path: Path, client: TogetherClient, crashed_after: str) -> None:
    """An attempt that died after the provider registered the model (or started its upload)
    but before checkpointing it: the re-entered attempt adopts both, making nothing twice."""
    project = await client.project_id()
    model = await client.register_model(
        project, name="my-adapter", base_model=BASE, model_type="adapter",
        description=f"[orchestrator {run_token('r-1:register')}]")
    checkpoint: dict[str, Any] = {"registering": True}
    if crashed_after == "uploading":
        await client.start_remote_upload(project, model_id=model.id,
                                         remote_url=ADAPTER["source"])
        checkpoint = {"model_id": model.id, "model_name": model.name, "uploading": True}
    outputs = await env(tmp_path, client, "r-1").run(
        "together/register-adapter", {**ADAPTER, "api": "v2"}, step_id="register",
        attempt=2, checkpoint=checkpoint)
    assert outputs["model_id"] == model.id
    assert len(await client.registered_models(project)) == 1
    assert len(await client.remote_uploads(project)) == 1


@pytest.mark.parametrize(("expect", "message"), [
    pytest.param({"contains": "Paris"}, "the answer does not contain 'Paris'", id="contains"),
    pytest.param({"regex": "^[0-9]+$"}, "does not match /^[0-9]+$/", id="regex"),
    pytest.param({"max_latency": "1ms"}, "max_latency 1ms", id="latency"),
])
async def test_smoke_test_expectations(tmp_path: Path, expect: dict[str, Any],
                                       message: str) -> None:
    async with local_together(tmp_path, latency=0.01) as slow:
        with pytest.raises(PermanentError) as failed:
            await env(tmp_path, slow).run("together/smoke-test",
                                          {"model": BASE, "prompt": "hello", "expect": expect})
    assert message in str(failed.value) and "answer: 'Simulated answer" in str(failed.value)


async def test_a_together_step_without_a_provider_says_what_it_needs(tmp_path: Path) -> None:
    """The context is a typed lookup: no provider fails the step at once, in one line."""
    (tmp_path / "train.jsonl").write_bytes(INSTRUCTIONS)
    with pytest.raises(PermanentError) as refused:
        await StepEnvironment(tmp_path).run("together/upload-file", {"path": "train.jsonl"})
    assert str(refused.value) == ("this step needs a TogetherClient, but the run has no "
                                  "provider (setting provider: local or together)")


async def test_record_model_keeps_the_entry_in_the_environment(tmp_path: Path) -> None:
    environment = StepEnvironment(tmp_path, run_id="r-7")
    outputs = await environment.run("registry/record-model", {
        "model": "acme/m", "base_model": BASE, "metrics": {"train_loss": 0.5}},
        step_id="record")
    [entry] = environment.models
    assert (entry.name, entry.run_id, entry.step_id) == ("acme/m", "r-7", "record")
    assert outputs["model"] == "acme/m"
    assert environment.logs == [("info", "model recorded", {"model": "acme/m"})]


async def test_bad_parameters_are_refused_as_in_a_run(tmp_path: Path) -> None:
    with pytest.raises(PermanentError, match=r"steps\.sleep\.with: duration: Field required"):
        await StepEnvironment(tmp_path).run("core/sleep", {}, step_id="sleep")


class Counting(BaseModel):
    model_config = ConfigDict(extra="forbid")
    to: int


async def test_what_a_step_does_through_its_context_is_kept(tmp_path: Path) -> None:
    """Checkpoints (the whole, and each change), log lines, reports, a cancel request; a
    second attempt starts from the last checkpoint."""
    registry = builtin_registry().copy()

    @registry.step("t/count", params=Counting)
    async def count(ctx: StepContext, params: Counting) -> dict[str, Any]:
        start = int(ctx.last_checkpoint.get("at", 0))
        for n in range(start + 1, params.to + 1):
            await ctx.checkpoint(at=n)
            ctx.report({"step": n, "total_steps": params.to})
            if ctx.cancel_requested:
                ctx.log.info("stopping early", at=n)
                return {"at": n}
        return {"at": params.to}

    environment = StepEnvironment(tmp_path, registry=registry)
    assert await environment.run("t/count", {"to": 3}) == {"at": 3}
    assert environment.checkpoint == {"at": 3}
    assert environment.checkpoints == [{"at": 1}, {"at": 2}, {"at": 3}]
    assert environment.reports[-1] == {"step": 3, "total_steps": 3}
    environment.cancel()
    assert await environment.run("t/count", {"to": 9}, attempt=2) == {"at": 4}
    assert environment.logs == [("info", "stopping early", {"at": 4})]


@pytest.mark.parametrize("asked", [{"prompt": "hello"},
                                   {"messages": [{"role": "user", "content": "hello"}]}],
                         ids=["completion", "chat"])
async def test_a_streamed_smoke_test_times_its_first_token(tmp_path: Path,
                                                           asked: dict[str, Any]) -> None:
    """`stream: true` reads Together's server-sent events: the same answer as unstreamed,
    with the time to its first piece of text beside the whole latency."""
    async with local_together(tmp_path, latency=0.05) as served:
        plain = await env(tmp_path, served).run("together/smoke-test",
                                                {"model": BASE, **asked})
        streamed = await env(tmp_path, served).run("together/smoke-test",
                                                   {"model": BASE, **asked, "stream": True})
    assert streamed["text"] == plain["text"] and streamed["text"].startswith("Simulated")
    assert plain["first_token_latency"] is None
    assert 0 < streamed["first_token_latency"] <= streamed["latency"]
    assert streamed["usage"]["completion_tokens"] > 0


async def test_a_first_token_bound_needs_a_stream(tmp_path: Path) -> None:
    with pytest.raises(PermanentError, match="max_first_token needs stream: true"):
        await StepEnvironment(tmp_path).run("together/smoke-test", {
            "model": BASE, "prompt": "x", "expect": {"max_first_token": "1s"}})


@pytest.mark.parametrize(("extra", "message"), [
    ({}, "early_stopping_enabled needs a validation_file"),
    ({"validation_file": "file-v", "n_evals": 3}, "needs n_evals >= patience + warmup_evals + "
                                                  "1 = 4 (n_evals is 3)"),
    ({"validation_file": "file-v", "n_evals": 5, "early_stopping_patience": 4},
     "= 6 (n_evals is 5)"),
])
async def test_early_stopping_is_checked_before_anything_is_paid_for(
        tmp_path: Path, extra: dict[str, Any], message: str) -> None:
    with pytest.raises(PermanentError, match=re.escape(message)):
        await StepEnvironment(tmp_path).run("together/launch-fine-tune", {
            "training_file": "file-t", "model": BASE, "early_stopping_enabled": True, **extra})


async def test_sdk3_parameters_reach_the_provider(tmp_path: Path,
                                                  client: TogetherClient) -> None:
    """wandb_entity, gradient_accumulation_steps and early stopping go to the provider as
    fields (the local API checks them as Together does); a value out of bounds is refused by
    the step, naming it, before anything is sent."""
    file, _ = await client.upload_file(tmp_path / "train.jsonl")
    outputs = await env(tmp_path, client).run("together/launch-fine-tune", {
        "training_file": file.id, "model": BASE, "gradient_accumulation_steps": 4,
        "wandb_entity": "team", "validation_file": file.id, "n_evals": 4,
        "early_stopping_enabled": True}, step_id="launch")
    assert outputs["job_id"].startswith("ft-")
    with pytest.raises(PermanentError, match="gradient_accumulation_steps"):
        await env(tmp_path, client, "r-2").run("together/launch-fine-tune", {
            "training_file": file.id, "model": BASE, "gradient_accumulation_steps": 5000},
            step_id="launch")
