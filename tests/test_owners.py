"""Whether the process behind a lease owner is gone: a killed worker's runs are taken over at
once, not when its lease expires, even while its parent has not reaped it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys

from orchestrator.owners import _state, new_owner_id, owner_is_dead
from tests.cli.helpers import wait_for


def owner_of(pid: int) -> str:
    return f"{socket.gethostname()}:{pid}:abc123"


def test_a_killed_unreaped_child_is_dead() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        assert not owner_is_dead(owner_of(child.pid))  # alive
        os.kill(child.pid, signal.SIGKILL)
        wait_for(lambda: _state(child.pid) == "Z", "the child is a zombie")
        os.kill(child.pid, 0)  # still "exists" for kill(): what fooled the old check
        assert owner_is_dead(owner_of(child.pid))
    finally:
        child.kill()
        child.wait()
    assert owner_is_dead(owner_of(child.pid))  # reaped: gone


def test_only_this_hosts_processes_are_judged() -> None:
    assert not owner_is_dead(new_owner_id())  # this very process
    assert not owner_is_dead(f"another-host:{os.getpid()}:abc123")
    assert not owner_is_dead("not-an-owner")
    assert not owner_is_dead(owner_of(1))  # init: alive
