"""The store a `state_url` names: the one place that knows every kind of store there is."""

from __future__ import annotations

import time

from orchestrator.errors import StateStoreInvalid
from orchestrator.store.base import StateStore
from orchestrator.store.records import Clock
from orchestrator.store.sqlite import SQLiteStore
from orchestrator.store.urls import shown_url

__all__ = ["open_store"]



def open_store(url: str, *, durability: str = "process", busy_timeout: float = 10.0,
               clock: Clock = time.time, read_only: bool = False) -> StateStore:
    """The store for `url` (`sqlite:///path`, `postgresql://...`), not yet opened (`async
    with` it); `read_only`: one whose connections refuse writes. PostgreSQL's driver loads
    only here: SQLite users never pay for it."""
    scheme = url.partition(":")[0]
    if scheme == "sqlite":
        return SQLiteStore(url, durability=durability, busy_timeout=busy_timeout, clock=clock,
                           read_only=read_only)
    if scheme in ("postgres", "postgresql"):
        try:
            from orchestrator.store.postgres import PostgresStore  # noqa: PLC0415  (an extra)
        except ImportError as exc:
            msg = (f"state_url names PostgreSQL, but its driver is not installed ({exc}); "
                   "pip install 'orchestrator[postgres]'")
            raise StateStoreInvalid(msg) from None
        return PostgresStore(url, durability=durability, busy_timeout=busy_timeout, clock=clock,
                             read_only=read_only)
    msg = (f"state_url {shown_url(url)!r}: unknown kind of store (expected "
           "sqlite:///path/to/state.db or postgresql://user@host:5432/database)")
    raise StateStoreInvalid(msg)
