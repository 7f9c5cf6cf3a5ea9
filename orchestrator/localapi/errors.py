"""Errors the way Together's API reports them: `{"error": {message, type, param, code}}`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from orchestrator.localapi.responses import JSONResponse

__all__ = ["APIError", "ConnectionDropped", "bad_request", "error_response", "not_found"]


class APIError(Exception):
    """Raised by a handler to answer with an ErrorData body and `status`."""

    def __init__(self, status: int, message: str, *, type_: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None,
                 headers: Mapping[str, str] | None = None,
                 extra: Mapping[str, Any] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type_
        self.param = param
        self.code = code
        self.headers = dict(headers or {})
        self.extra = dict(extra or {})

    def response(self) -> JSONResponse:
        body = {"error": {"message": self.message, "type": self.type, "param": self.param,
                          "code": self.code}, **self.extra}
        return JSONResponse(body, status_code=self.status, headers=self.headers)


def error_response(status: int, message: str, **kwargs: Any) -> JSONResponse:
    return APIError(status, message, **kwargs).response()


def bad_request(message: str, param: str | None = None) -> APIError:
    return APIError(400, message, param=param)


def not_found(message: str, param: str | None = None) -> APIError:
    return APIError(404, message, type_="not_found", param=param)


class ConnectionDropped(Exception):
    """Raised by the gate to drop a connection after the request was handled (fault injection)."""
