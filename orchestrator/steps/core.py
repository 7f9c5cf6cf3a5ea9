"""Built-in `core/*` steps: small, dependency-free, and handy for trying the engine out."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import anyio
from pydantic import BaseModel, ConfigDict, Field, StrictBool

from orchestrator.durations import Duration
from orchestrator.errors import PermanentError, TransientError
from orchestrator.steps.context import StepContext
from orchestrator.steps.registry import StepRegistry

__all__ = ["TYPES"]

TYPES = StepRegistry()


class EchoParams(BaseModel):
    """Any keys at all; they come back as the step's outputs."""

    model_config = ConfigDict(extra="allow")


def _echo_outputs(with_: Mapping[str, Any]) -> frozenset[str]:
    return frozenset(with_)


@TYPES.step("core/echo", params=EchoParams, outputs=_echo_outputs)
async def echo(ctx: StepContext, params: EchoParams) -> dict[str, Any]:
    """Outputs its parameters unchanged."""
    return dict(params.model_extra or {})


class SleepParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    duration: Duration = Field(description="how long to sleep: 500ms, 30s, 5m ...")


@TYPES.step("core/sleep", params=SleepParams, outputs=frozenset({"slept"}))
async def sleep(ctx: StepContext, params: SleepParams) -> dict[str, Any]:
    """Sleeps for `duration`; a resumed sleep only waits for what was left (a durable timer)."""
    until = ctx.last_checkpoint.get("until")
    if not isinstance(until, int | float):
        until = time.time() + params.duration
        await ctx.checkpoint(until=until)
    await anyio.sleep(max(0.0, until - time.time()))
    return {"slept": params.duration}


class FailParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    times: int | None = Field(
        default=None, ge=0, description="fail this many attempts in total, then succeed; "
                                        "omitted: fail every time"
    )
    message: str = "planned failure (core/fail)"
    transient: StrictBool = Field(default=True,
                                  description="false: fail permanently, no retries")


@TYPES.step("core/fail", params=FailParams, outputs=frozenset({"failures"}))
async def fail(ctx: StepContext, params: FailParams) -> dict[str, Any]:
    """Fails `times` attempts, then succeeds; the count survives resumes in its checkpoint."""
    failures = int(ctx.last_checkpoint.get("failures", 0))
    if params.times is not None and failures >= params.times:
        return {"failures": failures}
    await ctx.checkpoint(failures=failures + 1)
    suffix = f" ({failures + 1} of {params.times})" if params.times is not None else ""
    if params.transient:
        raise TransientError(params.message + suffix)
    raise PermanentError(params.message + suffix)
