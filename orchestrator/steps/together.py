"""The fine-tuning steps: `together/*`, against Together's API or the local one.

Every step that creates something remote and paid makes it happen once, even if the process
dies between the remote call and the local commit:

- upload-file names the upload by the file's content hash and sends its SHA-256: identical
  bytes already there (found by name and size, or answered 409 by the server) are reused;
- launch-fine-tune puts a run-scoped token in the job's `suffix`, checkpoints before and after
  the create call, and on re-entry adopts the job that carries its token;
- register-adapter puts the token in the model's description; "Model name already exists" is
  success when that model's import job carries the token, a clear error otherwise.

The crash window each of these closes is marked by the fault point `after_remote_create`.
"""

from __future__ import annotations

import hashlib
import re
import time
from contextlib import suppress
from typing import TYPE_CHECKING, Any, Literal

import anyio
import anyio.to_thread
from pydantic import BaseModel, ConfigDict, Field, StrictBool, model_validator

from orchestrator.durations import Duration, format_duration
from orchestrator.errors import JobEnded, PermanentError, ProviderUnavailable, TransientError
from orchestrator.faults import fault_point
from orchestrator.inputfiles import UnreadableFile, file_sha256, open_regular
from orchestrator.protocol.datacheck import DataReport, check_file
from orchestrator.protocol.finetune import DPO_PARAMETERS
from orchestrator.providers.together.requests import fine_tune_request
from orchestrator.steps.context import StepContext
from orchestrator.steps.registry import StepRegistry

if TYPE_CHECKING:
    from orchestrator.protocol.types import FileObject, FineTuneEvent, FineTuneJob
    from orchestrator.providers.together.client import TogetherClient

__all__ = ["TYPES", "run_token"]

TYPES = StepRegistry()

_STEP = re.compile(r"\bstep (\d+)(?:/(\d+))?")
_LOSS = re.compile(r"\btrain loss ([0-9.]+)")


def _client(ctx: StepContext) -> TogetherClient:
    from orchestrator.providers.together.client import TogetherClient  # noqa: PLC0415

    return ctx.client(TogetherClient)


def run_token(idempotency_key: str) -> str:
    """A short token unique to a run's step (`run_id:step_id`), to recognise what it created
    remotely."""
    digest = hashlib.sha256(idempotency_key.encode()).hexdigest()
    return f"o{digest[:9]}"


def _report_problems(path: Any, report: DataReport, limit: int = 10) -> str:
    lines = [f"{path}: {report.summary()}"]
    lines += [f"  {problem}" for problem in report.problems[:limit]]
    if len(report.problems) > limit:
        lines.append(f"  ... and {len(report.problems) - limit} more "
                     f"(orchestrator check-data {path})")
    return "\n".join(lines)


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid")


# -- together/upload-file --------------------------------------------------------------------

class UploadParams(_Params):
    path: str = Field(description="the dataset (relative to the pipeline file)")
    purpose: Literal["fine-tune", "eval"] = "fine-tune"
    check: StrictBool = Field(default=True, description="check the data before uploading")


@TYPES.step("together/upload-file", params=UploadParams,
               outputs=frozenset({"file_id", "filename", "bytes", "lines", "sha256", "reused"}))
async def upload_file(ctx: StepContext, params: UploadParams) -> dict[str, Any]:
    """Checks a dataset, then uploads it once: identical bytes already there are reused."""
    client = _client(ctx)
    path = ctx.resolve_path(params.path)
    try:  # a FIFO or a device would block the reads below, or never end
        open_regular(path).close()
    except UnreadableFile as exc:
        raise PermanentError(f"{path}: {exc}") from None
    lines = 0
    sha = None
    if params.check and params.purpose == "fine-tune":
        report = await anyio.to_thread.run_sync(check_file, path)  # streamed, hashed too
        if not report.ok:
            raise PermanentError(_report_problems(path, report))
        lines, sha = report.lines, report.sha256
    if sha is None:

        sha = await anyio.to_thread.run_sync(file_sha256, path)
    size = (await anyio.Path(path).stat()).st_size
    name = f"{path.stem}-{sha[:12]}{path.suffix}"
    # Runs uploading the same bytes at once, in any process sharing the state store, take
    # turns: the first uploads, the others find its file and reuse it.
    async with ctx.exclusive(f"upload:{client.base_url}:{params.purpose}:{sha}"):
        file, reused = await _upload_once(ctx, client, path, purpose=params.purpose, name=name,
                                          sha=sha, size=size)
    fault_point("after_remote_create", ctx.step_id)
    if file.processing_status == "INVALID_FORMAT":
        report_text = (file.validation_report or {}).get("error") or "invalid dataset"
        raise PermanentError(f"the provider rejected {path}: {report_text}")
    ctx.log.info("file ready", file_id=file.id, reused=reused, bytes=size)
    return {"file_id": file.id, "filename": name, "bytes": size,
            "lines": lines or file.line_count, "sha256": sha, "reused": reused}


async def _upload_once(ctx: StepContext, client: TogetherClient, path: Any, *, purpose: str,
                       name: str, sha: str, size: int) -> tuple[FileObject, bool]:
    """The provider's file with these bytes, processed: found, or uploaded now.

    Bytes another client is still sending (the provider answers 409 with a file that has no
    bytes yet) are waited for, not sent again; if that upload is abandoned (the file
    disappears), they are uploaded here after all.
    """
    await _drop_own_abandoned_upload(ctx, client)

    async def announced(file_id: str) -> None:
        await ctx.checkpoint(announced=file_id)
        fault_point("after_upload_announced", ctx.step_id)

    while True:
        existing = next((f for f in await client.list_files() if f.filename == name
                         and f.bytes == size and f.purpose == purpose), None)
        if existing is not None:
            file, reused = existing, True
        else:
            file, reused = await client.upload_file(path, purpose=purpose, name=name,
                                                    checksum=sha, on_announced=announced)
        if file.processed:
            return file, reused
        if file.bytes:
            # A reused file whose upload was cut short (a crash before preprocess): finish it.
            return await client.preprocess_file(file.id), reused
        arrived = await _bytes_arriving(ctx, client, file.id)
        if arrived is not None:
            return arrived, True


async def _drop_own_abandoned_upload(ctx: StepContext, client: TogetherClient) -> None:
    """An earlier attempt that died between announcing its file and sending the bytes left
    the file waiting for them; the provider would answer the next announce with it (409),
    and nobody would ever send them. Such a file of our own is deleted first."""
    from orchestrator.providers.together.errors import NotFound  # noqa: PLC0415

    file_id = ctx.last_checkpoint.get("announced")
    if not file_id:
        return
    try:
        file = await client.retrieve_file(str(file_id))
    except NotFound:
        file = None
    if file is not None and not file.bytes and not file.processed:
        ctx.log.info("deleting the file an interrupted upload left without its bytes",
                     file_id=file_id)
        with suppress(PermanentError):  # a provider that keeps it: it expires by itself
            await client.delete_file(str(file_id))
    await ctx.checkpoint(announced=None)


async def _bytes_arriving(ctx: StepContext, client: TogetherClient,
                          file_id: str) -> FileObject | None:
    """Wait for another client's upload of `file_id` to finish: the processed file, or None if
    the provider forgot it (its upload URL expired unused)."""
    from orchestrator.providers.together.errors import NotFound  # noqa: PLC0415

    ctx.log.info("the same bytes are being uploaded by someone else; waiting for them",
                 file_id=file_id)
    delay = 0.2
    while True:
        await anyio.sleep(delay)
        delay = min(delay * 2, 5.0)
        try:
            file = await client.retrieve_file(file_id)
        except NotFound:
            return None
        if file.processed:
            return file
        if file.bytes:
            return await client.preprocess_file(file.id)


# -- together/launch-fine-tune ---------------------------------------------------------------

class LaunchParams(_Params):
    """Every field of Together's create request; LoRA settings become `training_type`."""

    training_file: str
    model: str | None = None
    from_checkpoint: str | None = None
    validation_file: str | None = None
    n_epochs: int = Field(default=1, ge=1)
    n_checkpoints: int = Field(default=1, ge=1)
    n_evals: int = Field(default=0, ge=0)
    batch_size: int | Literal["max"] = "max"
    learning_rate: float = Field(default=1e-5, gt=0)
    lr_scheduler: Literal["linear", "cosine"] = "cosine"
    min_lr_ratio: float = Field(default=0.0, ge=0, le=1)
    scheduler_num_cycles: float = Field(default=0.5, gt=0)
    warmup_ratio: float = Field(default=0.0, ge=0, le=1)
    max_grad_norm: float = Field(default=1.0, ge=0)
    weight_decay: float = Field(default=0.0, ge=0)
    suffix: str | None = Field(default=None, max_length=29, pattern=r"^[A-Za-z0-9._-]+$")
    lora: StrictBool = True
    lora_r: int | None = Field(default=None, ge=1)
    lora_alpha: int | None = Field(default=None, ge=1)
    lora_dropout: float = Field(default=0.0, ge=0, lt=1)
    lora_trainable_modules: str = "all-linear"
    training_method: Literal["sft", "dpo"] = "sft"
    train_on_inputs: StrictBool | Literal["auto"] = "auto"
    dpo_beta: float | None = Field(default=None, gt=0)
    rpo_alpha: float | None = Field(default=None, ge=0)
    simpo_gamma: float | None = Field(default=None, ge=0)
    dpo_normalize_logratios_by_length: StrictBool | None = None
    dpo_reference_free: StrictBool | None = None
    packing: StrictBool | None = None
    max_seq_length: int | None = Field(default=None, ge=1)
    random_seed: int | None = None
    wandb_api_key: str | None = Field(default=None, description="use ${{ secrets.NAME }}")
    wandb_base_url: str | None = None
    wandb_project_name: str | None = None
    wandb_name: str | None = None
    from_hf_model: str | None = None
    hf_model_revision: str | None = None
    hf_api_token: str | None = Field(default=None, description="use ${{ secrets.NAME }}")
    hf_output_repo_name: str | None = None

    @model_validator(mode="after")
    def _model_or_checkpoint(self) -> LaunchParams:
        if not self.model and not self.from_checkpoint:
            msg = "give model (the base model) or from_checkpoint"
            raise ValueError(msg)
        if self.n_evals and not self.validation_file:
            msg = "n_evals > 0 needs a validation_file"
            raise ValueError(msg)
        dpo_only = [name for name in DPO_PARAMETERS if getattr(self, name) is not None]
        if self.training_method == "sft" and dpo_only:
            msg = f"{dpo_only[0]} applies to training_method dpo, not sft"
            raise ValueError(msg)
        if self.training_method == "dpo" and self.train_on_inputs != "auto":
            msg = "train_on_inputs applies to training_method sft, not dpo"
            raise ValueError(msg)
        return self


async def _job_with_suffix(client: TogetherClient, suffix: str) -> FineTuneJob | None:
    """The job a launch created, known by the run-scoped token in its suffix."""
    return next((j for j in await client.list_fine_tunes() if j.suffix == suffix), None)


def _launch_outputs(job: Any, adopted: bool) -> dict[str, Any]:
    return {"job_id": job.id, "model_output_name": job.model_output_name or "",
            "status": job.status, "adopted": adopted}


async def cancel_launched_job(ctx: StepContext) -> None:
    """The launch step's side of cancelling a run: cancel the job it created, if it still
    runs. A launch cut short by a crash left only its suffix: the job is found by it."""
    client = _client(ctx)
    saved = ctx.last_checkpoint
    job_id = saved.get("job_id")
    if job_id is None and saved.get("suffix"):
        found = await _job_with_suffix(client, str(saved["suffix"]))
        job_id = found.id if found is not None else None
    if job_id is None:
        return
    job = await client.retrieve_fine_tune(str(job_id))
    if job.finished:
        return
    job = await client.cancel_fine_tune(str(job_id))
    ctx.log.warning("cancelled the fine-tuning job", job_id=job_id, status=job.status)


@TYPES.step("together/launch-fine-tune", params=LaunchParams,
               outputs=frozenset({"job_id", "model_output_name", "status", "adopted"}),
               cancel=cancel_launched_job)
async def launch_fine_tune(ctx: StepContext, params: LaunchParams) -> dict[str, Any]:
    """Starts a fine-tuning job exactly once per run (see the module docstring)."""
    client = _client(ctx)
    saved = ctx.last_checkpoint
    if "job_id" in saved:
        return _launch_outputs(await client.retrieve_fine_tune(saved["job_id"]), True)
    token = run_token(ctx.idempotency_key)
    suffix = f"{params.suffix}-{token}" if params.suffix else token
    if saved.get("creating"):
        # An earlier attempt may have created the job and died before recording it.
        found = await _job_with_suffix(client, suffix)
        if found is not None:
            ctx.log.info("adopting the job an earlier attempt created", job_id=found.id)
            await ctx.checkpoint(job_id=found.id)
            return _launch_outputs(found, True)
    request = await fine_tune_request(client, params.model_dump(), suffix=suffix)
    await ctx.checkpoint(creating=True, suffix=suffix)
    job = await client.create_fine_tune(request)
    fault_point("after_remote_create", ctx.step_id)
    await ctx.checkpoint(job_id=job.id)
    ctx.log.info("fine-tuning job created", job_id=job.id, model=params.model)
    return _launch_outputs(job, False)


# -- together/wait-fine-tune -----------------------------------------------------------------

class WaitParams(_Params):
    job_id: str
    poll_interval: Duration = Field(default=10.0, gt=0, description="first wait between polls")
    max_poll_interval: Duration = Field(default=60.0, gt=0, description="longest wait")
    max_outage: Duration = Field(
        default=3600.0, gt=0, description="how long the provider may be unreachable before "
                                          "the step fails (the job goes on meanwhile)")


class ProviderUnavailableTooLong(PermanentError):
    """The provider stayed unreachable longer than the step's `max_outage`."""


class _Outage:
    """A provider outage seen while following something remote that exists: no news, not a
    failure. The first failed poll is checkpointed as `unreachable_since` (so `show` says it,
    and a resumed step keeps counting from it); past `limit`, the step fails."""

    def __init__(self, ctx: StepContext, limit: float) -> None:
        self._ctx = ctx
        self._limit = limit
        since = ctx.last_checkpoint.get("unreachable_since")
        self.since: float | None = float(since) if isinstance(since, int | float) else None

    @property
    def label(self) -> str:
        return f"provider unreachable since {time.strftime('%H:%M', time.localtime(self.since))}"

    async def failed(self, error: TransientError) -> None:
        """A poll failed transiently: note when the outage began; fail past the limit."""
        now = time.time()
        if self.since is None:
            self.since = now
            await self._ctx.checkpoint(unreachable_since=now)
            self._ctx.log.warning("provider unreachable; the job goes on, polling continues",
                                  error=str(error))
        if now - self.since > self._limit:
            msg = (f"{self.label} ({format_duration(now - self.since)}, more than max_outage "
                   f"{format_duration(self._limit)}): {error}")
            raise ProviderUnavailableTooLong(msg) from None

    async def over(self) -> None:
        """A poll succeeded: the outage, if there was one, is over."""
        if self.since is not None:
            self._ctx.log.info("provider reachable again",
                               after=format_duration(time.time() - self.since))
            self.since = None
            await self._ctx.checkpoint(unreachable_since=None)


def next_poll(interval: float, remaining: float | None, cap: float, floor: float) -> float:
    """How long to wait before the next poll: until the job's own estimate of when it changes
    state (if it gives one), else the growing interval; between `floor` (the first interval:
    an estimate stuck at 0 must not turn into busy polling) and `cap`."""
    if remaining is not None:
        return min(cap, max(remaining + 0.25, floor))
    return min(interval, cap)


def _progress_of(events: list[FineTuneEvent]) -> dict[str, Any]:
    """The latest training step, total and loss the job's events mention."""
    found: dict[str, Any] = {}
    for event in events:
        step = _STEP.search(event.message)
        if step:
            found["step"] = int(step.group(1))
            if step.group(2):
                found["total_steps"] = int(step.group(2))
        loss = _LOSS.search(event.message)
        if loss:
            found["loss"] = float(loss.group(1))
    return found


async def _final_losses(client: TogetherClient, job_id: str) -> dict[str, float | None]:
    try:
        metrics = await client.fine_tune_metrics(job_id)
    except (PermanentError, TransientError):
        metrics = []
    train = [m["train/loss"] for m in metrics if "train/loss" in m]
    evals = [m["eval/loss"] for m in metrics if "eval/loss" in m]
    return {"train_loss": train[-1] if train else None,
            "eval_loss": evals[-1] if evals else None}


@TYPES.step("together/wait-fine-tune", params=WaitParams,
               outputs=frozenset({"job_id", "model_name", "status", "token_count",
                                  "train_loss", "eval_loss"}))
async def wait_fine_tune(ctx: StepContext, params: WaitParams) -> dict[str, Any]:
    """Follows a job to its end: logs each new event once, shows progress, fails with the job's
    own message. (Cancelling the run cancels the job through the launch step.)"""
    client = _client(ctx)
    seen = int(ctx.last_checkpoint.get("events_seen", 0))
    interval = params.poll_interval
    started = time.monotonic()
    outage = _Outage(ctx, params.max_outage)
    while True:
        try:
            job = await client.retrieve_fine_tune(params.job_id)
            events = job.events or await client.fine_tune_events(params.job_id)
        except TransientError as exc:
            await outage.failed(exc)
            ctx.report({"status": outage.label, "elapsed": time.monotonic() - started})
            await anyio.sleep(params.max_poll_interval)
            continue
        await outage.over()
        for event in events[seen:]:
            ctx.log.info("job event", type=event.type, message=event.message)
        if len(events) > seen:
            seen = len(events)
            await ctx.checkpoint(events_seen=seen)
        ctx.report({"status": job.status, "elapsed": time.monotonic() - started,
                    **_progress_of(events)})
        if job.status == "completed":
            break
        if job.failed:
            reason = next((e.message for e in reversed(events)
                           if e.level == "error" or e.type == "job_error"), None)
            raise JobEnded(f"fine-tuning job {job.id} ended {job.status}"
                           + (f": {reason}" if reason else ""), param="job_id")
        await anyio.sleep(next_poll(interval, job.seconds_remaining,
                                    params.max_poll_interval, params.poll_interval))
        interval = min(interval * 1.5, params.max_poll_interval)
    losses = await _final_losses(client, job.id)
    return {"job_id": job.id, "model_name": job.model_output_name or "",
            "status": job.status, "token_count": job.token_count or 0, **losses}


# -- together/register-adapter ---------------------------------------------------------------

class RegisterParams(_Params):
    model_name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
    source: str = Field(description="https://huggingface.co/org/repo or a presigned S3 URL")
    model_type: Literal["adapter", "model"] = "adapter"
    base_model: str | None = None
    description: str = ""
    hf_token: str | None = Field(default=None, description="use ${{ secrets.HF_TOKEN }}")
    poll_interval: Duration = Field(default=5.0, gt=0)
    max_poll_interval: Duration = Field(default=30.0, gt=0)
    max_outage: Duration = Field(default=3600.0, gt=0,
                                 description="how long the provider may be unreachable")


async def _adopt_import(client: TogetherClient, name: str, token: str) -> str | None:
    """The job of an import of `name` this run started, if there is one."""
    for job in await client.list_jobs():
        model = str(job.args.get("modelName", ""))
        if (model == name or model.endswith(f"/{name}")) and token in str(
                job.args.get("description", "")):
            return job.job_id
    return None


@TYPES.step("together/register-adapter", params=RegisterParams,
               outputs=frozenset({"model_name", "job_id", "model_id"}))
async def register_adapter(ctx: StepContext, params: RegisterParams) -> dict[str, Any]:
    """Imports an adapter (or model) from Hugging Face or S3, once, and waits until it is ready."""
    from orchestrator.providers.together.errors import ModelNameTaken  # noqa: PLC0415

    client = _client(ctx)
    saved = ctx.last_checkpoint
    token = run_token(ctx.idempotency_key)
    job_id, model_name, model_id = saved.get("job_id"), saved.get("model_name"), None
    if job_id is None:
        description = f"{params.description} [orchestrator {token}]".strip()
        request = {"model_name": params.model_name, "model_source": params.source,
                   "model_type": params.model_type, "base_model": params.base_model,
                   "description": description, "hf_token": params.hf_token}
        await ctx.checkpoint(creating=True)
        try:
            created = await client.upload_model({k: v for k, v in request.items()
                                                 if v is not None})
        except ModelNameTaken:
            job_id = await _adopt_import(client, params.model_name, token)
            if job_id is None:
                msg = (f"a model named {params.model_name!r} already exists and was not created "
                       "by this run; choose another model_name")
                raise PermanentError(msg) from None
            ctx.log.info("adopting the import an earlier attempt started", job_id=job_id)
        else:
            fault_point("after_remote_create", ctx.step_id)
            job_id, model_name, model_id = created.job_id, created.model_name, created.model_id
        await ctx.checkpoint(job_id=job_id, model_name=model_name)
    interval = params.poll_interval
    outage = _Outage(ctx, params.max_outage)
    while True:
        try:
            job = await client.retrieve_job(str(job_id))
        except TransientError as exc:
            await outage.failed(exc)
            ctx.report({"status": outage.label})
            await anyio.sleep(params.max_poll_interval)
            continue
        await outage.over()
        model_name = model_name or job.args.get("modelName")
        ctx.report({"status": job.status})
        if job.status == "Complete":
            break
        if job.status == "Failed":
            last = job.status_updates[-1].get("message") if job.status_updates else None
            raise JobEnded(f"importing {params.model_name} failed"
                           + (f": {last}" if last else ""))
        await anyio.sleep(interval)
        interval = min(interval * 1.5, params.max_poll_interval)
    return {"model_name": model_name or params.model_name, "job_id": job_id,
            "model_id": model_id or ""}


# -- together/smoke-test ---------------------------------------------------------------------

class Expectations(_Params):
    contains: str | list[str] | None = None
    regex: str | None = None
    not_empty: StrictBool = True
    max_latency: Duration | None = None


class SmokeParams(_Params):
    model: str
    prompt: str | None = None
    messages: list[dict[str, Any]] | None = None
    max_tokens: int = Field(default=64, ge=1)
    temperature: float = Field(default=0.0, ge=0)
    expect: Expectations = Field(default_factory=Expectations)

    @model_validator(mode="after")
    def _one_input(self) -> SmokeParams:
        if (self.prompt is None) == (self.messages is None):
            msg = "give exactly one of prompt (a completion) or messages (a chat)"
            raise ValueError(msg)
        return self


def _failures(text: str, latency: float, expect: Expectations) -> list[str]:
    problems = []
    if expect.not_empty and not text.strip():
        problems.append("the answer is empty")
    wanted = [expect.contains] if isinstance(expect.contains, str) else expect.contains or []
    problems += [f"the answer does not contain {w!r}" for w in wanted if w not in text]
    if expect.regex and not re.search(expect.regex, text):
        problems.append(f"the answer does not match /{expect.regex}/")
    if expect.max_latency is not None and latency > expect.max_latency:
        problems.append(f"it took {format_duration(latency)} (max_latency "
                        f"{format_duration(expect.max_latency)})")
    return problems


async def _ask(client: TogetherClient, params: SmokeParams) -> tuple[Any, float]:
    from orchestrator.providers.together.errors import NotFound  # noqa: PLC0415

    sampling = {"max_tokens": params.max_tokens, "temperature": params.temperature}
    started = time.monotonic()
    try:
        if params.messages is not None:
            answer = await client.chat(params.model, params.messages, **sampling)
        else:
            answer = await client.complete(params.model, params.prompt or "", **sampling)
    except NotFound as exc:  # a fine-tuned model can take a while to become servable
        raise ProviderUnavailable(f"model {params.model} is not served (yet): {exc}") from None
    return answer, time.monotonic() - started


@TYPES.step("together/smoke-test", params=SmokeParams,
               outputs=frozenset({"text", "latency", "usage", "model"}))
async def smoke_test(ctx: StepContext, params: SmokeParams) -> dict[str, Any]:
    """Asks the model one question and checks the answer; a slow first answer (a cold model)
    is asked again before latency counts."""
    client = _client(ctx)
    answer, latency = await _ask(client, params)
    limit = params.expect.max_latency
    if limit is not None and latency > limit:
        ctx.log.info("slow first answer; asking again now the model is warm",
                     latency=format_duration(latency))
        answer, latency = await _ask(client, params)
    problems = _failures(answer.text, latency, params.expect)
    ctx.log.info("smoke test answer", text=answer.text[:200], latency=round(latency, 3))
    if problems:
        raise PermanentError(f"smoke test of {params.model} failed: " + "; ".join(problems)
                             + f" (answer: {answer.text[:200]!r})")
    return {"text": answer.text, "latency": round(latency, 4), "model": params.model,
            "usage": answer.usage.model_dump(mode="json")}

