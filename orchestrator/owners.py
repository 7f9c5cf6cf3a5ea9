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
    """True if `owner` was a process on this host that is gone, or dead and not yet reaped
    (a zombie: `kill(pid, 0)` still succeeds for one, and a parent that reaps late, such as
    a container without an init, would otherwise keep its runs held until the lease ends)."""
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
    return _state(pid) in DEAD_STATES


DEAD_STATES = frozenset("ZX")
"""Process states (proc(5)) of a process that has exited: zombie, dead."""


def _state(pid: int) -> str | None:
    """The process's one-letter state from /proc (None where there is no /proc)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            text = stat.read(4096)
    except FileNotFoundError:
        return "X"  # gone between the signal and the read
    except OSError:
        return None
    # "pid (comm) S ...": comm may hold spaces and parentheses; the state follows the last ")".
    after = text[text.rfind(b")") + 1:].split()
    return after[0].decode("ascii", "replace") if after else None
