"""What the running commands share: settings, the store, an orchestrator, output, signals.

Heavy imports happen inside the functions, so that importing this module costs nothing for
commands that never run a pipeline (`validate`, `--help`).
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from orchestrator.cli import EXIT_FAILED, EXIT_INTERRUPTED
from orchestrator.terminal import printable

if TYPE_CHECKING:
    from orchestrator.engine.executor import ProgressSink
    from orchestrator.engine.orchestrator import Orchestrator
    from orchestrator.providers.pool import ProviderRef
    from orchestrator.settings import Settings
    from orchestrator.spec.loader import Pipeline
    from orchestrator.store.base import StateStore, StepRecord

__all__ = [
    "Session",
    "after_interrupt",
    "err",
    "is_batch",
    "open_store",
    "out",
    "output",
    "settings_for",
    "started_remote_work",
    "until_signal",
    "wants_cancel",
    "with_orchestrator",
    "with_store",
]

T = TypeVar("T")


def out(text: str = "") -> None:
    """Results: what a script piping the command reads (control characters escaped: the text
    may hold a step's error or output)."""
    print(printable(text, lines=True), flush=True)


def err(text: str) -> None:
    """Messages to the person: progress, hints, errors (control characters escaped)."""
    print(printable(text, lines=True), file=sys.stderr, flush=True)


def settings_for(args: argparse.Namespace, **extra: Any) -> Settings:
    from orchestrator.settings import load_settings  # noqa: PLC0415

    return load_settings(state_url=getattr(args, "state_url", None),
                         log_format=getattr(args, "log_format", None),
                         log_level=getattr(args, "log_level", None), **extra)


def open_store(settings: Settings) -> StateStore:
    from orchestrator.store.opening import open_store  # noqa: PLC0415

    return open_store(settings.state_url, durability=settings.durability,
                      busy_timeout=settings.busy_timeout)


def with_store(settings: Settings, fn: Callable[[StateStore], Awaitable[T]]) -> T:
    import anyio  # noqa: PLC0415

    async def main() -> T:
        async with open_store(settings) as store:
            return await fn(store)

    return anyio.run(main)


def with_orchestrator(settings: Settings, fn: Callable[[Orchestrator], Awaitable[T]], *,
                      progress: ProgressSink | None = None) -> T:
    """Run `fn` with an orchestrator. Provider clients open when a run first needs one: each
    run's own provider (see `providers.pool`), new runs the `provider` setting."""
    from orchestrator.engine.orchestrator import EngineConfig, Orchestrator  # noqa: PLC0415
    from orchestrator.providers.pool import Providers  # noqa: PLC0415

    config = EngineConfig(max_parallel_steps=settings.max_parallel_steps,
                          lease_ttl=settings.lease_ttl, max_recoveries=settings.max_recoveries,
                          pipeline_limits=settings.pipeline_limits)

    async def with_opened(store: StateStore) -> T:
        async with Providers.from_settings(settings) as providers, Orchestrator(
                store, config=config, providers=providers, progress=progress) as orch:
            return await fn(orch)

    return with_store(settings, with_opened)


async def until_signal(work: Awaitable[T]) -> T | None:
    """`work`'s result, or None if SIGINT or SIGTERM cancelled it (its state is saved)."""
    import anyio  # noqa: PLC0415

    result: list[T] = []
    error: Exception | None = None
    async with anyio.create_task_group() as tg:

        async def watch() -> None:
            with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                async for _ in signals:
                    err("interrupted: stopping and saving the run's state ...")
                    tg.cancel_scope.cancel()
                    return

        tg.start_soon(watch)
        try:
            result.append(await work)
        except Exception as exc:  # noqa: BLE001  (re-raised below, outside the task group)
            error = exc
        tg.cancel_scope.cancel()
    if error is not None:
        raise error  # unwrapped: a task group would have put it in an ExceptionGroup
    return result[0] if result else None


class Session:
    """What a running command knows about its run (or batch), for the messages around it."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.run_id: str | None = None
        self.run_ids: list[str] = []
        self.pipeline: Pipeline | None = None
        self.steps: Mapping[str, StepRecord] = {}

    def announce(self, run_id: str, pipeline: Pipeline, verb: str, what: str = "run", *,
                 provider: ProviderRef | None = None) -> None:
        """Say which run starts, on which provider (the run's own) and state database."""
        self.run_id, self.pipeline = run_id, pipeline
        self.run_ids = self.run_ids or [run_id]
        where = provider or "none"
        err(f"{verb} {what} {run_id} of {pipeline.name} (provider: {where}, "
            f"state: {self.settings.state_url})")


@contextlib.contextmanager
def output(settings: Settings, *, label: Callable[[str, str], str] | None = None
           ) -> Iterator[ProgressSink | None]:
    """Log lines set up for this command; on a terminal, live progress below them."""
    from orchestrator.log import configure_logging  # noqa: PLC0415

    if sys.stderr.isatty() and settings.log_format != "json":
        from rich.console import Console  # noqa: PLC0415

        from orchestrator.cli.progress import ConsoleWriter, LiveProgress  # noqa: PLC0415

        with LiveProgress(Console(file=sys.stderr), label=label) as live:
            configure_logging(fmt="console", level=settings.log_level,
                              stream=ConsoleWriter(live.console))  # type: ignore[arg-type]
            yield live
    else:
        configure_logging(fmt=settings.log_format, level=settings.log_level)
        yield None


def wants_cancel(on_interrupt: str, *, remote: bool) -> bool:
    """Whether to cancel the run after Ctrl-C: the flag, or the person at the terminal (asked
    only when the run started remote jobs: otherwise there is nothing to decide)."""
    if on_interrupt != "ask":
        return on_interrupt == "cancel"
    if not remote or not sys.stdin.isatty():
        return False
    try:
        answer = input("Leave its remote jobs running, to resume later [L], or cancel them "
                       "and the run [c]? ")
    except (EOFError, KeyboardInterrupt):
        return False
    return answer.strip().lower() in ("c", "cancel")


def started_remote_work(settings: Settings, run_ids: Sequence[str]) -> bool:
    """Whether any of the runs began a step that starts remote work (one with a cancel hook,
    such as a fine-tune launch) far enough to have saved a checkpoint."""
    from pathlib import Path  # noqa: PLC0415

    from orchestrator.steps.builtin import parse_pipeline  # noqa: PLC0415

    async def look(store: StateStore) -> bool:
        parsed: dict[str, Pipeline] = {}
        for run_id in run_ids:
            run = await store.get_run(run_id)
            if run.pipeline_text not in parsed:
                parsed[run.pipeline_text] = parse_pipeline(
                    run.pipeline_text, Path(run.pipeline_path),
                    limits=settings.pipeline_limits)
            steps = parsed[run.pipeline_text].steps
            for step_id, record in (await store.get_steps(run_id)).items():
                if step_id in steps and steps[step_id].type.cancel and record.checkpoint:
                    return True
        return False

    return with_store(settings, look)


def after_interrupt(settings: Settings, session: Session, on_interrupt: str) -> int:
    """After Ctrl-C: cancel the run (the flag or the person says so) or say how to go on."""
    if session.run_id is None:
        err("interrupted before the run was created")
        return EXIT_INTERRUPTED
    err(f"{session.run_id} interrupted; its state is saved.")
    remote = started_remote_work(settings, session.run_ids)
    if wants_cancel(on_interrupt, remote=remote):
        from orchestrator.cli.service import cancel_and_report  # noqa: PLC0415

        done = cancel_and_report(settings, session.run_ids, wait=30.0)
        what = "run" if session.run_ids == [session.run_id] else "batch"
        if done:
            out(f"{what} {session.run_id} cancelled")
        else:
            out(f"{what} {session.run_id}: cancellation incomplete; see: orchestrator show "
                f"{session.run_id}")
        return EXIT_FAILED
    if remote:
        err(f"Remote jobs were left running. Continue with:\n  orchestrator resume "
            f"{session.run_id}\nor stop them with:\n  orchestrator cancel {session.run_id}")
    else:
        err(f"Continue with:\n  orchestrator resume {session.run_id}")
    return EXIT_INTERRUPTED


def is_batch(settings: Settings, target: str) -> bool:
    """Whether `target` names a batch (else it is taken for a run id)."""
    from orchestrator.errors import RunNotFound  # noqa: PLC0415

    async def look(store: StateStore) -> bool:
        try:
            await store.get_batch(target)
        except RunNotFound:
            return False
        return True

    return target.startswith("b-") and with_store(settings, look)
