"""The together/* and registry/* steps run by the engine, in pipelines, against the local API
in-process: what needs a run (cancels, the whole fine-tune). Each step type alone:
`test_steps_alone`."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import anyio
import pytest

from orchestrator.definition.inputs import resolve_inputs
from orchestrator.definition.pipeline import Pipeline
from orchestrator.engine.orchestrator import Orchestrator
from orchestrator.engine.plan import ExecutionPlan
from orchestrator.localapi import LocalAPI, LocalAPIConfig, LocalTransport
from orchestrator.localapi.transport import BASE_URL
from orchestrator.providers.pool import Providers
from orchestrator.providers.together.client import TogetherClient
from orchestrator.steps.builtin import load_pipeline
from orchestrator.store.base import StateStore
from orchestrator.store.records import Lease, RunRecord, RunStatus, RunUpdate, StepRecord
from orchestrator.testing import Harness
from tests.conftest import REPO, write
from tests.localapi.conftest import BASE, INSTRUCTIONS

FAST = {"poll_interval": "50ms"}


@dataclasses.dataclass
class Setup:
    """An engine whose provider is a local API on disk in the test's directory."""

    tmp_path: Path
    store: StateStore
    api: LocalAPI
    client: TogetherClient
    progress: list[tuple[str, dict[str, Any]]] = dataclasses.field(default_factory=list)
    reported: dict[str, anyio.Event] = dataclasses.field(default_factory=dict)

    def _on_progress(self, run_id: str, step: str, fields: Any) -> None:
        self.progress.append((step, dict(fields)))
        self.reported.setdefault(step, anyio.Event()).set()

    def orchestrator(self) -> AbstractAsyncContextManager[Orchestrator]:
        """An orchestrator built as every entry point builds one (`open_runtime`), whose
        provider is this setup's client."""
        return Harness(self.tmp_path, self.store, progress=self._on_progress,
                       providers=lambda: Providers.serving(self.client)).orchestrator()

    def pipeline(self, text: str, name: str = "p.yaml") -> Pipeline:
        return load_pipeline(write(self.tmp_path / name, text))

    async def run(self, text: str, **inputs: Any) -> tuple[RunStatus, str]:
        pipeline = self.pipeline(text)
        values = resolve_inputs(pipeline.inputs, inputs, pipeline_dir=pipeline.base_dir,
                                cwd=self.tmp_path)
        async with self.orchestrator() as orch:
            outcome = await orch.run(pipeline, values)
        return outcome.status, outcome.run_id

    async def steps(self, run_id: str) -> dict[str, StepRecord]:
        return await self.store.get_steps(run_id)


def local_config(tmp_path: Path, **changes: Any) -> LocalAPIConfig:
    return LocalAPIConfig(data_dir=tmp_path / "local-api", job_duration=0.6,
                          upload_duration=0.3, **changes)


async def open_setup(tmp_path: Path, store: StateStore,
                     config: LocalAPIConfig) -> AsyncIterator[Setup]:
    api = LocalAPI(config)
    client = TogetherClient(api_key=config.api_key, base_url=BASE_URL,
                            transport=LocalTransport(api))
    async with client:
        yield Setup(tmp_path, store, api, client)


@pytest.fixture
async def setup(tmp_path: Path, store: StateStore) -> AsyncIterator[Setup]:
    (tmp_path / "train.jsonl").write_bytes(INSTRUCTIONS)
    (tmp_path / "valid.jsonl").write_bytes(b'{"prompt": "Q: 1+1?", "completion": " 2"}\n')
    async for value in open_setup(tmp_path, store, local_config(tmp_path)):
        yield value


TRAIN = f"""
name: train
steps:
  upload: {{uses: together/upload-file, with: {{path: train.jsonl}}}}
  upload_valid: {{uses: together/upload-file, with: {{path: valid.jsonl}}}}
  launch:
    uses: together/launch-fine-tune
    with:
      training_file: "${{{{ steps.upload.outputs.file_id }}}}"
      validation_file: "${{{{ steps.upload_valid.outputs.file_id }}}}"
      model: {BASE}
      n_epochs: 2
      n_evals: 2
      suffix: test
  wait:
    uses: together/wait-fine-tune
    with: {{job_id: "${{{{ steps.launch.outputs.job_id }}}}", poll_interval: 50ms}}
  record:
    uses: registry/record-model
    with:
      model: "${{{{ steps.wait.outputs.model_name }}}}"
      base_model: {BASE}
      job_id: "${{{{ steps.launch.outputs.job_id }}}}"
      training_file: "${{{{ steps.upload.outputs.file_id }}}}"
      hyperparameters: {{n_epochs: 2}}
      metrics:
        train_loss: "${{{{ steps.wait.outputs.train_loss }}}}"
        eval_loss: "${{{{ steps.wait.outputs.eval_loss }}}}"
  smoke:
    uses: together/smoke-test
    with:
      model: "${{{{ steps.wait.outputs.model_name }}}}"
      prompt: "Q: The capital of France is?\\nA:"
      expect: {{contains: Paris}}
"""


async def test_the_whole_finetune(setup: Setup) -> None:
    """Upload, train (with evals), follow, record and smoke-test, with progress and lineage."""
    status, run_id = await setup.run(TRAIN)
    assert status is RunStatus.SUCCEEDED
    steps = await setup.steps(run_id)
    wait = steps["wait"].outputs or {}
    assert wait["status"] == "completed"
    assert isinstance(wait["train_loss"], float) and isinstance(wait["eval_loss"], float)
    assert (steps["smoke"].outputs or {})["text"] == " Paris"
    [model] = await setup.store.list_models()
    assert (model.name, model.run_id, model.base_model) == (wait["model_name"], run_id, BASE)
    assert model.job_id == (steps["launch"].outputs or {})["job_id"]
    assert model.metrics == {"train_loss": wait["train_loss"], "eval_loss": wait["eval_loss"]}
    reported = [fields for step, fields in setup.progress if step == "wait"]
    assert reported[-1]["status"] == "completed"
    assert any(isinstance(f.get("loss"), float) and f.get("total_steps") for f in reported)


async def seed(setup: Setup, pipeline: Pipeline, step: StepRecord) -> RunRecord:
    """A run as a crash would leave it: `step` mid-attempt with its checkpoint."""
    async with setup.orchestrator() as orch:
        record = await orch.create_run(pipeline, {})
    lease: Lease = await setup.store.acquire_lease(record.id, "crashed", ttl=60,
                                                   max_recoveries=9)
    await setup.store.commit(lease, run=RunUpdate(RunStatus.INTERRUPTED), steps=[step])
    await setup.store.release_lease(lease)
    return record


async def launch_only(setup: Setup) -> tuple[Any, Pipeline]:
    """An uploaded training file and a pipeline that only launches a job on it."""
    file, _ = await setup.client.upload_file(setup.tmp_path / "train.jsonl")
    return file, setup.pipeline(f"""
        name: p
        steps:
          launch:
            uses: together/launch-fine-tune
            with: {{training_file: {file.id}, model: {BASE}}}
    """)


async def test_a_failed_job_fails_the_step_with_its_message(tmp_path: Path,
                                                            store: StateStore) -> None:
    (tmp_path / "train.jsonl").write_bytes(INSTRUCTIONS)
    async for setup in open_setup(tmp_path, store, local_config(tmp_path, job_outcome="error")):
        status, run_id = await setup.run(TRAIN.replace("  upload_valid: {uses: together/"
                                                       "upload-file, with: {path: valid.jsonl}}\n",
                                                       "").replace(
            '      validation_file: "${{ steps.upload_valid.outputs.file_id }}"\n', "")
            .replace("      n_evals: 2\n", ""))
        assert status is RunStatus.FAILED
        error = (await setup.steps(run_id))["wait"].error
        assert error is not None
        assert "ended error: Training failed (error): planned failure" in error.message
        assert (await setup.steps(run_id))["wait"].attempt == 1  # permanent: not retried


async def test_cancelling_the_run_cancels_the_remote_job(setup: Setup) -> None:
    setup.api.config = dataclasses.replace(setup.api.config, job_duration=60.0)
    pipeline = setup.pipeline(TRAIN)
    async with setup.orchestrator() as orch:
        record = await orch.create_run(pipeline, {})
        async with anyio.create_task_group() as tg:
            outcome: list[Any] = []

            async def execute() -> None:
                outcome.append(await orch.execute(ExecutionPlan.new_run(record, pipeline)))

            tg.start_soon(execute)
            with anyio.fail_after(10):
                await setup.reported.setdefault("wait", anyio.Event()).wait()
            assert orch.cancel(record.id)
    assert outcome[0].status is RunStatus.CANCELLED
    steps = await setup.steps(record.id)
    assert steps["wait"].status.value == "cancelled"
    job_id = (steps["launch"].outputs or {})["job_id"]
    assert (await setup.client.retrieve_fine_tune(job_id)).status in ("cancel_requested",
                                                                      "cancelled")


async def test_a_cancel_request_in_the_store_reaches_the_executing_process(
        setup: Setup) -> None:
    """`orchestrator cancel` from another terminal writes a request; the process executing
    the run notices it within a few seconds and cancels the job."""
    setup.api.config = dataclasses.replace(setup.api.config, job_duration=60.0)
    pipeline = setup.pipeline(TRAIN)
    async with setup.orchestrator() as orch:
        record = await orch.create_run(pipeline, {}, hold=True)
        outcome: list[Any] = []
        async with anyio.create_task_group() as tg:

            async def execute() -> None:
                outcome.append(await orch.execute(ExecutionPlan.new_run(record, pipeline),
                                                  lease=record.lease))

            tg.start_soon(execute)
            with anyio.fail_after(10):
                await setup.reported.setdefault("wait", anyio.Event()).wait()
            asked = anyio.current_time()
            await setup.store.request_cancel([record.id])
        assert anyio.current_time() - asked < 3
    assert outcome[0].status is RunStatus.CANCELLED
    job_id = ((await setup.steps(record.id))["launch"].outputs or {})["job_id"]
    assert (await setup.client.retrieve_fine_tune(job_id)).status in ("cancel_requested",
                                                                      "cancelled")
    kinds = [e.kind for e in await setup.store.get_events(record.id)]
    assert "cancel_requested" in kinds and "remote_cancelled" in kinds


async def test_a_cancel_landing_while_no_one_executes_is_finished_by_the_next_executor(
        setup: Setup) -> None:
    """Interrupted mid-wait (remote job left running), then cancelled: the next executor
    cancels the job instead of resuming, and the run ends cancelled."""
    setup.api.config = dataclasses.replace(setup.api.config, job_duration=60.0)
    pipeline = setup.pipeline(TRAIN)
    async with setup.orchestrator() as orch, anyio.create_task_group() as tg:
        record = await orch.create_run(pipeline, {}, hold=True)
        tg.start_soon(lambda: orch.execute(ExecutionPlan.new_run(record, pipeline),
                                           lease=record.lease))
        with anyio.fail_after(10):
            await setup.reported.setdefault("wait", anyio.Event()).wait()
        tg.cancel_scope.cancel()  # as Ctrl-C with "leave the jobs running"
    assert (await setup.store.get_run(record.id)).status is RunStatus.INTERRUPTED
    job_id = ((await setup.steps(record.id))["launch"].outputs or {})["job_id"]
    assert (await setup.client.retrieve_fine_tune(job_id)).status in ("pending", "queued",
                                                                      "running")

    await setup.store.request_cancel([record.id])
    async with setup.orchestrator() as orch:
        outcome = await orch.resume(record.id)
    assert outcome.status is RunStatus.CANCELLED
    assert (await setup.client.retrieve_fine_tune(job_id)).status in ("cancel_requested",
                                                                      "cancelled")
    assert len(await setup.client.list_fine_tunes()) == 1
    assert (await setup.steps(record.id))["wait"].status.value == "interrupted"  # not re-run


async def test_cancelling_finds_a_job_whose_launch_died_before_recording_it(
        setup: Setup) -> None:
    file, pipeline = await launch_only(setup)
    record = await seed(setup, pipeline, StepRecord("launch", attempt=1, checkpoint={
        "creating": True, "suffix": "orphan-suffix"}))
    setup.api.config = dataclasses.replace(setup.api.config, job_duration=60.0)
    orphan = await setup.client.create_fine_tune({"training_file": file.id, "model": BASE,
                                                  "suffix": "orphan-suffix"})
    await setup.store.request_cancel([record.id])
    async with setup.orchestrator() as orch:
        outcome = await orch.resume(record.id)
    assert outcome.status is RunStatus.CANCELLED
    assert (await setup.client.retrieve_fine_tune(orphan.id)).status in ("cancel_requested",
                                                                         "cancelled")


REGISTER = f"""
name: adapter
steps:
  register:
    uses: together/register-adapter
    with:
      model_name: my-adapter
      source: https://huggingface.co/acme/my-adapter
      base_model: {BASE}
      poll_interval: 50ms
"""


async def test_register_adapter_once(setup: Setup) -> None:
    status, run_id = await setup.run(REGISTER)
    assert status is RunStatus.SUCCEEDED
    outputs = (await setup.steps(run_id))["register"].outputs or {}
    assert outputs["model_name"] == "local-user/my-adapter"
    assert len(await setup.client.list_jobs()) == 1
    status, again = await setup.run(REGISTER)
    error = (await setup.steps(again))["register"].error
    assert status is RunStatus.FAILED and error is not None
    assert "already exists and was not created by this run" in error.message
    assert len(await setup.client.list_jobs()) == 1


REGISTER_V2 = f"""
name: adapter-v2
steps:
  register:
    uses: together/register-adapter
    with:
      api: v2
      model_name: my-adapter
      source: https://huggingface.co/acme/my-adapter
      base_model: {BASE}
      hf_token: hf_never_kept
      poll_interval: 50ms
  smoke:
    uses: together/smoke-test
    with: {{model: "${{{{ steps.register.outputs.model_name }}}}", prompt: hello}}
"""


async def test_register_v2_once_and_the_model_serves(setup: Setup) -> None:
    """api: v2 registers the model in the key's project and fills it by a remote upload; the
    model then answers; a second run's registration under the same name is refused."""
    status, run_id = await setup.run(REGISTER_V2)
    assert status is RunStatus.SUCCEEDED
    outputs = (await setup.steps(run_id))["register"].outputs or {}
    assert outputs["model_name"] == "local-user/my-adapter"
    project = await setup.client.project_id()
    assert project == "proj-local"
    [model] = await setup.client.registered_models(project)
    [upload] = await setup.client.remote_uploads(project)
    assert (outputs["model_id"], outputs["job_id"]) == (model.id, upload.id)
    assert upload.succeeded and upload.model_id == model.id
    assert (await setup.client.complete(model.name, "hello")).text  # it serves
    status, again = await setup.run(REGISTER_V2)
    error = (await setup.steps(again))["register"].error
    assert status is RunStatus.FAILED and error is not None
    assert "already exists in project proj-local and was not registered by this run" in \
        error.message
    assert len(await setup.client.remote_uploads(project)) == 1


def test_register_v2_needs_a_base_model(setup: Setup) -> None:
    from orchestrator.errors import PipelineInvalid

    with pytest.raises(PipelineInvalid, match="base_model is required"):
        setup.pipeline(REGISTER_V2.replace(f"      base_model: {BASE}\n", ""))


def test_the_shipped_pipelines_validate() -> None:
    for name in ("lora-finetune", "custom-adapter"):
        pipeline = load_pipeline(REPO / "pipelines" / f"{name}.yaml")
        assert pipeline.steps


def test_polls_come_by_the_jobs_next_change() -> None:
    """Every poll interval while the job moves, backing off while it does not; sooner when
    the job says its status changes sooner; an estimate that keeps bringing polls forward
    without a change is ignored until the job changes (no busy polling)."""
    from orchestrator.steps.together import PollClock

    clock = PollClock(2.0, 60.0)
    assert clock.next(changed=True, estimate=None) == 2.0
    assert clock.next(changed=False, estimate=None) == 3.0
    assert clock.next(changed=True, estimate=40.0) == 2.0
    assert clock.next(changed=True, estimate=0.5) == 0.6
    assert clock.next(changed=False, estimate=0.0) == 0.25
    early = [clock.next(changed=False, estimate=0.0) for _ in range(8)]
    assert early[:4] == [0.25] * 4 and early[-1] > 2.0
    assert clock.next(changed=True, estimate=0.0) == 0.25  # a change trusts estimates again
    for _ in range(20):
        wait = clock.next(changed=False, estimate=None)
    assert wait == 60.0


@pytest.mark.parametrize(("fields", "message"), [
    pytest.param({"lora": "yes"}, "lora\n  Input should be a valid boolean", id="lora-yes"),
    pytest.param({"lora_dropout": -3}, "greater than or equal to 0", id="dropout-negative"),
    pytest.param({"dpo_beta": 0.2}, "dpo_beta applies to training_method dpo, not sft",
                 id="dpo-beta-with-sft"),
    pytest.param({"dpo_reference_free": True},
                 "dpo_reference_free applies to training_method dpo, not sft",
                 id="dpo-reference-free-with-sft"),
    pytest.param({"training_method": "dpo", "train_on_inputs": True},
                 "train_on_inputs applies to training_method sft, not dpo", id="inputs-dpo"),
    pytest.param({"packing": 1}, "packing\n  Input should be a valid boolean", id="packing-1"),
])
def test_launch_parameters_are_checked_as_the_sdk_checks_them(fields: dict[str, Any],
                                                              message: str) -> None:
    """What Together's SDK refuses before sending, the step refuses at validate."""
    from pydantic import ValidationError

    from orchestrator.steps.together import LaunchParams

    with pytest.raises(ValidationError, match=message):
        LaunchParams.model_validate({"training_file": "file-1", "model": "base", **fields})


def test_a_jobs_figures_are_read_from_its_metrics_and_its_events() -> None:
    """Rows of one training step merge (Together reports eval loss apart); rows without a
    step, or with nothing but NaNs and booleans, are skipped; events naming a step and a
    loss count too."""
    from orchestrator.protocol.types import FineTuneEvent
    from orchestrator.steps.together.jobfigures import (
        points_from_events,
        points_from_metrics,
        progress_of,
    )

    rows = [{"train/global_step": 10, "train/loss": 1.5, "train/learning_rate": 1e-5,
             "train/epoch": 0.5},
            {"train/global_step": 10.0, "eval/loss": 1.7},
            {"train/global_step": 20, "train/loss": float("nan"), "eval/loss": True},
            {"train/loss": 9.9}]
    points = points_from_metrics(rows, step_id="wait", job_id="ft-1")
    assert [(p.train_step, p.train_loss, p.eval_loss, p.learning_rate, p.epoch)
            for p in points] == [(10, 1.5, 1.7, 1e-5, 0.5)]
    events = [FineTuneEvent(message="Epoch 1/3 completed at step 7/21: train loss 1.2345, "
                                    "eval loss 1.3", step=7),
              FineTuneEvent(message="Training completed: final train loss 0.9", step=21),
              FineTuneEvent(message="Job started")]
    found = points_from_events(events, step_id="wait", job_id="ft-1")
    assert [(p.train_step, p.train_loss, p.eval_loss) for p in found] == [
        (7, 1.2345, 1.3), (21, 0.9, None)]
    assert progress_of(events, points) == {"step": 10, "total_steps": 21, "loss": 1.5,
                                           "eval_loss": 1.7}
