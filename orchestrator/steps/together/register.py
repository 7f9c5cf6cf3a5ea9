"""together/register-adapter: imports an adapter as a model, once, recognised by its token.

Two APIs do it. `api: v0` (the default, the documented one): `POST /models` starts an import
job, followed at `/jobs/{id}`. `api: v2` (Together's SDK 3.x): the model is registered in a
project, `POST /v2/projects/{p}/models`, then filled by a remote upload, followed until
`REMOTE_UPLOAD_STATUS_SUCCEEDED`. Either way the description carries the run's token, and every
create is checkpointed first, so an attempt that died after the provider acted adopts what it
made instead of making it again.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import anyio
import anyio.to_thread
from pydantic import Field, model_validator

from orchestrator.definition.fields import Duration
from orchestrator.errors import JobEnded, PermanentError, TransientError
from orchestrator.faults import fault_point
from orchestrator.steps.context import StepContext
from orchestrator.steps.together.common import (
    TYPES,
    Outage,
    Params,
    run_token,
    together_client,
)

if TYPE_CHECKING:
    from orchestrator.protocol.types import RegisteredModel, RemoteUpload, UploadJob
    from orchestrator.providers.together.client import TogetherClient

__all__ = ["RegisterParams", "register_adapter"]

T = TypeVar("T")

class RegisterParams(Params):
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
    api: Literal["v0", "v2"] = Field(
        default="v0", description="v0: POST /models and its import job; v2: register the model "
                                  "in a project, then a remote upload (Together's SDK 3.x)")
    project_id: str | None = Field(
        default=None, description="the v2 API's project (default: setting together_project_id, "
                                  "else the key's own)")

    @model_validator(mode="after")
    def _v2_needs_a_base(self) -> RegisterParams:
        if self.api == "v2" and not self.base_model:
            msg = "api: v2 registers a model on its base model: base_model is required"
            raise ValueError(msg)
        if self.api == "v0" and self.project_id is not None:
            msg = "project_id is a setting of api: v2"
            raise ValueError(msg)
        return self


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

    client = together_client(ctx)
    token = run_token(ctx.idempotency_key)
    description = f"{params.description} [orchestrator {token}]".strip()
    if params.api == "v2":
        return await _register_v2(ctx, client, params, token=token, description=description)
    saved = ctx.last_checkpoint
    job_id, model_name, model_id = saved.get("job_id"), saved.get("model_name"), None
    if job_id is None:
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
    def finished(job: UploadJob) -> bool:
        if job.status == "Failed":
            last = job.status_updates[-1].get("message") if job.status_updates else None
            raise JobEnded(f"importing {params.model_name} failed"
                           + (f": {last}" if last else ""))
        return job.status == "Complete"

    job = await _follow(ctx, params, lambda: client.retrieve_job(str(job_id)),
                        status=lambda job: job.status, finished=finished)
    return {"model_name": model_name or job.args.get("modelName") or params.model_name,
            "job_id": job_id, "model_id": model_id or ""}


async def _follow(ctx: StepContext, params: RegisterParams, poll: Callable[[], Awaitable[T]],
                  *, status: Callable[[T], str], finished: Callable[[T], bool]) -> T:
    """Poll an import until `finished` says so (it raises for a failed one): every
    `poll_interval`, backing off to `max_poll_interval`, riding out an outage (see Outage)."""
    outage = Outage(ctx, params.max_outage)
    interval = params.poll_interval
    while True:
        try:
            current = await poll()
        except TransientError as exc:
            await outage.failed(exc)
            ctx.report({"status": outage.label})
            await anyio.sleep(params.max_poll_interval)
            continue
        await outage.over()
        ctx.report({"status": status(current)})
        if finished(current):
            return current
        await anyio.sleep(interval)
        interval = min(interval * 1.5, params.max_poll_interval)


async def _register_v2(ctx: StepContext, client: TogetherClient, params: RegisterParams, *,
                       token: str, description: str) -> dict[str, Any]:
    """Register the model in the project (once), fill it by a remote upload (once), and wait
    for the upload to succeed."""
    project = params.project_id or await client.project_id()
    saved = ctx.last_checkpoint
    model_id, model_name = saved.get("model_id"), saved.get("model_name")
    if model_id is None:
        model = await _registered_once(ctx, client, project, params, token=token,
                                       description=description)
        model_id, model_name = model.id, model.name
        await ctx.checkpoint(model_id=model_id, model_name=model_name)
    upload_id = saved.get("upload_id")
    if upload_id is None:
        upload = await _uploaded_once(ctx, client, project, str(model_id), params)
        upload_id = upload.id
        await ctx.checkpoint(upload_id=upload_id)
    def finished(upload: RemoteUpload) -> bool:
        if upload.failed:
            raise JobEnded(f"importing {params.model_name} failed ({upload.status})"
                           + (f": {upload.status_message}" if upload.status_message else ""))
        return upload.succeeded

    await _follow(ctx, params, lambda: client.retrieve_remote_upload(project, str(upload_id)),
                  status=lambda up: up.status.removeprefix("REMOTE_UPLOAD_STATUS_").lower(),
                  finished=finished)
    return {"model_name": str(model_name), "job_id": str(upload_id), "model_id": str(model_id)}


def _same_name(given: str, full: str) -> bool:
    return full == given or full.endswith(f"/{given}")


async def _registered_once(ctx: StepContext, client: TogetherClient, project: str,
                           params: RegisterParams, *, token: str,
                           description: str) -> RegisteredModel:
    """The project's model of this name that this run registered: registered now, or (the
    name being taken) the one an earlier attempt registered."""
    from orchestrator.providers.together.errors import ModelNameTaken  # noqa: PLC0415

    await ctx.checkpoint(registering=True)
    try:
        model = await client.register_model(project, name=params.model_name,
                                            base_model=str(params.base_model),
                                            model_type=params.model_type,
                                            description=description)
    except ModelNameTaken:
        ours = next((m for m in await client.registered_models(project)
                     if _same_name(params.model_name, m.name)
                     and token in (m.description or "")), None)
        if ours is None:
            msg = (f"a model named {params.model_name!r} already exists in project {project} "
                   "and was not registered by this run; choose another model_name")
            raise PermanentError(msg) from None
        ctx.log.info("adopting the model an earlier attempt registered", model_id=ours.id)
        return ours
    fault_point("after_remote_create", ctx.step_id)
    return model


async def _uploaded_once(ctx: StepContext, client: TogetherClient, project: str, model_id: str,
                         params: RegisterParams) -> RemoteUpload:
    """The remote upload filling `model_id` from the source: one an earlier attempt started (and
    did not see fail), else a new one."""
    if ctx.last_checkpoint.get("uploading"):
        earlier = [u for u in await client.remote_uploads(project)
                   if u.model_id == model_id and u.remote_url == params.source and not u.failed]
        if earlier:
            ctx.log.info("adopting the upload an earlier attempt started", upload_id=earlier[-1].id)
            return earlier[-1]
    await ctx.checkpoint(uploading=True)
    upload = await client.start_remote_upload(project, model_id=model_id,
                                              remote_url=params.source, token=params.hf_token)
    fault_point("after_remote_create", ctx.step_id)
    return upload
