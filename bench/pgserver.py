"""A PostgreSQL server of a test's (or a benchmark's) own, to stop and start mid-run without
disturbing the shared one at 127.0.0.1:5432 that every other test is using.

`initdb` in a fresh folder (trust auth, no fsync: the test needs a server that restarts, not
one that survives a power cut), `pg_ctl start|stop` on a free port, removed afterwards.
PostgreSQL refuses to run as root, so as root the server runs as the `postgres` user. Where no
PostgreSQL binaries are installed it raises NotHere, saying so in one line (a test skips).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["NotHere", "PrivatePostgres", "private_postgres"]


class NotHere(Exception):
    """What this machine cannot do for a benchmark or test (no binaries, no namespaces)."""


def _bin_dir() -> Path | None:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if found:
        return found[-1].parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class PrivatePostgres:
    """One server in `folder`, on `port`; `url` names its database `postgres`."""

    def __init__(self, bin_dir: Path, folder: Path) -> None:
        self._bin = bin_dir
        self.folder = folder
        self.data = folder / "data"
        self.port = _free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self.listen = ["127.0.0.1"]
        """Where it listens: add another host's gateway before `start` (tests/netns.py)."""

    def url_at(self, address: str) -> str:
        """Its URL as a process reaching it at `address` names it."""
        return self.url.replace("127.0.0.1", address)

    def as_server_user(self, *args: str) -> list[str]:
        return ["runuser", "-u", "postgres", "--", *args] if os.geteuid() == 0 else list(args)

    def _run(self, *args: str) -> None:
        done = subprocess.run(self.as_server_user(*args), capture_output=True, text=True,
                              timeout=60, check=False)
        if done.returncode != 0:
            raise AssertionError(f"{' '.join(args)}: {done.stdout}{done.stderr}")

    def initdb(self) -> None:
        self._run(str(self._bin / "initdb"), "-D", str(self.data), "-A", "trust", "-U",
                  "postgres", "--no-sync")
        with (self.data / "pg_hba.conf").open("a") as hba:  # the test's own namespaces
            hba.write("host all all 10.0.0.0/8 trust\n")

    def start(self) -> None:
        options = (f"-p {self.port} -k {self.folder} -c listen_addresses={','.join(self.listen)}"
                   " -c fsync=off")
        self._run(str(self._bin / "pg_ctl"), "-D", str(self.data), "-o", options, "-l",
                  str(self.folder / "server.log"), "-w", "-t", "60", "start")

    def stop(self) -> None:
        self._run(str(self._bin / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "-t",
                  "60", "stop")


@contextmanager
def private_postgres(*also_on: str) -> Iterator[PrivatePostgres]:
    """A fresh server, started (on 127.0.0.1 and the addresses `also_on`); stopped and
    removed on the way out."""
    bin_dir = _bin_dir()
    if bin_dir is None:
        raise NotHere("no PostgreSQL binaries (initdb, pg_ctl) on this machine")
    folder = Path(tempfile.mkdtemp(prefix="orch-pg-"))
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres", "postgres")
    server = PrivatePostgres(bin_dir, folder)
    server.listen += also_on
    try:
        server.initdb()
        server.start()
        yield server
    finally:
        subprocess.run(server.as_server_user(
            str(bin_dir / "pg_ctl"), "-D", str(server.data), "-m", "immediate", "stop"),
            capture_output=True, timeout=60, check=False)
        shutil.rmtree(folder, ignore_errors=True)
