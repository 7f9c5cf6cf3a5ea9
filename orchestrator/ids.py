"""Run ids: sortable by creation time, readable in a table, unique without coordination."""

from __future__ import annotations

import secrets
import time

__all__ = ["new_run_id"]

_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"  # Crockford base32, lower case


def new_run_id(now: float | None = None) -> str:
    """`r-YYMMDD-HHMMSS-xxxxxx`: UTC creation time plus 30 random bits.

    Ids of runs created in the same second collide with probability about n^2 / 2^31; the
    store rejects a duplicate and the caller draws again.
    """
    stamp = time.strftime("%y%m%d-%H%M%S", time.gmtime(time.time() if now is None else now))
    bits = int.from_bytes(secrets.token_bytes(4), "big")  # one urandom call, not one per char
    suffix = "".join(_ALPHABET[(bits >> (5 * i)) & 31] for i in range(6))
    return f"r-{stamp}-{suffix}"
