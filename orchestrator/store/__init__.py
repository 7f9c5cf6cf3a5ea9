"""Where runs, steps, events and leases are kept: the contract and its implementations.

The names below are loaded when first asked for: a command that only needs a small part of
the package (`orchestrator.store.urls`, say, to show a state URL) does not pay for importing
the contract, its records and the store factory (some 60 ms of every CLI start-up).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from orchestrator.store.base import StateStore
    from orchestrator.store.opening import open_store
    from orchestrator.store.records import (
        ErrorInfo,
        EventRecord,
        Lease,
        NewEvent,
        NewRun,
        RunRecord,
        RunStatus,
        RunUpdate,
        StepRecord,
        StepStatus,
    )

__all__ = [
    "ErrorInfo",
    "EventRecord",
    "Lease",
    "NewEvent",
    "NewRun",
    "RunRecord",
    "RunStatus",
    "RunUpdate",
    "StateStore",
    "StepRecord",
    "StepStatus",
    "open_store",
]

_HOMES = {"StateStore": "base", "open_store": "opening"}


def __getattr__(name: str) -> Any:
    if name not in __all__:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module = importlib.import_module(f"{__name__}.{_HOMES.get(name, 'records')}")
    return getattr(module, name)
