"""Built-in `core/*` steps: small, dependency-free, and handy for trying the engine out."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, Literal

import anyio
from pydantic import BaseModel, ConfigDict, Field, StrictBool

from orchestrator.definition.fields import Duration
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


@TYPES.step("core/echo", params=EchoParams, outputs=_echo_outputs, provider=False)
async def echo(ctx: StepContext, params: EchoParams) -> dict[str, Any]:
    """Outputs its parameters unchanged."""
    return dict(params.model_extra or {})


class SleepParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    duration: Duration = Field(description="how long to sleep: 500ms, 30s, 5m ...")


@TYPES.step("core/sleep", params=SleepParams, outputs=frozenset({"slept"}), provider=False)
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


@TYPES.step("core/fail", params=FailParams, outputs=frozenset({"failures"}), provider=False)
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


class HttpParams(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    url: str = Field(pattern=r"^https?://[^\s]+$",
                     description="where to send it; may be a secret: ${{ secrets.SLACK_URL }}")
    method: Literal["POST", "PUT", "PATCH", "GET", "DELETE"] = "POST"
    payload: Any = Field(default=None, alias="json",
                         description="the JSON body, e.g. {text: 'run ${{ run.id }} failed'}")
    headers: dict[str, str] = Field(
        default_factory=dict, description="extra headers; secrets allowed (Authorization)")
    timeout: Duration = Field(default=10.0, gt=0, description="for the whole request")
    expect: list[int] | None = Field(
        default=None, description="the statuses that count as success (default: any 2xx)")


_MAX_BODY = 64 * 1024
"""Bytes of a response kept (its outputs' `body`); the rest is read no further."""


def _origin(url: str) -> str:
    """Scheme and host only, for messages: a webhook's path is often its secret."""
    scheme, _, rest = url.partition("://")
    return f"{scheme}://{rest.split('/', 1)[0].rsplit('@', 1)[-1]}"


@TYPES.step("core/http", params=HttpParams, outputs=frozenset({"status", "body"}),
            provider=False)
async def http(ctx: StepContext, params: HttpParams) -> dict[str, Any]:
    """Sends one HTTP request with a JSON body (a Slack or Teams webhook, a CI trigger).

    Retried like any step: a connection error, a timeout, 408, 429 (after its Retry-After) or
    5xx is transient; another 4xx is permanent. Each attempt carries the step's
    `Idempotency-Key`, so a receiver that honours it acts once however often it is sent."""
    import httpx  # noqa: PLC0415  (validate of a core/* pipeline must not load httpx)

    headers = {"Idempotency-Key": ctx.idempotency_key, **params.headers}
    where = _origin(params.url)
    request: dict[str, Any] = {"headers": headers}
    if params.payload is not None:
        request["json"] = params.payload
    try:
        async with httpx.AsyncClient(timeout=params.timeout) as client, \
                client.stream(params.method, params.url, **request) as response:
            body = b""
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) >= _MAX_BODY:
                    break
    except httpx.HTTPError as exc:
        msg = f"{params.method} {where}: {type(exc).__name__}"
        raise TransientError(msg) from None
    text = body[:_MAX_BODY].decode("utf-8", "replace")
    status = response.status_code
    ok = status in params.expect if params.expect else 200 <= status < 300
    if ok:
        ctx.log.info("request sent", method=params.method, url=where, status=status)
        return {"status": status, "body": text}
    summary = f"{params.method} {where} answered {status}: {text[:200]!r}"
    if status in (408, 425, 429) or status >= 500:
        raise TransientError(summary,
                             retry_after=_retry_after(response.headers.get("retry-after", "")))
    raise PermanentError(summary)


def _retry_after(value: str) -> float | None:
    """A Retry-After in seconds, at most an hour (a date or nonsense: none)."""
    try:
        seconds = float(value)
    except ValueError:
        return None
    return min(seconds, 3600.0) if 0 <= seconds < float("inf") else None
