"""`orchestrator ui`, and the page of `orchestrator serve`: the web view over HTTP (uvicorn).

On loopback, reading needs no login; any other address needs --allow-remote and a token
(ORCH_UI_TOKEN) that every request carries. Actions (cancel) are off unless --allow-actions.
Everything that keeps it from serving (an address it must not use, a taken port) is one line
before it serves. A client slow to send its request's headers is disconnected, as by the
local API. `ui` opens the store in the server's own event loop (the app's lifespan); `serve`
shares its worker's store and event loop (`serve_within`).
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, Literal

from orchestrator.errors import ConfigError
from orchestrator.localapi.server import TimelyH11, is_loopback, listen
from orchestrator.schedule.scheduler import Scheduled
from orchestrator.store.base import StateStore
from orchestrator.web.app import create_app, serving_app

__all__ = ["UI_PORT", "WebOptions", "serve", "serve_within", "web_socket"]

HEADER_TIMEOUT = 30.0
UI_PORT = 8766


class WebOptions:
    """Where and how the web view serves, checked: `web_socket` listens accordingly."""

    def __init__(self, *, host: str = "127.0.0.1", port: int = UI_PORT,
                 allow_remote: bool = False, token: str | None = None,
                 actions: bool = False, scheduled: Sequence[Scheduled] | str = ()) -> None:
        if not is_loopback(host):
            if not allow_remote:
                msg = (f"--host {host} is not a loopback address: anyone who can reach it "
                       "could read every run. Add --allow-remote, with a token in "
                       "ORCH_UI_TOKEN")
                raise ConfigError(msg)
            if not token or len(token) < 16:
                msg = ("--allow-remote needs a token of 16 characters or more in "
                       "ORCH_UI_TOKEN (the setting ui_token): every request must carry it")
                raise ConfigError(msg)
        if not 0 <= port <= 65535:
            msg = f"--port {port}: a port is a number from 1 to 65535 (0: any free one)"
            raise ConfigError(msg)
        self.host, self.port, self.actions, self.scheduled = host, port, actions, scheduled
        self.token = token if not is_loopback(host) else None

    def banner(self, sock: socket.socket) -> str:
        gate = " (token required)" if self.token else ""
        return (f"web view on http://{self.host}:{sock.getsockname()[1]}/{gate}, actions "
                f"{'on' if self.actions else 'off'}")


def web_socket(options: WebOptions) -> socket.socket:
    """The listening socket; ConfigError, in one line, if it cannot be had."""
    return listen(options.host, options.port)


class _Server:
    """uvicorn's server with our header deadline, and signals left to the caller."""

    @staticmethod
    def make(app: Any, *, lifespan: Literal["on", "off"]) -> Any:
        import uvicorn  # noqa: PLC0415  (only the commands that serve need it)

        class Embedded(uvicorn.Server):
            @contextlib.contextmanager
            def capture_signals(self) -> Iterator[None]:
                yield  # Ctrl-C and SIGTERM are the command's to handle

        protocol: Any = type("TimelyH11", (TimelyH11,), {"header_timeout": HEADER_TIMEOUT})
        return Embedded(uvicorn.Config(app, log_level="warning", access_log=False,
                                       http=protocol, timeout_keep_alive=5,
                                       lifespan=lifespan))


async def serve_within(store: StateStore, options: WebOptions, sock: socket.socket) -> None:
    """Serve the web view of an open `store` in the running event loop until cancelled."""
    app = create_app(store, actions=options.actions, token=options.token,
                     scheduled=options.scheduled)
    try:
        await _Server.make(app, lifespan="off").serve(sockets=[sock])
    finally:
        sock.close()


def serve(open_store: Callable[[], AbstractAsyncContextManager[StateStore]],
          options: WebOptions, *, ready: Callable[[str], None] = print) -> None:
    """Serve the web view of the store `open_store` opens until interrupted."""
    import asyncio  # noqa: PLC0415

    sock = web_socket(options)
    app = serving_app(open_store, actions=options.actions, token=options.token,
                      scheduled=options.scheduled,
                      ready=lambda: ready(options.banner(sock) + " (Ctrl-C stops)"))
    server = _Server.make(app, lifespan="on")
    try:
        asyncio.run(server.serve(sockets=[sock]))
    finally:
        sock.close()
