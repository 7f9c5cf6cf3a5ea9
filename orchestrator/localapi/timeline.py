"""A simulated fine-tuning job, as a pure function of its plan and the clock.

Nothing runs in the background: a job's status, events, checkpoints, metrics and token count
are computed from its plan, its creation time, when (if ever) it was cancelled, and *now*. So a
job keeps progressing whether or not any process serves it, and a restarted server sees every
job exactly where the clock says it is. Training is simulated; no model is trained.

Phases take fixed shares of the planned duration, each a second or more of the default 10 s
job, so a client polling by the job's estimate sees every one of them:

    pending 0-10%  queued 10-20%  running 20-80% (training 24-78%)  compressing 80-90%
    uploading 90-100%

`progress.seconds_remaining` is the time to the job's next status change (rounded down to
whole seconds, as Together gives it: a client waking on it is early, never late).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import math
from collections.abc import Mapping
from typing import Any

from orchestrator.process import hold
from orchestrator.protocol.schedule import LRSchedule
from orchestrator.protocol.types import TERMINAL_JOB_STATUSES

__all__ = ["CANCEL_DELAY", "Event", "JobPlan", "JobView", "view"]

PHASES = (("pending", 0.0), ("queued", 0.10), ("running", 0.20), ("compressing", 0.80),
          ("uploading", 0.90))
RUNNING = 0.20
TRAIN_START, TRAIN_END = 0.24, 0.78
CANCEL_DELAY = 1.0
"""Seconds (at most; a tenth of the job for short ones) from cancel_requested to cancelled."""

SIMULATED = "(simulated by the local API: no model is trained)"


@dataclasses.dataclass(frozen=True)
class JobPlan:
    """What a job will do, fixed when it is created (and stored with it)."""

    duration: float
    n_epochs: int
    steps_per_epoch: int
    n_checkpoints: int
    n_evals: int
    tokens_per_epoch: int
    seed: int
    outcome: str = "completed"
    fail_at: float = 0.5
    """For a failing outcome, the share of the job's duration at which it fails."""
    learning_rate: float = 1e-5
    lr_scheduler: str = "cosine"
    warmup_ratio: float = 0.0
    min_lr_ratio: float = 0.0
    num_cycles: float = 0.5
    """The job's learning-rate schedule (`lr_schedule`); a plan stored before it was kept
    reads as Together's defaults."""

    @property
    def total_steps(self) -> int:
        return self.n_epochs * self.steps_per_epoch

    @property
    def lr_schedule(self) -> LRSchedule:
        return LRSchedule(self.learning_rate, self.lr_scheduler, self.warmup_ratio,
                          self.min_lr_ratio, self.num_cycles)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> JobPlan:
        return cls(**data)


@dataclasses.dataclass(frozen=True)
class Event:
    offset: float
    """Seconds after the job's creation."""
    type: str
    message: str
    level: str = "info"
    step: int = 0
    checkpoint_path: str = ""
    model_path: str = ""


@dataclasses.dataclass(frozen=True)
class JobView:
    """A job as of one instant."""

    status: str
    events: list[Event]
    started_at: float | None
    updated_at: float
    current_step: int
    token_count: int
    epochs_completed: int
    checkpoints: list[tuple[int, float, str]]
    """(step, offset, type) of every checkpoint saved so far."""
    evals_completed: int
    seconds_remaining: int
    plan: JobPlan
    recorded_metrics: list[dict[str, float]] | None = None
    """A job the trainer trains: its metric points as recorded (else they are computed)."""

    @property
    def metrics(self) -> list[dict[str, float]]:
        """Loss and learning rate per logged step so far (computed on demand: it is long)."""
        if self.recorded_metrics is not None:
            return self.recorded_metrics
        return _metrics(self.plan, self.current_step)


def _noise(seed: int, step: int) -> float:
    digest = hashlib.blake2b(f"{seed}:{step}".encode(), digest_size=4).digest()
    return int.from_bytes(digest, "big") / 2**32 - 0.5


def train_loss(plan: JobPlan, step: int) -> float:
    """A plausible, deterministic training loss curve."""
    progress = step / max(1, plan.total_steps)
    return round(0.35 + 2.2 * math.exp(-3.5 * progress) + 0.06 * _noise(plan.seed, step), 4)


def eval_loss(plan: JobPlan, step: int) -> float:
    return round(train_loss(plan, step) + 0.08 + 0.03 * _noise(plan.seed + 1, step), 4)


def _step_offset(plan: JobPlan, step: int) -> float:
    span = (TRAIN_END - TRAIN_START) * plan.duration
    return TRAIN_START * plan.duration + span * step / max(1, plan.total_steps)


def _spread(total: int, count: int) -> list[int]:
    """`count` steps spread evenly over `total`, the last at the end (none for count 0)."""
    return sorted({max(1, round(total * i / count)) for i in range(1, count + 1)})


@functools.lru_cache(maxsize=4096)
def _checkpoint_steps(plan: JobPlan) -> list[int]:
    return _spread(plan.total_steps, max(1, min(plan.n_checkpoints, plan.total_steps)))


@functools.lru_cache(maxsize=4096)
def _eval_steps(plan: JobPlan) -> list[int]:
    return _spread(plan.total_steps, min(plan.n_evals, plan.total_steps))


@functools.lru_cache(maxsize=4096)
def _schedule(plan: JobPlan, model: str, output_name: str) -> tuple[Event, ...]:
    """Every event the job would emit if left alone, in time order (cached: plans are fixed)."""
    d = plan.duration
    events = [
        Event(0.0, "job_pending", f"Fine-tuning job created for {model} {SIMULATED}"),
        Event(RUNNING * d, "job_start", "Job started"),
        Event(0.21 * d, "model_downloading", f"Downloading base model {model}"),
        Event(0.22 * d, "model_download_complete", "Base model downloaded"),
        Event(0.225 * d, "training_data_downloading", "Downloading training data"),
        Event(0.23 * d, "training_data_download_complete", "Training data downloaded"),
        Event(TRAIN_START * d, "training_start",
              f"Training started: {plan.n_epochs} epochs, {plan.total_steps} steps {SIMULATED}"),
    ]
    evals = set(_eval_steps(plan))
    for epoch in range(1, plan.n_epochs + 1):
        step = epoch * plan.steps_per_epoch
        message = f"Epoch {epoch}/{plan.n_epochs} completed at step {step}/{plan.total_steps}: " \
                  f"train loss {train_loss(plan, step):.4f}"
        if step in evals:
            message += f", eval loss {eval_loss(plan, step):.4f}"
        events.append(Event(_step_offset(plan, step), "epoch_complete", message, step=step))
    checkpoints = _checkpoint_steps(plan)
    for step in checkpoints[:-1]:
        path = f"{output_name}:{step}"
        events.append(Event(_step_offset(plan, step), "checkpoint_save",
                            f"New checkpoint saved at step {step}", step=step,
                            checkpoint_path=path))
    final = f"final train loss {train_loss(plan, plan.total_steps):.4f}"
    if plan.n_evals:
        final += f", eval loss {eval_loss(plan, plan.total_steps):.4f}"
    events += [
        Event(TRAIN_END * d, "training_complete", f"Training completed: {final}",
              step=plan.total_steps),
        Event(0.80 * d, "model_compressing", "Compressing output model"),
        Event(0.89 * d, "model_compression_complete", "Model compression complete"),
        Event(0.90 * d, "model_uploading", f"Uploading output model {output_name}"),
        Event(0.99 * d, "model_upload_complete", "Output model uploaded",
              model_path=output_name),
        Event(d, "job_complete", f"Fine-tuning job completed; model {output_name} is ready "
                                 f"{SIMULATED}", model_path=output_name),
    ]
    events.sort(key=lambda event: event.offset)
    return tuple(events)


def _status_at(plan: JobPlan, elapsed: float) -> str:
    if elapsed >= plan.duration:
        return "completed"
    status = "pending"
    for name, start in PHASES:
        if elapsed >= start * plan.duration:
            status = name
    return status


def view(plan: JobPlan, *, model: str, output_name: str, created_at: float,
         cancelled_at: float | None, now: float) -> JobView:
    """The job as of `now` (wall seconds)."""
    elapsed = max(0.0, now - created_at)
    events = list(_schedule(plan, model, output_name))
    status: str | None = None
    stopped = plan.duration  # when training stops progressing: the end, a failure or a cancel
    if plan.outcome != "completed":
        fail = plan.fail_at * plan.duration
        stopped = min(stopped, fail)
        events = [e for e in events if e.offset < fail]
        events.append(Event(fail, "job_error", f"Training failed ({plan.outcome}): planned "
                                               f"failure {SIMULATED}", level="error"))
        if elapsed >= fail:
            status = plan.outcome
    if cancelled_at is not None:
        cancel = max(0.0, cancelled_at - created_at)
        stopped = min(stopped, cancel)
        done = cancel + min(CANCEL_DELAY, plan.duration / 10)
        events = [e for e in events if e.offset < cancel]
        events.append(Event(cancel, "cancel_requested", "Cancellation requested"))
        events.append(Event(done, "job_stopped", "Job cancelled"))
        if elapsed >= done:
            status = "cancelled"
        elif elapsed >= cancel:
            status = "cancel_requested"
    if status is None:
        status = _status_at(plan, elapsed)
    events.sort(key=lambda event: event.offset)
    visible = [e for e in events if e.offset <= elapsed]
    trained = min(elapsed, stopped)
    step = _steps_done(plan, trained)
    checkpoints = [(s, _step_offset(plan, s), "Intermediate")
                   for s in _checkpoint_steps(plan)[:-1] if _step_offset(plan, s) <= trained]
    if status == "completed":
        checkpoints.append((plan.total_steps, plan.duration, "Final"))
    started = created_at + RUNNING * plan.duration if elapsed >= RUNNING * plan.duration \
        else None
    updated = created_at + (visible[-1].offset if visible else 0.0)
    remaining = 0 if status in TERMINAL_JOB_STATUSES else math.floor(
        _next_change(plan, elapsed, cancelled_at and max(0.0, cancelled_at - created_at))
        - elapsed)
    return JobView(
        status=status,
        events=visible,
        started_at=started,
        updated_at=updated,
        current_step=step,
        token_count=round(plan.tokens_per_epoch * plan.n_epochs * step / max(1, plan.total_steps)),
        epochs_completed=step // max(1, plan.steps_per_epoch),
        checkpoints=checkpoints,
        evals_completed=sum(1 for s in _eval_steps(plan) if s <= step),
        seconds_remaining=max(0, remaining),
        plan=plan,
    )


def _next_change(plan: JobPlan, elapsed: float, cancel: float | None) -> float:
    """When (seconds after creation) the job's status next changes: the next phase, its
    planned failure, or the end of a cancellation."""
    if cancel is not None:
        return max(elapsed, cancel + min(CANCEL_DELAY, plan.duration / 10))
    changes = [start * plan.duration for _, start in PHASES] + [plan.duration]
    if plan.outcome != "completed":
        fail = plan.fail_at * plan.duration
        changes = [t for t in changes if t < fail] + [fail]
    return min((t for t in changes if t > elapsed), default=elapsed)


def _steps_done(plan: JobPlan, elapsed: float) -> int:
    start, end = TRAIN_START * plan.duration, TRAIN_END * plan.duration
    if elapsed <= start:
        return 0
    share = min(1.0, (elapsed - start) / max(1e-9, end - start))
    return math.floor(share * plan.total_steps + 1e-9)


def _metrics(plan: JobPlan, steps_done: int, points: int = 100) -> list[dict[str, float]]:
    """Loss and learning rate per logged step so far (at most `points` evenly spread)."""
    if steps_done <= 0:
        return []
    stride = max(1, math.ceil(plan.total_steps / points))
    logged = sorted({*range(stride, steps_done + 1, stride), steps_done})
    rows: list[dict[str, float]] = []
    evals = set(_eval_steps(plan))
    schedule = plan.lr_schedule
    for step in logged:
        row = {"train/global_step": float(step), "train/loss": train_loss(plan, step),
               "train/learning_rate": round(schedule.at(step - 1, plan.total_steps), 12),
               "train/epoch": round(step / max(1, plan.steps_per_epoch), 4)}
        rows.append(row)
    for step in sorted(s for s in evals if s <= steps_done):
        rows.append({"train/global_step": float(step), "eval/loss": eval_loss(plan, step)})
    rows.sort(key=lambda row: row["train/global_step"])
    return rows


for _cache, _what in ((_checkpoint_steps, "checkpoint steps"), (_eval_steps, "eval steps"),
                     (_schedule, "event schedules")):
    hold(_cache, name=f"local API job {_what}", why="a simulated job's plan is fixed")
del _cache, _what
