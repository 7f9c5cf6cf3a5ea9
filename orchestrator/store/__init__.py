"""Where runs, steps, events and leases are kept: the contract and its implementations."""

from orchestrator.store.base import (
    ErrorInfo,
    EventRecord,
    Lease,
    NewEvent,
    NewRun,
    RunRecord,
    RunStatus,
    RunUpdate,
    StateStore,
    StepRecord,
    StepStatus,
)
from orchestrator.store.opening import open_store

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
