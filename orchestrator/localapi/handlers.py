"""What every route handler of the local API needs: the API serving the request, its body.

Handlers are plain functions of a Starlette request; they find the `LocalAPI` through the
app's state, so route modules import this, not the app that assembles them.
"""

from __future__ import annotations

import re
import secrets
from typing import TYPE_CHECKING, Any

import orjson
from starlette.requests import Request

from orchestrator.localapi.errors import APIError, bad_request

if TYPE_CHECKING:
    from orchestrator.localapi.app import LocalAPI

__all__ = ["api_of", "byte_ranges", "json_body", "same_secret"]

_RANGE = re.compile(r"(\d{1,18})-(\d{0,18})|-(\d{1,18})")


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


def byte_ranges(request: Request, size: int) -> list[tuple[int, int]] | None:
    """The byte ranges a `Range` header asks of `size` bytes, as (first, last) inclusive;
    None without one. Anything it cannot serve is a 416 in Together's words, saying why: not
    `bytes=FIRST-[LAST]` or `bytes=-SUFFIX`, a last byte before the first (`bytes=5-2`), or a
    first byte past the end."""
    header = request.headers.get("range")
    if header is None:
        return None
    unit, _, specs = header.partition("=")
    ranges = []
    for spec in specs.split(",") if unit.strip() == "bytes" else [None]:
        match = _RANGE.fullmatch(spec.strip()) if spec is not None else None
        if match is None:
            raise _unsatisfiable(size, "use bytes=FIRST-[LAST] or bytes=-SUFFIX")
        if match.group(3) is not None:
            first, last = max(0, size - int(match.group(3))), size - 1
        else:
            first = int(match.group(1))
            last = min(size - 1, int(match.group(2))) if match.group(2) else size - 1
            if match.group(2) and int(match.group(2)) < first:
                raise _unsatisfiable(size, f"its last byte {match.group(2)} is before its "
                                           f"first {first}")
        if first >= size or last < first:
            raise _unsatisfiable(size, f"the content has {size} bytes")
        ranges.append((first, last))
    return ranges


def _unsatisfiable(size: int, why: str) -> APIError:
    return APIError(416, f"requested range not satisfiable: {why}", type_="invalid_range",
                    headers={"Content-Range": f"bytes */{size}"})


def same_secret(expected: str | None, given: str) -> bool:
    """`given` (from a request: any text at all) is the token `expected`, compared in
    constant time as bytes (`compare_digest` refuses non-ASCII text with a TypeError)."""
    return expected is not None and secrets.compare_digest(
        expected.encode(), given.encode("utf-8", "surrogatepass"))
