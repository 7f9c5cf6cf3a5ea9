"""Schedules as people see them: each with its cron, zone and policies, its next fire time
(none while paused) and its recent runs (`schedules`, the web view's schedules page)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any

from orchestrator.cron import CronSchedule
from orchestrator.definition.pipeline import Pipeline
from orchestrator.store.base import StateStore
from orchestrator.views.shapes import run_json, schedule_json

__all__ = ["Scheduled", "schedule_documents"]


@dataclasses.dataclass(frozen=True)
class Scheduled:
    """A pipeline with a schedule, and that schedule's fire times."""

    pipeline: Pipeline
    cron: CronSchedule

    @property
    def id(self) -> str:
        return self.pipeline.name


async def schedule_documents(store: StateStore, scheduled: Iterable[Scheduled], *,
                             last: int = 1) -> list[dict[str, Any]]:
    """`schedules -o json`: each schedule with its next fire time and its last run (and,
    with `last` above 1, its `recent` runs, newest first, as the web view lists them)."""
    now = store.clock()
    documents = []
    paused = {entry.id: entry.paused_at for entry in await store.list_schedules()}
    for item in scheduled:
        spec = item.pipeline.schedule
        assert spec is not None
        runs = await store.list_runs(schedule_id=item.id, limit=last)
        document = schedule_json(
            item.id, pipeline=item.pipeline.name, path=str(item.pipeline.path),
            cron=spec.cron, timezone=spec.timezone, overlap=spec.overlap,
            catch_up=spec.catch_up, next_fire=item.cron.next_after(now),
            last_run=runs[0] if runs else None, paused_at=paused.get(item.id))
        if last > 1:
            document["recent"] = [run_json(run) for run in runs]
        documents.append(document)
    return documents
