"""Retry policy: exponential backoff with full jitter, capped, honouring a remote Retry-After."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Literal

from orchestrator.definition.model import RetrySpec

__all__ = ["NO_RETRY", "RetryPolicy"]


@dataclass(frozen=True)
class RetryPolicy:
    """When to try a failed step again. Pure: randomness comes in as an argument."""

    max_attempts: int = 1
    initial_delay: float = 1.0
    max_delay: float = 60.0
    multiplier: float = 2.0
    jitter: Literal["full", "none"] = "full"

    @classmethod
    def from_spec(cls, spec: RetrySpec | None) -> RetryPolicy:
        """The policy a step's (merged) `retry:` describes; `None` means a single attempt."""
        if spec is None:
            return NO_RETRY
        return cls(spec.max_attempts, spec.initial_delay, spec.max_delay, spec.multiplier,
                   spec.jitter)

    def ceiling(self, failures: int) -> float:
        """The longest wait after `failures` failed attempts: initial * multiplier^(failures-1)."""
        delay = self.initial_delay
        for _ in range(max(0, failures - 1)):
            delay *= self.multiplier
            if delay >= self.max_delay:
                return self.max_delay
        return min(delay, self.max_delay)

    def delay_for(self, failures: int, rng: random.Random,
                  retry_after: float | None = None) -> float:
        """Seconds to wait before the next attempt; never less than the remote's `retry_after`.

        Full jitter (a uniform draw between 0 and the ceiling) spreads retries of many runs
        that failed together, so they do not hit the provider again in lockstep.
        """
        ceiling = self.ceiling(failures)
        delay = rng.uniform(0.0, ceiling) if self.jitter == "full" else ceiling
        if retry_after is not None:
            delay = max(delay, retry_after)
        return delay


NO_RETRY = RetryPolicy(max_attempts=1)
