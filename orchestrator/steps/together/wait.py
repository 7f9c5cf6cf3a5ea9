"""together/wait-fine-tune: follows a job to its end, riding out provider outages.

It polls by the job's next expected change: at the job's own estimate of its next status
(Together's `progress.seconds_remaining`) when that comes sooner than the poll interval, and
every poll interval while the job moves (new events, new training steps), backing off to
`max_poll_interval` while it does not. So the live line shows each status and each training
step with its loss within one poll interval. Each new job event is logged (and kept with the
attempt) once, and the job's figures (losses, learning rate, epoch) are kept with the run as
metric points (`metrics RUN`).
"""

from __future__ import annotations

import dataclasses
import time
from typing import TYPE_CHECKING, Any

import anyio
import anyio.to_process
from pydantic import Field

from orchestrator.definition.fields import Duration
from orchestrator.errors import JobEnded, PermanentError, TransientError
from orchestrator.steps.context import StepContext
from orchestrator.steps.together.common import (
    TYPES,
    Outage,
    Params,
    together_client,
)
from orchestrator.steps.together.jobfigures import (
    points_from_events,
    points_from_metrics,
    progress_of,
)
from orchestrator.views.shapes import final_losses

if TYPE_CHECKING:
    from orchestrator.protocol.types import FineTuneJob
    from orchestrator.providers.together.client import TogetherClient
    from orchestrator.store.records import MetricPoint

__all__ = ["MIN_POLL", "PollClock", "WaitParams", "wait_fine_tune"]

MIN_POLL = 0.25
"""The shortest wait between polls, however soon the job says it changes."""
MAX_EARLY = 6
"""Polls in a row an estimate may bring forward without the job changing; then the estimate
is ignored until it does (an estimate stuck at 0 must not turn into busy polling)."""


class WaitParams(Params):
    job_id: str
    poll_interval: Duration = Field(default=10.0, gt=0, description="wait between polls "
                                                                   "while the job changes")
    max_poll_interval: Duration = Field(default=60.0, gt=0, description="longest wait")
    max_outage: Duration = Field(
        default=3600.0, gt=0, description="how long the provider may be unreachable before "
                                          "the step fails (the job goes on meanwhile)")


class PollClock:
    """How long to wait before the next poll of a job."""

    def __init__(self, interval: float, cap: float) -> None:
        self._first = min(interval, cap)
        self._cap = cap
        self.interval = self._first
        self._early = 0

    def next(self, *, changed: bool, estimate: float | None) -> float:
        """The wait after a poll that saw the job `changed` (or not), given its estimate of
        the seconds to its next status (rounded down, so waking on it is early, not late)."""
        if changed:
            self.interval, self._early = self._first, 0
        else:
            self.interval = min(self.interval * 1.5, self._cap)
        if estimate is None or self._early >= MAX_EARLY or estimate + 0.1 >= self.interval:
            return self.interval
        self._early += 1
        return max(MIN_POLL, estimate + 0.1)


class _Figures:
    """The job's metric points, fetched as they appear (`since` the last training step)."""

    def __init__(self, ctx: StepContext, client: TogetherClient, job_id: str) -> None:
        self._ctx = ctx
        self._client = client
        self._job_id = job_id
        self.since = int(ctx.last_checkpoint.get("metrics_step", 0))
        self.latest: list[MetricPoint] = []
        self._served = True

    async def fetch(self, *, everything: bool = False) -> list[MetricPoint]:
        """New points (every point with `everything`); none from a server without the
        endpoint, or while it fails (the next poll asks again)."""
        if not self._served:
            return []
        try:
            rows = await self._client.fine_tune_metrics(
                self._job_id, since_step=None if everything else self.since + 1)
        except PermanentError as exc:
            self._served = False
            self._ctx.log.debug("the provider gives no job metrics", error=str(exc))
            return []
        except TransientError:
            return []
        points = points_from_metrics(rows, step_id=self._ctx.step_id, job_id=self._job_id)
        fresh = [p for p in points if everything or p.train_step > self.since]
        if fresh:
            self.since = max(self.since, *(p.train_step for p in fresh))
            self.latest = fresh
        return fresh


def _with_tokens(points: list[MetricPoint], job: FineTuneJob) -> list[MetricPoint]:
    """The job's token count so far, on the point of its latest training step (when the
    job says that is the step it is at, and the point has no count of its own)."""
    last = max(points, key=lambda p: p.train_step, default=None)
    if last is None or job.token_count is None or last.tokens is not None or (
            job.steps_completed not in (None, last.train_step)):
        return points
    return [dataclasses.replace(p, tokens=job.token_count) if p is last else p
            for p in points]


async def _draw(ctx: StepContext, points: list[MetricPoint], title: str) -> None:
    """The job's loss curves into the run's folder: `loss-STEP.svg`, and with the plot
    extra `loss-STEP.png`, drawn in a worker process (matplotlib takes 40-60 ms of CPU per
    chart, and half a second to load: in this process, 500 runs ending together starved the
    event loop, 116 s instead of 63 s of wall time). A folder that cannot be written is a
    warning, not a failed fine-tune."""
    folder = ctx.artifacts_dir
    if folder is None or not points:
        return
    from orchestrator.views.charts import loss_png, loss_svg, plotting  # noqa: PLC0415

    svg, png = folder / f"loss-{ctx.step_id}.svg", folder / f"loss-{ctx.step_id}.png"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        svg.write_text(loss_svg(points, title=title), encoding="utf-8")
        written = [str(svg)]
        if plotting() and await anyio.to_process.run_sync(loss_png, points, png, title,
                                                           cancellable=True):
            written.append(str(png))
    except Exception as exc:  # noqa: BLE001  (a chart, whatever failed, never fails a fine-tune)
        ctx.log.warning("the loss curves could not be written", folder=str(folder),
                        error=str(exc))
        return
    ctx.log.info("loss curves written", files=written)


@TYPES.step("together/wait-fine-tune", params=WaitParams,
               outputs=frozenset({"job_id", "model_name", "status", "token_count",
                                  "train_loss", "eval_loss"}))
async def wait_fine_tune(ctx: StepContext, params: WaitParams) -> dict[str, Any]:
    """Follows a job to its end: logs each new event once, keeps its figures, shows progress,
    fails with the job's own message. (Cancelling the run cancels the job through the launch
    step.)"""
    client = together_client(ctx)
    seen = int(ctx.last_checkpoint.get("events_seen", 0))
    clock = PollClock(params.poll_interval, params.max_poll_interval)
    started = time.monotonic()
    outage = Outage(ctx, params.max_outage)
    figures = _Figures(ctx, client, params.job_id)
    status = None
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
        since = figures.since
        training = job.status == "running"  # figures appear only then (all fetched at the end)
        fetched = await figures.fetch() if training else []
        # From here to the checkpoint nothing awaits: the events logged, the points and the
        # count of events seen are committed together, so a crash repeats none of them.
        fresh = events[seen:]
        for event in fresh:
            # The job's training step under its own key: `step` is the pipeline's (wait).
            ctx.log.info("job event", type=event.type, message=event.message,
                         **({"train_step": event.step} if event.step else {}))
        points = _with_tokens([*points_from_events(fresh, step_id=ctx.step_id,
                                                   job_id=job.id), *fetched], job)
        ctx.record_metrics(points)
        if fresh or figures.since != since:
            seen = len(events)
            await ctx.checkpoint(events_seen=seen, metrics_step=figures.since)
        changed = bool(fresh or points) or job.status != status
        status = job.status
        progress = progress_of(events, figures.latest)
        if job.total_steps:
            progress.setdefault("total_steps", job.total_steps)
        if job.steps_completed is not None and job.steps_completed >= progress.get("step", 0):
            progress["step"] = job.steps_completed
        ctx.report({"status": job.status, "elapsed": time.monotonic() - started, **progress})
        if job.status == "completed":
            break
        if job.failed:
            reason = next((e.message for e in reversed(events)
                           if e.level == "error" or e.type == "job_error"), None)
            raise JobEnded(f"fine-tuning job {job.id} ended {job.status}"
                           + (f": {reason}" if reason else ""), param="job_id")
        await anyio.sleep(clock.next(changed=changed, estimate=job.seconds_remaining))
    # Every point, whatever this attempt saw (a resumed one saw only the last ones); if the
    # endpoint fails now, what the events said.
    final = await figures.fetch(everything=True) or points_from_events(
        events, step_id=ctx.step_id, job_id=job.id)
    ctx.record_metrics(_with_tokens(final, job))
    await _draw(ctx, final, job.id)
    return {"job_id": job.id, "model_name": job.model_output_name or "",
            "status": job.status, "token_count": job.token_count or 0, **final_losses(final)}
