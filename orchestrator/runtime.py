"""The composition root: settings -> state store -> providers -> orchestrator, built once.

Every entry point builds its parts here, and only here: the CLI's commands, the worker and
the scheduler they start, the benchmarks, the tests (through `orchestrator.testing`) and the
web view. One event loop, one store connection, one client per provider, so a command
such as `cancel` that reads the store and then cancels runs opens each of them once.

    async with open_runtime(settings) as rt:
        outcome = await rt.orchestrator.run(pipeline, inputs)

Read-only commands (`runs`, `show`, `logs`, `models`) open the store alone
(`engine=False`): the engine, the Together client (httpx) and the local API (Starlette) are
imported only when a runtime with an engine is opened, which keeps their start-up short. The
web view opens its store here too (`store_opener`: read-only unless its actions are on) and
gets its actions made here (`web_actions`); pricing a pipeline opens the provider clients
alone (`open_providers`). No other module builds a store, a provider pool or an orchestrator
(`tests/test_runtime.py` reads every module to hold it so).
"""

from __future__ import annotations

import dataclasses
import random
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchestrator.settings_read import StoreSettings
from orchestrator.store.opening import open_store

if TYPE_CHECKING:
    from orchestrator.engine.orchestrator import EngineConfig, Orchestrator
    from orchestrator.engine.services import ProgressSink
    from orchestrator.providers.pool import LocalEndpoint, LocalEndpoints, Providers
    from orchestrator.providers.refs import ProviderRef
    from orchestrator.schedule.actions import StoreActions
    from orchestrator.settings import Settings
    from orchestrator.steps.registry import StepRegistry
    from orchestrator.store.base import StateStore
    from orchestrator.store.records import Clock
    from orchestrator.views.schedules import Scheduled

__all__ = [
    "Runtime",
    "check_provider",
    "engine_config",
    "local_endpoints",
    "no_providers",
    "open_providers",
    "open_runtime",
    "providers_for",
    "store_opener",
    "web_actions",
]


@dataclasses.dataclass(frozen=True)
class Runtime:
    """The parts of one process, open for as long as the `open_runtime` block lasts."""

    settings: Settings | StoreSettings
    """Every setting, or (a store-only runtime of a read-only command) the store's alone."""
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
    settings: Settings | StoreSettings,
    *,
    engine: bool = True,
    store: StateStore | None = None,
    providers: Providers | None = None,
    config: EngineConfig | None = None,
    registry: StepRegistry | None = None,
    progress: ProgressSink | None = None,
    clock: Clock | None = None,
    rng: random.Random | None = None,
    read_only: bool = False,
) -> AsyncIterator[Runtime]:
    """Open the store `settings.state_url` names and, with `engine`, the providers and an
    orchestrator on it; close them all, in reverse order, when the block ends.

    The keyword arguments replace a part (tests, benchmarks): an already open `store` (left
    open), `providers` (e.g. `Providers.serving(client)`), the engine's `config` (default:
    `engine_config(settings)`), step types, live progress, the store's clock and the
    engine's random source. `read_only`: a store whose connections refuse every write (the
    web view without actions).
    """
    async with AsyncExitStack() as stack:
        if store is None:
            store = await stack.enter_async_context(open_store(
                settings.state_url, durability=settings.durability,
                busy_timeout=settings.busy_timeout, clock=clock or time.time,
                read_only=read_only))
        if not engine:
            yield Runtime(settings, store)
            return
        if isinstance(settings, StoreSettings):
            msg = "an engine needs every setting (load_settings), not the store's alone"
            raise TypeError(msg)
        from orchestrator.engine.orchestrator import Orchestrator  # noqa: PLC0415  (start-up)

        providers = await stack.enter_async_context(providers or providers_for(settings))
        orchestrator = await stack.enter_async_context(Orchestrator(
            store, config=config or engine_config(settings), providers=providers,
            registry=registry, progress=progress, rng=rng))
        yield Runtime(settings, store, providers, orchestrator)


def store_opener(settings: Settings, *, read_only: bool
                 ) -> Callable[[], AbstractAsyncContextManager[StateStore]]:
    """How the web view opens its own store, in its own event loop (`ui`, or beside a
    worker under `serve`): a runtime without an engine, read-only unless its actions are on,
    so a page that only reads cannot change what it shows."""

    @asynccontextmanager
    async def opened() -> AsyncIterator[StateStore]:
        async with open_runtime(settings, engine=False, read_only=read_only) as rt:
            yield rt.store

    return opened


def web_actions(settings: Settings, scheduled: Sequence[Scheduled]
                ) -> Callable[[StateStore], StoreActions]:
    """What makes the web view's actions on the store it opened: the engine's own
    operations (an orchestrator on that store, never entered: it executes nothing), runs
    fired now bound to the provider `settings` name."""
    from orchestrator.engine.orchestrator import Orchestrator  # noqa: PLC0415  (start-up)
    from orchestrator.providers.refs import provider_ref  # noqa: PLC0415
    from orchestrator.schedule.actions import StoreActions  # noqa: PLC0415

    ref, config, served = provider_ref(settings), engine_config(settings), list(scheduled)

    def make(store: StateStore) -> StoreActions:
        return StoreActions(store, Orchestrator(store, config=config), scheduled=served,
                            provider=ref)

    return make


@asynccontextmanager
async def open_providers(settings: Settings) -> AsyncIterator[tuple[Providers, ProviderRef]]:
    """The provider clients alone, no store (pricing a pipeline before its run exists), and
    the provider `settings` name; SettingsInvalid, before anything opens, when this process
    cannot use it (no key)."""
    from orchestrator.providers.refs import provider_ref  # noqa: PLC0415

    ref = provider_ref(settings)
    providers = providers_for(settings)
    providers.check(ref)
    async with providers:
        yield providers, ref


def check_provider(settings: Settings) -> None:
    """SettingsInvalid, in one line, when this process cannot use the provider `settings`
    name (a missing key, a local data folder it cannot write): before a run is created."""
    from orchestrator.providers.refs import provider_ref  # noqa: PLC0415

    providers_for(settings).check(provider_ref(settings))


def no_providers(why: str = "this process has no provider") -> Providers:
    """A provider pool with none in it: a run that needs one fails, saying `why` (tests of
    step types that talk to no provider)."""
    from orchestrator.providers.pool import Providers  # noqa: PLC0415  (start-up: httpx)

    def refuse(_: object) -> Any:
        raise AssertionError(why)

    return Providers(None, refuse)
