"""Run ids: sortable by creation time, readable in a table, unique without coordination."""

from __future__ import annotations

import secrets
import time

__all__ = ["new_batch_id", "new_run_id", "scheduled_id"]

_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"  # Crockford base32, lower case


def new_run_id(now: float | None = None, prefix: str = "r") -> str:
    """`r-YYMMDD-HHMMSS-xxxxxx`: UTC creation time plus 30 random bits.

    Ids of runs created in the same second collide with probability about n^2 / 2^31; the
    store rejects a duplicate and the caller draws again.
    """
    stamp = time.strftime("%y%m%d-%H%M%S", time.gmtime(time.time() if now is None else now))
    bits = int.from_bytes(secrets.token_bytes(4), "big")  # one urandom call, not one per char
    suffix = "".join(_ALPHABET[(bits >> (5 * i)) & 31] for i in range(6))
    return f"{prefix}-{stamp}-{suffix}"


def new_batch_id(now: float | None = None) -> str:
    """`b-YYMMDD-HHMMSS-xxxxxx`; a batch's cells are runs `<batch id>.<cell>`."""
    return new_run_id(now, "b")


def scheduled_id(schedule_id: str, fire_time: float, prefix: str = "s") -> str:
    """The one id a schedule's fire gets, whoever fires it: `s-<schedule>-YYMMDD-HHMMSS` (UTC).

    Being a function of the schedule and the fire time, a second scheduler firing the same
    tick is refused by the store (the id exists) instead of starting a second run.
    """
    return f"{prefix}-{schedule_id}-{time.strftime('%y%m%d-%H%M%S', time.gmtime(fire_time))}"
