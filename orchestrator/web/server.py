"""`orchestrator ui`: the web view served over HTTP on loopback (uvicorn).

The store is opened in the server's own event loop (the app's lifespan) and only read. It
listens on loopback only: reading needs no login there, and nothing is served elsewhere
until remote access with a token exists. A client slow to send its request's headers is
disconnected, as by the local API.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

from orchestrator.errors import ConfigError
from orchestrator.localapi.server import TimelyH11, is_loopback, listen
from orchestrator.store.base import StateStore
from orchestrator.web.app import serving_app

__all__ = ["serve"]

HEADER_TIMEOUT = 30.0


def serve(open_store: Callable[[], AbstractAsyncContextManager[StateStore]], *, host: str,
          port: int, ready: Callable[[str], None] = print) -> None:
    """Serve the web view of the store `open_store` opens until interrupted; ConfigError,
    before serving, for an address it must not or cannot listen on."""
    if not is_loopback(host):
        msg = (f"--host {host} is not a loopback address; the web view serves loopback only "
               "(remote access with a token is not there yet)")
        raise ConfigError(msg)
    if not 1 <= port <= 65535:
        msg = f"--port {port}: a port is a number from 1 to 65535"
        raise ConfigError(msg)
    sock = listen(host, port)
    import uvicorn  # noqa: PLC0415  (only this command needs it)

    app = serving_app(open_store, ready=lambda: ready(
        f"web view on http://{host}:{sock.getsockname()[1]}/ (Ctrl-C stops)"))
    protocol: Any = type("TimelyH11", (TimelyH11,), {"header_timeout": HEADER_TIMEOUT})
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False,
                                           http=protocol, timeout_keep_alive=5,
                                           lifespan="on"))
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
