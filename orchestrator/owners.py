"""Who executes a run: a process's owner id, and whether the process behind one is gone.

An owner id is `host:pid:random`: the lease a run's executor holds names it, so any process
on the same host can tell at once that the executor died (its pid is gone) instead of waiting
for the lease to expire; on another host only the expiry tells.
"""

from __future__ import annotations

import os
import socket

__all__ = ["new_owner_id", "owner_is_dead"]


def new_owner_id() -> str:
    """This process's id as a lease owner (a new one each call: one per orchestrator)."""
    import secrets  # noqa: PLC0415  (start-up: read-only commands name no owner)

    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


def owner_is_dead(owner: str) -> bool:
    """True if `owner` was a process on this host that no longer exists."""
    host, _, rest = owner.partition(":")
    pid_text = rest.partition(":")[0]
    if host != socket.gethostname() or not pid_text.isdigit():
        return False
    pid = int(pid_text)
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False
