"""Multipart uploads: the local API's flow, and the client's, in one process (LocalTransport).

A file above the client's `multipart_threshold` goes up in parts; a part that arrives damaged
is sent again; an upload cut short continues with the parts not yet sent; one whose parts the
provider no longer takes begins again. The server refuses incomplete or mismatched completes.
"""

from __future__ import annotations

import base64
import hashlib
import sqlite3
from pathlib import Path
from typing import Any

import httpx
import pytest

from orchestrator.localapi import LocalAPI, LocalAPIConfig, LocalTransport
from orchestrator.localapi.transport import BASE_URL
from orchestrator.providers.together.client import TogetherClient
from orchestrator.providers.together.multipart import plan_parts
from tests.localapi.conftest import INSTRUCTIONS

PART = 64 * 1024


def dataset(path: Path, size: int) -> bytes:
    """A valid instruction dataset of about `size` bytes."""
    line = INSTRUCTIONS.splitlines(keepends=True)[0]
    data = line * (size // len(line) + 1)
    path.write_bytes(data)
    return data


def received(config: LocalAPIConfig) -> list[tuple[int, int]]:
    """(part number, times received) for every part the API took, from its own state file."""
    with sqlite3.connect(config.data_dir / "local-api.db") as db:
        rows = db.execute("SELECT part_number, received FROM upload_parts "
                          "ORDER BY part_number").fetchall()
    return [(int(n), int(count)) for n, count in rows]


class Damaging(httpx.AsyncBaseTransport):
    """The local API, except that the first PUT of part 2 loses its last byte on the way."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner
        self.damaged = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.method == "PUT" and request.url.path.endswith("/parts/2") and \
                not self.damaged:
            self.damaged += 1
            body = b"".join([chunk async for chunk in request.stream])  # type: ignore[union-attr]
            request = httpx.Request("PUT", request.url, content=body[:-1])
        return await self.inner.handle_async_request(request)


class Checkpoint(dict[str, Any]):
    """What a step's checkpoint would hold: the fields the client hands over, merged."""

    def __init__(self, *, kill_after: int | None = None) -> None:
        super().__init__()
        self.kill_after = kill_after
        self.calls: list[int] = []

    async def save(self, fields: dict[str, Any], sent: int) -> None:
        self.update(fields)
        self.calls.append(sent)
        if sent == self.kill_after:
            raise Killed


class Killed(Exception):
    """The process died here."""


def client_of(api: LocalAPI, transport: httpx.AsyncBaseTransport | None = None,
              **options: Any) -> TogetherClient:
    return TogetherClient(api_key=api.config.api_key, base_url=BASE_URL,
                          transport=transport or LocalTransport(api),
                          multipart_threshold=PART, part_size=PART, **options)


@pytest.fixture
def api(tmp_path: Path) -> LocalAPI:
    return LocalAPI(LocalAPIConfig(data_dir=tmp_path / "local-api"))


def test_parts_are_planned_as_together_cuts_them() -> None:
    assert plan_parts(100, 250) == (100, 1)
    assert plan_parts(1000, 250) == (250, 4)
    assert plan_parts(1001, 250) == (201, 5)
    assert plan_parts(50 * 2**30, 250 * 2**20)[1] == 205
    assert plan_parts(1_000_000, 1000) == (4000, 250)  # at most 250 parts: larger ones


async def test_a_file_above_the_threshold_goes_up_in_parts_once(api: LocalAPI,
                                                                tmp_path: Path) -> None:
    path = tmp_path / "big.jsonl"
    data = dataset(path, 5 * PART + 100)
    sha = hashlib.sha256(data).hexdigest()
    saved = Checkpoint()
    damaging = Damaging(LocalTransport(api))
    async with client_of(api, damaging, part_concurrency=3) as client:
        file, reused = await client.upload_file(path, checksum=sha, on_parts=saved.save)
        again, reused_again = await client.upload_file(path, checksum=sha)
    assert not reused and reused_again and again.id == file.id  # deduplicated by checksum
    assert file.processed and file.bytes == len(data)
    assert file.line_count == data.count(b"\n")
    assert api.state.file_path(file.id).read_bytes() == data
    assert damaging.damaged == 1
    # Six parts, each received once, except the damaged one: sent again.
    assert received(api.config) == [(1, 1), (2, 2), (3, 1), (4, 1), (5, 1), (6, 1)]
    assert saved.calls == [0, 1, 2, 3, 4, 5, 6]
    assert sorted(k for k in saved if k.startswith("multipart_part_")) == [
        f"multipart_part_{n}" for n in range(1, 7)]  # each part's ETag: one field each
    assert not list(api.state.files_dir.glob("*-part*"))  # the parts were joined and dropped


async def test_an_interrupted_upload_continues_with_the_missing_parts(api: LocalAPI,
                                                                     tmp_path: Path) -> None:
    path = tmp_path / "big.jsonl"
    data = dataset(path, 4 * PART)
    sha = hashlib.sha256(data).hexdigest()
    saved = Checkpoint(kill_after=2)
    async with client_of(api, part_concurrency=1) as client:
        with pytest.raises(Killed):
            await client.upload_file(path, checksum=sha, on_parts=saved.save)
        file, _ = await client.upload_file(path, checksum=sha, resume=saved)
        assert api.state.file_path(file.id).read_bytes() == data
        assert received(api.config) == [(1, 1), (2, 1), (3, 1), (4, 1), (5, 1)]
        # A file changed since its upload was cut short is sent again, whole.
        saved = Checkpoint(kill_after=2)
        with pytest.raises(Killed):
            await client.upload_file(path, on_parts=saved.save, name="other.jsonl")
        first = saved["multipart"]["file_id"]
        changed = data.replace(b"Paris", b"Lyon!")
        path.write_bytes(changed)
        sha = hashlib.sha256(changed).hexdigest()
        saved.kill_after = None
        again, _ = await client.upload_file(path, checksum=sha, resume=saved,
                                            on_parts=saved.save)
    assert api.state.file_path(again.id).read_bytes() == changed
    assert again.id != first
    assert {k: v for k, v in saved.items() if k.startswith("multipart_part_") and v} == {
        f"multipart_part_{n}": saved[f"multipart_part_{n}"] for n in range(1, 6)}


async def test_an_upload_the_provider_dropped_begins_again(api: LocalAPI,
                                                          tmp_path: Path) -> None:
    path = tmp_path / "big.jsonl"
    data = dataset(path, 2 * PART)
    saved = Checkpoint(kill_after=1)
    async with client_of(api, part_concurrency=1) as client:
        with pytest.raises(Killed):
            await client.upload_file(path, on_parts=saved.save)
        state = saved["multipart"]
        aborted = await client._http.post("/files/multipart/abort", json={
            "upload_id": state["upload_id"], "file_id": state["file_id"]},
            headers={"Authorization": "Bearer local-key"})
        assert aborted.status_code == 200
        file, _ = await client.upload_file(path, resume=saved)
    assert file.id != state["file_id"]
    assert api.state.file_path(file.id).read_bytes() == data


async def test_the_server_checks_what_it_is_given(api: LocalAPI, tmp_path: Path) -> None:
    headers = {"Authorization": "Bearer local-key"}
    async with httpx.AsyncClient(transport=LocalTransport(api), base_url=BASE_URL,
                                 headers=headers) as http:
        async def initiate(**changes: Any) -> httpx.Response:
            return await http.post("/files/multipart/initiate", json={
                "file_name": "t.jsonl", "file_size": len(INSTRUCTIONS), "num_parts": 2,
                "purpose": "fine-tune", **changes})

        cases: list[tuple[dict[str, Any], str]] = [
            ({"num_parts": 0}, "num_parts must be an integer from 1 to 250"),
            ({"num_parts": 251}, "from 1 to 250"),
            ({"file_size": -1}, "file_size must be an integer"),
            ({"purpose": "nope"}, "invalid purpose")]
        for bad, message in cases:
            refused = await initiate(**bad)
            assert refused.status_code == 400 and message in refused.json()["error"]["message"]
        start = (await initiate()).json()
        ids = {"upload_id": start["upload_id"], "file_id": start["file_id"]}
        one, two = start["parts"]
        half = len(INSTRUCTIONS) // 2
        wrong_md5 = base64.b64encode(hashlib.md5(b"other").digest()).decode()
        damaged = await http.put(one["URL"], content=INSTRUCTIONS[:half],
                                 headers={"Content-MD5": wrong_md5})
        assert damaged.status_code == 400
        put = await http.put(one["URL"], content=INSTRUCTIONS[:half])
        etag = put.headers["etag"].strip('"')
        assert etag == hashlib.md5(INSTRUCTIONS[:half]).hexdigest()
        early = await http.post("/files/multipart/complete", json={
            **ids, "parts": [{"part_number": 1, "etag": etag}]})
        assert early.status_code == 400 and "parts not received: 2" in early.text
        etag2 = (await http.put(two["URL"], content=INSTRUCTIONS[half:])).headers["etag"]
        mismatched = await http.post("/files/multipart/complete", json={
            **ids, "parts": [{"part_number": 1, "etag": etag2}, {"part_number": 2,
                                                                  "etag": etag2}]})
        assert mismatched.status_code == 400 and "do not match" in mismatched.text
        parts = [{"part_number": 1, "etag": etag}, {"part_number": 2, "etag": etag2}]
        done = await http.post("/files/multipart/complete", json={**ids, "parts": parts})
        again = await http.post("/files/multipart/complete", json={**ids, "parts": parts})
        assert done.status_code == again.status_code == 200
        assert done.json()["file"] == again.json()["file"]  # completing twice: one file
        assert done.json()["file"]["bytes"] == len(INSTRUCTIONS)
        late = await http.put(one["URL"], content=b"x")
        assert late.status_code == 403  # a completed upload takes no more parts
        unknown = await http.post("/files/multipart/abort", json={
            "upload_id": "upload-x", "file_id": start["file_id"]})
        assert unknown.status_code == 404
    assert [p.name for p in api.state.files_dir.iterdir()] == [start["file_id"]]
