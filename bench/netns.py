"""Separate hosts on one machine: network namespaces joined to this one by veth pairs, each
link cut and healed at will, for tests of a fleet whose workers lose the network while alive.

Each host gets a namespace of its own (`ip netns`), a veth pair whose far end lives in it
(10.X.N.2/24, a default route through 10.X.N.1, this side's end), and its loopback. The
servers every host needs listen on `service` (10.X.0.1, on this side's loopback): one
address that this machine and every host reach alike, so a run created here names a
provider URL its workers there can use. `cut` takes a host's link down (its packets go
nowhere: no refusal, no reset, as in a real partition); `heal` brings it back. Everything
made is removed on the way out. Where namespaces cannot be made (not root, no `ip`, a
sandbox without CAP_NET_ADMIN) `hosts` raises NotHere, saying why in one line (a test skips).
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from bench.pgserver import NotHere

__all__ = ["Host", "Hosts", "hosts"]


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30,
                          check=False)
    if check and done.returncode != 0:
        raise AssertionError(f"ip {' '.join(args)}: {done.stderr.strip()}")
    return done


@dataclass(frozen=True)
class Host:
    """One namespace: its name, its end of the link, and this side's address for it."""

    namespace: str
    link: str
    """This side's end of the veth pair (what `cut` takes down)."""
    gateway: str
    """This side's address on the link: where the host's processes reach servers here."""
    address: str

    def command(self, argv: Sequence[str]) -> list[str]:
        """`argv` run inside the namespace."""
        return ["ip", "netns", "exec", self.namespace, *argv]


class Hosts:
    """The namespaces a test made (see the module docstring)."""

    def __init__(self) -> None:
        self.tag = f"{os.getpid() % 10000:04d}{random.randrange(100):02d}"
        self._net = random.randrange(100, 250)
        self.made: list[Host] = []
        self.service = f"10.{self._net}.0.1"
        """Where the servers every host reaches listen (see the module docstring)."""

    def open(self) -> None:
        _ip("addr", "add", f"{self.service}/32", "dev", "lo")

    def add(self) -> Host:
        n = len(self.made) + 1
        name = f"orch{self.tag}h{n}"
        host = Host(name, f"vo{self.tag}{n}", f"10.{self._net}.{n}.1",
                    f"10.{self._net}.{n}.2")
        far = f"vi{self.tag}{n}"
        _ip("netns", "add", name)
        self.made.append(host)
        _ip("link", "add", host.link, "type", "veth", "peer", "name", far)
        _ip("link", "set", far, "netns", name)
        _ip("addr", "add", f"{host.gateway}/24", "dev", host.link)
        _ip("link", "set", host.link, "up")
        _ip("-n", name, "addr", "add", f"{host.address}/24", "dev", far)
        _ip("-n", name, "link", "set", far, "up")
        _ip("-n", name, "link", "set", "lo", "up")
        _ip("-n", name, "route", "add", "default", "via", host.gateway)
        return host

    def cut(self, host: Host) -> None:
        _ip("link", "set", host.link, "down")

    def heal(self, host: Host) -> None:
        _ip("link", "set", host.link, "up")

    def remove(self) -> None:
        _ip("addr", "del", f"{self.service}/32", "dev", "lo", check=False)
        for host in self.made:
            _ip("link", "del", host.link, check=False)
            _ip("netns", "del", host.namespace, check=False)


@contextmanager
def hosts() -> Iterator[Hosts]:
    """Namespaces to make with `add`; all removed afterwards. NotHere where none can be made."""
    if shutil.which("ip") is None:
        raise NotHere("network namespaces: no `ip` command on this machine")
    made = Hosts()
    probe = f"orch{made.tag}probe"
    tried = _ip("netns", "add", probe, check=False)
    if tried.returncode != 0:
        raise NotHere(f"network namespaces cannot be made here: {tried.stderr.strip()}")
    _ip("netns", "del", probe, check=False)
    try:
        made.open()
        yield made
    finally:
        made.remove()
