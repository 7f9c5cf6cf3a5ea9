"""What the running commands share: settings, the store, an orchestrator, output, signals.

Heavy imports happen inside the functions, so that importing this module costs nothing for
commands that never run a pipeline (`validate`, `--help`).
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
from collections.abc import Awaitable, Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from orchestrator.store.urls import shown_url
from orchestrator.terminal import printable

if TYPE_CHECKING:
    from orchestrator.definition.pipeline import Pipeline
    from orchestrator.engine.orchestrator import Orchestrator
    from orchestrator.engine.services import ProgressSink
    from orchestrator.ids import RunNames
    from orchestrator.providers.refs import ProviderRef
    from orchestrator.runtime import Runtime
    from orchestrator.settings import Settings
    from orchestrator.settings_read import StoreSettings
    from orchestrator.store.base import StateStore
    from orchestrator.store.records import StepRecord

__all__ = [
    "Session",
    "err",
    "is_batch",
    "out",
    "output",
    "print_json",
    "settings_for",
    "store_settings_for",
    "until_signal",
    "with_orchestrator",
    "with_runtime",
    "with_store",
]

T = TypeVar("T")


def out(text: str = "") -> None:
    """Results: what a script piping the command reads (control characters escaped: the text
    may hold a step's error or output)."""
    print(printable(text, lines=True), flush=True)


def print_json(value: Any) -> None:
    """A document for scripts (`-o json`): indented JSON, keys in the shape's order, every
    value whole; a NaN (a diverged loss) is null, so that every JSON reader takes it."""
    from orchestrator.views.shapes import document_text  # noqa: PLC0415

    print(document_text(value, indent=2), flush=True)


def err(text: str) -> None:
    """Messages to the person: progress, hints, errors (control characters escaped)."""
    print(printable(text, lines=True), file=sys.stderr, flush=True)


def settings_for(args: argparse.Namespace, **extra: Any) -> Settings:
    """Every setting (pydantic-settings): for a command that runs, serves or checks."""
    from orchestrator.settings import load_settings  # noqa: PLC0415

    return load_settings(state_url=getattr(args, "state_url", None),
                         log_format=getattr(args, "log_format", None),
                         log_level=getattr(args, "log_level", None), **extra)


def store_settings_for(args: argparse.Namespace) -> StoreSettings:
    """The settings of a command that only reads the state store, read without pydantic
    (start-up: see `orchestrator.settings_read`)."""
    from orchestrator.settings_read import load_store_settings  # noqa: PLC0415

    return load_store_settings(state_url=getattr(args, "state_url", None),
                               log_format=getattr(args, "log_format", None),
                               log_level=getattr(args, "log_level", None))


def with_runtime(settings: Settings | StoreSettings, fn: Callable[[Runtime], Awaitable[T]], *,
                 engine: bool = True, progress: ProgressSink | None = None) -> T:
    """Run `fn` in one event loop with this process's parts (see `orchestrator.runtime`):
    the store, and with `engine` the provider clients (opened when a run first needs one:
    each run's own provider, new runs the `provider` setting) and an orchestrator. A
    store-only runtime runs on asyncio's own loop: a read-only command that meets no lock
    never imports anyio (its import and backend were 30 ms of `runs`' start)."""
    from orchestrator.runtime import open_runtime  # noqa: PLC0415

    async def main() -> T:
        async with open_runtime(settings, engine=engine, progress=progress) as rt:
            return await fn(rt)

    if not engine:
        import asyncio  # noqa: PLC0415

        return asyncio.run(main())
    import anyio  # noqa: PLC0415

    return anyio.run(main)


def with_store(settings: Settings | StoreSettings, fn: Callable[[StateStore], Awaitable[T]]
               ) -> T:
    """`fn` of the store alone: what read-only commands need (nothing else is imported)."""
    return with_runtime(settings, lambda rt: fn(rt.store), engine=False)


def with_orchestrator(settings: Settings, fn: Callable[[Orchestrator], Awaitable[T]], *,
                      progress: ProgressSink | None = None) -> T:
    """`fn` of an orchestrator on the store and providers `settings` configure."""
    return with_runtime(settings, lambda rt: fn(rt.orchestrator), progress=progress)


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
        from orchestrator.ids import RunNames  # noqa: PLC0415

        self.settings = settings
        self.run_id: str | None = None
        self.run_ids: list[str] = []
        self.pipeline: Pipeline | None = None
        self.steps: Mapping[str, StepRecord] = {}
        self.names = RunNames()
        """How console lines name runs: the one announced is the header's (see `announce`)."""

    def announce(self, run_id: str, pipeline: Pipeline, verb: str, what: str = "run", *,
                 provider: ProviderRef | None = None) -> None:
        """Say which run starts, on which provider (the run's own) and state database."""
        self.run_id, self.pipeline = run_id, pipeline
        self.run_ids = self.run_ids or [run_id]
        self.names.header = run_id
        where = provider or "none"
        err(f"{verb} {what} {run_id} of {pipeline.name} (provider: {where}, "
            f"state: {shown_url(self.settings.state_url)})")


@contextlib.contextmanager
def output(settings: Settings, *, names: RunNames | None = None
           ) -> Iterator[ProgressSink | None]:
    """Log lines set up for this command; on a terminal, live progress below them. `names`
    (the session's) says how a line names its run: not at all for the run the command's
    header named, `#N` for its batch's cells, by id for others (a worker's)."""
    from orchestrator.ids import RunNames  # noqa: PLC0415
    from orchestrator.log import configure_logging  # noqa: PLC0415

    names = names or RunNames()
    if sys.stderr.isatty() and settings.log_format != "json":
        from rich.console import Console  # noqa: PLC0415

        from orchestrator.cli.progress import ConsoleWriter, LiveProgress  # noqa: PLC0415

        with LiveProgress(Console(file=sys.stderr), names=names) as live:
            configure_logging(fmt="console", level=settings.log_level,
                              stream=ConsoleWriter(live.console),  # type: ignore[arg-type]
                              names=names)
            yield live
    else:
        configure_logging(fmt=settings.log_format, level=settings.log_level, names=names)
        yield None


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
