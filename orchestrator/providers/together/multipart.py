"""Sending a file in parts (Together's multipart upload), resumably.

The client initiates the upload and completes it through the API; this module plans the parts
and sends them to the URLs the initiate gave. Each part is streamed from the file (never held
in memory) with its MD5 computed on the way, and must come back with that MD5 as its ETag, or
it is sent again: a part has its own retries, as the SDKs give it. What has been sent is a
`MultipartState`, whose checkpoint fields are handed to a callback after the initiate (the
upload's ids and part URLs, once) and after every part (that part's ETag alone), so a caller
that merges them into a step's checkpoint can continue a killed upload with the parts that are
missing, and no others, and its event log holds each fact once.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import anyio
import httpx

from orchestrator.errors import PermanentError, ProviderUnavailable, TransientError, first_failure
from orchestrator.providers.together.errors import error_from_response, error_from_transport

__all__ = ["MAX_PARTS", "MultipartState", "PartsExpired", "plan_parts", "send_parts"]

CHECKPOINT_KEY = "multipart"
PART_KEY = "multipart_part_"
"""A sent part's ETag is checkpointed under PART_KEY + its number, beside CHECKPOINT_KEY."""

MAX_PARTS = 250
"""Together's limit on parts per upload (S3's practice); larger files get larger parts."""
PART_TIMEOUT = httpx.Timeout(300.0, write=3600.0)
"""Per part, as Together's SDK: 5 minutes to connect and answer, an hour to send."""


class PartsExpired(PermanentError):
    """The upload's part URLs no longer take parts (expired, or the upload was aborted or
    completed): it must begin again."""


@dataclasses.dataclass
class MultipartState:
    """An upload in progress: its ids, how the file is cut, where each part goes, and the
    ETag of every part sent so far. JSON-able, to be checkpointed."""

    upload_id: str
    file_id: str
    part_size: int
    urls: dict[int, tuple[str, dict[str, str]]]
    sent: dict[int, str] = dataclasses.field(default_factory=dict)
    of: tuple[int, str | None] = (0, None)
    """The size and SHA-256 of the file being sent: a changed file cannot continue."""

    def checkpoint_fields(self, *, replacing: Iterable[str] = ()) -> dict[str, Any]:
        """The fields that record this upload in a checkpoint (clearing `replacing`, the
        part keys of an upload it replaces)."""
        return {**{key: None for key in replacing if key.startswith(PART_KEY)},
                CHECKPOINT_KEY: {
                    "upload_id": self.upload_id, "file_id": self.file_id,
                    "part_size": self.part_size, "of": list(self.of),
                    "urls": {str(n): [url, hdrs] for n, (url, hdrs) in self.urls.items()}}}

    @staticmethod
    def part_fields(number: int, etag: str) -> dict[str, Any]:
        """The field that records one sent part."""
        return {f"{PART_KEY}{number}": etag}

    @classmethod
    def from_checkpoint(cls, saved: Mapping[str, Any]) -> MultipartState | None:
        """The upload a checkpoint records, with the parts it saw sent; None if it holds none."""
        data = saved.get(CHECKPOINT_KEY)
        if not isinstance(data, Mapping):
            return None
        sent = {int(key.removeprefix(PART_KEY)): str(etag) for key, etag in saved.items()
                if key.startswith(PART_KEY) and etag}
        return cls(upload_id=str(data["upload_id"]), file_id=str(data["file_id"]),
                   part_size=int(data["part_size"]),
                   urls={int(n): (str(u), dict(h)) for n, (u, h) in data["urls"].items()},
                   sent=sent, of=(int(data["of"][0]), data["of"][1]))

    @classmethod
    def from_initiate(cls, body: Mapping[str, Any], part_size: int,
                      of: tuple[int, str | None]) -> MultipartState:
        """The state of a fresh upload, from the initiate's answer (either spelling of its
        keys, as the SDKs accept)."""
        upload_id, file_id = body.get("upload_id"), body.get("file_id")
        parts = body.get("parts")
        if not upload_id or not file_id or not isinstance(parts, list):
            msg = "the provider's multipart initiate answer lacks upload_id, file_id or parts"
            raise ProviderUnavailable(msg)
        urls = {}
        for part in parts:
            number = part.get("PartNumber", part.get("part_number"))
            url = part.get("URL", part.get("UploadURL"))
            if not isinstance(number, int) or not isinstance(url, str):
                msg = "the provider's multipart initiate answer has a part without its URL"
                raise ProviderUnavailable(msg)
            urls[number] = (url, dict(part.get("Headers") or {}))
        return cls(upload_id=str(upload_id), file_id=str(file_id), part_size=part_size,
                   urls=urls, of=of)

    def completion(self) -> list[dict[str, Any]]:
        """The parts to list in the complete request, in order."""
        return [{"part_number": n, "etag": self.sent[n]} for n in sorted(self.sent)]


def plan_parts(size: int, part_size: int) -> tuple[int, int]:
    """(part size, number of parts) for a file of `size` bytes: parts of `part_size`, larger
    where that would make more than MAX_PARTS."""
    if size <= part_size:
        return size, 1
    count = min(MAX_PARTS, math.ceil(size / part_size))
    size_each = math.ceil(size / count)
    return size_each, math.ceil(size / size_each)


async def _part_bytes(path: Path, offset: int, length: int,
                      digest: Any) -> AsyncIterator[bytes]:
    async with await anyio.open_file(path, "rb") as handle:
        await handle.seek(offset)
        left = length
        while left > 0:
            chunk = await handle.read(min(1 << 20, left))
            if not chunk:
                msg = f"{path} got shorter while it was being uploaded"
                raise PermanentError(msg)
            digest.update(chunk)
            left -= len(chunk)
            yield chunk


async def _send_part(http: httpx.AsyncClient, path: Path, state: MultipartState, number: int,
                     *, size: int, retries: int,
                     sleep: Callable[[float], Awaitable[None]]) -> str:
    """PUT one part, again on a transient fault or a wrong ETag; its ETag."""
    offset = (number - 1) * state.part_size
    length = min(state.part_size, size - offset)
    url, headers = state.urls[number]
    problem: TransientError | None = None
    for attempt in range(retries + 1):
        if attempt:
            await sleep(min(8.0, 0.5 * 2 ** attempt))
        digest = hashlib.md5(usedforsecurity=False)
        try:
            response = await http.put(url, content=_part_bytes(path, offset, length, digest),
                                      headers={**headers, "Content-Length": str(length)},
                                      timeout=PART_TIMEOUT)
        except httpx.TransportError as exc:
            problem = error_from_transport(exc, f"the URL of part {number}")
            continue
        if response.status_code in (403, 404):
            msg = f"the provider no longer takes part {number} (HTTP {response.status_code})"
            raise PartsExpired(msg)
        if response.status_code != 200:
            error = error_from_response(response)
            if not isinstance(error, TransientError):
                raise error
            problem = error
            continue
        etag: str = response.headers.get("etag", "").strip('"')
        if etag == digest.hexdigest():
            return etag
        problem = ProviderUnavailable(f"part {number} arrived damaged (ETag {etag or 'none'}, "
                                      f"sent MD5 {digest.hexdigest()})")
    assert problem is not None
    raise problem


async def send_parts(http: httpx.AsyncClient, path: Path, state: MultipartState, *,
                     concurrency: int, retries: int,
                     on_sent: Callable[[int, str, int], Awaitable[None]] | None = None,
                     sleep: Callable[[float], Awaitable[None]] = anyio.sleep) -> None:
    """Send every part of `state` not yet sent, `concurrency` at a time; after each, record
    its ETag in `state` and tell `on_sent` its number, its ETag and how many parts are sent
    (one call at a time)."""
    size = (await anyio.Path(path).stat()).st_size
    missing = iter(sorted(n for n in state.urls if n not in state.sent))
    recording = anyio.Lock()

    async def worker() -> None:
        for number in missing:  # one iterator shared by the workers: each part taken once
            etag = await _send_part(http, path, state, number, size=size, retries=retries,
                                    sleep=sleep)
            async with recording:
                state.sent[number] = etag
                if on_sent is not None:
                    await on_sent(number, etag, len(state.sent))

    try:
        async with anyio.create_task_group() as group:
            for _ in range(max(1, min(concurrency, len(state.urls)))):
                group.start_soon(worker)
    except BaseExceptionGroup as failed:
        # The first part that failed is the upload's error.
        first = first_failure(failed, anyio.get_cancelled_exc_class())
        if first is None:
            raise
        raise first from None
