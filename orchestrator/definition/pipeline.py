"""A validated pipeline: its steps with types, edges, retry and timeout resolved.

What the engine, the CLI and the scheduler work with; `loader` makes them from a file and
checks everything on the way, this module only describes the result.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.definition.expressions import Reference, find_templates, parse_template
from orchestrator.definition.graph import ancestors, descendants
from orchestrator.definition.matrix import MatrixSpec, expand_matrix
from orchestrator.definition.model import (
    BudgetSpec,
    ConcurrencySpec,
    InputSpec,
    RetrySpec,
    ScheduleSpec,
    SelectSpec,
    StepConcurrencySpec,
    StepSpec,
)
from orchestrator.definition.steptypes import StepKind

__all__ = ["Pipeline", "Step"]


@dataclass(frozen=True)
class Step:
    """A validated step with everything the engine needs resolved."""

    id: str
    spec: StepSpec
    type: StepKind
    needs: frozenset[str]
    retry: RetrySpec | None
    timeout: float | None

    @property
    def with_(self) -> dict[str, Any]:
        return self.spec.with_

    @property
    def concurrency(self) -> StepConcurrencySpec | None:
        return self.spec.concurrency

    def references(self) -> list[Reference]:
        return [ref for _, text in find_templates(self.spec.with_)
                for ref in parse_template(text).references]

    @functools.cached_property
    def uses_secrets(self) -> bool:
        return any(ref.root == "secrets" for ref in self.references())


@dataclass(frozen=True)
class Pipeline:
    """A validated pipeline file: its steps in dependency order, and the text it came from."""

    name: str
    description: str | None
    path: Path
    text: str
    inputs: Mapping[str, InputSpec]
    steps: Mapping[str, Step]
    matrix: MatrixSpec | None = None
    concurrency: ConcurrencySpec | None = None
    schedule: ScheduleSpec | None = None
    budget: BudgetSpec | None = None
    """What its launches may cost (for a batch: all its cells'), by the provider's estimate."""
    select: SelectSpec | None = None
    """How a batch of it picks its best cell."""
    hooks: Mapping[str, Mapping[str, Step]] = dataclasses.field(default_factory=dict)
    """`on_success` / `on_failure`: steps run, in order, once the others ended that way; by
    id `on_failure.<name>`. Not in `steps`: the run's graph is `steps` alone."""

    @functools.cached_property
    def base_dir(self) -> Path:
        """Relative paths in the file, and `python:` step modules, resolve against this (one
        Path for every run of the pipeline, not one per step context)."""
        return self.path.parent

    def dependencies(self) -> dict[str, frozenset[str]]:
        return {sid: step.needs for sid, step in self.steps.items()}

    def downstream(self, step_ids: set[str]) -> set[str]:
        """`step_ids` and every step that depends on any of them."""
        return descendants(self.dependencies(), step_ids)

    def upstream(self, step_ids: set[str]) -> set[str]:
        """`step_ids` and every step any of them depends on."""
        return ancestors(self.dependencies(), step_ids)

    def slot_span(self, step_id: str) -> frozenset[str]:
        """The steps during which `step_id`'s concurrency slot is held (itself, or itself
        through its `until` step and everything between)."""
        spec = self.steps[step_id].concurrency
        if spec is None or spec.until is None:
            return frozenset({step_id})
        return frozenset(self.downstream({step_id}) & self.upstream({spec.until}))

    @functools.cached_property
    def successors(self) -> Mapping[str, tuple[str, ...]]:
        """For each step, the steps that need it, in file order: worked out once per
        pipeline, not once per run of it (a batch's cells, a fleet's waiting runs)."""
        found: dict[str, list[str]] = {sid: [] for sid in self.steps}
        for sid, step in self.steps.items():
            for need in step.needs:
                found[need].append(sid)
        return {sid: tuple(after) for sid, after in found.items()}

    @functools.cached_property
    def slot_owners(self) -> Mapping[str, tuple[str, ...]]:
        """For each step in a slot's span, the steps whose `concurrency:` slot it runs
        under; steps under none are left out."""
        found: dict[str, list[str]] = {}
        for sid, step in self.steps.items():
            if step.concurrency is not None:
                for member in self.slot_span(sid):
                    found.setdefault(member, []).append(sid)
        return {sid: tuple(owners) for sid, owners in found.items()}

    @functools.cached_property
    def slots_released_after(self) -> Mapping[str, tuple[str, ...]]:
        """For each step that ends a span, the steps whose slots go back once it is done."""
        found: dict[str, list[str]] = {}
        for sid, step in self.steps.items():
            if step.concurrency is not None:
                found.setdefault(step.concurrency.until or sid, []).append(sid)
        return {sid: tuple(owners) for sid, owners in found.items()}

    def cells(self) -> list[dict[str, Any]]:
        """The matrix's cells; one empty cell for a pipeline without a matrix."""
        return expand_matrix(self.matrix) if self.matrix is not None else [{}]

    @functools.cached_property
    def every_step(self) -> Mapping[str, Step]:
        """The steps, then the hooks: every step a run of this pipeline may store."""
        return {**self.steps, **{hid: hook for hooks in self.hooks.values()
                                 for hid, hook in hooks.items()}}

    @functools.cached_property
    def needs_provider(self) -> bool:
        """Whether a step or hook may ask for the run's provider's client (its type says):
        a run of a pipeline that needs none opens no client."""
        return any(step.type.provider for step in self.every_step.values())

    @functools.cached_property
    def secret_names(self) -> frozenset[str]:
        """The NAMEs of every `secrets.NAME` the steps and hooks use (read from the
        environment)."""
        return frozenset(str(ref.path[0]) for step in self.every_step.values()
                         for ref in step.references() if ref.root == "secrets" and ref.path)
