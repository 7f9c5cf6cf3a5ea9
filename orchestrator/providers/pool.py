"""Which provider a run talks to, and the clients a process opens for them.

A run is bound to the provider it was created with: its kind (`local` or `together`) and where
it is (Together's base URL; for the in-process local API, its data folder), never a key. Resume,
workers, `cancel` and scheduled fires all execute a run against that provider, whatever the
process's own `provider` setting says, so a run launched on Together is never followed on the
simulator (nor the other way round). The key comes from the executing process's environment.

`Providers` opens one client per provider a process needs, on first use, and closes them all
when it closes: a worker executing runs of both kinds holds two clients. Both are Together
clients: `local` is the Together provider reached through an in-process transport to the
local API, which the composition root (`orchestrator.runtime`) hands in as a `LocalEndpoint`
factory; this package never imports the local API.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Self

import anyio

from orchestrator.errors import SettingsInvalid
from orchestrator.providers.refs import ProviderRef, provider_ref
from orchestrator.redact import REDACTOR

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    import httpx

    from orchestrator.providers.together.client import TogetherClient
    from orchestrator.settings import Settings

__all__ = ["KEY_VARIABLE", "LocalEndpoint", "LocalEndpoints", "Opener", "ProviderRef", "Providers",
           "provider_ref"]

KEY_VARIABLE = "TOGETHER_API_KEY"


Opener = Callable[[ProviderRef], AbstractAsyncContextManager["TogetherClient"]]
"""Opens a client for a provider (closed when the context ends)."""


@dataclasses.dataclass(frozen=True)
class LocalEndpoint:
    """How a Together client reaches a local API in this process: no port, no key from the
    environment."""

    transport: httpx.AsyncBaseTransport
    base_url: str
    api_key: str


LocalEndpoints = Callable[[Path], LocalEndpoint]
"""A local API serving the data folder given (a run bound to `local` names its folder)."""


class Providers:
    """The clients of one process, one per provider, opened on first use.

    Use as `async with Providers.from_settings(settings) as providers:`.
    """

    def __init__(self, default: ProviderRef | None, opener: Opener,
                 check: Callable[[ProviderRef], None] | None = None) -> None:
        self.default = default
        """The provider new runs of this process are bound to (None: no provider)."""
        self._opener = opener
        self._check = check
        self._clients: dict[ProviderRef, TogetherClient] = {}
        self._lock = anyio.Lock()
        self._stack = AsyncExitStack()

    @classmethod
    def from_settings(cls, settings: Settings, *,
                      local: LocalEndpoints | None = None) -> Providers:
        """Clients as `settings` configure them; new runs get the `provider` setting. Runs
        bound to `local` reach the local API through `local` (without it, they cannot run
        in this process)."""

        def check(ref: ProviderRef) -> None:
            if ref.name == "local":
                if local is None:
                    msg = f"provider local ({ref.url}) is not available in this process"
                    raise SettingsInvalid(msg)
                problem = _unusable_folder(Path(ref.url))
                if problem is not None:
                    msg = (f"the local API's data folder {ref.url} cannot be used: {problem} "
                           "(setting local_data_dir)")
                    raise SettingsInvalid(msg)
            if ref.name == "together":
                key = settings.together_api_key
                if key is None or not key.get_secret_value():
                    msg = (f"provider together ({ref.url}) needs an API key: export "
                           f"{KEY_VARIABLE}=... (or put it in .env)")
                    raise SettingsInvalid(msg)

        @asynccontextmanager
        async def opener(ref: ProviderRef) -> AsyncIterator[TogetherClient]:
            check(ref)
            async with _client_for(settings, ref, local) as client:
                yield client

        return cls(provider_ref(settings), opener, check)

    @classmethod
    def serving(cls, client: TogetherClient, ref: ProviderRef | None = None) -> Providers:
        """Every provider answered by one client the caller opened (tests, benchmarks)."""

        @asynccontextmanager
        async def opener(_: ProviderRef) -> AsyncIterator[TogetherClient]:
            yield client

        return cls(ref or ProviderRef("together", client.base_url), opener)

    def check(self, ref: ProviderRef) -> None:
        """Raise SettingsInvalid (naming the variable) if this process cannot use `ref`."""
        if self._check is not None:
            self._check(ref)

    async def client(self, ref: ProviderRef) -> TogetherClient:
        """The client for `ref`, opened now if it is the first use."""
        async with self._lock:
            client = self._clients.get(ref)
            if client is None:
                client = await self._stack.enter_async_context(self._opener(ref))
                self._clients[ref] = client
            return client

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        self._clients.clear()
        await self._stack.aclose()


def _unusable_folder(path: Path) -> str | None:
    """Why the local API could not keep its state under `path`, found without creating
    anything (a run that never calls the provider leaves no folder behind); None if it can."""
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        return f"{existing} is not a folder"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"{existing} is not writable"
    return None


def _client_for(settings: Settings, ref: ProviderRef,
                local: LocalEndpoints | None) -> TogetherClient:
    """A Together client for `ref`: through the local API in this process, or over HTTP."""
    # httpx and the client load when a run first needs a provider, not with the engine.
    from orchestrator.providers.together.client import TogetherClient  # noqa: PLC0415

    timeout = settings.request_timeout
    if ref.name == "local":
        assert local is not None  # checked by the opener
        endpoint = local(Path(ref.url))
        api_key, base_url, transport = endpoint.api_key, endpoint.base_url, endpoint.transport
    else:
        key = settings.together_api_key
        assert key is not None  # checked by the opener
        api_key, base_url, transport = key.get_secret_value(), ref.url, None
    REDACTOR.add([api_key])
    return TogetherClient(api_key=api_key, base_url=base_url, transport=transport,
                          timeout=timeout, project_id=settings.together_project_id,
                          multipart_threshold=settings.upload_multipart_threshold,
                          part_size=settings.upload_part_size,
                          part_concurrency=settings.upload_part_concurrency)
