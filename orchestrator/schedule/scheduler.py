"""The scheduler: turns schedules' fire times into queued runs, each exactly once.

Every tick looks at each schedule's fire times since its `last_fire` (kept in the store):

- a fire time at most `grace` old is *on time* and fires; older ones were *missed* (the
  scheduler was down) and follow the schedule's `catch_up`: `none` lets them go, `latest`
  fires the newest one (when nothing fired on time), `all` fires every one;
- each fire applies the schedule's `overlap` against the schedule's earlier runs that are
  still active: `skip` fires nothing, `queue` fires a run that waits for them (a concurrency
  key `schedule:<id>` of limit 1), `cancel_other` asks them to cancel, `allow` just fires;
- a fire's run (or batch, for a matrix) has an id made of the schedule and the fire time
  (`ids.scheduled_id`), so a second scheduler, or a retry after a crash, cannot start it twice:
  the store refuses the id. `last_fire` then moves on by compare-and-set.

Runs are created `queued`, for a worker (`orchestrator worker`, or `serve`) to execute. Time
comes from the store's clock, so tests drive days of ticks with a fake one in milliseconds.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Literal

import anyio
from anyio.abc import TaskStatus

from orchestrator.cron import CronSchedule
from orchestrator.definition.inputs import resolve_inputs
from orchestrator.definition.limits import DEFAULT_LIMITS, PipelineLimits
from orchestrator.engine.orchestrator import Orchestrator
from orchestrator.errors import ConfigError, PipelineInvalid, RunExists
from orchestrator.ids import scheduled_id
from orchestrator.log import get_logger
from orchestrator.steps.builtin import load_pipeline
from orchestrator.store.records import RunRecord, RunStatus, ScheduleEntry
from orchestrator.views.schedules import Scheduled

__all__ = ["Fire", "Scheduled", "Scheduler", "load_scheduled"]

ACTIVE = (RunStatus.PENDING, RunStatus.QUEUED, RunStatus.RUNNING)
MAX_WAIT = 60.0
"""The longest the scheduler sleeps between ticks (it wakes at the next fire time before)."""


@dataclasses.dataclass(frozen=True)
class Fire:
    """What one tick did with one fire time."""

    schedule_id: str
    fire_time: float
    action: Literal["fired", "skipped", "exists", "missed"]
    run_id: str | None = None
    note: str = ""


def _pipeline_files(paths: Iterable[str | Path]) -> list[Path]:
    files: list[Path] = []
    for given in paths:
        path = Path(given)
        if path.is_dir():
            files += sorted(p for p in path.iterdir()
                            if p.suffix in (".yaml", ".yml") and p.is_file())
        elif path.is_file():
            files.append(path)
        else:
            msg = f"{path}: no such file or folder (schedule paths: pipeline files or folders)"
            raise ConfigError(msg)
    return files


def load_scheduled(paths: Iterable[str | Path], *,
                   limits: PipelineLimits = DEFAULT_LIMITS) -> list[Scheduled]:
    """The pipelines with a `schedule:` among `paths` (files, or folders of *.yaml).

    Every file must load: a broken one is reported (all of them, file:line:col) rather than
    silently not scheduled.
    """
    problems: list[str] = []
    found: dict[str, Scheduled] = {}
    for file in _pipeline_files(paths):
        try:
            pipeline = load_pipeline(file, limits=limits)
        except PipelineInvalid as exc:
            problems.append(str(exc))
            continue
        if pipeline.schedule is None:
            continue
        if pipeline.name in found:
            other = found[pipeline.name].pipeline.path
            problems.append(f"{file}: two scheduled pipelines are named {pipeline.name!r} (also "
                            f"{other}); schedules are known by pipeline name, rename one")
            continue
        found[pipeline.name] = Scheduled(pipeline, CronSchedule(pipeline.schedule.cron,
                                                                pipeline.schedule.timezone))
    if problems:
        raise ConfigError("\n".join(problems))
    return list(found.values())


class Scheduler:
    """Fires the schedules of `scheduled` into `orch`'s store (see the module docstring)."""

    def __init__(self, orch: Orchestrator, scheduled: Sequence[Scheduled], *,
                 grace: float = 300.0, max_catch_up: int = 1000) -> None:
        self._orch = orch
        self._store = orch.store
        self._scheduled = {s.id: s for s in scheduled}
        self._grace = grace
        self._max_catch_up = max_catch_up
        self._log = get_logger()

    async def sync(self) -> None:
        """Record the schedules in the store; one seen for the first time starts from now
        (nothing before the scheduler knew it is "missed")."""
        now = self._store.clock()
        for item in self._scheduled.values():
            spec = item.pipeline.schedule
            assert spec is not None
            entry = await self._store.sync_schedule(ScheduleEntry(
                item.id, item.pipeline.name, str(item.pipeline.path.resolve()), spec.cron,
                spec.timezone))
            if entry.last_fire is None:
                await self._store.advance_schedule(item.id, None, now)

    async def tick(self) -> list[Fire]:
        """Fire what is due now; returns what was done with each fire time it looked at."""
        now = self._store.clock()
        done: list[Fire] = []
        for entry in await self._store.list_schedules():
            item = self._scheduled.get(entry.id)
            if item is None or entry.last_fire is None or entry.paused_at is not None:
                continue  # unknown here, new, or paused (resumed, it starts from then)
            due = item.cron.fires_between(entry.last_fire, now)
            if not due:
                continue
            fired = await self._fire_due(item, due, now)
            done += fired
            if not await self._store.advance_schedule(entry.id, entry.last_fire, due[-1]):
                self._log.info("another scheduler handled this tick", schedule=entry.id)
        return done

    def _chosen(self, item: Scheduled, due: list[float], now: float) -> list[float]:
        spec = item.pipeline.schedule
        assert spec is not None
        on_time = [f for f in due if f >= now - self._grace]
        if spec.catch_up == "all":
            return due[-self._max_catch_up:]
        if spec.catch_up == "latest" and not on_time:
            return due[-1:]
        return on_time

    async def _fire_due(self, item: Scheduled, due: list[float], now: float) -> list[Fire]:
        chosen = self._chosen(item, due, now)
        taken = set(chosen)
        missed = [f for f in due if f not in taken]
        done = [Fire(item.id, f, "missed") for f in missed]
        if missed:
            spec = item.pipeline.schedule
            assert spec is not None
            self._log.warning("missed fire times not run (catch_up)", schedule=item.id,
                              missed=len(missed), catch_up=spec.catch_up)
        for fire_time in chosen:
            done.append(await self._fire(item, fire_time))
        return done

    async def _active_before(self, item: Scheduled, fire_time: float) -> list[RunRecord]:
        """The schedule's runs from earlier fires that have not finished."""
        runs = await self._store.list_runs(schedule_id=item.id, statuses=ACTIVE, limit=None)
        return [r for r in runs if r.scheduled_for is None or r.scheduled_for < fire_time]

    async def _fire(self, item: Scheduled, fire_time: float) -> Fire:
        pipeline, spec = item.pipeline, item.pipeline.schedule
        assert spec is not None
        active = await self._active_before(item, fire_time)
        if active and spec.overlap == "skip":
            ids = ", ".join(sorted({r.batch_id or r.id for r in active}))
            self._log.info("fire skipped: earlier runs still active", schedule=item.id,
                           active=ids)
            return Fire(item.id, fire_time, "skipped", note=f"still active: {ids}")
        if active and spec.overlap == "cancel_other":
            await self._store.request_cancel([r.id for r in active])
        inputs = resolve_inputs(pipeline.inputs, spec.inputs, pipeline_dir=pipeline.base_dir,
                                cwd=pipeline.base_dir)
        try:
            if pipeline.matrix is not None:
                batch, _ = await self._orch.create_batch(
                    pipeline, inputs, status=RunStatus.QUEUED,
                    batch_id=scheduled_id(item.id, fire_time, "b"), schedule_id=item.id,
                    scheduled_for=fire_time)
                run_id = batch.id
            else:
                run = await self._orch.create_run(
                    pipeline, inputs, status=RunStatus.QUEUED,
                    run_id=scheduled_id(item.id, fire_time), schedule_id=item.id,
                    scheduled_for=fire_time)
                run_id = run.id
        except RunExists:
            return Fire(item.id, fire_time, "exists")
        self._log.info("schedule fired", schedule=item.id, run_id=run_id)
        return Fire(item.id, fire_time, "fired", run_id)

    def next_fire(self, after: float) -> float | None:
        """The soonest fire time of any schedule after `after`."""
        times = [s.cron.next_after(after) for s in self._scheduled.values()]
        return min(times) if times else None

    async def run_forever(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
                          ) -> None:
        await self.sync()
        task_status.started()
        while True:
            try:
                await self.tick()
            except Exception:  # noqa: BLE001  (the store may be busy or unreachable: next tick)
                self._log.exception("scheduler tick failed")
            now = self._store.clock()
            upcoming = self.next_fire(now)
            wait = MAX_WAIT if upcoming is None else min(MAX_WAIT, upcoming - now)
            await anyio.sleep(max(0.05, wait))
