"""`orchestrator ui`: the web view served over HTTP on loopback (uvicorn).

The store is opened in the server's own event loop (the app's lifespan). On loopback, reading
needs no login; any other address needs --allow-remote and a token (ORCH_UI_TOKEN) that every
request carries. Actions (cancel) are off unless --allow-actions. A client slow to send its
request's headers is disconnected, as by the local API.
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
          port: int, ready: Callable[[str], None] = print, allow_remote: bool = False,
          token: str | None = None, actions: bool = False) -> None:
    """Serve the web view of the store `open_store` opens until interrupted; ConfigError,
    before serving, for an address it must not or cannot listen on. Off loopback it needs
    `allow_remote` and a `token` every request must carry."""
    if not is_loopback(host):
        if not allow_remote:
            msg = (f"--host {host} is not a loopback address: anyone who can reach it could "
                   "read every run. Add --allow-remote, with a token in ORCH_UI_TOKEN")
            raise ConfigError(msg)
        if not token or len(token) < 16:
            msg = ("--allow-remote needs a token of 16 characters or more in ORCH_UI_TOKEN "
                   "(the setting ui_token): every request must carry it")
            raise ConfigError(msg)
    if not 1 <= port <= 65535:
        msg = f"--port {port}: a port is a number from 1 to 65535"
        raise ConfigError(msg)
    sock = listen(host, port)
    import uvicorn  # noqa: PLC0415  (only this command needs it)

    gate = " (token required)" if token and not is_loopback(host) else ""
    app = serving_app(open_store, actions=actions,
                      token=token if not is_loopback(host) else None,
                      ready=lambda: ready(f"web view on http://{host}:{sock.getsockname()[1]}/"
                                          f"{gate}, actions {'on' if actions else 'off'} "
                                          "(Ctrl-C stops)"))
    protocol: Any = type("TimelyH11", (TimelyH11,), {"header_timeout": HEADER_TIMEOUT})
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False,
                                           http=protocol, timeout_keep_alive=5,
                                           lifespan="on"))
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
