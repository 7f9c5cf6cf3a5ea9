"""A folder's files uploaded straight into a registered model (the protocol of SDK 3.x's CLI
`models upload`, which tests/localapi/test_clis.py runs for real): what it refuses, what it
keeps, and that finishing twice makes one revision."""

from __future__ import annotations

import hashlib
from typing import Any

import httpx
import pytest

from orchestrator.testing import FakeClock
from tests.localapi.conftest import BASE

V2 = "http://local-api/v2/projects/proj-local/models"
CONFIG = b'{"base_model_name_or_path": "x"}'
WEIGHTS = bytes(range(256)) * 40


def md5(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def two_part_hash(first: bytes, second: bytes) -> str:
    joined = bytes.fromhex(md5(first)) + bytes.fromhex(md5(second))
    return f"{md5(joined)}-2"


async def register(client: httpx.AsyncClient, name: str = "direct") -> str:
    made = await client.post(V2, json={"name": name, "baseModelId": BASE, "type": "adapter"})
    assert made.status_code == 200, made.text
    return str(made.json()["id"])


async def begin(client: httpx.AsyncClient, model_id: str,
                files: list[dict[str, Any]]) -> httpx.Response:
    return await client.post(f"{V2}/upload/create", json={"objectId": model_id, "files": files})


async def put_parts(client: httpx.AsyncClient, planned: dict[str, Any],
                    parts: list[bytes]) -> list[dict[str, Any]]:
    """Each part to its URL (no API key: the URL is the credential); the ETags answered."""
    sent = []
    for remote, data in zip(planned["parts"], parts, strict=True):
        answer = await client.put(remote["url"], content=data, headers={"Authorization": ""})
        assert answer.status_code == 200, answer.text
        sent.append({"partNumber": remote["partNumber"], "hash": answer.headers["etag"]})
    return sent


async def test_a_folder_uploads_in_parts_into_a_revision_once(client: httpx.AsyncClient) -> None:
    model_id = await register(client)
    first, second = WEIGHTS[:6000], WEIGHTS[6000:]
    files = [{"path": "adapter_config.json", "hash": md5(CONFIG), "numParts": 1},
             {"path": "adapter_model.safetensors", "hash": two_part_hash(first, second),
              "numParts": 2}]
    plan = (await begin(client, model_id, files)).json()["files"]
    assert [len(f["parts"]) for f in plan] == [1, 2] and not any(f["skipUpload"] for f in plan)
    done = [{"path": f["path"], "hash": f["hash"], "uploadDetails": {
        "uploadId": p["uploadId"], "parts": await put_parts(client, p, data)}}
        for f, p, data in zip(files, plan, [[CONFIG], [first, second]], strict=True)]
    body = {"objectId": model_id, "files": done}
    completed = await client.post(f"{V2}/upload/complete", json=body)
    assert completed.status_code == 200, completed.text
    again = await client.post(f"{V2}/upload/complete", json=body)  # a retried complete
    assert again.json() == completed.json()
    revisions = (await client.get(f"{V2}/{model_id}/revisions")).json()["data"]
    assert [r["revisionId"] for r in revisions] == [completed.json()["revisionId"]]
    listed = (await client.get(f"{V2}/{model_id}/files")).json()
    assert {f["path"]: (f["hash"], f["sizeBytes"]) for f in listed["data"]} == {
        "adapter_config.json": (md5(CONFIG), str(len(CONFIG))),
        "adapter_model.safetensors": (files[1]["hash"], str(len(WEIGHTS)))}
    assert (await client.get(f"{V2}/uploads")).json()["data"] == []  # not a remote upload
    answer = await client.post("/completions", json={"model": "local-user/direct",
                                                     "prompt": "hi"})
    assert answer.status_code == 200, answer.text
    # The same bytes again, to another model: nothing to send.
    other = await register(client, "direct-again")
    plan = (await begin(client, other, files)).json()["files"]
    assert all(f["skipUpload"] and not f["parts"] for f in plan)
    skipped = await client.post(f"{V2}/upload/complete", json={"objectId": other, "files": [
        {**f, "skipUpload": True} for f in files]})
    assert skipped.status_code == 200, skipped.text


@pytest.mark.parametrize(("change", "message"), [
    ({"path": "../escape"}, "must be a relative path"),
    ({"path": ".hidden/x"}, "must be a relative path"),
    ({"hash": "not-a-hash"}, "hash must be the file's S3 ETag"),
    ({"numParts": 0}, "numParts of adapter_config.json must be an integer from 1"),
    ({"hash": md5(b"x") + "-3"}, "is of 3 parts; numParts is 1"),
])
async def test_what_a_create_refuses(client: httpx.AsyncClient, change: dict[str, Any],
                                     message: str) -> None:
    model_id = await register(client)
    file = {"path": "adapter_config.json", "hash": md5(CONFIG), "numParts": 1, **change}
    refused = await begin(client, model_id, [file])
    assert refused.status_code == 400 and message in refused.json()["error"]["message"]


async def test_a_complete_checks_every_part_and_the_whole(client: httpx.AsyncClient,
                                                          clock: FakeClock) -> None:
    model_id = await register(client)
    file = {"path": "adapter_config.json", "hash": md5(b"declared"), "numParts": 1}
    planned = (await begin(client, model_id, [file])).json()["files"][0]

    async def complete(parts: list[dict[str, Any]]) -> httpx.Response:
        return await client.post(f"{V2}/upload/complete", json={"objectId": model_id, "files": [
            {**file, "uploadDetails": {"uploadId": planned["uploadId"], "parts": parts}}]})

    missing = await complete([])
    assert "parts not received: 1" in missing.json()["error"]["message"]
    wrong_token = planned["parts"][0]["url"].replace("token=", "token=x")
    assert (await client.put(wrong_token, content=b"x")).status_code == 403
    sent = await put_parts(client, planned, [b"other bytes"])
    claimed_wrong = await complete([{"partNumber": 1, "hash": md5(b"declared")}])
    assert "do not match the parts received" in claimed_wrong.json()["error"]["message"]
    not_declared = await complete(sent)
    assert not_declared.status_code == 400
    assert f"make hash {md5(b'other bytes')}" in not_declared.json()["error"]["message"]
    clock.advance(3601)  # the part URLs expire with upload_url_ttl
    assert (await client.put(planned["parts"][0]["url"], content=b"x")).status_code == 403
    unknown = await client.post(f"{V2}/upload/complete", json={"objectId": "model-x",
                                                               "files": [file]})
    assert unknown.status_code == 404 and "objectId" in unknown.text
