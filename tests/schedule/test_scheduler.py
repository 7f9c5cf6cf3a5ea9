"""The scheduler on a fake clock: days of ticks in milliseconds, DST, overlap and catch-up."""

from __future__ import annotations

import itertools
from contextlib import AbstractAsyncContextManager
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import anyio
import pytest

from orchestrator.engine.orchestrator import Orchestrator
from orchestrator.providers.together.client import TogetherClient
from orchestrator.schedule.scheduler import Scheduler, load_scheduled
from orchestrator.store.base import StateStore
from orchestrator.store.records import RunStatus
from orchestrator.testing import FakeClock
from tests.conftest import write

BERLIN = ZoneInfo("Europe/Berlin")
HOUR = 3600.0


def berlin(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> float:
    return datetime(year, month, day, hour, minute, tzinfo=BERLIN).timestamp()


def pipeline_file(tmp_path: Path, schedule: str, name: str = "nightly",
                  extra: str = "") -> Path:
    return write(tmp_path / f"{name}.yaml", f"""
        name: {name}
        inputs: {{epochs: {{type: integer, default: 1}}}}
        schedule: {schedule}
        {extra}
        steps:
          a: {{uses: core/echo, with: {{epochs: "${{{{ inputs.epochs }}}}"}}}}
    """)


async def scheduler_for(orch: Orchestrator, path: Path) -> Scheduler:
    """A scheduler of `path`'s schedule (creating runs needs no running orchestrator)."""
    scheduler = Scheduler(orch, load_scheduled([path]))
    await scheduler.sync()
    return scheduler


async def tick_through(scheduler: Scheduler, clock: FakeClock, seconds: float,
                       step: float = 300.0) -> None:
    end = clock.now + seconds
    while clock.now < end:
        clock.advance(step)
        await scheduler.tick()


async def fired_local(store: StateStore, schedule_id: str = "nightly") -> list[str]:
    runs = await store.list_runs(schedule_id=schedule_id, limit=None)
    return sorted(datetime.fromtimestamp(r.scheduled_for or 0, BERLIN).strftime(
        "%m-%d %H:%M%z") for r in runs)


async def test_a_daily_schedule_fires_once_a_day_through_both_dst_changes(
        tmp_path: Path, store: StateStore, clock: FakeClock) -> None:
    """Ticking every 5 minutes through the spring and autumn changes: one run per day, the
    skipped 02:30 fires at the jump, the repeated 02:30 fires once."""
    path = pipeline_file(tmp_path, "{cron: '30 2 * * *', timezone: Europe/Berlin, "
                                   "overlap: allow, inputs: {epochs: 3}}")
    clock.now = berlin(2026, 3, 27, 12, 0)
    scheduler = await scheduler_for(Orchestrator(store), path)
    await tick_through(scheduler, clock, 3 * 24 * HOUR)
    clock.now = berlin(2026, 10, 23, 12, 0)
    await store.advance_schedule("nightly", (await store.list_schedules())[0].last_fire,
                                 clock.now)
    await tick_through(scheduler, clock, 3 * 24 * HOUR)
    assert await fired_local(store) == [
        "03-28 02:30+0100", "03-29 03:00+0200", "03-30 02:30+0200",
        "10-24 02:30+0200", "10-25 02:30+0200", "10-26 02:30+0100"]
    runs = await store.list_runs(schedule_id="nightly", limit=None)
    assert {(r.status, r.inputs["epochs"]) for r in runs} == {(RunStatus.QUEUED, 3)}
    assert runs[-1].id == "s-nightly-260328-013000"  # schedule + fire time (UTC)


async def test_an_hourly_schedule_fires_every_real_hour_across_dst(
        tmp_path: Path, store: StateStore, clock: FakeClock) -> None:
    path = pipeline_file(tmp_path, "{cron: '0 * * * *', timezone: Europe/Berlin, "
                                   "overlap: allow}")
    clock.now = berlin(2026, 10, 25, 0, 30)
    scheduler = await scheduler_for(Orchestrator(store), path)
    await tick_through(scheduler, clock, 4 * HOUR, step=60)
    assert await fired_local(store) == ["10-25 01:00+0200", "10-25 02:00+0100",
                                        "10-25 02:00+0200", "10-25 03:00+0100"]


async def test_two_schedulers_never_fire_a_tick_twice(
        tmp_path: Path, store: StateStore, store_url: str, clock: FakeClock) -> None:
    """Two schedulers ticking at the same moments on one database, each with its own
    connections (as two processes would be): every fire time has one run."""
    from orchestrator.store.opening import open_store

    path = pipeline_file(tmp_path, "{cron: '*/10 * * * *', overlap: allow}")
    clock.now = 1_800_000_000.0
    async with open_store(store_url, clock=clock) as elsewhere, Orchestrator(store) as first, \
            Orchestrator(elsewhere) as second:
        a, b = await scheduler_for(first, path), await scheduler_for(second, path)
        actions: list[str] = []
        for _ in range(36):
            clock.advance(600)
            async with anyio.create_task_group() as tg:
                for scheduler in (a, b):
                    async def tick(s: Scheduler = scheduler) -> None:
                        actions.extend(f.action for f in await s.tick())
                    tg.start_soon(tick)
    runs = await store.list_runs(schedule_id="nightly", limit=None)
    assert len(runs) == 36
    assert len({r.scheduled_for for r in runs}) == 36
    assert actions.count("fired") == 36


async def test_overlap_skip_allow_and_cancel_other(
        tmp_path: Path, store: StateStore, clock: FakeClock) -> None:
    """The first fire's run is still queued when the second fire comes."""
    clock.now = 1_800_000_000.0 - 1_800_000_000.0 % HOUR + 1
    results = {}
    for overlap in ("skip", "allow", "cancel_other"):
        path = pipeline_file(tmp_path, f"{{cron: '@hourly', overlap: {overlap}}}",
                             name=f"p-{overlap.replace('_', '-')}")
        scheduler = await scheduler_for(Orchestrator(store), path)
        fires = []
        for _ in range(2):
            clock.advance(HOUR)
            fires += await scheduler.tick()
        results[overlap] = [f.action for f in fires]
        clock.now -= 2 * HOUR
    assert results == {"skip": ["fired", "skipped"], "allow": ["fired", "fired"],
                       "cancel_other": ["fired", "fired"]}
    first, second = sorted(await store.list_runs(schedule_id="p-cancel-other"),
                           key=lambda r: r.scheduled_for or 0)
    assert first.cancelling and not second.cancelling


@pytest.mark.parametrize(("catch_up", "expected"), [("none", 0), ("latest", 1), ("all", 168)])
async def test_catch_up_after_a_week_down(tmp_path: Path, store: StateStore, clock: FakeClock,
                                          catch_up: str, expected: int) -> None:
    path = pipeline_file(tmp_path, f"{{cron: '@hourly', overlap: allow, catch_up: {catch_up}}}")
    clock.now = 1_800_000_000.0 - 1_800_000_000.0 % HOUR + 60
    scheduler = await scheduler_for(Orchestrator(store), path)
    clock.advance(7 * 24 * HOUR + 600)  # down for a week: even the newest fire is late
    fires = await scheduler.tick()
    assert [f.action for f in fires].count("fired") == expected
    assert [f.action for f in fires].count("missed") == 168 - expected
    assert len(await store.list_runs(schedule_id="nightly", limit=None)) == expected
    clock.now = (scheduler.next_fire(clock.now) or 0) + 5  # and then back to normal
    assert [f.action for f in await scheduler.tick()] == ["fired"]


async def test_a_paused_schedule_fires_nothing_and_resumes_from_then(
        tmp_path: Path, store: StateStore, clock: FakeClock) -> None:
    """Paused (from the web view), its fire times pass unfired, even with catch_up: all;
    resumed, it fires from the next one on, the paused ones let go."""
    path = pipeline_file(tmp_path, "{cron: '@hourly', overlap: allow, catch_up: all}")
    clock.now = 1_800_000_000.0 - 1_800_000_000.0 % HOUR + 60
    scheduler = await scheduler_for(Orchestrator(store), path)
    await store.pause_schedule("nightly", True)
    await tick_through(scheduler, clock, 5 * HOUR)
    assert await store.list_runs(schedule_id="nightly", limit=None) == []
    await store.pause_schedule("nightly", False)
    await tick_through(scheduler, clock, 2 * HOUR)
    assert len(await store.list_runs(schedule_id="nightly", limit=None)) == 2


async def test_a_scheduled_matrix_fires_a_batch(tmp_path: Path, store: StateStore,
                                                clock: FakeClock) -> None:
    path = pipeline_file(tmp_path, "'@daily'", extra="matrix: {lr: [1, 2, 3]}")
    clock.now = 1_800_000_000.0 - 1_800_000_000.0 % (24 * HOUR) + 60
    scheduler = await scheduler_for(Orchestrator(store), path)
    clock.advance(24 * HOUR)
    [fire] = await scheduler.tick()
    assert fire.run_id is not None and fire.run_id.startswith("b-nightly-")
    cells = await store.list_runs(batch_id=fire.run_id)
    assert [(c.id, c.status, c.matrix) for c in cells] == [
        (f"{fire.run_id}.{i}", RunStatus.QUEUED, {"lr": i + 1}) for i in range(3)]


async def test_broken_and_clashing_files_are_reported_not_skipped(tmp_path: Path) -> None:
    from orchestrator.errors import ConfigError

    pipeline_file(tmp_path / "dir", "'@daily'", name="a")
    write(tmp_path / "dir" / "b.yaml", "name: a\nschedule: '@hourly'\nsteps: {x: {uses: "
                                       "core/echo}}\n")
    write(tmp_path / "dir" / "c.yml", "name: c\nschedule: '0 0 0 * *'\nsteps: {x: {uses: "
                                      "core/echo}}\n")
    with pytest.raises(ConfigError) as caught:
        load_scheduled([tmp_path / "dir"])
    text = str(caught.value)
    assert "two scheduled pipelines are named 'a'" in text
    assert "c.yml:2:11: schedule: cron '0 0 0 * *' is not a valid cron expression" in text


async def test_overlap_queue_runs_the_fires_one_after_another(
        tmp_path: Path, store: StateStore, clock: FakeClock) -> None:
    """Three fires queue while none runs; a worker then executes them strictly one at a time
    (the schedule's own concurrency key, limit 1): each run takes its slot only after the run
    before gave it back, in the event log's order."""
    from orchestrator.engine.orchestrator import EngineConfig
    from orchestrator.schedule.worker import Worker
    from tests.engine.harness import wait_until

    path = write(tmp_path / "q.yaml", """
        name: q
        schedule: {cron: '@hourly', overlap: queue}
        steps:
          work: {uses: core/sleep, with: {duration: 100ms}}
    """)
    clock.now = 1_800_000_000.0 - 1_800_000_000.0 % HOUR + 1
    scheduler = await scheduler_for(Orchestrator(store), path)
    for _ in range(3):
        clock.advance(HOUR)
        assert [f.action for f in await scheduler.tick()] == ["fired"]
    config = EngineConfig(slot_poll_interval=0.05)
    async with Orchestrator(store, config=config) as orch, anyio.create_task_group() as tg:
        worker = Worker(orch, poll_interval=0.05)
        await tg.start(worker.run_forever)

        async def all_done() -> bool:
            return len(worker.finished) == 3

        await wait_until(all_done, "the worker finished the three runs", timeout=10)
        tg.cancel_scope.cancel()
    assert {status for _, status in worker.finished} == {RunStatus.SUCCEEDED}
    spans, waited = [], 0
    for run in await store.list_runs(schedule_id="q", limit=None):
        events = await store.get_events(run.id)
        seqs = {e.kind: e.seq for e in events if e.step_id is None}
        spans.append((seqs["slot_acquired"], seqs["slot_released"]))
        waited += "slot_waiting" in seqs
    spans.sort()
    assert all(earlier[1] < later[0] for earlier, later in itertools.pairwise(spans))
    assert waited >= 1


async def test_fired_runs_are_bound_to_the_schedulers_provider(tmp_path: Path, store: StateStore,
                                                               clock: FakeClock) -> None:
    """A scheduled run keeps the provider of the scheduler that fired it: the worker that
    executes it, whatever its own setting, uses that one."""
    from orchestrator.providers.pool import ProviderRef, Providers

    def unused(_: ProviderRef) -> AbstractAsyncContextManager[TogetherClient]:
        raise AssertionError("firing a schedule opens no provider client")

    ref = ProviderRef("together", "http://127.0.0.1:9/v1")
    path = pipeline_file(tmp_path, "{cron: '0 * * * *', overlap: allow}")
    scheduler = await scheduler_for(Orchestrator(store, providers=Providers(ref, unused)),
                                    path)
    await tick_through(scheduler, clock, 2 * HOUR)
    runs = await store.list_runs(schedule_id="nightly", limit=None)
    assert runs and {(r.provider, r.provider_url) for r in runs} == {(ref.name, ref.url)}
