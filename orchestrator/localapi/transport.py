"""The local API in-process: an httpx transport that calls the ASGI app directly.

No port, no thread per request: requests go through `httpx.ASGITransport`. A connection the
API drops on purpose (fault injection) reaches the client as `httpx.RemoteProtocolError`, just
as a dropped TCP connection would.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx

from orchestrator.localapi.app import LocalAPI
from orchestrator.localapi.config import LocalAPIConfig
from orchestrator.localapi.errors import ConnectionDropped

__all__ = ["BASE_URL", "LocalTransport", "local_client"]

BASE_URL = "http://local-api/v1"
"""Where in-process requests appear to go (the host is never resolved)."""


class LocalTransport(httpx.AsyncBaseTransport):
    """Hands requests to the local API's ASGI app; maps injected drops to transport errors."""

    def __init__(self, api: LocalAPI) -> None:
        self.api = api
        self._asgi = httpx.ASGITransport(app=api.app)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        try:
            return await self._asgi.handle_async_request(request)
        except ConnectionDropped as exc:
            msg = "Server disconnected without sending a complete response."
            raise httpx.RemoteProtocolError(msg, request=request) from exc

    async def aclose(self) -> None:
        await self._asgi.aclose()
        self.api.close()


@asynccontextmanager
async def local_client(config: LocalAPIConfig, *, api: LocalAPI | None = None,
                       **client_options: object) -> AsyncIterator[httpx.AsyncClient]:
    """An `httpx.AsyncClient` talking to an in-process local API, authenticated."""
    served = api or LocalAPI(config)
    headers = {"Authorization": f"Bearer {config.api_key}"}
    async with httpx.AsyncClient(transport=LocalTransport(served), base_url=BASE_URL,
                                 headers=headers, **client_options) as client:  # type: ignore[arg-type]
        yield client
