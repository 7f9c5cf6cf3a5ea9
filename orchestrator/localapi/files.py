"""Files: the SDKs' redirect upload flow, the spec's multipart upload, and the rest.

The SDK flow: `POST /v1/files` with the file's name, purpose, type and SHA-256 (no bytes)
answers 302 with `Location` (where to PUT the bytes) and `X-Together-File-Id`, or 409 with the
existing `file_id` when identical bytes are already there *or on their way* (announced by
another client less than `upload_url_ttl` ago; such a file shows `processing_status: PENDING`
and 0 bytes until they arrive); the client PUTs the bytes to `Location` (no API key: the URL
carries a token, valid for `upload_url_ttl`); `POST /v1/files/{id}/preprocess` checks the data
and returns the file. An announcement whose bytes never came is forgotten after that time, one
whose PUT was refused or cut short at once.
A fine-tune file that fails the check is kept, with `processing_status: INVALID_FORMAT` and a
`validation_report` naming every problem's line.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import uuid
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import anyio.to_thread
from starlette.datastructures import FormData, UploadFile
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Route

from orchestrator.localapi.errors import APIError, bad_request, not_found
from orchestrator.localapi.handlers import api_of, byte_ranges, same_secret
from orchestrator.localapi.responses import JSONResponse
from orchestrator.protocol.datacheck import DataReport, check_file

if TYPE_CHECKING:
    from orchestrator.localapi.app import LocalAPI

__all__ = ["FILE_TYPES", "ROUTES", "announce", "check_file_type", "check_purpose", "file_json",
           "is_stale", "process_file", "store_stream", "stored_file"]

PURPOSES = ("fine-tune", "eval", "eval-sample", "eval-output", "eval-summary", "batch-generated",
            "batch-api")
FILE_TYPES = ("jsonl", "parquet", "csv")
DATASET_FORMAT = {"text": "GENERAL", "conversational": "CONVERSATION",
                  "instruction": "INSTRUCTION", "preference": "PREFERENCE"}


def file_json(row: dict[str, Any]) -> dict[str, Any]:
    """A FileResponse, with both the spec's capitalised keys and the newer status fields."""
    processed = row["state"] == "processed"
    body: dict[str, Any] = {
        "id": row["id"], "object": "file", "created_at": int(row["created_at"]),
        "filename": row["filename"], "bytes": row["bytes"], "purpose": row["purpose"],
        "FileType": row["file_type"], "Processed": processed, "LineCount": row["line_count"],
        "processing_status": row["processing_status"] or ("COMPLETED" if processed
                                                          else "PENDING"),
    }
    if row["report"]:
        body["validation_report"] = json.loads(row["report"])
    return body


def _report_json(file_id: str, report: DataReport) -> dict[str, Any]:
    problems = [str(p) for p in report.problems]
    return {
        "valid": report.ok,
        "file_id": file_id,
        "nlines": report.lines,
        "dataset_format": DATASET_FORMAT.get(report.format or ""),
        "dataset_has_message_weights": report.has_weights,
        "dataset_is_multimodal": report.has_images,
        "dataset_has_tools": report.has_tools,
        "dataset_has_parallel_tool_calls": report.has_parallel_tool_calls,
        "dataset_has_reasoning": report.has_reasoning,
        "dataset_has_sample_weights": False,  # a weight per sample: no format here has one
        "error": None if report.ok else "; ".join(problems[:5]) + (
            f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""),
        "error_type": None if report.ok else "INVALID_FORMAT",
        "problems": problems,
    }


def _form_value(form: Any, name: str, default: str | None = None) -> str | None:
    value = form.get(name)
    if value is None or isinstance(value, UploadFile):
        return default
    return str(value)


def check_file_type(name: str, given: str | None) -> str:
    kind = given or (name.rsplit(".", 1)[-1].lower() if "." in name else "jsonl")
    if kind not in FILE_TYPES:
        msg = f"unsupported file type {kind!r}; use one of {', '.join(FILE_TYPES)}"
        raise bad_request(msg, "file_type")
    return kind


def check_purpose(given: str | None) -> str:
    purpose = given or "fine-tune"
    if purpose not in PURPOSES:
        raise bad_request(f"invalid purpose {purpose!r}; use one of {', '.join(PURPOSES)}",
                          "purpose")
    return purpose


def is_stale(api: LocalAPI, row: dict[str, Any]) -> bool:
    """An announced file whose bytes did not start arriving within `upload_url_ttl`."""
    return bool(row["state"] == "awaiting_upload"
                and row["created_at"] <= api.clock() - api.config.upload_url_ttl)


def stored_file(api: LocalAPI, file_id: str) -> dict[str, Any]:
    """The file's row; 404 if it does not exist (or was deleted meanwhile, or announced and
    abandoned)."""
    row = api.state.file(file_id)
    if row is None or is_stale(api, row):
        raise not_found(f"no file with id {file_id}", "id")
    return row


def _count_lines(path: Path) -> int:
    with path.open("rb") as data:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: data.read(1 << 20), b""))


async def process_file(api: LocalAPI, file_id: str) -> dict[str, Any]:
    """Check the stored bytes (fine-tune files; streamed from disk) and mark the file
    processed."""
    row = stored_file(api, file_id)
    path = api.state.file_path(file_id)
    if row["purpose"] == "fine-tune":
        report = await anyio.to_thread.run_sync(
            lambda: check_file(path, purpose="fine-tune", file_type=row["file_type"]))
        status = "COMPLETED" if report.ok else "INVALID_FORMAT"
        api.state.update_file(file_id, state="processed", processing_status=status,
                              report=json.dumps(_report_json(file_id, report)),
                              line_count=report.lines)
    else:
        api.state.update_file(file_id, state="processed", processing_status="COMPLETED",
                              line_count=await anyio.to_thread.run_sync(_count_lines, path))
    return file_json(stored_file(api, file_id))


async def store_stream(chunks: AsyncIterator[bytes], path: Path, *,
                       expected: str | None = None, algorithm: str = "sha256"
                       ) -> tuple[int, str]:
    """Write `chunks` to `path` as they arrive (never all in memory), hashing on the way; the
    file appears only when complete and, if `expected` is given, matching that digest.
    Returns its size and digest (hex; SHA-256, or MD5 for a multipart upload's part)."""
    digest = hashlib.new(algorithm)
    size = 0
    partial = anyio.Path(path.with_suffix(".part"))
    try:
        async with await anyio.open_file(partial, "wb") as out:
            async for chunk in chunks:
                digest.update(chunk)
                size += len(chunk)
                await out.write(chunk)
        actual = digest.hexdigest()
        if expected and expected != actual:
            msg = f"the uploaded bytes do not match the declared checksum ({actual[:12]}...)"
            raise bad_request(msg, "checksum")
        await partial.rename(path)
    finally:
        await partial.unlink(missing_ok=True)  # a body cut short, too large or wrong
    return size, actual


# -- the SDK flow ----------------------------------------------------------------------------

def announce(api: LocalAPI, *, name: str, purpose: str, file_type: str,
             checksum: str | None) -> tuple[str, str]:
    """A new file awaiting its bytes: its id and the token of its upload URLs. 409 with the
    existing `file_id` when these bytes (by checksum) are there or on their way."""
    file_id = f"file-{uuid.uuid4()}"
    token = secrets.token_urlsafe(24)
    now = api.clock()
    existing = api.state.announce_file(
        {"id": file_id, "created_at": now, "filename": name, "purpose": purpose,
         "file_type": file_type, "checksum": checksum, "state": "awaiting_upload",
         "upload_token": token}, fresh_after=now - api.config.upload_url_ttl)
    if existing is not None:
        raise APIError(409, f"a file with these bytes already exists: {existing['id']}",
                       type_="file_already_exists", extra={"file_id": existing["id"]})
    return file_id, token


def _form(request: Request) -> AbstractAsyncContextManager[FormData]:
    """The request's form, bounded: one file, a few fields, each field small."""
    return request.form(max_files=1, max_fields=32, max_part_size=64 * 1024)


async def start_upload(request: Request) -> Response:
    api = api_of(request)
    async with _form(request) as form:
        name = _form_value(form, "file_name")
        purpose_given = _form_value(form, "purpose")
        type_given = _form_value(form, "file_type")
        checksum = (_form_value(form, "checksum") or "").lower() or None
    if not name:
        raise bad_request("file_name is required", "file_name")
    file_id, token = announce(api, name=name, purpose=check_purpose(purpose_given),
                              file_type=check_file_type(name, type_given), checksum=checksum)
    location = f"{str(request.base_url).rstrip('/')}/uploads/{file_id}?token={token}"
    return Response(status_code=302, headers={"Location": location,
                                              "X-Together-File-Id": file_id})


async def receive_bytes(request: Request) -> Response:
    """The signed upload target: stores the body, checking it against the declared checksum."""
    api = api_of(request)
    file_id = request.path_params["file_id"]
    row = api.state.file(file_id)
    if row is None or not same_secret(row["upload_token"], request.query_params.get("token", "")) \
            or is_stale(api, row):
        raise APIError(403, "invalid or expired upload URL", type_="forbidden")
    try:
        size, actual = await store_stream(request.stream(), api.state.file_path(file_id),
                                    expected=row["checksum"])
    except BaseException:
        if row["state"] == "awaiting_upload":
            # Refused, cut short or wrong: the announcement is forgotten, so the same bytes
            # announced again get a new upload URL, and a client waiting for these bytes
            # (409 "on their way") finds the file gone and uploads them itself.
            api.state.delete_file(file_id)
        raise
    if row["state"] == "awaiting_upload":
        api.state.update_file(file_id, state="uploaded", bytes=size, checksum=actual)
    return Response(status_code=200, headers={"ETag": f'"{actual}"'})


async def preprocess(request: Request) -> Response:
    api = api_of(request)
    file_id = request.path_params["file_id"]
    row = stored_file(api, file_id)
    if row["state"] == "awaiting_upload":
        raise bad_request(f"file {file_id} has no bytes yet: PUT them to the upload URL first")
    if row["state"] == "processed":
        return JSONResponse(file_json(row))
    return JSONResponse(await process_file(api, file_id))


# -- the spec's multipart upload -------------------------------------------------------------

async def upload_multipart(request: Request) -> Response:
    api = api_of(request)
    file_id = f"file-{uuid.uuid4()}"
    async with _form(request) as form:  # the file part is spooled to disk by the parser
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise bad_request("file is required (multipart/form-data)", "file")
        name = _form_value(form, "file_name") or upload.filename or ""
        purpose = check_purpose(_form_value(form, "purpose"))
        if not name:
            raise bad_request("file_name is required", "file_name")
        file_type = check_file_type(name, _form_value(form, "file_type"))

        async def chunks() -> AsyncIterator[bytes]:
            while chunk := await upload.read(1 << 20):
                yield chunk

        size, checksum = await store_stream(chunks(), api.state.file_path(file_id))
    api.state.add_file({"id": file_id, "created_at": api.clock(), "filename": name,
                        "purpose": purpose, "file_type": file_type, "checksum": checksum,
                        "state": "uploaded", "bytes": size})
    return JSONResponse(await process_file(api, file_id))


# -- reading and deleting --------------------------------------------------------------------

def _existing(request: Request) -> dict[str, Any]:
    """A file with its bytes; 404 for one still awaiting them."""
    file_id = request.path_params["file_id"]
    row = stored_file(api_of(request), file_id)
    if row["state"] == "awaiting_upload":
        raise not_found(f"no file with id {file_id}", "id")
    return row


async def list_files(request: Request) -> Response:
    rows = api_of(request).state.files()
    return JSONResponse({"object": "list", "data": [file_json(r) for r in rows]})


async def retrieve(request: Request) -> Response:
    """A file, also one whose bytes are on their way (the 409 of an announce points at it)."""
    return JSONResponse(file_json(stored_file(api_of(request), request.path_params["file_id"])))


async def delete(request: Request) -> Response:
    row = stored_file(api_of(request), request.path_params["file_id"])
    api_of(request).state.delete_file(row["id"])
    return JSONResponse({"id": row["id"], "object": "file", "deleted": True})


async def content(request: Request) -> Response:
    """The file's bytes, streamed from disk."""
    row = _existing(request)
    media = "application/octet-stream" if row["file_type"] == "parquet" else "text/plain"
    path = api_of(request).state.file_path(row["id"])
    byte_ranges(request, path.stat().st_size)  # what it cannot serve: a 416, not a 400
    return FileResponse(path, media_type=media)


ROUTES = [
    Route("/v1/files", list_files, methods=["GET"]),
    Route("/v1/files", start_upload, methods=["POST"]),
    Route("/v1/files/upload", upload_multipart, methods=["POST"]),
    Route("/v1/files/{file_id}", retrieve, methods=["GET"]),
    Route("/v1/files/{file_id}", delete, methods=["DELETE"]),
    Route("/v1/files/{file_id}/content", content, methods=["GET"]),
    Route("/v1/files/{file_id}/preprocess", preprocess, methods=["POST"]),
    Route("/uploads/{file_id}", receive_bytes, methods=["PUT"]),
]
