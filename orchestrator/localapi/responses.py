"""JSON responses encoded with orjson: measured 6 µs against json's 100 µs for a job with its
events, the largest share of serving a status poll (bench/localapi_status.py). And `iso`, the
API's way of writing a time, for every handler."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
from starlette.responses import JSONResponse as _StarletteJSON

__all__ = ["JSONResponse", "iso"]


class JSONResponse(_StarletteJSON):
    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def iso(ts: float | None) -> str | None:
    """Epoch seconds as the API writes times: ISO 8601, milliseconds, `Z`."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z")
