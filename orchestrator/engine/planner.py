"""What a resume of a stored run would do, worked out before anything executes: the steps it
keeps and those it runs again (`--from`, `--reload`'s changed steps and what follows them), the
provider it runs against (its own, or another with `--move-provider`), and a refusal for a
cancelled run whose remote work was cancelled with it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from pathlib import Path

from orchestrator.definition.expressions import ExpressionError
from orchestrator.definition.limits import PipelineLimits
from orchestrator.definition.pipeline import Pipeline
from orchestrator.engine.plan import ExecutionPlan, cancelled_work
from orchestrator.engine.resolve import Resolution, same_config
from orchestrator.errors import CancelledWork, ConfigError
from orchestrator.providers.refs import ProviderRef
from orchestrator.steps.builtin import load_pipeline, parse_pipeline
from orchestrator.steps.registry import StepRegistry
from orchestrator.store.base import StateStore
from orchestrator.store.records import RunRecord, RunStatus, StepRecord, StepStatus

__all__ = ["PARSED_PIPELINES", "ResumePlanner"]

PARSED_PIPELINES = 64
"""Stored pipeline texts kept parsed, the most recently used: the cells of a batch a worker
executes share one `Pipeline` instead of each parsing and holding its own."""


class ResumePlanner:
    """Plans resumes of the runs in `store` (an orchestrator's: `Orchestrator.plan_resume`)."""

    def __init__(self, store: StateStore, registry: StepRegistry | None,
                 limits: PipelineLimits, *,
                 provider_of: Callable[[RunRecord], ProviderRef | None]) -> None:
        self._store = store
        self._registry = registry
        self._limits = limits
        self._provider_of = provider_of
        self._stored_pipeline = functools.lru_cache(maxsize=PARSED_PIPELINES)(
            self._parse_stored)
        """A run's stored pipeline, parsed once for every run that shares it (a `Pipeline`
        is immutable: runs executing side by side read it, none changes it)."""

    def _parse_stored(self, text: str, path: str) -> Pipeline:
        return parse_pipeline(text, Path(path), registry=self._registry, limits=self._limits)

    async def plan(self, run_id: str, *, from_step: str | None = None,
                          reload: bool = False, provider: ProviderRef | None = None,
                          move: bool = False) -> ExecutionPlan:
        """Which steps a resume keeps and which it runs again (nothing is executed).

        `provider` names the provider the caller wants the run executed against: the run's
        own, or, with `move`, another one it is then bound to. Raises ConfigError for another
        provider without `move`.
        """
        run = await self._store.get_run(run_id)
        bound = self._provider_of(run)
        moved_from = None
        if provider is not None and provider != bound:
            if not move:
                msg = (f"run {run_id} is bound to provider {bound}, not {provider}; add "
                       "--move-provider to move it there (jobs it started stay where they "
                       "are), or leave --provider out")
                raise ConfigError(msg)
            moved_from = bound
        target = provider if moved_from is not None else bound
        records = await self._store.get_steps(run_id)
        if reload:
            pipeline = load_pipeline(run.pipeline_path, registry=self._registry,
                                     limits=self._limits)
        else:
            pipeline = self._stored_pipeline(run.pipeline_text, run.pipeline_path)
        reset: set[str] = set()
        if from_step is not None:
            if from_step not in pipeline.steps:
                msg = (f"--from {from_step}: run {run_id}'s pipeline has no such step (steps: "
                       f"{', '.join(pipeline.steps)})")
                raise ConfigError(msg)
            reset |= pipeline.downstream({from_step})
        changed: set[str] = set()
        if reload:
            changed = self._changed_steps(run, pipeline, records, reset)
            reset |= pipeline.downstream(changed)
        if run.status is RunStatus.CANCELLED:
            await self._refuse_cancelled_work(run, pipeline, records, reset)
        return ExecutionPlan(run, pipeline, records, frozenset(reset),
                          pipeline.text if reload else None, target, moved_from,
                          changed=frozenset(changed))

    async def _refuse_cancelled_work(self, run: RunRecord, pipeline: Pipeline,
                                     records: Mapping[str, StepRecord],
                                     reset: set[str]) -> None:
        """A cancelled run whose remote work was cancelled with it (its fine-tune job) cannot
        simply continue: its wait would follow the cancelled job, fail, and call the
        `on_failure` hooks. CancelledWork names where to start again instead."""
        step = cancelled_work(pipeline, records, await self._store.get_events(run.id), reset)
        if step is not None:
            msg = (f"run {run.id} was cancelled, and the remote work of step {step} (its job) "
                   "with it: resumed as it is, it would follow a cancelled job. To start that "
                   f"again: orchestrator resume {run.id} --from {step}")
            raise CancelledWork(msg, step=step)

    def _changed_steps(self, run: RunRecord, pipeline: Pipeline,
                       records: Mapping[str, StepRecord], reset: set[str]) -> set[str]:
        """Succeeded steps whose resolved configuration differs now (not their dependents)."""
        resolution = Resolution.of_run(run, pipeline, records, secrets={})
        changed: set[str] = set()
        for step_id, step in pipeline.steps.items():
            record = records.get(step_id)
            if record is None or record.status is not StepStatus.SUCCEEDED or step_id in reset:
                continue
            try:
                digest = resolution.config_hash(step)
            except ExpressionError:
                digest = None
            if not same_config(record.config_hash, digest):
                changed.add(step_id)
        return changed

