"""The HTTP plumbing both servers share (the local API, the web view): which hosts are
loopback, a listening socket refused in one line, and uvicorn's HTTP/1.1 protocol with a
deadline for a request's headers (uvicorn alone would wait for ever on a client that never
sends them: slowloris). Neither server imports the other; both import this.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import socket

from uvicorn.protocols.http.h11_impl import H11Protocol

from orchestrator.errors import ConfigError

__all__ = ["TimelyH11", "is_loopback", "listen"]


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


_TIMED_OUT = (b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
              b"connection: close\r\ncontent-length: 88\r\n\r\n"
              b'{"error": {"message": "the request headers took too long to arrive", '
              b'"type": "timeout"}}')


class TimelyH11(H11Protocol):
    """uvicorn's HTTP/1.1 protocol with a deadline for each request's headers: from the
    moment the connection opens, or the previous response ends, until a request has come."""

    header_timeout = 30.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)  # type: ignore[arg-type]
        self._deadline: asyncio.TimerHandle | None = None
        self._watch()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._watch()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._watch()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        super().connection_lost(exc)

    def _watch(self) -> None:
        waiting = self.cycle is None or self.cycle.response_complete
        if waiting and self._deadline is None:
            self._deadline = self.loop.call_later(self.header_timeout, self._too_slow)
        elif not waiting and self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _too_slow(self) -> None:
        self._deadline = None
        if not self.transport.is_closing() and (self.cycle is None
                                                or self.cycle.response_complete):
            self.transport.write(_TIMED_OUT)
            self.transport.close()


def listen(host: str, port: int) -> socket.socket:
    """A listening socket on host:port; ConfigError, in one line, if it cannot be had."""
    try:
        return socket.create_server((host, port), family=socket.AF_INET6 if ":" in host
                                    else socket.AF_INET, reuse_port=False)
    except OSError as exc:
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        msg = f"cannot listen on {host}:{port}: {reason}"
        raise ConfigError(msg) from None
