"""Files: the SDK's redirect upload, dedupe by checksum, the data check, and the rest."""

from __future__ import annotations

import hashlib
import json

import httpx

from orchestrator.localapi import LocalAPI
from orchestrator.testing import FakeClock
from tests.localapi.conftest import INSTRUCTIONS, upload


async def test_redirect_upload_flow(client: httpx.AsyncClient) -> None:
    """POST /files answers 302 with where to PUT; the PUT needs no key; preprocess checks."""
    start = await client.post("/files", data={"purpose": "fine-tune", "file_name": "t.jsonl",
                                              "file_type": "jsonl"})
    assert start.status_code == 302
    file_id = start.headers["x-together-file-id"]
    assert file_id.startswith("file-")
    assert start.headers["location"].startswith("http://local-api/uploads/" + file_id + "?token=")
    waiting = (await client.get(f"/files/{file_id}")).json()  # announced, no bytes yet
    assert (waiting["Processed"], waiting["bytes"], waiting["processing_status"]) == (
        False, 0, "PENDING")
    assert (await client.get(f"/files/{file_id}/content")).status_code == 404
    put = await client.put(start.headers["location"], content=INSTRUCTIONS,
                           headers={"Authorization": ""})
    assert put.status_code == 200
    done = (await client.post(f"/files/{file_id}/preprocess")).json()
    assert {k: done[k] for k in ("id", "object", "filename", "bytes", "purpose", "FileType",
                                 "Processed", "LineCount", "processing_status")} == {
        "id": file_id, "object": "file", "filename": "t.jsonl", "bytes": len(INSTRUCTIONS),
        "purpose": "fine-tune", "FileType": "jsonl", "Processed": True, "LineCount": 3,
        "processing_status": "COMPLETED"}
    assert done["validation_report"]["valid"] is True
    assert done["validation_report"]["dataset_format"] == "INSTRUCTION"


async def test_identical_bytes_are_not_stored_twice(client: httpx.AsyncClient) -> None:
    """A second upload of the same bytes (same sha256) answers 409 with the first file's id."""
    first = await upload(client)
    again = await client.post("/files", data={
        "purpose": "fine-tune", "file_name": "other-name.jsonl",
        "checksum": hashlib.sha256(INSTRUCTIONS).hexdigest()})
    assert again.status_code == 409
    assert again.json()["file_id"] == first["id"]
    assert again.json()["error"]["type"] == "file_already_exists"
    assert [f["id"] for f in (await client.get("/files")).json()["data"]] == [first["id"]]


async def test_bytes_on_their_way_are_not_announced_twice(client: httpx.AsyncClient,
                                                          clock: FakeClock) -> None:
    """Announcing bytes another client announced and is still sending answers 409 with that
    file; once its upload URL expires unused, the announcement is forgotten."""
    form = {"purpose": "fine-tune", "file_name": "t.jsonl",
            "checksum": hashlib.sha256(INSTRUCTIONS).hexdigest()}
    first = await client.post("/files", data=form)
    file_id = first.headers["x-together-file-id"]
    again = await client.post("/files", data=form)
    assert (again.status_code, again.json()["file_id"]) == (409, file_id)
    clock.advance(3600)
    assert (await client.get(f"/files/{file_id}")).status_code == 404
    assert (await client.put(first.headers["location"], content=INSTRUCTIONS)).status_code == 403
    fresh = await client.post("/files", data=form)
    assert fresh.status_code == 302
    assert fresh.headers["x-together-file-id"] != file_id


async def test_put_is_checked(client: httpx.AsyncClient) -> None:
    """A wrong token is refused; bytes that do not match the declared checksum are refused,
    and the announcement is forgotten (the same bytes announced again get a new URL)."""
    start = await client.post("/files", data={
        "purpose": "fine-tune", "file_name": "t.jsonl", "checksum": "0" * 64})
    location = start.headers["location"]
    forged = location.split("?token=")[0] + "?token=forged"
    assert (await client.put(forged, content=INSTRUCTIONS)).status_code == 403
    mismatch = await client.put(location, content=INSTRUCTIONS)
    assert mismatch.status_code == 400
    assert "do not match the declared checksum" in mismatch.json()["error"]["message"]
    preprocess = await client.post(f"/files/{start.headers['x-together-file-id']}/preprocess")
    assert preprocess.status_code == 404
    again = await client.post("/files", data={
        "purpose": "fine-tune", "file_name": "t.jsonl", "checksum": "0" * 64})
    assert again.status_code == 302


async def test_preprocess_before_the_bytes_is_refused(client: httpx.AsyncClient) -> None:
    start = await client.post("/files", data={"purpose": "fine-tune", "file_name": "t.jsonl"})
    preprocess = await client.post(f"/files/{start.headers['x-together-file-id']}/preprocess")
    assert preprocess.status_code == 400
    assert "has no bytes yet" in preprocess.json()["error"]["message"]


async def test_invalid_dataset_is_reported_line_by_line(client: httpx.AsyncClient) -> None:
    """A bad fine-tune file is kept, marked INVALID_FORMAT, with every problem's line."""
    data = b'{"prompt": "a", "completion": "b"}\n\n{"prompt": "c"}\n[1, 2]\n'
    done = await upload(client, data)
    report = done["validation_report"]
    assert done["processing_status"] == "INVALID_FORMAT"
    assert report["valid"] is False and report["error_type"] == "INVALID_FORMAT"
    assert report["problems"] == [
        "line 2: blank line; every line must hold one JSON object",
        "line 3: no dataset format matches the keys prompt; use text; messages; prompt + "
        "completion; or input + preferred_output + non_preferred_output",
        "line 4: a line must be a JSON object, not list",
    ]


async def test_multipart_upload(client: httpx.AsyncClient) -> None:
    """The spec's POST /files/upload takes the bytes in one multipart request."""
    response = await client.post("/files/upload", data={"purpose": "fine-tune",
                                                        "file_name": "chat.jsonl"},
                                 files={"file": ("chat.jsonl", INSTRUCTIONS)})
    assert response.status_code == 200
    assert response.json()["Processed"] is True
    assert response.json()["bytes"] == len(INSTRUCTIONS)
    missing = await client.post("/files/upload", data={"purpose": "fine-tune"})
    assert missing.status_code == 400 and missing.json()["error"]["param"] == "file"


async def test_list_retrieve_content_delete(client: httpx.AsyncClient, api: LocalAPI) -> None:
    file = await upload(client)
    listed = (await client.get("/files")).json()
    assert listed["data"][0]["id"] == file["id"]
    assert (await client.get(f"/files/{file['id']}")).json()["filename"] == "train.jsonl"
    content = await client.get(f"/files/{file['id']}/content")
    assert content.content == INSTRUCTIONS
    deleted = (await client.delete(f"/files/{file['id']}")).json()
    assert deleted == {"id": file["id"], "object": "file", "deleted": True}
    assert not api.state.file_path(file["id"]).exists()
    gone = await client.get(f"/files/{file['id']}")
    assert gone.status_code == 404
    assert gone.json()["error"]["message"] == f"no file with id {file['id']}"


async def test_bad_upload_requests(client: httpx.AsyncClient) -> None:
    """Each malformed upload start is a 400 naming the field."""
    cases = [
        ({"purpose": "fine-tune"}, "file_name"),
        ({"purpose": "training", "file_name": "t.jsonl"}, "purpose"),
        ({"purpose": "fine-tune", "file_name": "t.xlsx"}, "file_type"),
    ]
    for form, param in cases:
        response = await client.post("/files", data=form)
        assert response.status_code == 400, form
        assert response.json()["error"]["param"] == param
        json.dumps(response.json())
