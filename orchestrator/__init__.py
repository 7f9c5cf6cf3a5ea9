"""Durable, resumable YAML pipelines for fine-tuning models through an API.

The public API is re-exported here. Names load on first use (module `__getattr__`), because
`python -m orchestrator` imports this package first and `orchestrator --help` must stay fast.

    from orchestrator import StepContext, TransientError

    async def train(ctx: StepContext, rows: int) -> dict:
        ...

    import orchestrator
    result = orchestrator.run_file("pipelines/lora-finetune.yaml", {"epochs": 1})
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from orchestrator.api import (
        RunResult,
        aresume_run,
        arun_file,
        aruns,
        ashow_run,
        await_run,
        resume_run,
        run_file,
        runs,
        show_run,
        wait_run,
    )
    from orchestrator.definition.pipeline import Pipeline
    from orchestrator.engine.executor import RunOutcome
    from orchestrator.engine.orchestrator import EngineConfig, Orchestrator
    from orchestrator.errors import (
        ConfigError,
        JobEnded,
        OrchestratorError,
        PermanentError,
        PipelineInvalid,
        ProviderUnavailable,
        RateLimited,
        StepError,
        StepTimeout,
        TransientError,
    )
    from orchestrator.settings import Settings, load_settings
    from orchestrator.steps.builtin import load_pipeline
    from orchestrator.steps.context import StepContext
    from orchestrator.store.base import StateStore
    from orchestrator.store.opening import open_store
    from orchestrator.store.records import RunStatus, StepStatus

__all__ = [
    "ConfigError",
    "EngineConfig",
    "JobEnded",
    "Orchestrator",
    "OrchestratorError",
    "PermanentError",
    "Pipeline",
    "PipelineInvalid",
    "ProviderUnavailable",
    "RateLimited",
    "RunOutcome",
    "RunResult",
    "RunStatus",
    "Settings",
    "StateStore",
    "StepContext",
    "StepError",
    "StepStatus",
    "StepTimeout",
    "TransientError",
    "aresume_run",
    "arun_file",
    "aruns",
    "ashow_run",
    "await_run",
    "load_pipeline",
    "load_settings",
    "open_store",
    "resume_run",
    "run_file",
    "runs",
    "show_run",
    "wait_run",
]

_HOME = {
    "RunResult": "orchestrator.api",
    "arun_file": "orchestrator.api",
    "aresume_run": "orchestrator.api",
    "aruns": "orchestrator.api",
    "ashow_run": "orchestrator.api",
    "await_run": "orchestrator.api",
    "resume_run": "orchestrator.api",
    "run_file": "orchestrator.api",
    "runs": "orchestrator.api",
    "show_run": "orchestrator.api",
    "wait_run": "orchestrator.api",

    "ConfigError": "orchestrator.errors",
    "EngineConfig": "orchestrator.engine.orchestrator",
    "JobEnded": "orchestrator.errors",
    "Orchestrator": "orchestrator.engine.orchestrator",
    "OrchestratorError": "orchestrator.errors",
    "PermanentError": "orchestrator.errors",
    "Pipeline": "orchestrator.definition.pipeline",
    "PipelineInvalid": "orchestrator.errors",
    "ProviderUnavailable": "orchestrator.errors",
    "RateLimited": "orchestrator.errors",
    "RunOutcome": "orchestrator.engine.executor",
    "RunStatus": "orchestrator.store.records",
    "Settings": "orchestrator.settings",
    "StateStore": "orchestrator.store.base",
    "StepContext": "orchestrator.steps.context",
    "StepError": "orchestrator.errors",
    "StepStatus": "orchestrator.store.records",
    "StepTimeout": "orchestrator.errors",
    "TransientError": "orchestrator.errors",
    "load_pipeline": "orchestrator.steps.builtin",
    "load_settings": "orchestrator.settings",
    "open_store": "orchestrator.store.opening",
}


def __getattr__(name: str) -> Any:
    home = _HOME.get(name)
    if home is None:
        msg = f"module 'orchestrator' has no attribute {name!r}"
        raise AttributeError(msg)
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
