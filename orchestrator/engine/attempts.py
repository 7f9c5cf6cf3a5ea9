"""A step's attempts: its concurrency slots, each attempt (parameters resolved and checked, its
timeout, its code), the backoff between them, the re-entry of one a crash cut short.

Every state change is committed before anything that depends on it: a failed attempt (with its
retry time) before the backoff sleep, a step's outputs before it counts as succeeded. The one
deferred write is that an attempt *started* (see `journal`): a crash mid-attempt re-enters it
whether or not its start was recorded.
"""

from __future__ import annotations

import json
import random
import traceback
from collections.abc import Mapping
from typing import Any

import anyio
from pydantic import BaseModel, ValidationError

from orchestrator.definition.expressions import ExpressionError, find_templates, parse_template
from orchestrator.definition.pipeline import Pipeline, Step
from orchestrator.durations import format_duration
from orchestrator.engine.journal import RunJournal
from orchestrator.engine.resolve import Resolution
from orchestrator.engine.retry import RetryPolicy
from orchestrator.engine.runhost import RunHost
from orchestrator.engine.runslots import RunSlots
from orchestrator.errors import JobEnded, PermanentError, StepTimeout, TransientError
from orchestrator.faults import fault_point
from orchestrator.inputfiles import format_size
from orchestrator.log import Logger
from orchestrator.steps.context import StepContext
from orchestrator.store.records import Clock, ErrorInfo, NewEvent, StepRecord, StepStatus
from orchestrator.store.rows import MAX_JSON_VALUE

__all__ = ["StepAttempts", "StepFailed", "parameter_problems", "step_outputs"]


class StepFailed(Exception):
    """The step failed for good; its state is already committed."""


class StepAttempts:
    """Runs a run's steps, one at a time each, through their attempts (`run`)."""

    __slots__ = ("_clock", "_host", "_journal", "_log", "_pipeline", "_resolution",
                 "_resume_from", "_rng", "_slots")

    def __init__(self, *, pipeline: Pipeline, journal: RunJournal, slots: RunSlots,
                 resolution: Resolution, host: RunHost, log: Logger,
                 rng: random.Random, clock: Clock, resume_from: dict[str, str]) -> None:
        self._pipeline = pipeline
        self._journal = journal
        self._slots = slots
        self._resolution = resolution
        self._host = host
        self._log = log
        self._rng = rng
        self._clock = clock
        self._resume_from = resume_from
        """Where a resume has to start, for each failed step whose remote job ended:
        written here, read by the run's executor."""

    def _entry(self, record: StepRecord) -> tuple[int, float, float | None]:
        """Where a step's attempts begin: the attempt (one a crash or signal cut short is
        re-entered; after a failure, the next), when the step started, and when a retry
        that was waiting is due (None: at once)."""
        if record.status in (StepStatus.RUNNING, StepStatus.INTERRUPTED):
            attempt, retry_at = max(1, record.attempt), None
        elif record.status is StepStatus.RETRYING:
            attempt, retry_at = record.attempt + 1, record.retry_at
        else:
            return 1, self._clock(), None
        started_at = self._clock() if record.started_at is None else record.started_at
        return attempt, started_at, retry_at

    async def run(self, step: Step) -> None:
        """Run `step` until it succeeds, or raise StepFailed once it failed for good."""
        step_id = step.id
        save = self._journal.save
        # (Not the record itself: a waiting step would keep its superseded record alive.)
        attempt, started_at, retry_at = self._entry(self._journal.records[step_id])
        if retry_at is not None:
            await anyio.sleep(max(0.0, retry_at - self._clock()))
        try:
            await self._slots.take_step_slots(step_id)
        except PermanentError as exc:
            error = ErrorInfo(type(exc).__name__, str(exc))
            await self._fail(step_id, attempt, error, exc)
            raise StepFailed from None
        log = self._log  # each line names its step and attempt: no logger bound per attempt
        while True:
            # (Its type is the pipeline's to say: the event holds what the row cannot, when.)
            await save(step_id, NewEvent("step_started", step_id, attempt), defer=True,
                       status=StepStatus.RUNNING, attempt=attempt, started_at=started_at,
                       finished_at=None, retry_at=None, error=None, outputs=None)
            log.info("step started", step=step_id, attempt=attempt, uses=step.spec.uses)
            fault_point("after_step_started", step_id)
            try:
                outputs, config_hash = await self._attempt(step, attempt)
            except TransientError as exc:
                error = ErrorInfo(type(exc).__name__, str(exc))
                policy = RetryPolicy.from_spec(step.retry)
                if attempt >= policy.max_attempts:
                    await self._fail(step_id, attempt, error, exc,
                                     note=f"gave up after {attempt} attempt"
                                          f"{'s' * (attempt > 1)}")
                    raise StepFailed from None
                delay = policy.delay_for(attempt, self._rng, exc.retry_after)
                await save(step_id, NewEvent("attempt_failed", step_id, attempt, {
                    "error": error.to_json(), "retry_in": round(delay, 3)}),
                    status=StepStatus.RETRYING, error=error, retry_at=self._clock() + delay)
                log.warning("attempt failed, will retry", step=step_id, attempt=attempt,
                            error=str(error), retry_in=format_duration(delay))
                await anyio.sleep(delay)
                attempt += 1
                continue
            except Exception as exc:  # noqa: BLE001  (any other error fails the step for good)
                error = ErrorInfo(type(exc).__name__, str(exc))
                await self._fail(step_id, attempt, error, exc)
                raise StepFailed from None
            fault_point("before_step_commit", step_id)
            finished = self._clock()
            done_with = self._slots.note_released(step_id)
            # The outputs live in the step's row; the event says that it succeeded and when
            # (they were stored twice: a third of a no-op step's bytes).
            await save(step_id, NewEvent("step_succeeded", step_id, attempt),
                       status=StepStatus.SUCCEEDED, outputs=outputs, finished_at=finished,
                       config_hash=config_hash)
            fault_point("after_step_commit", step_id)
            if done_with:
                await self._slots.release(done_with)
            log.info("step succeeded", step=step_id, attempt=attempt,
                     duration=format_duration(finished - started_at))
            return

    async def _fail(self, step_id: str, attempt: int, error: ErrorInfo, exc: BaseException, *,
                    note: str | None = None) -> None:
        expected = isinstance(exc, PermanentError | TransientError)
        data: dict[str, Any] = {"error": error.to_json()}
        if note:
            data["note"] = note
        if isinstance(exc, JobEnded):
            data["resume_from"] = self._resume_from[step_id] = self._resume_point(step_id, exc)
        if not expected:
            data["traceback"] = "".join(traceback.format_exception(exc))
        await self._journal.save(step_id, NewEvent("step_failed", step_id, attempt, data),
                                 status=StepStatus.FAILED, error=error,
                                 finished_at=self._clock())
        self._log.error("step failed", step=step_id, attempt=attempt, error=str(error),
                        **({"note": note} if note else {}))

    def _resume_point(self, step_id: str, exc: JobEnded) -> str:
        """The step that made the job `step_id` followed (the one its `exc.param` parameter
        reads an output of), or `step_id` itself if it made the job."""
        if exc.param is not None:
            value = self._pipeline.every_step[step_id].with_.get(exc.param)
            for _, text in find_templates(value):
                for ref in parse_template(text).references:
                    if ref.root == "steps" and ref.path:
                        return str(ref.path[0])
        return step_id

    async def _attempt(self, step: Step, attempt: int) -> tuple[dict[str, Any], str]:
        """One attempt: resolve and check parameters, run the step under its timeout."""
        try:
            raw = self._resolution.params(step)
        except ExpressionError as exc:
            msg = f"steps.{step.id}.with: {exc}"
            raise PermanentError(msg) from None
        try:
            params = step.type.params.model_validate(raw)
        except ValidationError as exc:
            raise PermanentError(parameter_problems(step.id, exc)) from None
        ctx = StepContext(self._host, step.id, attempt,
                          self._journal.records[step.id].checkpoint)
        if step.timeout is None:  # no cancel scope to wait in (0.6 KiB of a waiting step)
            result = await step.type.run(ctx, params)
        else:
            with anyio.move_on_after(step.timeout) as scope:
                result = await step.type.run(ctx, params)
            if scope.cancelled_caught:
                msg = f"attempt {attempt} ran longer than the step's timeout of " \
                      f"{format_duration(step.timeout)}"
                raise StepTimeout(msg)
        return step_outputs(result), self._resolution.config_hash(step, rendered=raw)


def parameter_problems(step_id: str, exc: ValidationError) -> str:
    """Pydantic's errors without the input values (which may hold resolved secrets)."""
    parts = []
    for error in exc.errors(include_url=False, include_input=False):
        where = ".".join(map(str, error["loc"])) or "with"
        parts.append(f"{where}: {str(error['msg']).removeprefix('Value error, ')}")
    return f"steps.{step_id}.with: " + "; ".join(parts)


def step_outputs(result: Any) -> dict[str, Any]:
    if result is None:
        return {}
    if isinstance(result, BaseModel):
        outputs: dict[str, Any] = result.model_dump(mode="json")
        return outputs
    if not isinstance(result, Mapping):
        msg = f"a step must return a mapping of outputs or None, not {type(result).__name__}"
        raise PermanentError(msg)
    outputs = dict(result)
    try:
        size = len(json.dumps(outputs))
    except (TypeError, ValueError) as exc:
        msg = f"a step's outputs must be JSON-serialisable: {exc}"
        raise PermanentError(msg) from None
    if size > MAX_JSON_VALUE:
        msg = (f"a step's outputs are {format_size(size)} of JSON; the store keeps at most "
               f"{format_size(MAX_JSON_VALUE)}: write large results to a file and output its "
               "path")
        raise PermanentError(msg)
    return outputs
