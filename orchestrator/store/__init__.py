"""Where runs, steps, events and leases are kept: the contract and its implementations."""

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
