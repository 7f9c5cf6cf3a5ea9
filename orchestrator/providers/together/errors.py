"""The one place where httpx's exceptions and Together's error responses become ours.

Who reacts decides the class: a fault that may pass (connection trouble, 408, 409, 429, 5xx)
is a TransientError for the step's retry policy, carrying the server's Retry-After when it
sent one; anything else the API refuses is permanent and carries the API's own message. A 401
says how to set the key. No error message ever includes the key.
"""

from __future__ import annotations

import email.utils
import time
from typing import Any

import httpx

from orchestrator.errors import PermanentError, ProviderUnavailable, RateLimited, StepError

__all__ = [
    "ModelNameTaken",
    "NotFound",
    "TogetherAPIError",
    "error_from_response",
    "error_from_transport",
    "retry_after",
]


class TogetherAPIError(PermanentError):
    """The API refused the request for good; `status`, `type` and `param` say how."""

    def __init__(self, message: str, *, status: int, type_: str | None = None,
                 param: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.type = type_
        self.param = param


class NotFound(TogetherAPIError):
    """404: no such file, job or model."""


class ModelNameTaken(TogetherAPIError):
    """A model or adapter with this name already exists in the account."""


def retry_after(response: httpx.Response) -> float | None:
    """Seconds the server asked us to wait: `retry-after-ms`, else `retry-after` (seconds or
    an HTTP date)."""
    millis = response.headers.get("retry-after-ms")
    if millis:
        try:
            return max(0.0, float(millis) / 1000)
        except ValueError:
            pass
    value = response.headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _details(response: httpx.Response) -> tuple[str, str | None, str | None]:
    """The API's message, error type and param, whatever shape the body has."""
    try:
        body: Any = response.json()
    except ValueError:
        text = response.text.strip()
        return (text[:300] or response.reason_phrase or "no details"), None, None
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict):
            return (str(error.get("message") or "no details"), error.get("type"),
                    error.get("param"))
        if isinstance(error, str):
            return error, None, None
        if isinstance(body.get("message"), str):
            return body["message"], None, None
    return str(body)[:300], None, None


def error_from_response(response: httpx.Response) -> StepError:
    """The error for a response that is not a success."""
    status = response.status_code
    message, kind, param = _details(response)
    where = f"{response.request.method} {response.request.url.path}"
    if status == 401:
        return TogetherAPIError(
            f"the provider rejected the API key (HTTP 401: {message}). Set TOGETHER_API_KEY "
            "to a valid key (https://api.together.ai/settings/api-keys), or run with "
            "--provider local", status=status, type_=kind, param=param)
    if status == 429:
        return RateLimited(f"rate limited (HTTP 429 on {where}): {message}",
                           retry_after=retry_after(response))
    if status in (400, 409) and "already exists" in message.lower() and \
            param in (None, "model_name", "name"):
        return ModelNameTaken(message, status=status, type_=kind, param=param)
    if status in (408, 409) or status >= 500:
        return ProviderUnavailable(f"provider error (HTTP {status} on {where}): {message}",
                                   retry_after=retry_after(response))
    if status == 404:
        return NotFound(f"{message} (HTTP 404 on {where})", status=status, type_=kind,
                        param=param)
    suffix = f" [{param}]" if param else ""
    return TogetherAPIError(f"{message}{suffix} (HTTP {status} on {where})", status=status,
                            type_=kind, param=param)


def error_from_transport(exc: httpx.TransportError, url: str) -> ProviderUnavailable:
    """The error for a request that got no (complete) response."""
    if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
        what = f"cannot connect to {url}"
    elif isinstance(exc, httpx.TimeoutException):
        what = f"timed out waiting for {url}"
    else:
        what = f"connection to {url} failed"
    detail = str(exc) or type(exc).__name__
    return ProviderUnavailable(f"{what}: {detail}")
