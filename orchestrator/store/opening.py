"""The store a `state_url` names: the one place that knows every kind of store there is."""

from __future__ import annotations

import time

from orchestrator.errors import StateStoreInvalid
from orchestrator.store.base import StateStore
from orchestrator.store.records import Clock
from orchestrator.store.sqlite import SQLiteStore

__all__ = ["open_store"]


def open_store(url: str, *, durability: str = "process", busy_timeout: float = 10.0,
               clock: Clock = time.time) -> StateStore:
    """The store for `url` (`sqlite:///path`), not yet opened (`async with` it)."""
    scheme = url.partition(":")[0]
    if scheme == "sqlite":
        return SQLiteStore(url, durability=durability, busy_timeout=busy_timeout, clock=clock)
    if scheme in ("postgres", "postgresql"):
        msg = f"state_url {url!r}: PostgreSQL support is not built yet; use sqlite:///path"
        raise StateStoreInvalid(msg)
    msg = f"state_url {url!r}: unknown kind of store (expected sqlite:///path/to/state.db)"
    raise StateStoreInvalid(msg)
