"""together/wait-fine-tune: follows a job to its end, riding out provider outages.
"""

from __future__ import annotations

import re
import time
from typing import TYPE_CHECKING, Any

import anyio
import anyio.to_thread
from pydantic import Field

from orchestrator.durations import Duration
from orchestrator.errors import JobEnded, PermanentError, TransientError
from orchestrator.steps.context import StepContext
from orchestrator.steps.together.common import (
    TYPES,
    Outage,
    Params,
    together_client,
)

if TYPE_CHECKING:
    from orchestrator.protocol.types import FineTuneEvent
    from orchestrator.providers.together.client import TogetherClient

__all__ = ["WaitParams", "next_poll", "wait_fine_tune"]

_STEP = re.compile(r"\bstep (\d+)(?:/(\d+))?")
_LOSS = re.compile(r"\btrain loss ([0-9.]+)")


class WaitParams(Params):
    job_id: str
    poll_interval: Duration = Field(default=10.0, gt=0, description="first wait between polls")
    max_poll_interval: Duration = Field(default=60.0, gt=0, description="longest wait")
    max_outage: Duration = Field(
        default=3600.0, gt=0, description="how long the provider may be unreachable before "
                                          "the step fails (the job goes on meanwhile)")


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
    client = together_client(ctx)
    seen = int(ctx.last_checkpoint.get("events_seen", 0))
    interval = params.poll_interval
    started = time.monotonic()
    outage = Outage(ctx, params.max_outage)
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
