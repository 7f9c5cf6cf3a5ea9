"""Long-running and cross-process commands: worker, scheduler, serve, schedules and cancel."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from orchestrator.cli.parser import EXIT_FAILED, EXIT_OK
from orchestrator.cli.session import (
    err,
    out,
    output,
    settings_for,
    until_signal,
    with_orchestrator,
    with_runtime,
    with_store,
)
from orchestrator.store.urls import shown_url

if TYPE_CHECKING:
    from orchestrator.engine.orchestrator import Orchestrator
    from orchestrator.runtime import Runtime
    from orchestrator.settings import Settings
    from orchestrator.store.base import StateStore
    from orchestrator.views.schedules import Scheduled
    from orchestrator.web.server import WebOptions

__all__ = [
    "cancel_and_report",
    "cmd_cancel",
    "cmd_scheduler",
    "cmd_schedules",
    "cmd_serve",
    "cmd_worker",
]


# -- cancel ----------------------------------------------------------------------------------

async def _expand_ids(store: StateStore, targets: Sequence[str]) -> list[str]:
    """Run ids, with each batch id replaced by its cells' run ids; unknown ids are errors."""
    from orchestrator.errors import RunNotFound  # noqa: PLC0415

    ids: list[str] = []
    for target in targets:
        try:
            await store.get_run(target)
        except RunNotFound:
            try:
                await store.get_batch(target)
            except RunNotFound:
                msg = (f"no run or batch with id {target!r} (see `orchestrator runs` and "
                       "`orchestrator batches`)")
                raise RunNotFound(msg) from None
            ids += [run.id for run in await store.list_runs(batch_id=target, limit=None)]
        else:
            ids.append(target)
    return list(dict.fromkeys(ids))


def cancel_and_report(settings: Settings, targets: Sequence[str], *, wait: float) -> bool:
    """Cancel the runs and batches named (see `engine.cancellation`), in one runtime: one
    store connection, one client per provider; print one line per run; True if all ended."""
    from orchestrator.engine.cancellation import CancelResult, cancel_runs  # noqa: PLC0415

    async def cancel(rt: Runtime) -> list[CancelResult]:
        run_ids = await _expand_ids(rt.store, targets)
        return await cancel_runs(rt.orchestrator, run_ids, wait=wait)

    results = with_runtime(settings, cancel)
    for result in results:
        out(f"{result.run_id}: {result.note}")
    restarts = {r.restart_from for r in results if r.restart_from is not None}
    if len(targets) == 1 and restarts:
        how = (f"orchestrator resume {targets[0]} --from {min(restarts)}" if len(restarts) == 1
               else "orchestrator resume RUN --from STEP (the step that launched its job)")
        err(f"its jobs were cancelled with it; to start them again: {how}")
    elif restarts:
        err("jobs were cancelled with them; to start one again: orchestrator resume RUN "
            "--from STEP (the step that launched its job)")
    return all(result.done for result in results)


def cmd_cancel(args: argparse.Namespace) -> int:
    settings = settings_for(args)
    with output(settings):
        done = cancel_and_report(settings, args.targets, wait=args.wait)
    return EXIT_OK if done else EXIT_FAILED


# -- worker, scheduler, serve ----------------------------------------------------------------

def _scheduled(settings: Settings, paths: Sequence[str]) -> list[Scheduled]:
    from orchestrator.schedule.scheduler import load_scheduled  # noqa: PLC0415

    return load_scheduled(paths or settings.schedule_paths, limits=settings.pipeline_limits)


def _serve(settings: Settings, *, worker: bool, scheduled: list[Scheduled] | None,
           web: WebOptions | None = None) -> int:
    """Run a worker loop, a scheduler loop, or both (and the web view), until Ctrl-C or
    SIGTERM."""
    import anyio  # noqa: PLC0415

    from orchestrator.schedule.scheduler import Scheduler  # noqa: PLC0415
    from orchestrator.schedule.worker import Worker  # noqa: PLC0415

    sock = None
    if web is not None:
        from orchestrator.web.server import web_socket  # noqa: PLC0415

        sock = web_socket(web)  # a taken port is one line before anything starts

    async def serve(orch: Orchestrator) -> None:
        async with anyio.create_task_group() as tg:
            parts = []
            if worker:
                loop = Worker(orch, max_runs=settings.worker_max_runs,
                              poll_interval=settings.worker_poll_interval)
                await tg.start(loop.run_forever)
                parts.append(f"worker (up to {settings.worker_max_runs} runs at once)")
            if scheduled is not None:
                await tg.start(Scheduler(orch, scheduled, grace=settings.schedule_grace)
                               .run_forever)
                names = ", ".join(s.id for s in scheduled) or "none found"
                parts.append(f"scheduler (schedules: {names})")
            if web is not None and sock is not None:
                from orchestrator.runtime import store_opener  # noqa: PLC0415
                from orchestrator.web.server import serve_beside  # noqa: PLC0415

                tg.start_soon(serve_beside,
                              store_opener(settings, read_only=web.actions is None), web,
                              sock)
                parts.append(web.banner(sock))
            bound = "; runs execute on the provider each was created with" if worker else ""
            where = shown_url(settings.state_url)
            err(f"{orch.owner}: {' and '.join(parts)} on {where} (new runs' "
                f"provider: {orch.providers.default if orch.providers else 'none'}{bound}); "
                "Ctrl-C stops")

    async def interruptible(orch: Orchestrator) -> Any:
        return await until_signal(serve(orch))

    with output(settings) as live:
        with_orchestrator(settings, interruptible, progress=live)
    err("stopped" + ("; runs being executed were put back in the queue" if worker else ""))
    return EXIT_OK  # a service asked to stop has done nothing wrong


def cmd_worker(args: argparse.Namespace) -> int:
    settings = settings_for(args, worker_max_runs=args.max_runs)
    return _serve(settings, worker=True, scheduled=None)


def cmd_scheduler(args: argparse.Namespace) -> int:
    settings = settings_for(args, provider=args.provider)
    return _serve(settings, worker=False, scheduled=_scheduled(settings, args.paths))


def cmd_serve(args: argparse.Namespace) -> int:
    settings = settings_for(args, worker_max_runs=args.max_runs, provider=args.provider)
    scheduled = _scheduled(settings, args.paths)
    web = None
    if not args.no_ui:
        from orchestrator.cli.web import web_options  # noqa: PLC0415

        web = web_options(settings, host=args.ui_host, port=args.ui_port,
                          allow_remote=args.allow_remote, actions=args.allow_actions,
                          allow_hosts=args.allow_host, scheduled=scheduled)
    return _serve(settings, worker=True, scheduled=scheduled, web=web)


def cmd_schedules(args: argparse.Namespace) -> int:
    from orchestrator.cli import render  # noqa: PLC0415
    from orchestrator.store.records import RunRecord  # noqa: PLC0415

    settings = settings_for(args)
    scheduled = _scheduled(settings, args.paths)

    async def load(store: StateStore) -> list[tuple[Scheduled, float | None, RunRecord | None]]:
        now = store.clock()
        paused = {e.id for e in await store.list_schedules() if e.paused_at is not None}
        rows = []
        for item in scheduled:
            last = await store.list_runs(schedule_id=item.id, limit=1)
            rows.append((item, None if item.id in paused else item.cron.next_after(now),
                         last[0] if last else None))
        return rows

    if args.output == "json":
        from orchestrator.cli.session import print_json  # noqa: PLC0415
        from orchestrator.views.schedules import schedule_documents  # noqa: PLC0415

        print_json(with_store(settings, lambda store: schedule_documents(store, scheduled)))
        return EXIT_OK
    rows = with_store(settings, load)
    render.schedules_table(rows)
    return EXIT_OK
