"""together/smoke-test: one prompt against the model, with expectations on the answer.
"""

from __future__ import annotations

import re
import time
from typing import TYPE_CHECKING, Any

from pydantic import Field, StrictBool, model_validator

from orchestrator.definition.fields import Duration
from orchestrator.durations import format_duration
from orchestrator.errors import PermanentError, ProviderUnavailable
from orchestrator.steps.context import StepContext
from orchestrator.steps.together.common import (
    TYPES,
    Params,
    together_client,
)

if TYPE_CHECKING:
    from orchestrator.providers.together.client import TogetherClient

__all__ = ["SmokeParams", "smoke_test"]

class Expectations(Params):
    contains: str | list[str] | None = None
    regex: str | None = None
    not_empty: StrictBool = True
    max_latency: Duration | None = None
    max_first_token: Duration | None = Field(
        default=None, description="the longest wait for the first piece of text (stream: true)")


class SmokeParams(Params):
    model: str
    prompt: str | None = None
    messages: list[dict[str, Any]] | None = None
    max_tokens: int = Field(default=64, ge=1)
    temperature: float = Field(default=0.0, ge=0)
    stream: StrictBool = Field(default=False, description="ask for server-sent events and "
                                                          "time the first piece of text")
    expect: Expectations = Field(default_factory=Expectations)

    @model_validator(mode="after")
    def _one_input(self) -> SmokeParams:
        if (self.prompt is None) == (self.messages is None):
            msg = "give exactly one of prompt (a completion) or messages (a chat)"
            raise ValueError(msg)
        if self.expect.max_first_token is not None and not self.stream:
            msg = "expect.max_first_token needs stream: true (only a stream has a first token)"
            raise ValueError(msg)
        return self


def _failures(text: str, latency: float, expect: Expectations,
              first_token: float | None = None) -> list[str]:
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
    if expect.max_first_token is not None and first_token is not None and \
            first_token > expect.max_first_token:
        problems.append(f"its first token took {format_duration(first_token)} "
                        f"(max_first_token {format_duration(expect.max_first_token)})")
    return problems


async def _ask(client: TogetherClient, params: SmokeParams) -> tuple[Any, float]:
    from orchestrator.providers.together.errors import NotFound  # noqa: PLC0415

    sampling = {"max_tokens": params.max_tokens, "temperature": params.temperature}
    started = time.monotonic()
    try:
        if params.stream:
            answer = await client.stream(params.model, prompt=params.prompt,
                                         messages=params.messages, **sampling)
        elif params.messages is not None:
            answer = await client.chat(params.model, params.messages, **sampling)
        else:
            answer = await client.complete(params.model, params.prompt or "", **sampling)
    except NotFound as exc:  # a fine-tuned model can take a while to become servable
        raise ProviderUnavailable(f"model {params.model} is not served (yet): {exc}") from None
    return answer, time.monotonic() - started


@TYPES.step("together/smoke-test", params=SmokeParams,
               outputs=frozenset({"text", "latency", "first_token_latency", "usage", "model"}))
async def smoke_test(ctx: StepContext, params: SmokeParams) -> dict[str, Any]:
    """Asks the model one question and checks the answer; a slow first answer (a cold model)
    is asked again before latency counts."""
    client = together_client(ctx)
    answer, latency = await _ask(client, params)
    expect = params.expect
    slow = (expect.max_latency is not None and latency > expect.max_latency) or (
        expect.max_first_token is not None and answer.first_token_after is not None
        and answer.first_token_after > expect.max_first_token)
    if slow:
        ctx.log.info("slow first answer; asking again now the model is warm",
                     latency=format_duration(latency))
        answer, latency = await _ask(client, params)
    problems = _failures(answer.text, latency, params.expect, answer.first_token_after)
    asked = params.prompt if params.prompt is not None else \
        str((params.messages or [{}])[-1].get("content", ""))
    timed = {"first_token_latency": round(answer.first_token_after, 4)} \
        if answer.first_token_after is not None else {}
    ctx.log.info("smoke test answer", prompt=asked[:500], text=answer.text[:500],
                 latency=round(latency, 3), **timed, passed=not problems)
    if problems:
        raise PermanentError(f"smoke test of {params.model} failed: " + "; ".join(problems)
                             + f" (answer: {answer.text[:200]!r})")
    return {"text": answer.text, "latency": round(latency, 4), "model": params.model,
            "first_token_latency": timed.get("first_token_latency"),
            "usage": answer.usage.model_dump(mode="json")}
