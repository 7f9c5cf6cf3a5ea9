"""`orchestrator ui`, and the page of `orchestrator serve`: the web view over HTTP (uvicorn).

On loopback, reading needs no login; any other address needs --allow-remote and a token
(ORCH_UI_TOKEN, or a file the setting ui_token_file names) that every request carries. It
answers only to its own names (its address, `localhost` on loopback, the hosts --allow-host
lists): see `gates`. Actions (cancel, resume) are off unless --allow-actions. Everything that
keeps it from serving (an address it must not use, a taken port) is one line before it serves.
A client slow to send its request's headers is disconnected, as by the local API.

`ui` serves in its own event loop, with a store it opens in the app's lifespan. Under `serve`
the web view runs beside the worker, in a thread of its own with its own event loop and its
own connection to the store (`serve_beside`): reading and rendering a big page never runs on
the event loop that executes runs, so a page never delays a step.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any, Literal

import anyio

from orchestrator.errors import ConfigError, OrchestratorError
from orchestrator.serving import TimelyH11, is_loopback, listen
from orchestrator.store.base import StateStore
from orchestrator.views.schedules import Scheduled
from orchestrator.web.actions import Actions
from orchestrator.web.app import serving_app
from orchestrator.web.gates import allowed_hosts

__all__ = ["UI_PORT", "WebOptions", "serve", "serve_beside", "web_socket"]

HEADER_TIMEOUT = 30.0
UI_PORT = 8766
STOP_WAIT = 10.0
"""Seconds `serve_beside` waits for its thread to finish the requests in flight."""

OpenStore = Callable[[], AbstractAsyncContextManager[StateStore]]


class WebOptions:
    """Where and how the web view serves, checked: `web_socket` listens accordingly."""

    def __init__(self, *, host: str = "127.0.0.1", port: int = UI_PORT,
                 allow_remote: bool = False, token: str | None = None,
                 actions: Callable[[StateStore], Actions] | None = None,
                 scheduled: Sequence[Scheduled] | str = (),
                 allow_hosts: Sequence[str] = (), artifacts: Path | None = None) -> None:
        if not is_loopback(host):
            if not allow_remote:
                msg = (f"--host {host} is not a loopback address: anyone who can reach it "
                       "could read every run. Add --allow-remote, with a token in "
                       "ORCH_UI_TOKEN")
                raise ConfigError(msg)
            if not token or len(token) < 16:
                msg = ("--allow-remote needs a token of 16 characters or more in "
                       "ORCH_UI_TOKEN (or in the file the setting ui_token_file names): "
                       "every request must carry it")
                raise ConfigError(msg)
            if host in ("0.0.0.0", "::") and not allow_hosts:
                msg = (f"--host {host} listens on every address: name the hosts browsers "
                       "reach it by with --allow-host NAME (repeatable); requests for any "
                       "other name are refused")
                raise ConfigError(msg)
        if not 0 <= port <= 65535:
            msg = f"--port {port}: a port is a number from 1 to 65535 (0: any free one)"
            raise ConfigError(msg)
        for name in allow_hosts:
            if not name.strip() or len(name) > 253 or any(c in name for c in "/@ \t"):
                msg = f"--allow-host {name[:60]!r}: expected a host name, with :port or not"
                raise ConfigError(msg)
        self.host, self.port, self.actions, self.scheduled = host, port, actions, scheduled
        """`actions` makes the actions on the store the web view opens (None: off)."""
        self.allow_hosts = tuple(allow_hosts)
        self.artifacts = artifacts
        self.token = token if not is_loopback(host) else None

    def hosts(self, sock: socket.socket) -> frozenset[str]:
        """The Host values the server on `sock` answers to."""
        return allowed_hosts(self.host, sock.getsockname()[1], self.allow_hosts)

    def banner(self, sock: socket.socket) -> str:
        gate = " (token required)" if self.token else ""
        return (f"web view on http://{self.host}:{sock.getsockname()[1]}/{gate}, actions "
                f"{'on' if self.actions is not None else 'off'}")


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


def _app(opener: OpenStore, options: WebOptions, sock: socket.socket,
         ready: Callable[[], None] | None = None) -> Any:
    return serving_app(opener, actions=options.actions, token=options.token,
                       scheduled=options.scheduled, hosts=options.hosts(sock), ready=ready,
                       artifacts=options.artifacts)


async def serve_beside(opener: OpenStore, options: WebOptions,
                       sock: socket.socket) -> None:
    """Serve the web view on `sock` until cancelled, in a thread of its own with its own
    event loop and the store `opener` opens there: nothing it reads or renders runs on
    the caller's event loop (the one executing runs). A web view that stops by itself (its
    store would not open) ends this with OrchestratorError, after uvicorn said why."""
    server = _Server.make(_app(opener, options, sock), lifespan="on")
    failed: list[BaseException] = []

    def run() -> None:
        try:
            asyncio.run(server.serve(sockets=[sock]))
        except BaseException as exc:  # noqa: BLE001  (handed to the caller's loop)
            failed.append(exc)

    thread = threading.Thread(target=run, name="web-view", daemon=True)
    thread.start()
    try:
        await anyio.to_thread.run_sync(thread.join, abandon_on_cancel=True)
        if failed:
            raise failed[0]
        msg = "the web view stopped (the lines above say why)"
        raise OrchestratorError(msg)
    finally:
        server.should_exit = True
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(thread.join, STOP_WAIT)
        sock.close()


def serve(opener: OpenStore, options: WebOptions, *,
          ready: Callable[[str], None] = print) -> None:
    """Serve the web view of the store `opener` opens until interrupted."""
    sock = web_socket(options)
    app = _app(opener, options, sock,
               ready=lambda: ready(options.banner(sock) + " (Ctrl-C stops)"))
    server = _Server.make(app, lifespan="on")
    try:
        asyncio.run(server.serve(sockets=[sock]))
    finally:
        sock.close()
