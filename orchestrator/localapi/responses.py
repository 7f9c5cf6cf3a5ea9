"""JSON responses encoded with orjson: measured 6 µs against json's 100 µs for a job with its
events, the largest share of serving a status poll (bench/localapi_status.py)."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import JSONResponse as _StarletteJSON

__all__ = ["JSONResponse"]


class JSONResponse(_StarletteJSON):
    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)
