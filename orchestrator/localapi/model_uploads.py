"""A v2 model's files uploaded straight from a folder: SDK 3.x's CLI `models upload MODEL_ID
./folder`.

`POST /v2/projects/{p}/models/upload/create` `{objectId, files: [{path, hash, numParts}]}`
answers, per file, an `uploadId` and a URL per part (`PUT`, no API key: the URL carries a
token, valid for `upload_url_ttl`), or `skipUpload` when bytes of that hash are already here.
Each part is answered with its MD5 as `ETag`, as S3 does. `POST .../upload/complete` `{objectId,
files: [{path, hash, uploadDetails: {uploadId, parts: [{partNumber, hash}]}} | {path, hash,
skipUpload}]}` checks every part against what arrived and each file's hash (the S3 ETag of its
parts: the MD5 of one part, or `md5(md5s)-N`) against what was declared, keeps the files by
hash, and makes a revision of the model from them: `{revisionId}`, listed by `.../revisions`
and `.../files`. A complete sent again answers the same revision.

With the real trainer, an adapter's revision holding `adapter_config.json` and
`adapter_model.safetensors` serves inference from those weights; otherwise the model answers
as a simulated import does.
"""

from __future__ import annotations

import re
import secrets
import uuid
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import anyio
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from orchestrator.localapi import training
from orchestrator.localapi.errors import APIError, bad_request, not_found
from orchestrator.localapi.files import store_stream
from orchestrator.localapi.handlers import api_of, json_body, same_secret
from orchestrator.localapi.multipart import check_parts, part_path
from orchestrator.localapi.projects import BASE, project_model, revision_id
from orchestrator.localapi.responses import JSONResponse

if TYPE_CHECKING:
    from pathlib import Path

    from orchestrator.localapi.app import LocalAPI

__all__ = ["MAX_FILES", "MAX_PARTS", "ROUTES"]

MAX_FILES = 1000
"""At most this many files in one upload (a sharded 405B model has a few hundred)."""

MAX_PARTS = 10_000
"""At most this many parts per file, as S3."""

MAX_PATH = 1024
_HASH = re.compile(r"[0-9a-f]{32}(-[1-9][0-9]{0,4})?")


def _blob(api: LocalAPI, digest: str) -> Path:
    """Where a file of this hash is kept (one copy whatever model or path it came under)."""
    folder = api.config.data_dir / "model-files"
    folder.mkdir(exist_ok=True)
    return folder / digest


def _path(value: object) -> str:
    """A file's path in the model: relative, no '..', no hidden part (the CLI skips those)."""
    if not isinstance(value, str) or not value or len(value) > MAX_PATH or "\0" in value \
            or value.startswith("/") or "\\" in value \
            or any(part in ("", ".", "..") or part.startswith(".") for part in value.split("/")):
        raise bad_request(f"path {str(value)[:80]!r} must be a relative path in the model's "
                          f"folder (no '..', no hidden part, at most {MAX_PATH} characters)",
                          "files.path")
    return value


def _hash(value: object) -> str:
    if not isinstance(value, str) or not _HASH.fullmatch(value):
        raise bad_request("hash must be the file's S3 ETag: the MD5 of its one part, or the "
                          "MD5 of its parts' MD5s and '-' their count", "files.hash")
    return value


def _files(body: dict[str, Any]) -> list[dict[str, Any]]:
    files = body.get("files")
    if not isinstance(files, list) or not files or len(files) > MAX_FILES \
            or not all(isinstance(f, dict) for f in files):
        raise bad_request(f"files must be a list of 1 to {MAX_FILES} objects", "files")
    paths = [_path(f.get("path")) for f in files]
    if len(set(paths)) != len(paths):
        raise bad_request("a path is listed twice", "files.path")
    return files


def _object(request: Request, body: dict[str, Any]) -> dict[str, Any]:
    model_id = body.get("objectId")
    if not isinstance(model_id, str) or not model_id:
        raise bad_request("objectId is required: the id of a registered model", "objectId")
    return project_model(request, model_id, "objectId")


async def create(request: Request) -> Response:
    api = api_of(request)
    body = await json_body(request)
    model = _object(request, body)
    rows, answer = [], []
    for given in _files(body):
        path, digest = given["path"], _hash(given.get("hash"))
        if _blob(api, digest).is_file():  # these bytes are here already
            answer.append({"path": path, "skipUpload": True, "parts": []})
            continue
        parts = given.get("numParts")
        if not isinstance(parts, int) or isinstance(parts, bool) or not 1 <= parts <= MAX_PARTS:
            raise bad_request(f"numParts of {path} must be an integer from 1 to {MAX_PARTS}",
                              "files.numParts")
        if "-" in digest and int(digest.split("-")[1]) != parts:
            raise bad_request(f"hash of {path} is of {digest.split('-')[1]} parts; numParts "
                              f"is {parts}", "files.hash")
        upload_id, token = f"mfu-{uuid.uuid4()}", secrets.token_urlsafe(24)
        rows.append({"upload_id": upload_id, "model_id": model["id"], "path": path,
                     "hash": digest, "num_parts": parts, "token": token,
                     "created_at": api.clock()})
        root = str(request.base_url).rstrip("/")
        answer.append({"path": path, "uploadId": upload_id, "skipUpload": False, "parts": [
            {"partNumber": n, "url": f"{root}/uploads/model-files/{upload_id}/parts/{n}"
                                     f"?token={token}", "headers": {}}
            for n in range(1, parts + 1)]})
    api.state.add_model_file_uploads(rows)
    return JSONResponse({"objectId": model["id"], "files": answer})


async def receive_part(request: Request) -> Response:
    """A part's bytes, at the URL the create gave: stored, answered with their MD5."""
    api = api_of(request)
    upload_id = request.path_params["upload_id"]
    row = api.state.model_file_upload(upload_id)
    if row is None or row["revision_id"] is not None \
            or row["created_at"] <= api.clock() - api.config.upload_url_ttl \
            or not same_secret(row["token"], request.query_params.get("token", "")):
        raise APIError(403, "invalid or expired upload URL", type_="forbidden")
    number = request.path_params["number"]
    if not 1 <= number <= row["num_parts"]:
        raise bad_request(f"part {number} is not a part of this upload (1 to "
                          f"{row['num_parts']})", "partNumber")
    size, etag = await store_stream(request.stream(), part_path(api, upload_id, number),
                                    algorithm="md5")
    api.state.put_part(upload_id, number, etag, size)
    return Response(status_code=200, headers={"ETag": f'"{etag}"'})


def _s3_etag(md5s: list[str]) -> str:
    """The ETag S3 gives an object uploaded in these parts (as the CLI computes `hash`)."""
    import hashlib  # noqa: PLC0415

    if len(md5s) == 1:
        return md5s[0]
    joined = b"".join(bytes.fromhex(m) for m in md5s)
    return f"{hashlib.md5(joined, usedforsecurity=False).hexdigest()}-{len(md5s)}"


def _uploaded(api: LocalAPI, model_id: str, given: dict[str, Any]) -> dict[str, Any]:
    """The upload row of one uploaded file of a complete, every part of it checked."""
    path = given["path"]
    details = given.get("uploadDetails")
    if not isinstance(details, dict) or not isinstance(details.get("uploadId"), str) \
            or not isinstance(details.get("parts"), list):
        raise bad_request(f"{path}: uploadDetails {{uploadId, parts}} or skipUpload is "
                          "required", "files.uploadDetails")
    row = api.state.model_file_upload(details["uploadId"])
    if row is None or row["model_id"] != model_id or row["path"] != path \
            or row["hash"] != given.get("hash"):
        raise not_found(f"{path}: no upload {str(details['uploadId'])[:60]!r} of this path and "
                        "hash to this model (POST .../models/upload/create begins one)",
                        "files.uploadDetails.uploadId")
    if row["revision_id"] is not None:
        return row
    claimed = {p["partNumber"]: str(p.get("hash", "")).strip('"') for p in details["parts"]
               if isinstance(p, dict) and isinstance(p.get("partNumber"), int)}
    received = check_parts(api, row["upload_id"], row["num_parts"], claimed, what=f"{path}: ",
                           term="hash", param="files.uploadDetails.parts")
    actual = _s3_etag([received[n]["etag"] for n in range(1, row["num_parts"] + 1)])
    if actual != row["hash"]:
        raise bad_request(f"{path}: the parts make hash {actual}, not the {row['hash']} "
                          "declared", "files.hash")
    return row


async def _keep(api: LocalAPI, row: dict[str, Any]) -> int:
    """The uploaded file's parts joined into its kept copy (streamed, never all in memory);
    its size."""
    target = _blob(api, row["hash"])
    if not target.is_file():
        async def joined() -> AsyncIterator[bytes]:
            for n in range(1, row["num_parts"] + 1):
                async with await anyio.open_file(part_path(api, row["upload_id"], n),
                                                 "rb") as part:
                    while chunk := await part.read(1 << 20):
                        yield chunk

        await store_stream(joined(), target, algorithm="md5")
    for n in range(1, row["num_parts"] + 1):
        part_path(api, row["upload_id"], n).unlink(missing_ok=True)
    return target.stat().st_size


async def complete(request: Request) -> Response:
    api = api_of(request)
    body = await json_body(request)
    model = _object(request, body)
    uploads, kept = [], []
    for given in _files(body):
        path, digest = given["path"], _hash(given.get("hash"))
        if given.get("skipUpload") is True:
            if not _blob(api, digest).is_file():
                raise bad_request(f"{path}: skipUpload, but no file of hash {digest} is here: "
                                  "upload it", "files.skipUpload")
            kept.append({"path": path, "hash": digest})
        else:
            row = _uploaded(api, model["id"], given)
            uploads.append(row)
            kept.append({"path": path, "hash": digest, "upload": row})
    done = {row["revision_id"] for row in uploads}
    if uploads and done != {None}:
        if len(done) == 1 and None not in done:  # a complete sent again
            return JSONResponse({"revisionId": revision_id({"id": done.pop()})})
        raise bad_request("some of these uploads were completed already, in another revision",
                          "files.uploadDetails.uploadId")
    files = []
    for entry in kept:
        row = entry.pop("upload", None)
        size = await _keep(api, row) if row else _blob(api, entry["hash"]).stat().st_size
        files.append({**entry, "bytes": size})
    revision = {"id": f"upload-{uuid.uuid4()}", "model_id": model["id"],
                "created_at": api.clock(), "plan": {"duration": 0.0, "outcome": "completed"},
                "request": {"remote_url": "", "direct": True, "files": files}}
    if api.config.trainer == "peft" and model["request"]["type"] == "adapter":
        revision["request"]["local_adapter"] = await _adapter(api, model, files,
                                                               revision["id"])
    api.state.complete_model_file_uploads([row["upload_id"] for row in uploads], revision)
    return JSONResponse({"revisionId": revision_id(revision)})


async def _adapter(api: LocalAPI, model: dict[str, Any], files: list[dict[str, Any]],
                   key: str) -> str:
    """With the real trainer, an adapter's revision is the two files of a peft adapter, kept
    where inference loads them from."""
    by_path = {f["path"]: f["hash"] for f in files}
    training.base_of(api, model["request"]["base_model_id"])  # a 400 if it has no weights
    sources = [_blob(api, by_path.get(name, "-")) for name in training.ADAPTER_FILES]
    return await training.keep_adapter_files(api, sources, key, "files",
                                             where="the uploaded files")


ROUTES = [
    Route(f"{BASE}/upload/create", create, methods=["POST"]),
    Route(f"{BASE}/upload/complete", complete, methods=["POST"]),
    Route("/uploads/model-files/{upload_id}/parts/{number:int}", receive_part, methods=["PUT"]),
]
