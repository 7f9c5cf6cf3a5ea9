"""The composition root: settings -> state store -> providers -> orchestrator, built once.

Every entry point builds its parts here, and only here: the CLI's commands, the worker and
the scheduler they start, the benchmarks, the tests (through `orchestrator.testing`) and the
web view to come. One event loop, one store connection, one client per provider, so a command
such as `cancel` that reads the store and then cancels runs opens each of them once.

    async with open_runtime(settings) as rt:
        outcome = await rt.orchestrator.run(pipeline, inputs)

Read-only commands (`runs`, `show`, `logs`, `models`) open the store alone
(`engine=False`): the engine, the Together client (httpx) and the local API (Starlette) are
imported only when a runtime with an engine is opened, which keeps their start-up short.
"""

from __future__ import annotations

import dataclasses
import random
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from orchestrator.store.opening import open_store

if TYPE_CHECKING:
    from orchestrator.engine.executor import ProgressSink
    from orchestrator.engine.orchestrator import EngineConfig, Orchestrator
    from orchestrator.providers.pool import LocalEndpoint, LocalEndpoints, Providers
    from orchestrator.settings import Settings
    from orchestrator.steps.registry import StepRegistry
    from orchestrator.store.base import StateStore
    from orchestrator.store.records import Clock

__all__ = ["Runtime", "engine_config", "local_endpoints", "open_runtime", "providers_for"]


@dataclasses.dataclass(frozen=True)
class Runtime:
    """The parts of one process, open for as long as the `open_runtime` block lasts."""

    settings: Settings
    store: StateStore
    providers: Providers | None = None
    """The provider clients (None in a runtime opened without an engine)."""
    engine: Orchestrator | None = None

    @property
    def orchestrator(self) -> Orchestrator:
        """The orchestrator; only in a runtime opened with `engine=True` (the default)."""
        if self.engine is None:
            msg = "this runtime was opened without an engine (open_runtime(engine=False))"
            raise RuntimeError(msg)
        return self.engine


def engine_config(settings: Settings) -> EngineConfig:
    """Every setting the engine reads, from `settings`."""
    from orchestrator.engine.orchestrator import EngineConfig  # noqa: PLC0415  (start-up)

    return EngineConfig(
        max_parallel_steps=settings.max_parallel_steps, lease_ttl=settings.lease_ttl,
        max_recoveries=settings.max_recoveries, slot_poll_interval=settings.slot_poll_interval,
        cancel_poll_interval=settings.cancel_poll_interval,
        pipeline_limits=settings.pipeline_limits,
        artifacts_dir=Path(settings.artifacts_dir).resolve())


def local_endpoints(settings: Settings) -> LocalEndpoints:
    """The local API in this process, serving a given data folder as `settings` describe it
    (durations, faults, bounds): the transport of the Together provider called `local`."""

    def endpoint(folder: Path) -> LocalEndpoint:
        # Starlette and the local API load only when a run on provider local first needs them.
        from orchestrator.localapi import LocalAPI, LocalAPIConfig, LocalTransport  # noqa: PLC0415
        from orchestrator.localapi.transport import BASE_URL  # noqa: PLC0415
        from orchestrator.providers.pool import LocalEndpoint  # noqa: PLC0415

        config = dataclasses.replace(LocalAPIConfig.from_settings(settings), data_dir=folder)
        return LocalEndpoint(LocalTransport(LocalAPI(config)), BASE_URL, config.api_key)

    return endpoint


def providers_for(settings: Settings) -> Providers:
    """The provider clients `settings` configure (not yet opened)."""
    from orchestrator.providers.pool import Providers  # noqa: PLC0415  (start-up: httpx)

    return Providers.from_settings(settings, local=local_endpoints(settings))


@asynccontextmanager
async def open_runtime(
    settings: Settings,
    *,
    engine: bool = True,
    store: StateStore | None = None,
    providers: Providers | None = None,
    config: EngineConfig | None = None,
    registry: StepRegistry | None = None,
    progress: ProgressSink | None = None,
    clock: Clock | None = None,
    rng: random.Random | None = None,
) -> AsyncIterator[Runtime]:
    """Open the store `settings.state_url` names and, with `engine`, the providers and an
    orchestrator on it; close them all, in reverse order, when the block ends.

    The keyword arguments replace a part (tests, benchmarks): an already open `store` (left
    open), `providers` (e.g. `Providers.serving(client)`), the engine's `config` (default:
    `engine_config(settings)`), step types, live progress, the store's clock and the
    engine's random source.
    """
    async with AsyncExitStack() as stack:
        if store is None:
            store = await stack.enter_async_context(open_store(
                settings.state_url, durability=settings.durability,
                busy_timeout=settings.busy_timeout, clock=clock or time.time))
        if not engine:
            yield Runtime(settings, store)
            return
        from orchestrator.engine.orchestrator import Orchestrator  # noqa: PLC0415  (start-up)

        providers = await stack.enter_async_context(providers or providers_for(settings))
        orchestrator = await stack.enter_async_context(Orchestrator(
            store, config=config or engine_config(settings), providers=providers,
            registry=registry, progress=progress, rng=rng))
        yield Runtime(settings, store, providers, orchestrator)
