"""together/register-adapter: imports an adapter as a model, once, recognised by its token.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

import anyio
import anyio.to_thread
from pydantic import Field

from orchestrator.durations import Duration
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
    from orchestrator.providers.together.client import TogetherClient

__all__ = ["RegisterParams", "register_adapter"]

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
    outage = Outage(ctx, params.max_outage)
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
