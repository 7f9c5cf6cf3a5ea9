"""What stands between a request and the web view's routes: its headers, its Host, its token.

Each gate is a plain ASGI wrapper, applied outside everything else (`guarded_app`), so that
whatever answers a request, a route, a gate's refusal or Starlette's last-resort 500, answers
with the same security headers.

- **Host.** A page on loopback is still reachable from a browser visiting another site, by DNS
  rebinding: `evil.example` resolves to 127.0.0.1 once the page loaded, and its script reads
  the web view as its own origin. The browser then sends `Host: evil.example`, which this
  server refuses (421) before any route runs, actions included: it answers only to the names
  it is reached by (its own address and port, `localhost`; off loopback, the hosts the user
  lists).
- **Token.** Off loopback every request carries the token (a cookie set by a first visit with
  `?token=`, or `Authorization: Bearer`), compared in constant time and never logged.
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Iterable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response

__all__ = ["SECURITY_HEADERS", "allowed_hosts", "guarded_app"]

SECURITY_HEADERS = [
    # Only this server's own script, styles and images; no frames, no plugins: a value a
    # step or a provider stored can never bring code in, even past the escaping.
    (b"content-security-policy", b"default-src 'none'; script-src 'self'; style-src 'self'; "
                                 b"img-src 'self' data:; connect-src 'self'; "
                                 b"form-action 'self'; frame-ancestors 'none'; base-uri 'none'"),
    (b"x-content-type-options", b"nosniff"),
    # Not no-referrer: with it, a browser sends `Origin: null` on the page's own forms, which
    # the CSRF check must refuse. same-origin never shows an address to another site.
    (b"referrer-policy", b"same-origin"),
]

LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")


def _bracketed(host: str) -> str:
    """An address as it appears in a Host header: IPv6 in brackets."""
    try:
        return f"[{host}]" if ipaddress.ip_address(host).version == 6 else host
    except ValueError:
        return host


def allowed_hosts(host: str, port: int, listed: Iterable[str] = ()) -> frozenset[str]:
    """The Host values a server listening on host:port answers to: its own address with the
    port, the loopback names when it listens on loopback, and each of `listed` (a name, with
    the port or without it, as a proxy in front may send it; or `name:port` as given)."""
    names = {_bracketed(host).lower()}
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if loopback:
        names.update(LOOPBACK_NAMES)
    hosts = {f"{name}:{port}" for name in names}
    if port == 80:
        hosts.update(names)
    for given in listed:
        name = given.strip().lower()
        if not name:
            continue
        if name.rsplit(":", 1)[-1].isdigit() and not name.endswith("]"):
            hosts.add(name)
        else:
            hosts.update({name, f"{name}:{port}"})
    return frozenset(hosts)


def _header(scope: Any, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return bytes(value).decode("latin-1")
    return None


class _Secured:
    """Every response carries SECURITY_HEADERS, a 500 included."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Any) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []),
                                                  *SECURITY_HEADERS]}
            await send(message)

        await self.app(scope, receive, with_headers)


class _HostGate:
    """Requests whose Host is not one of this server's names are refused (421) before any
    route runs: the guard against DNS rebinding (see the module docstring)."""

    def __init__(self, app: Any, *, hosts: frozenset[str]) -> None:
        self.app = app
        self._hosts = hosts
        self._named = ", ".join(sorted(hosts)[:4])

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = (_header(scope, b"host") or "").strip().lower()
        if given in self._hosts:
            await self.app(scope, receive, send)
            return
        shown = given[:60].encode("ascii", "backslashreplace").decode() or "(none)"
        response = PlainTextResponse(
            f"this web view answers to {self._named}, not to the host {shown!r} "
            "(it refuses other names: a guard against DNS rebinding; list the names it is "
            "reached by with --allow-host)\n", status_code=421)
        await response(scope, receive, send)


class _TokenGate:
    """Every request carries the token, or is refused (401) before any handler runs."""

    COOKIE = "orchestrator_ui"

    def __init__(self, app: Any, *, token: str) -> None:
        self.app = app
        self._token = token.encode()

    def _matches(self, given: str | None) -> bool:
        return given is not None and hmac.compare_digest(given.encode(), self._token)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        bearer = request.headers.get("authorization", "")
        if self._matches(request.cookies.get(self.COOKIE)) or (
                bearer.startswith("Bearer ") and self._matches(bearer[7:])):
            await self.app(scope, receive, send)
            return
        response: Response
        if self._matches(request.query_params.get("token")):
            # A first visit with ?token=: remember it, and take it out of the address bar.
            response = RedirectResponse(request.url.path, status_code=303)
            response.set_cookie(self.COOKIE, self._token.decode(), httponly=True,
                                samesite="strict")
        else:
            response = JSONResponse({"error": {"message": "this web view needs its token: "
                                               "open it once with ?token=... (ORCH_UI_TOKEN, "
                                               "or the file setting ui_token_file names)"}},
                                    status_code=401)
        await response(scope, receive, send)


def guarded_app(app: Any, *, hosts: frozenset[str] | None, token: str | None) -> Any:
    """`app` behind its gates, outermost first: security headers on every answer, then the
    Host check (when `hosts` is given: a server always gives it; an app called in process,
    as tests do, may not), then the token (when there is one)."""
    if token:
        app = _TokenGate(app, token=token)
    if hosts is not None:
        app = _HostGate(app, hosts=hosts)
    return _Secured(app)
