"""What executing a run will do, decided before anything runs: the steps kept with their
outputs and the steps that run (`ExecutionPlan`), the provider it runs against, its secrets."""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Collection, Iterable, Mapping
from pathlib import Path
from types import MappingProxyType

from orchestrator.definition.pipeline import Pipeline
from orchestrator.errors import SecretMissing
from orchestrator.process import hold
from orchestrator.providers.refs import ProviderRef
from orchestrator.store.records import (
    EventRecord,
    RunRecord,
    RunStatus,
    StepRecord,
    StepStatus,
)

__all__ = ["ExecutionPlan", "ResumeRequest", "bound_provider", "cancelled_work", "read_secrets"]


@dataclasses.dataclass(frozen=True)
class ResumeRequest:
    """What a resume is asked to do, whether of one run or of a batch's cells: the flags of
    `resume` that shape the plan, carried whole from the command line to every cell (a flag
    passed one by one was lost on the way to the batch's cells, twice)."""

    from_step: str | None = None
    """Re-run this step and everything after it."""
    reload: bool = False
    """Re-read the pipeline file; re-run the steps whose configuration changed."""
    force: bool = False
    """Resume a stranded run (its recovery count starts again)."""
    provider: ProviderRef | None = None
    """Execute against this provider (the run's own unless `move`)."""
    move: bool = False
    """Bind the run to `provider` from now on."""


_NO_RECORDS: Mapping[str, StepRecord] = MappingProxyType({})
_NO_RESET: frozenset[str] = frozenset()
"""A fresh run's plan: nothing stored, nothing reset (shared: an empty frozenset is 216 bytes
each, and a run's plan lives as long as the run)."""


@dataclasses.dataclass(frozen=True)
class ExecutionPlan:
    """What an execution of a run will do: the steps kept with their outputs (a resume's), the
    steps that run, the provider it runs against. `new_run` plans a run just created."""

    run: RunRecord
    pipeline: Pipeline
    records: Mapping[str, StepRecord]
    reset: frozenset[str]
    reload_text: str | None
    provider: ProviderRef | None = None
    """The provider the run executes against: the one it is bound to, or where it moves."""
    moved_from: ProviderRef | None = None
    """Set when the run moves to `provider` (resume --move-provider): where it was bound."""
    changed: frozenset[str] = _NO_RESET
    """With a reloaded file, the succeeded steps whose configuration changed in it (`reset`
    holds them and everything after them)."""

    @classmethod
    def new_run(cls, run: RunRecord, pipeline: Pipeline) -> ExecutionPlan:
        """The plan of a run just created: every step runs."""
        return cls(run, pipeline, _NO_RECORDS, _NO_RESET, None, bound_provider(run))

    def will_run(self) -> list[str]:
        return [sid for sid in self.pipeline.steps
                if sid in self.reset or self._status(sid) is not StepStatus.SUCCEEDED]

    def kept(self) -> list[str]:
        will_run = set(self.will_run())
        return [sid for sid in self.pipeline.steps if sid not in will_run]

    def hooks_unfinished(self) -> list[str]:
        """The run's `on_success` hooks that did not succeed (for a run that succeeded)."""
        return [hid for hid in self.pipeline.hooks.get("on_success", {})
                if self._status(hid) is not StepStatus.SUCCEEDED]

    @property
    def nothing_to_do(self) -> bool:
        """The run already succeeded (its hooks too) and nothing was asked to run again."""
        return (self.run.status is RunStatus.SUCCEEDED and not self.will_run()
                and not self.hooks_unfinished())

    def _status(self, step_id: str) -> StepStatus:
        record = self.records.get(step_id)
        return record.status if record else StepStatus.PENDING


def cancelled_work(pipeline: Pipeline, records: Mapping[str, StepRecord],
                   events: Iterable[EventRecord], reset: Collection[str] = ()) -> str | None:
    """For a cancelled run, the first step (in the pipeline's order) whose remote work was
    cancelled with it and which a resume would keep as succeeded: the steps after it would
    follow that cancelled work (a fine-tune job) and fail. None when a resume can go on."""
    cancelled = {e.step_id for e in events if e.kind == "remote_cancelled"}
    for sid in pipeline.steps:
        record = records.get(sid)
        if sid in cancelled and sid not in reset and record is not None \
                and record.status is StepStatus.SUCCEEDED:
            return sid
    return None


def read_secrets(names: Collection[str], environ: Mapping[str, str] | None = None) -> dict[str,
                                                                                          str]:
    """The values of `names` from the environment (or `.env`); raises SecretMissing."""
    if not names:
        return {}
    env = dict(os.environ if environ is None else environ)
    missing = [n for n in sorted(names) if n not in env]
    if missing and Path(".env").is_file():
        from dotenv import dotenv_values  # noqa: PLC0415  (only when a secret is not exported)

        env.update({k: v for k, v in dotenv_values(".env").items() if v is not None})
        missing = [n for n in missing if n not in env]
    if missing:
        listed = ", ".join(missing)
        msg = (f"the pipeline uses secrets.{missing[0]} but {listed} "
               f"{'is' if len(missing) == 1 else 'are'} not set; export {missing[0]}=... "
               "or put it in .env")
        raise SecretMissing(msg)
    return {n: env[n] for n in names}


def bound_provider(run: RunRecord) -> ProviderRef | None:
    """The provider `run` is bound to; None for a run stored before runs were bound."""
    if run.provider is None or run.provider_url is None:
        return None
    return _provider(run.provider, run.provider_url)


_provider = hold(functools.lru_cache(maxsize=64)(ProviderRef), name="provider references",
                 why="the runs bound to one provider share one reference")
"""One ProviderRef for the runs bound to the same provider."""
