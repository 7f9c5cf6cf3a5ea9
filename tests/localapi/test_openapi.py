"""Every endpoint's responses match Together's OpenAPI spec (when the spec is at hand).

The spec lives outside this repository (`../shared/reference/together-openapi.yaml`); without
it these tests skip, saying so. Responses are validated against the schema the spec gives for
that path, method, status and content type, with jsonschema (the spec is OpenAPI 3.1, whose
schemas are JSON Schema 2020-12).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import yaml
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from orchestrator.testing import FakeClock
from tests.conftest import REPO
from tests.localapi.conftest import BASE, create_job, upload

SPEC = REPO.parent / "shared" / "reference" / "together-openapi.yaml"

Check = Callable[[str, str, httpx.Response], None]


@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    if not SPEC.is_file():
        pytest.skip(f"Together's OpenAPI spec is not at {SPEC}; response schemas not checked")
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    with SPEC.open(encoding="utf-8") as handle:
        loaded: dict[str, Any] = yaml.load(handle, Loader=loader)
    _honour_nullable(loaded)
    # A defect of the spec, not of the API: CosineLRSchedulerArgs is a special case of
    # LinearLRSchedulerArgs (which allows any extra key), so under `oneOf` no cosine
    # scheduler could ever validate. Linear arguments are told apart by their lack of
    # num_cycles, which is what the spec means.
    linear = loaded["components"]["schemas"]["LinearLRSchedulerArgs"]
    linear["not"] = {"required": ["num_cycles"]}
    return loaded


def _honour_nullable(node: Any) -> None:
    """OpenAPI 3.0's `nullable: true`, which this 3.1 spec still uses, means "or null".

    It appears beside a `type`, beside a `$ref`, and as an `allOf` member.
    """
    if isinstance(node, dict):
        all_of = node.get("allOf")
        if isinstance(all_of, list) and {"nullable": True} in all_of:
            rest = [part for part in all_of if part != {"nullable": True}]
            del node["allOf"]
            node["anyOf"] = [{"allOf": rest}, {"type": "null"}]
        if node.get("nullable") is True:
            if isinstance(node.get("type"), str):
                node["type"] = [node["type"], "null"]
            elif "$ref" in node:
                node["anyOf"] = [{"$ref": node.pop("$ref")}, {"type": "null"}]
        for value in node.values():
            _honour_nullable(value)
    elif isinstance(node, list):
        for value in node:
            _honour_nullable(value)


def _pointer(*parts: str) -> str:
    return "#/" + "/".join(p.replace("~", "~0").replace("/", "~1") for p in parts)


@pytest.fixture(scope="module")
def check(spec: dict[str, Any]) -> Check:
    registry = Registry().with_resource(
        "urn:together", Resource.from_contents(spec, default_specification=DRAFT202012))

    def validate(path: str, method: str, response: httpx.Response) -> None:
        status = str(response.status_code)
        content_type = response.headers["content-type"].split(";")[0]
        responses = spec["paths"][path][method]["responses"]
        assert status in responses, f"{method.upper()} {path}: {status} is not in the spec"
        content = responses[status].get("content", {})
        media = "application/json" if content_type == "application/json" else content_type
        if media not in content:
            pytest.fail(f"{method.upper()} {path} {status}: no schema for {media}")
        pointer = _pointer("paths", path, method, "responses", status, "content", media,
                           "schema")
        validator = Draft202012Validator({"$ref": "urn:together" + pointer}, registry=registry)
        if media == "text/event-stream":  # the schema describes one event
            bodies: list[Any] = [{"data": line[6:] if line == "data: [DONE]"
                                  else json.loads(line[6:])}
                                 for line in response.text.splitlines() if line.startswith(
                                     "data: ")]
        else:
            bodies = [response.json() if media == "application/json" else response.text]
        errors = sorted((e for body in bodies for e in validator.iter_errors(body)),
                        key=lambda e: list(e.absolute_path))
        assert not errors, f"{method.upper()} {path} {status}: " + "; ".join(
            f"{'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message[:200]}"
            for e in errors[:5])

    return validate


async def test_files(client: httpx.AsyncClient, check: Check) -> None:
    file = await upload(client)
    check("/files", "get", await client.get("/files"))
    check("/files/{id}", "get", await client.get(f"/files/{file['id']}"))
    check("/files/upload", "post", await client.post(
        "/files/upload", data={"purpose": "fine-tune", "file_name": "x.jsonl"},
        files={"file": ("x.jsonl", b'{"text": "hello there"}\n')}))
    check("/files/upload", "post", await client.post("/files/upload", data={"purpose": "x"}))
    check("/files/{id}/content", "get", await client.get(f"/files/{file['id']}/content"))
    check("/files/{id}", "delete", await client.delete(f"/files/{file['id']}"))


async def test_fine_tunes_through_their_life(client: httpx.AsyncClient, clock: FakeClock,
                                             check: Check) -> None:
    file = await upload(client)
    validation = await upload(client, b'{"prompt": "a", "completion": "b"}\n', name="v.jsonl")
    created = await create_job(client, file["id"], validation_file=validation["id"], n_evals=2,
                               n_checkpoints=2, n_epochs=2, suffix="schema")
    check("/fine-tunes", "post", created)
    job_id = created.json()["id"]
    for _ in range(6):  # pending, queued, running..., completed
        check("/fine-tunes/{id}", "get", await client.get(f"/fine-tunes/{job_id}"))
        check("/fine-tunes/{id}/events", "get", await client.get(f"/fine-tunes/{job_id}/events"))
        check("/fine-tunes/{id}/checkpoints", "get",
              await client.get(f"/fine-tunes/{job_id}/checkpoints"))
        check("/fine-tunes/{id}/metrics", "get",
              await client.get(f"/fine-tunes/{job_id}/metrics"))
        clock.advance(20)
    check("/fine-tunes", "get", await client.get("/fine-tunes"))
    check("/finetune/download", "get",
          await client.get("/finetune/download", params={"ft_id": job_id}))
    check("/fine-tunes/{id}", "delete", await client.delete(f"/fine-tunes/{job_id}"))
    other = (await create_job(client, file["id"])).json()
    check("/fine-tunes/{id}/cancel", "post", await client.post(f"/fine-tunes/{other['id']}/"
                                                               "cancel"))
    clock.advance(5)
    check("/fine-tunes/{id}", "get", await client.get(f"/fine-tunes/{other['id']}"))
    check("/fine-tunes/estimate-price", "post", await client.post(
        "/fine-tunes/estimate-price", json={"training_file": file["id"], "model": BASE}))
    check("/fine-tunes/models/limits", "get",
          await client.get("/fine-tunes/models/limits", params={"model_name": BASE}))
    check("/fine-tunes/models/limits", "get",
          await client.get("/fine-tunes/models/limits", params={"model_name": "x/y"}))
    check("/fine-tunes/models/supported", "get", await client.get("/fine-tunes/models/supported"))


async def test_models_and_jobs(client: httpx.AsyncClient, clock: FakeClock,
                               check: Check) -> None:
    created = await client.post("/models", json={
        "model_name": "adapter", "model_source": "https://huggingface.co/org/adapter",
        "model_type": "adapter", "base_model": BASE})
    check("/models", "post", created)
    job_id = created.json()["data"]["job_id"]
    for _ in range(3):
        check("/jobs/{jobId}", "get", await client.get(f"/jobs/{job_id}"))
        clock.advance(5)
    check("/jobs", "get", await client.get("/jobs"))
    check("/models", "get", await client.get("/models"))
    async with httpx.AsyncClient(transport=client._transport, base_url=client.base_url) as bare:
        check("/models", "get", await bare.get("/models"))  # 401 without a key


async def test_inference(client: httpx.AsyncClient, check: Check) -> None:
    ask = {"model": BASE, "prompt": "Q: hello?\nA:", "max_tokens": 4}
    check("/completions", "post", await client.post("/completions", json=ask))
    check("/completions", "post", await client.post("/completions", json={**ask,
                                                                         "model": "x/y"}))
    check("/completions", "post", await client.post("/completions", json={"model": BASE}))
    chat = {"model": BASE, "messages": [{"role": "user", "content": "hi"}]}
    check("/chat/completions", "post", await client.post("/chat/completions", json=chat))
    check("/chat/completions", "post", await client.post("/chat/completions", json={
        "model": BASE, "messages": "hi"}))
    for path, body in (("/completions", ask), ("/chat/completions", chat)):
        check(path, "post", await client.post(path, json={**body, "stream": True}))

