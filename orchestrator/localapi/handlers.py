"""What every route handler of the local API needs: the API serving the request, its body.

Handlers are plain functions of a Starlette request; they find the `LocalAPI` through the
app's state, so route modules import this, not the app that assembles them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson
from starlette.requests import Request

from orchestrator.localapi.errors import bad_request

if TYPE_CHECKING:
    from orchestrator.localapi.app import LocalAPI

__all__ = ["api_of", "json_body"]


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
