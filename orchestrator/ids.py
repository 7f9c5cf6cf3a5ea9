"""Run ids: sortable by creation time, readable in a table, unique without coordination."""

from __future__ import annotations

import secrets
import time

__all__ = ["RunNames", "new_batch_id", "new_run_id", "scheduled_id"]

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


class RunNames:
    """How a line on the console (a log line, a live progress line) names its run.

    Not at all when the command's own header named it (`starting run R ...`: `run`,
    `resume`); `#N` for cell N of the batch the header named; by its id otherwise (a
    worker executes many). The command sets `header` when it announces what it executes.
    """

    __slots__ = ("header",)

    def __init__(self, header: str | None = None) -> None:
        self.header = header

    def __call__(self, run_id: str | None) -> str:
        header = self.header
        if run_id is None or run_id == header:
            return ""
        if header is not None and run_id.startswith(header + "."):
            return "#" + run_id[len(header) + 1:]
        return run_id

    def place(self, run_id: str | None, step_id: str) -> str:
        """`#3 wait`, `wait`, or `r-... wait`: where a line comes from."""
        return " ".join(part for part in (self(run_id), step_id) if part)
