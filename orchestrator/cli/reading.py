"""The read-only commands: runs, show, logs, metrics, wait, models.

They open the state store alone (`open_runtime(engine=False)`): no pipeline loader, engine,
provider client or local API is imported, so they start in the time Python and the store take.
With `-o json` they print the shapes of `orchestrator.views.shapes`, whole and stable.
"""

from __future__ import annotations

import argparse
import contextlib
from typing import TYPE_CHECKING, Any

from orchestrator.cli.parser import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK
from orchestrator.cli.session import (
    err,
    print_json,
    store_settings_for,
    until_signal,
    with_store,
)

if TYPE_CHECKING:
    from orchestrator.settings_read import StoreSettings
    from orchestrator.store.base import StateStore
    from orchestrator.store.records import AliasMove, ModelEntry, RunRecord, RunStatus

__all__ = ["cmd_logs", "cmd_metrics", "cmd_models", "cmd_runs", "cmd_show", "cmd_wait",
           "when"]

EXIT_TIMED_OUT = 75
"""`wait --timeout` ran out: the run goes on (EX_TEMPFAIL, as for a store that is down)."""

MAX_ALIAS_HISTORY = 1000
"""The most moves of one alias `models --alias` shows, newest first."""

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

    settings = store_settings_for(args)
    statuses = _statuses(args.status)
    since = None if args.since is None else when(args.since, "--since")
    until = None if args.until is None else when(args.until, "--until")
    runs = with_store(settings, lambda store: store.list_runs(
        limit=args.limit, statuses=statuses, pipeline=args.pipeline, since=since,
        until=until))
    if args.output == "json":
        from orchestrator.views.shapes import run_json  # noqa: PLC0415

        print_json([run_json(run) for run in runs])
    else:
        render.runs_table(runs, filtered=bool(statuses or args.pipeline or since or until))
    return EXIT_OK


def cmd_show(args: argparse.Namespace) -> int:
    from orchestrator.cli import render  # noqa: PLC0415
    from orchestrator.errors import RunNotFound  # noqa: PLC0415

    settings = store_settings_for(args)
    target = args.run_id

    async def load(store: StateStore) -> tuple[str, Any]:
        """A batch (its id starts with b-) with its cells, else a run with its steps and
        metric points: one store connection either way."""
        if target.startswith("b-"):
            from orchestrator.views.batches import load_batch  # noqa: PLC0415

            with contextlib.suppress(RunNotFound):
                return "batch", await load_batch(store, target)
        return "run", (await store.get_run(target), await store.get_steps(target),
                       await store.get_metrics(target))

    kind, loaded = with_store(settings, load)
    if kind == "batch":
        batch, cells = loaded
        if args.output == "json":
            from orchestrator.views.batches import batch_document  # noqa: PLC0415

            print_json(batch_document(batch, cells))
        else:
            from orchestrator.views.batches import declared_objective, select  # noqa: PLC0415

            objective = declared_objective(batch, cells)
            selection = select(cells, objective) if objective is not None else None
            render.batch_detail(batch, cells, selection)
        return EXIT_OK
    run, steps, points = loaded
    if args.output == "json":
        from orchestrator.views.order import ordered_steps  # noqa: PLC0415
        from orchestrator.views.shapes import run_document  # noqa: PLC0415

        print_json(run_document(run, ordered_steps(run, steps, parse=render.parse_stored),
                                points))
    else:
        render.run_detail(run, steps, outputs=args.outputs, points=points)
    return EXIT_OK


def _outcome_code(run: RunRecord) -> int:
    from orchestrator.store.records import RunStatus  # noqa: PLC0415

    return EXIT_OK if run.status is RunStatus.SUCCEEDED else EXIT_FAILED


async def _runs_named(store: StateStore, target: str) -> tuple[list[RunRecord], str | None]:
    """The runs `target` names: that run, or every cell of that batch (with the batch's id)."""
    from orchestrator.errors import RunNotFound  # noqa: PLC0415

    if target.startswith("b-"):
        with contextlib.suppress(RunNotFound):
            await store.get_batch(target)
            return await store.list_runs(batch_id=target, limit=None), target
    return [await store.get_run(target)], None


HIDDEN_KINDS = frozenset({"checkpoint"})
"""Events `logs` and the web page leave out unless asked (`--all`): one per checkpoint a
step stored, which says what it saved, not what happened."""


def cmd_logs(args: argparse.Namespace) -> int:
    """A run's event log, or a batch's (every cell's, in the order things happened, each
    line saying its cell), optionally followed until it ends."""
    from orchestrator.cli import render  # noqa: PLC0415
    from orchestrator.ids import RunNames  # noqa: PLC0415

    settings = store_settings_for(args)

    def wanted(event: Any) -> bool:
        return ((args.step is None or event.step_id == args.step)
                and (args.attempt is None or event.attempt == args.attempt)
                and (args.all or event.kind not in HIDDEN_KINDS))

    async def follow(store: StateStore) -> int:
        runs, batch = await _runs_named(store, args.run_id)  # unknown: fails before printing
        names = RunNames(header=batch or runs[0].id)
        after = dict.fromkeys((run.id for run in runs), 0)
        while True:
            fresh = []
            for run_id, seen in after.items():
                events = await store.get_events(run_id, after=seen)
                if events:
                    after[run_id] = events[-1].seq
                fresh += events
            for event in sorted(fresh, key=lambda e: e.seq):
                if wanted(event):
                    render.event_line(event, as_json=args.output == "json",
                                      cell=names(event.run_id))
            if not args.follow:
                return EXIT_OK
            import anyio  # noqa: PLC0415  (start-up: only a log followed sleeps)

            runs = [await store.get_run(run.id) for run in runs]
            if all(run.settled for run in runs) and not fresh:
                return max(_outcome_code(run) for run in runs)
            await anyio.sleep(FOLLOW_POLL)

    async def interruptible(store: StateStore) -> int | None:
        return await until_signal(follow(store)) if args.follow else await follow(store)

    code = with_store(settings, interruptible)
    return 130 if code is None else code


def cmd_metrics(args: argparse.Namespace) -> int:
    """A run's figures per training step; for a batch, each cell's final figures, one row a
    cell (`--json`: each cell's whole series)."""
    from orchestrator.cli import render_metrics  # noqa: PLC0415

    settings = store_settings_for(args)

    async def load(store: StateStore) -> Any:
        runs, batch = await _runs_named(store, args.run_id)  # an unknown id is an error
        from orchestrator.views.batches import eval_figures  # noqa: PLC0415

        return batch, [(run, await store.get_metrics(run.id),
                        eval_figures(await store.get_steps(run.id))) for run in runs]

    batch, series = with_store(settings, load)
    if batch is not None:
        from orchestrator.views.shapes import metrics_document  # noqa: PLC0415

        if args.output == "json":
            print_json({"batch_id": batch, "cells": [
                {**metrics_document(run.id, points, scores), "cell": run.cell,
                 "matrix": dict(run.matrix or {}), "status": run.status.value}
                for run, points, scores in series]})
        elif args.output == "csv":
            render_metrics.batch_metrics_csv(series)
        else:
            render_metrics.batch_metrics_table(batch, series)
        return EXIT_OK
    run, points, scores = series[0]
    if args.output == "json":
        from orchestrator.views.shapes import metrics_document  # noqa: PLC0415

        print_json(metrics_document(run.id, points, scores))
    elif args.output == "csv":
        render_metrics.metrics_csv(points)
    else:
        render_metrics.metrics_table(run.id, points, scores)
    return EXIT_OK


def cmd_wait(args: argparse.Namespace) -> int:
    """Wait for a run, or every cell of a batch, to stop; its outcome is the exit code."""
    import anyio  # noqa: PLC0415

    from orchestrator.cli.session import err  # noqa: PLC0415
    from orchestrator.errors import RunNotFound  # noqa: PLC0415

    settings = store_settings_for(args)
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

    settings = store_settings_for(args)
    if args.alias is not None:
        return _alias(settings, args)

    async def load(store: StateStore) -> tuple[list[ModelEntry], list[AliasMove]]:
        return await store.list_models(limit=args.limit), await store.aliases()

    models, aliases = with_store(settings, load)
    if args.output == "json":
        from orchestrator.views.shapes import model_json  # noqa: PLC0415

        print_json([{**model_json(model),
                     "aliases": [a.alias for a in aliases if a.model == model.name]}
                    for model in models])
    else:
        render.models_table(models, aliases)
    return EXIT_OK


def _alias(settings: StoreSettings, args: argparse.Namespace) -> int:
    """`models --alias NAME`: the model the alias serves, its registry entry, its moves."""
    from orchestrator.views.shapes import alias_json, model_json  # noqa: PLC0415

    async def load(store: StateStore) -> tuple[list[AliasMove], ModelEntry | None]:
        moves = await store.alias_history(alias=args.alias, limit=MAX_ALIAS_HISTORY)
        return moves, (await store.get_model(moves[0].model)) if moves else None

    moves, entry = with_store(settings, load)
    if not moves:
        err(f"error: no alias {args.alias!r} (orchestrator promote BATCH --alias "
            f"{args.alias}, or a registry/promote step, sets one)")
        return EXIT_BAD_INPUT
    if args.output == "json":
        print_json({**alias_json(moves[0]), "entry": model_json(entry) if entry else None,
                    "history": [alias_json(m) for m in moves]})
        return EXIT_OK
    from orchestrator.cli import render  # noqa: PLC0415

    render.alias_detail(moves, entry)
    return EXIT_OK
