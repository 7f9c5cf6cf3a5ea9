"""Fixtures for the local API: the app in-process on a fake clock, and helpers to use it."""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from orchestrator.localapi import LocalAPI, LocalAPIConfig, local_client
from orchestrator.testing import FakeClock

BASE = "meta-llama/Meta-Llama-3.1-8B-Instruct-Reference"
INSTRUCTIONS = (
    b'{"prompt": "Q: The capital of France is?\\nA:", "completion": " Paris"}\n'
    b'{"prompt": "Q: What is 2 + 2?\\nA:", "completion": " 4"}\n'
    b'{"prompt": "Q: Who wrote Hamlet?\\nA:", "completion": " William Shakespeare"}\n'
)
CHATS = (
    b'{"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": '
    b'"Capital of Italy?"}, {"role": "assistant", "content": "Rome."}]}\n'
    b'{"messages": [{"role": "user", "content": "Largest planet?"}, {"role": "assistant", '
    b'"content": "Jupiter."}]}\n'
)


@pytest.fixture
def local_config(tmp_path: Path) -> LocalAPIConfig:
    return LocalAPIConfig(data_dir=tmp_path / "local-api", job_duration=100.0,
                          upload_duration=10.0)


@pytest.fixture
def api(local_config: LocalAPIConfig, clock: FakeClock) -> LocalAPI:
    return LocalAPI(local_config, clock=clock)


@pytest.fixture
async def client(api: LocalAPI, local_config: LocalAPIConfig) -> AsyncIterator[httpx.AsyncClient]:
    async with local_client(local_config, api=api) as http:
        yield http


async def upload(client: httpx.AsyncClient, data: bytes = INSTRUCTIONS,
                 name: str = "train.jsonl", purpose: str = "fine-tune") -> dict[str, Any]:
    """The SDK's upload: POST /files (302), PUT the bytes, preprocess. Returns the file."""
    start = await client.post("/files", data={
        "purpose": purpose, "file_name": name, "checksum": hashlib.sha256(data).hexdigest()})
    assert start.status_code == 302, start.text
    put = await client.put(start.headers["location"], content=data)
    assert put.status_code == 200, put.text
    done = await client.post(f"/files/{start.headers['x-together-file-id']}/preprocess")
    assert done.status_code == 200, done.text
    result: dict[str, Any] = done.json()
    return result


async def create_job(client: httpx.AsyncClient, file_id: str, *, plan: dict[str, Any] | None = None,
                     **fields: Any) -> httpx.Response:
    headers = {"X-Local-Job": json.dumps(plan)} if plan else {}
    return await client.post("/fine-tunes", json={"training_file": file_id, "model": BASE,
                                                  **fields}, headers=headers)
