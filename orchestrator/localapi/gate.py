"""The gate every request passes before any handler of the local API.

It accepts `/v1/v1/...`, `/v1/v2/...` and `/v1/v3/...` as `/v1/...`, `/v2/...`, `/v3/...`
(Together's SDK 3.x adds its own version to a base URL that already ends in `/v1`), bounds
each request body in size and time, adds configured latency, injects faults (429/503 with
Retry-After, 500, or a connection dropped after the request was handled), and checks the
`Authorization: Bearer` key. Per-request headers override the configured faults for tests:
`X-Local-Fault: 429|500|503|drop|none`, `X-Local-Latency: 200ms`.
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Awaitable, Callable, MutableMapping
from typing import TYPE_CHECKING, Any

import anyio
from starlette.responses import Response

from orchestrator.durations import parse_duration
from orchestrator.inputfiles import format_size
from orchestrator.localapi.config import FAULT_KINDS
from orchestrator.localapi.errors import APIError, ConnectionDropped, error_response

if TYPE_CHECKING:
    from orchestrator.localapi.app import LocalAPI

__all__ = ["MAX_TEST_LATENCY", "UPLOAD_PATHS", "Gate"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

MAX_TEST_LATENCY = 60.0
"""A request may ask to be slowed down this much at most (X-Local-Latency)."""
UPLOAD_PATHS = ("/uploads/", "/v1/files/upload")
"""Where file bytes arrive: bounded by `max_upload_bytes`, every other body by
`max_request_bytes`."""


def _too_large(limit: int) -> APIError:
    return APIError(413, f"the request body is larger than {format_size(limit)}",
                    type_="request_too_large", headers={"Connection": "close"})


class _BoundedBody:
    """An ASGI `receive` that bounds the request body: in size (413: at the first read when
    the declared Content-Length is too large, before a byte is read; else as it arrives), in
    how long it may pause (408), and, unless it is a file upload, in how long it may take in
    all from its first read (408; injected latency comes before). The refusal is raised in
    the handler that reads, so a handler can undo what the request started (an upload's
    announcement). Once the body is in, it passes through untouched (a streamed response
    listens on it for the client's disconnect, which may take any time)."""

    def __init__(self, receive: Receive, *, limit: int, declared: str | None, pause: float,
                 whole: float | None) -> None:
        self._receive = receive
        self._limit = limit
        self._declared = declared
        self._pause = pause
        self._whole = whole
        self._deadline: float | None = None
        self._received = 0
        self._done = False

    async def __call__(self) -> Message:
        if self._done:
            return await self._receive()
        declared, self._declared = self._declared, None
        if declared is not None and (not declared.isdigit() or len(declared) > 18
                                     or int(declared) > self._limit):
            raise _too_large(self._limit)
        wait = self._pause
        if self._whole is not None:
            if self._deadline is None:
                self._deadline = anyio.current_time() + self._whole
            wait = min(wait, self._deadline - anyio.current_time())
        with anyio.move_on_after(max(wait, 0.0)) as waited:
            message = await self._receive()
        if waited.cancelled_caught:
            raise APIError(408, f"the request took longer than {self._pause:g}s to arrive",
                           type_="request_timeout", headers={"Connection": "close"})
        if message["type"] == "http.request":
            self._received += len(message.get("body", b""))
            if self._received > self._limit:
                raise _too_large(self._limit)
            self._done = not message.get("more_body", False)
        else:
            self._done = True
        return message


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return str(value.decode("latin-1"))
    return None


class Gate:
    """ASGI middleware in front of every route; see the module docstring."""

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]],
                 api: LocalAPI) -> None:
        self.app = app
        self.api = api

    def _draw_fault(self) -> str | None:
        roll = self.api.rng.random()
        total = 0.0
        for kind in FAULT_KINDS:
            total += self.api.config.faults.get(kind, 0.0)
            if roll < total:
                return kind
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        if path.startswith(("/v1/v1/", "/v1/v2/", "/v1/v3/")):
            scope = {**scope, "path": path[3:], "raw_path": scope.get("raw_path", b"")[3:]}
            path = scope["path"]
        config = self.api.config
        upload = path.startswith(UPLOAD_PATHS)
        receive = _BoundedBody(
            receive, limit=config.max_upload_bytes if upload else config.max_request_bytes,
            declared=_header(scope, b"content-length"), pause=config.request_timeout,
            whole=None if upload else config.request_timeout)
        if not path.startswith(("/v1/", "/v0/", "/v2/", "/v3/", "/uploads/")):
            await self.app(scope, receive, send)
            return
        latency = _header(scope, b"x-local-latency")
        forced = _header(scope, b"x-local-fault")
        problem = None
        if forced is not None and forced not in (*FAULT_KINDS, "none"):
            problem = f"X-Local-Fault must be one of {', '.join(FAULT_KINDS)}, none"
        try:
            delay = parse_duration(latency) if latency else config.latency
        except ValueError as exc:
            problem = str(exc)
        else:
            if latency and delay > MAX_TEST_LATENCY:
                problem = f"X-Local-Latency is at most {MAX_TEST_LATENCY:g}s"
        if problem is not None:
            await error_response(400, f"bad test header: {problem}")(scope, receive, send)
            return
        if delay:
            await anyio.sleep(delay)
        fault = (None if forced == "none" else forced) if forced else self._draw_fault()
        if fault in ("429", "503"):
            retry = config.retry_after
            headers = {"retry-after": str(max(1, math.ceil(retry))),
                       "retry-after-ms": str(int(retry * 1000))}
            if fault == "429":
                headers.update({"x-ratelimit-limit": "60", "x-ratelimit-remaining": "0",
                                "x-ratelimit-reset": str(max(1, math.ceil(retry)))})
                response = error_response(429, "rate limit exceeded (injected by the local API)",
                                          type_="rate_limit_exceeded", headers=headers)
            else:
                response = error_response(503, "the server is overloaded (injected by the local "
                                               "API)", type_="service_unavailable",
                                          headers=headers)
            await response(scope, receive, send)
            return
        if fault == "500":
            await error_response(500, "internal server error (injected by the local API)",
                                 type_="server_error")(scope, receive, send)
            return
        if not path.startswith("/uploads/"):
            denied = self._check_key(scope)
            if denied is not None:
                await denied(scope, receive, send)
                return
        if fault == "drop":
            await self._handle_then_drop(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def _check_key(self, scope: Scope) -> Response | None:
        given = _header(scope, b"authorization")
        if not given:
            return error_response(401, "missing API key: send Authorization: Bearer <key> "
                                       "(the local API's key is the setting local_api_key)",
                                  type_="invalid_api_key")
        scheme, _, key = given.partition(" ")
        if scheme.lower() != "bearer" or not secrets.compare_digest(
                key.strip().encode(), self.api.config.api_key.encode()):
            return error_response(401, "invalid API key provided", type_="invalid_api_key")
        return None

    async def _handle_then_drop(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Run the request to completion, then lose the response: the nastiest network fault."""
        sent: list[Message] = []

        async def capture(message: Message) -> None:
            sent.append(message)

        await self.app(scope, receive, capture)
        start = next((m for m in sent if m["type"] == "http.response.start"), None)
        if start is not None:
            await send(start)
            await send({"type": "http.response.body", "body": b"", "more_body": True})
        msg = "connection dropped after the request was handled (injected by the local API)"
        raise ConnectionDropped(msg)

