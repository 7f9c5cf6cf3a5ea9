"""Files too large for one request: Together's multipart upload.

`POST /v1/files/multipart/initiate` `{file_name, file_size, num_parts, purpose, file_type,
checksum}` answers `{upload_id, file_id, parts: [{PartNumber, URL, Headers}]}` (or 409 with the
existing `file_id` when the checksum's bytes are there or on their way, as a single upload
would); each part is `PUT` to its URL (no API key: the URL carries a token, valid for
`upload_url_ttl` from the initiate) and answered with its MD5 as `ETag`, as S3 does; a part
sent again replaces the first, and a `Content-MD5` that does not match is refused. `POST
.../complete` `{upload_id, file_id, parts: [{part_number, etag}]}` joins the parts (streamed,
never in memory), checks the whole file's SHA-256 against the declared checksum, checks the
data and returns `{"file": FileResponse}`; completing again returns the same file. `POST
.../abort` forgets the upload and its parts.
"""

from __future__ import annotations

import base64
import binascii
import uuid
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import anyio
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from orchestrator.localapi.errors import APIError, bad_request, not_found
from orchestrator.localapi.files import (
    announce,
    check_file_type,
    check_purpose,
    file_json,
    is_stale,
    process_file,
    store_stream,
)
from orchestrator.localapi.handlers import api_of, json_body, same_secret
from orchestrator.localapi.responses import JSONResponse
from orchestrator.protocol.datacheck import MAX_FILE_BYTES

if TYPE_CHECKING:
    from pathlib import Path

    from orchestrator.localapi.app import LocalAPI

__all__ = ["MAX_PARTS", "ROUTES", "check_parts", "part_path"]

MAX_PARTS = 250
"""At most this many parts per upload, as Together (and S3's practice there)."""


def _int(body: dict[str, Any], key: str, low: int, high: int) -> int:
    value = body.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise bad_request(f"{key} must be an integer from {low} to {high}", key)
    return value


def part_path(api: LocalAPI, upload_id: str, number: int) -> Path:
    """Where a part of an upload in parts waits for its upload's completion."""
    return api.state.files_dir / f"{upload_id}-part{number}"


def check_parts(api: LocalAPI, upload_id: str, num_parts: int, claimed: dict[int, str], *,
                what: str, term: str, param: str) -> dict[int, dict[str, Any]]:
    """The parts of an upload (1 to `num_parts`) as received, once every one has arrived
    and `claimed` (part number: its ETag, as the client heard it) lists exactly them; a 400
    naming `param` (and `what`, a file's path) otherwise."""
    received = api.state.parts(upload_id)
    wanted = range(1, num_parts + 1)
    missing = [n for n in wanted if n not in received]
    if missing:
        raise bad_request(f"{what}parts not received: {', '.join(map(str, missing[:10]))}"
                          + (" ..." if len(missing) > 10 else ""), param)
    wrong = [n for n in wanted if claimed.get(n) != received[n]["etag"]]
    if wrong or set(claimed) - set(wanted):
        raise bad_request(f"{what}the parts listed do not match the parts received (part "
                          f"{(wrong or sorted(set(claimed) - set(wanted)))[0]}: its {term})",
                          param)
    return received


async def initiate(request: Request) -> Response:
    api = api_of(request)
    body = await json_body(request)
    name = body.get("file_name")
    if not isinstance(name, str) or not name:
        raise bad_request("file_name is required", "file_name")
    size = _int(body, "file_size", 1, MAX_FILE_BYTES)
    parts = _int(body, "num_parts", 1, MAX_PARTS)
    if parts > size:
        raise bad_request(f"num_parts ({parts}) is more than the file's bytes ({size})",
                          "num_parts")
    purpose = check_purpose(body.get("purpose") if isinstance(body.get("purpose"), str)
                            else None)
    file_type = check_file_type(name, body.get("file_type") if isinstance(
        body.get("file_type"), str) else None)
    checksum = body.get("checksum")
    checksum = checksum.lower() if isinstance(checksum, str) and checksum else None
    file_id, token = announce(api, name=name, purpose=purpose, file_type=file_type,
                              checksum=checksum)
    upload_id = f"upload-{uuid.uuid4()}"
    api.state.add_multipart({"upload_id": upload_id, "file_id": file_id, "num_parts": parts,
                             "file_size": size})
    root = str(request.base_url).rstrip("/")
    return JSONResponse({"upload_id": upload_id, "file_id": file_id, "parts": [
        {"PartNumber": n, "URL": f"{root}/uploads/{file_id}/parts/{n}?upload_id={upload_id}"
                                 f"&token={token}", "Headers": {}}
        for n in range(1, parts + 1)]})


def _open_upload(api: LocalAPI, upload_id: str, file_id: str) -> dict[str, Any]:
    """The multipart upload `upload_id` of `file_id`, still open; 404 otherwise."""
    upload = api.state.multipart(upload_id)
    if upload is None or upload["file_id"] != file_id:
        raise not_found(f"no multipart upload {upload_id} of file {file_id} (completed, "
                        "aborted, or never begun)", "upload_id")
    return upload


async def receive_part(request: Request) -> Response:
    """A part's bytes, at the URL the initiate gave: stored, answered with their MD5."""
    api = api_of(request)
    file_id = request.path_params["file_id"]
    row = api.state.file(file_id)
    upload_id = request.query_params.get("upload_id", "")
    if row is None or row["state"] != "awaiting_upload" or is_stale(api, row) or \
            not same_secret(row["upload_token"], request.query_params.get("token", "")):
        raise APIError(403, "invalid or expired upload URL", type_="forbidden")
    upload = _open_upload(api, upload_id, file_id)
    number = request.path_params["number"]
    if not 1 <= number <= upload["num_parts"]:
        raise bad_request(f"part {number} is not a part of this upload (1 to "
                          f"{upload['num_parts']})", "part_number")
    expected = None
    given = request.headers.get("content-md5")
    if given:
        try:
            expected = base64.b64decode(given, validate=True).hex()
        except (binascii.Error, ValueError):
            raise bad_request("Content-MD5 must be the part's MD5, base64", "Content-MD5") \
                from None
    size, etag = await store_stream(request.stream(), part_path(api, upload_id, number),
                                    expected=expected, algorithm="md5")
    api.state.put_part(upload_id, number, etag, size)
    return Response(status_code=200, headers={"ETag": f'"{etag}"'})


def _ids(body: dict[str, Any]) -> tuple[str, str]:
    upload_id, file_id = body.get("upload_id"), body.get("file_id")
    if not isinstance(upload_id, str) or not isinstance(file_id, str):
        raise bad_request("upload_id and file_id are required", "upload_id")
    return upload_id, file_id


async def complete(request: Request) -> Response:
    api = api_of(request)
    body = await json_body(request)
    upload_id, file_id = _ids(body)
    upload = api.state.multipart(upload_id)
    if upload is None:
        done = api.state.file(file_id)
        if done is not None and done["state"] == "processed" and \
                api.state.completed_multipart(upload_id) == file_id:
            return JSONResponse({"file": file_json(done)})  # a complete sent again
    upload = _open_upload(api, upload_id, file_id)
    listed = body.get("parts")
    if not isinstance(listed, list) or not all(
            isinstance(p, dict) and isinstance(p.get("part_number"), int)
            and isinstance(p.get("etag"), str) for p in listed):
        raise bad_request("parts must be a list of {part_number, etag}", "parts")
    claimed = {p["part_number"]: p["etag"].strip('"') for p in listed}
    received = check_parts(api, upload_id, upload["num_parts"], claimed, what="", term="etag",
                           param="parts")
    wanted = range(1, upload["num_parts"] + 1)
    total = sum(part["bytes"] for part in received.values())
    if total != upload["file_size"]:
        raise bad_request(f"the parts hold {total} bytes; file_size was {upload['file_size']}",
                          "file_size")
    row = api.state.file(file_id)
    assert row is not None  # the upload row is removed with its file

    async def joined() -> AsyncIterator[bytes]:
        for n in wanted:
            async with await anyio.open_file(part_path(api, upload_id, n), "rb") as part:
                while chunk := await part.read(1 << 20):
                    yield chunk

    size, checksum = await store_stream(joined(), api.state.file_path(file_id),
                                        expected=row["checksum"])
    api.state.update_file(file_id, state="uploaded", bytes=size, checksum=checksum)
    _forget(api, upload_id, upload["num_parts"], completed=file_id)
    return JSONResponse({"file": await process_file(api, file_id)})


def _forget(api: LocalAPI, upload_id: str, parts: int, *, completed: str | None) -> None:
    for n in range(1, parts + 1):
        part_path(api, upload_id, n).unlink(missing_ok=True)
    api.state.close_multipart(upload_id, completed=completed)


async def abort(request: Request) -> Response:
    api = api_of(request)
    upload_id, file_id = _ids(await json_body(request))
    upload = _open_upload(api, upload_id, file_id)
    _forget(api, upload_id, upload["num_parts"], completed=None)
    api.state.delete_file(file_id)
    return JSONResponse({"upload_id": upload_id, "file_id": file_id, "status": "aborted"})


ROUTES = [
    Route("/v1/files/multipart/initiate", initiate, methods=["POST"]),
    Route("/v1/files/multipart/complete", complete, methods=["POST"]),
    Route("/v1/files/multipart/abort", abort, methods=["POST"]),
    Route("/uploads/{file_id}/parts/{number:int}", receive_part, methods=["PUT"]),
]
