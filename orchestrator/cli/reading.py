"""The read-only commands: runs, show, logs, models.

They open the state store alone (`open_runtime(engine=False)`): no pipeline loader, engine,
provider client or local API is imported, so they start in the time Python and the store take.
"""

from __future__ import annotations

import argparse
import contextlib
from typing import TYPE_CHECKING, Any

from orchestrator.cli import EXIT_OK
from orchestrator.cli.session import settings_for, until_signal, with_store

if TYPE_CHECKING:
    from orchestrator.store.base import StateStore

__all__ = ["cmd_logs", "cmd_models", "cmd_runs", "cmd_show"]


def cmd_runs(args: argparse.Namespace) -> int:
    from orchestrator.cli import render  # noqa: PLC0415

    settings = settings_for(args)
    runs = with_store(settings, lambda store: store.list_runs(limit=args.limit))
    render.runs_table(runs)
    return EXIT_OK


def cmd_show(args: argparse.Namespace) -> int:
    from orchestrator.cli import render  # noqa: PLC0415
    from orchestrator.errors import RunNotFound  # noqa: PLC0415

    settings = settings_for(args)
    target = args.run_id

    async def load(store: StateStore) -> tuple[str, Any]:
        """A batch (its id starts with b-) with its cells, else a run with its steps: one
        store connection either way."""
        if target.startswith("b-"):
            from orchestrator.cli.batches import load_batch  # noqa: PLC0415

            with contextlib.suppress(RunNotFound):
                return "batch", await load_batch(store, target)
        return "run", (await store.get_run(target), await store.get_steps(target))

    kind, (record, rows) = with_store(settings, load)
    if kind == "batch":
        render.batch_detail(record, rows)
    else:
        render.run_detail(record, rows, outputs=args.outputs)
    return EXIT_OK


def cmd_logs(args: argparse.Namespace) -> int:
    import anyio  # noqa: PLC0415

    from orchestrator.cli import render  # noqa: PLC0415

    settings = settings_for(args)

    async def follow(store: StateStore) -> None:
        await store.get_run(args.run_id)  # unknown ids fail here, before anything prints
        after = 0
        while True:
            events = await store.get_events(args.run_id, after=after)
            for event in events:
                render.event_line(event, as_json=args.json)
                after = event.seq
            if not args.follow:
                return
            run = await store.get_run(args.run_id)
            if run.status.finished and run.lease_owner is None and not events:
                return
            await anyio.sleep(0.5)

    async def interruptible(store: StateStore) -> None:
        await until_signal(follow(store))

    with_store(settings, interruptible)
    return EXIT_OK


def cmd_models(args: argparse.Namespace) -> int:
    from orchestrator.cli import render  # noqa: PLC0415

    settings = settings_for(args)
    render.models_table(with_store(settings, lambda store: store.list_models(limit=args.limit)))
    return EXIT_OK
