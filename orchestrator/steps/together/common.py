"""What the together/* steps share: their registry, the client lookup, the run-scoped token,
the parameter base, and how an outage of the provider is ridden out.
"""

from __future__ import annotations

import hashlib
import time
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict

from orchestrator.durations import format_duration
from orchestrator.errors import PermanentError, TransientError
from orchestrator.steps.context import StepContext
from orchestrator.steps.registry import StepRegistry

if TYPE_CHECKING:
    from orchestrator.providers.together.client import TogetherClient

__all__ = ["TYPES", "Outage", "Params", "ProviderUnavailableTooLong", "run_token",
           "together_client"]

TYPES = StepRegistry()


def together_client(ctx: StepContext) -> TogetherClient:
    """The Together client the run's provider offers; PermanentError if it has none."""
    from orchestrator.providers.together.client import TogetherClient  # noqa: PLC0415

    return ctx.client(TogetherClient)


def run_token(idempotency_key: str) -> str:
    """A short token unique to a run's step (`run_id:step_id`), to recognise what it created
    remotely."""
    digest = hashlib.sha256(idempotency_key.encode()).hexdigest()
    return f"o{digest[:9]}"


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ProviderUnavailableTooLong(PermanentError):
    """The provider stayed unreachable longer than the step's `max_outage`."""


class Outage:
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
