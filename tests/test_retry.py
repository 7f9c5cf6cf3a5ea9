"""The retry policy's delay arithmetic: pure, with injected randomness."""

from __future__ import annotations

import random

import pytest

from orchestrator.definition.model import RetrySpec
from orchestrator.engine.retry import NO_RETRY, RetryPolicy


@pytest.mark.parametrize(("failures", "ceiling"), [(1, 2.0), (2, 4.0), (3, 8.0), (4, 10.0),
                                                   (500, 10.0)])
def test_ceiling_grows_exponentially_up_to_max(failures: int, ceiling: float) -> None:
    """initial * multiplier^(n-1), capped at max_delay, without overflowing for large n."""
    policy = RetryPolicy(max_attempts=9, initial_delay=2, max_delay=10, multiplier=2)
    assert policy.ceiling(failures) == ceiling


def test_full_jitter_stays_within_the_ceiling() -> None:
    """Full jitter draws uniformly in [0, ceiling]; spread, not lockstep."""
    policy = RetryPolicy(max_attempts=5, initial_delay=1, max_delay=60, multiplier=2)
    rng = random.Random(7)
    delays = [policy.delay_for(3, rng) for _ in range(500)]
    assert all(0 <= d <= 4 for d in delays)
    assert max(delays) - min(delays) > 3


def test_no_jitter_is_the_ceiling() -> None:
    policy = RetryPolicy(max_attempts=5, initial_delay=1, max_delay=60, jitter="none")
    assert policy.delay_for(2, random.Random(1)) == 2.0


def test_retry_after_is_a_floor() -> None:
    """The remote's Retry-After is honoured even when backoff would be shorter."""
    policy = RetryPolicy(max_attempts=5, initial_delay=0.01, max_delay=0.01)
    assert policy.delay_for(1, random.Random(1), retry_after=7.5) == 7.5


def test_from_spec() -> None:
    """`retry: null` is one attempt; a spec carries its fields over."""
    assert RetryPolicy.from_spec(None) is NO_RETRY
    assert NO_RETRY.max_attempts == 1
    policy = RetryPolicy.from_spec(RetrySpec(max_attempts=4, initial_delay=0.5))
    assert (policy.max_attempts, policy.initial_delay, policy.jitter) == (4, 0.5, "full")
