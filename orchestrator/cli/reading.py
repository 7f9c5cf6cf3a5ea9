"""The read-only commands: runs, show, logs, metrics, wait, models.

They open the state store alone (`open_runtime(engine=False)`): no pipeline loader, engine,
provider client or local API is imported, so they start in the time Python and the store take.
With `-o json` they print the shapes of `orchestrator.shapes`, whole and stable.
"""

from __future__ import annotations

import argparse
import contextlib
from typing import TYPE_CHECKING, Any

from orchestrator.cli import EXIT_FAILED, EXIT_OK
from orchestrator.cli.session import print_json, settings_for, until_signal, with_store

if TYPE_CHECKING:
    from orchestrator.store.base import StateStore
    from orchestrator.store.records import RunRecord, RunStatus

__all__ = ["cmd_logs", "cmd_metrics", "cmd_models", "cmd_runs", "cmd_show", "cmd_wait",
           "when"]

EXIT_TIMED_OUT = 75
"""`wait --timeout` ran out: the run goes on (EX_TEMPFAIL, as for a store that is down)."""

FOLLOW_POLL = 0.5
"""Seconds between reads of the store while following a run (`logs -f`, `wait`)."""


def when(text: str, flag: str) -> float:
    """Epoch seconds from `--since`/`--until`: a duration ago (2h, 3d) or a local date or
    time (2026-12-01, 2026-12-01T08:00, 2026-12-01 08:00:00+01:00)."""
    import time  # noqa: PLC0415
    from datetime import datetime  # noqa: PLC0415

    from orchestrator.durations import parse_duration  # noqa: PLC0415
    from orchestrator.errors import ConfigError  # noqa: PLC0415

    with contextlib.suppress(ValueError):
        return time.time() - parse_duration(text)
    try:
        return datetime.fromisoformat(text.strip()).timestamp()
    except ValueError:
        msg = (f"{flag} {text[:40]!r}: give a duration ago (30m, 2h, 3d) or a date or time "
               "(2026-12-01, 2026-12-01T08:00)")
        raise ConfigError(msg) from None


def _statuses(values: list[str] | None) -> list[RunStatus] | None:
    from orchestrator.errors import ConfigError  # noqa: PLC0415
    from orchestrator.store.records import parse_statuses  # noqa: PLC0415

    if not values:
        return None
    try:
        return parse_statuses(",".join(values).split(","))
    except ValueError as exc:
        raise ConfigError(f"--status {exc}") from None


def cmd_runs(args: argparse.Namespace) -> int:
    from orchestrator.cli import render  # noqa: PLC0415

    settings = settings_for(args)
    statuses = _statuses(args.status)
    since = None if args.since is None else when(args.since, "--since")
    until = None if args.until is None else when(args.until, "--until")
    runs = with_store(settings, lambda store: store.list_runs(
        limit=args.limit, statuses=statuses, pipeline=args.pipeline, since=since,
        until=until))
    if args.output == "json":
        from orchestrator.shapes import run_json  # noqa: PLC0415

        print_json([run_json(run) for run in runs])
    else:
        render.runs_table(runs, filtered=bool(statuses or args.pipeline or since or until))
    return EXIT_OK


def cmd_show(args: argparse.Namespace) -> int:
    from orchestrator.cli import render  # noqa: PLC0415
    from orchestrator.errors import RunNotFound  # noqa: PLC0415

    settings = settings_for(args)
    target = args.run_id

    async def load(store: StateStore) -> tuple[str, Any]:
        """A batch (its id starts with b-) with its cells, else a run with its steps and
        metric points: one store connection either way."""
        if target.startswith("b-"):
            from orchestrator.schedule.batch import load_batch  # noqa: PLC0415

            with contextlib.suppress(RunNotFound):
                return "batch", await load_batch(store, target)
        return "run", (await store.get_run(target), await store.get_steps(target),
                       await store.get_metrics(target))

    kind, loaded = with_store(settings, load)
    if kind == "batch":
        if args.output == "json":
            from orchestrator.schedule.batch import batch_document  # noqa: PLC0415

            print_json(batch_document(*loaded))
        else:
            render.batch_detail(*loaded)
        return EXIT_OK
    run, steps, points = loaded
    if args.output == "json":
        from orchestrator.shapes import run_document  # noqa: PLC0415
        from orchestrator.steps.order import ordered_steps  # noqa: PLC0415

        print_json(run_document(run, ordered_steps(run, steps), points))
    else:
        render.run_detail(run, steps, outputs=args.outputs, points=points)
    return EXIT_OK


def _outcome_code(run: RunRecord) -> int:
    from orchestrator.store.records import RunStatus  # noqa: PLC0415

    return EXIT_OK if run.status is RunStatus.SUCCEEDED else EXIT_FAILED


def cmd_logs(args: argparse.Namespace) -> int:
    import anyio  # noqa: PLC0415

    from orchestrator.cli import render  # noqa: PLC0415

    settings = settings_for(args)

    def wanted(event: Any) -> bool:
        return ((args.step is None or event.step_id == args.step)
                and (args.attempt is None or event.attempt == args.attempt))

    async def follow(store: StateStore) -> int:
        await store.get_run(args.run_id)  # unknown ids fail here, before anything prints
        after = 0
        while True:
            events = await store.get_events(args.run_id, after=after)
            for event in events:
                if wanted(event):
                    render.event_line(event, as_json=args.json)
                after = event.seq
            if not args.follow:
                return EXIT_OK
            run = await store.get_run(args.run_id)
            if run.settled and not events:
                return _outcome_code(run)
            await anyio.sleep(FOLLOW_POLL)

    async def interruptible(store: StateStore) -> int | None:
        return await until_signal(follow(store))

    code = with_store(settings, interruptible)
    return 130 if code is None else code


def cmd_metrics(args: argparse.Namespace) -> int:
    from orchestrator.cli import render  # noqa: PLC0415

    settings = settings_for(args)

    async def load(store: StateStore) -> Any:
        await store.get_run(args.run_id)  # an unknown id is an error, not an empty series
        return await store.get_metrics(args.run_id)

    points = with_store(settings, load)
    if args.output == "json":
        from orchestrator.shapes import metrics_document  # noqa: PLC0415

        print_json(metrics_document(args.run_id, points))
    elif args.output == "csv":
        render.metrics_csv(points)
    else:
        render.metrics_table(args.run_id, points)
    return EXIT_OK


def cmd_wait(args: argparse.Namespace) -> int:
    """Wait for a run, or every cell of a batch, to stop; its outcome is the exit code."""
    import anyio  # noqa: PLC0415

    from orchestrator.cli.session import err  # noqa: PLC0415
    from orchestrator.errors import RunNotFound  # noqa: PLC0415

    settings = settings_for(args)
    target = args.run_id

    async def runs(store: StateStore) -> list[RunRecord]:
        if target.startswith("b-"):
            with contextlib.suppress(RunNotFound):
                await store.get_batch(target)
                return await store.list_runs(batch_id=target, limit=None)
        return [await store.get_run(target)]

    async def wait(store: StateStore) -> tuple[list[RunRecord] | None]:
        """The runs once they all stopped, or (None,) if the timeout came first."""
        with anyio.move_on_after(args.timeout if args.timeout is not None else float("inf")):
            while True:
                found = await runs(store)
                if all(run.settled for run in found):
                    return (found,)
                await anyio.sleep(FOLLOW_POLL)
        return (None,)

    async def interruptible(store: StateStore) -> tuple[list[RunRecord] | None] | None:
        return await until_signal(wait(store))  # None: interrupted

    result = with_store(settings, interruptible)
    if result is None:
        return 130
    (found,) = result
    if found is None:
        err(f"{target} is still going after {args.timeout:g}s; it goes on (wait again, or "
            f"see: orchestrator show {target})")
        return EXIT_TIMED_OUT
    counts: dict[str, int] = {}
    for run in found:
        counts[run.status.value] = counts.get(run.status.value, 0) + 1
    if len(found) == 1:
        run = found[0]
        err(f"run {run.id} {run.status.value}" + (f": {run.error}" if run.error else ""))
    else:
        err(f"batch {target}: " + ", ".join(f"{n} {status}" for status, n in counts.items()))
    return EXIT_OK if all(_outcome_code(run) == EXIT_OK for run in found) else EXIT_FAILED


def cmd_models(args: argparse.Namespace) -> int:
    from orchestrator.cli import render  # noqa: PLC0415

    settings = settings_for(args)
    models = with_store(settings, lambda store: store.list_models(limit=args.limit))
    if args.output == "json":
        from orchestrator.shapes import model_json  # noqa: PLC0415

        print_json([model_json(model) for model in models])
    else:
        render.models_table(models)
    return EXIT_OK
