"""Executing runs: the orchestrator, the per-run executor and the retry policy."""

from orchestrator.engine.executor import RunExecutor, RunOutcome
from orchestrator.engine.orchestrator import EngineConfig, Orchestrator
from orchestrator.engine.plan import ExecutionPlan
from orchestrator.engine.retry import RetryPolicy

__all__ = ["EngineConfig", "ExecutionPlan", "Orchestrator", "RetryPolicy", "RunExecutor",
           "RunOutcome"]
