"""The local Together-compatible API: one object holding its config, clock and state, and the
ASGI app that serves it (in-process through httpx, or over loopback through uvicorn).

`GET /v3/whoami` (not in the reference spec) answers a fixed local identity: Together's CLI
asks for it before any command that changes something.

Requests pass a *gate* before any handler: it accepts `/v1/v1/...` as `/v1/...` (Together's
SDK 3.x appends `/v1` to a base URL that already ends in it), adds configured latency, injects
faults (429/503 with Retry-After, 500, or a connection dropped after the request was handled),
and checks the `Authorization: Bearer` key. Per-request headers override the configured faults
for tests: `X-Local-Fault: 429|500|503|drop|none`, `X-Local-Latency: 200ms`.
"""

from __future__ import annotations

import math
import random
import secrets
import sqlite3
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import anyio
import orjson
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Match, Route

from orchestrator.durations import parse_duration
from orchestrator.errors import ConfigError
from orchestrator.inputfiles import format_size
from orchestrator.localapi.config import FAULT_KINDS, LocalAPIConfig
from orchestrator.localapi.errors import APIError, bad_request, error_response
from orchestrator.localapi.responses import JSONResponse
from orchestrator.localapi.state import LocalState

__all__ = ["ConnectionDropped", "LocalAPI", "api_of", "json_body"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

NOTICE = ("This is the orchestrator's local Together-compatible API. Fine-tuning is simulated: "
          "jobs progress by the clock and no model is trained; a fine-tuned model answers from "
          "its training examples.")


class ConnectionDropped(Exception):
    """Raised by the gate to drop a connection after the request was handled (fault injection)."""


class LocalAPI:
    """The local API's config, clock, random source and on-disk state, plus its ASGI `app`."""

    def __init__(self, config: LocalAPIConfig, *, clock: Callable[[], float] = time.time,
                 rng: random.Random | None = None) -> None:
        self.config = config
        self.clock = clock
        self.rng = rng or random.Random(config.fault_seed)
        self._state: LocalState | None = None
        self._lock = threading.Lock()
        starlette = Starlette(routes=_routes(), exception_handlers={
            APIError: _api_error, HTTPException: _http_error})
        starlette.state.api = self
        self.app = Gate(starlette, self)

    @property
    def state(self) -> LocalState:
        """The on-disk state, opened on first use (in-process clients never send a lifespan)."""
        if self._state is None:
            with self._lock:
                if self._state is None:
                    self._state = LocalState(self.config.data_dir)
        return self._state

    def check_state(self) -> None:
        """Open the on-disk state now and prove it writable: ConfigError, in one line, for a
        data folder that cannot hold it (instead of a 500 for every request later)."""
        where = self.config.data_dir
        try:
            state = self.state
            with tempfile.TemporaryFile(dir=state.files_dir):
                pass
            state.check_writable()
        except (OSError, sqlite3.Error) as exc:
            self.close()
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            msg = f"the local API's data folder {where} cannot be used: {reason}"
            raise ConfigError(msg) from None

    def close(self) -> None:
        if self._state is not None:
            self._state.close()
            self._state = None


def api_of(request: Request) -> LocalAPI:
    """The LocalAPI serving this request (handlers are plain functions of the request)."""
    api: LocalAPI = request.app.state.api
    return api


async def json_body(request: Request) -> dict[str, Any]:
    """The request's JSON object; a 400 in Together's words for anything else (orjson: a
    5,000-digit number or 100,000 levels of nesting are bad JSON, not a server error)."""
    try:
        body = orjson.loads(await request.body())
    except orjson.JSONDecodeError as exc:
        raise bad_request(f"the request body must be a JSON object ({exc.msg} at line "
                          f"{exc.lineno}, column {exc.colno})") from None
    if not isinstance(body, dict):
        raise bad_request("the request body must be a JSON object")
    return body


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, APIError)
    return exc.response()


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        return error_response(404, f"no such endpoint: {request.method} {request.url.path}",
                              type_="not_found")
    if exc.status_code == 405:
        allowed = _allowed_methods(request)
        return error_response(405, f"method {request.method} is not allowed on "
                                   f"{request.url.path} (allowed: {', '.join(allowed)})",
                              type_="method_not_allowed", headers={"Allow": ", ".join(allowed)})
    return error_response(exc.status_code, str(exc.detail))


def _allowed_methods(request: Request) -> list[str]:
    """Every method some route serves at this path (routes of one path are split by method,
    and the one Starlette refused with knows only its own)."""
    methods: set[str] = set()
    for route in request.app.routes:
        match, _ = route.matches({**request.scope, "method": "OPTIONS"})
        if match is not Match.NONE and isinstance(route, Route) and route.methods:
            methods |= route.methods
    return sorted(methods)


async def root(request: Request) -> Response:
    return JSONResponse({
        "name": "orchestrator local Together-compatible API",
        "simulated": True,
        "notice": NOTICE,
        "docs": str(request.url_for("docs")),
        "base_url": f"{str(request.base_url).rstrip('/')}/v1",
    })


async def whoami(request: Request) -> Response:
    """Who the key belongs to: Together's CLI asks before any command that changes things."""
    namespace = api_of(request).config.namespace
    return JSONResponse({
        "api_key_id": "key-local", "organization_id": "org-local",
        "organization_name": "local", "project_id": "proj-local", "project_name": namespace,
        "project_slug": namespace, "user_id": namespace,
    })


async def docs(request: Request) -> Response:
    from orchestrator.localapi import DOCS  # noqa: PLC0415

    return PlainTextResponse(DOCS)


def _routes() -> list[BaseRoute]:
    from orchestrator.localapi import files, finetunes, inference, models  # noqa: PLC0415

    # Routes are tried in order: the ones polled most (a job's status) come first.
    return [
        *finetunes.ROUTES,
        *inference.ROUTES,
        *files.ROUTES,
        *models.ROUTES,
        Route("/", root, name="root"),
        Route("/docs", docs, name="docs"),
        Route("/v3/whoami", whoami, methods=["GET"]),
    ]


# -- the gate --------------------------------------------------------------------------------

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
        if path.startswith("/v1/v1/"):
            scope = {**scope, "path": path[3:], "raw_path": scope.get("raw_path", b"")[3:]}
            path = scope["path"]
        config = self.api.config
        upload = path.startswith(UPLOAD_PATHS)
        receive = _BoundedBody(
            receive, limit=config.max_upload_bytes if upload else config.max_request_bytes,
            declared=_header(scope, b"content-length"), pause=config.request_timeout,
            whole=None if upload else config.request_timeout)
        if not path.startswith(("/v1/", "/v0/", "/v3/", "/uploads/")):
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

