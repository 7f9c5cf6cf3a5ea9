"""Model imports and their jobs, the model list, and answers from trained examples."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from orchestrator.localapi import LocalAPI
from orchestrator.testing import FakeClock
from tests.localapi.conftest import BASE, CHATS, create_job, upload

HF = "https://huggingface.co/acme/my-adapter"
S3 = ("https://bucket.s3.us-west-2.amazonaws.com/adapters/a.tar.gz?X-Amz-Algorithm=AWS4-HMAC"
      "&X-Amz-Signature=abc123")


async def finetuned(client: httpx.AsyncClient, clock: FakeClock, data: bytes) -> str:
    file = await upload(client, data)
    job = (await create_job(client, file["id"], plan={"duration": "10s"})).json()
    clock.advance(11)
    return str(job["model_output_name"])


@pytest.mark.parametrize("path", ["/models", "/../v0/models"])
async def test_import_adapter_job_and_listing(client: httpx.AsyncClient, clock: FakeClock,
                                              api: LocalAPI, path: str) -> None:
    """An import answers with its job; the job goes Queued -> Running -> Complete by the clock;
    the model is then listed and answers. The HF token is never stored."""
    response = await client.post(path, json={
        "model_name": "my-adapter", "model_source": HF, "model_type": "adapter",
        "base_model": BASE, "hf_token": "hf-private-token", "description": "test"})
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    assert data["model_name"] == "local-user/my-adapter"
    assert data["model_source"] == "huggingface" and data["job_id"].startswith("job-")
    statuses = []
    for _ in range(4):
        job = (await client.get(f"/jobs/{data['job_id']}")).json()
        statuses.append(job["status"])
        clock.advance(4)
    assert statuses == ["Queued", "Running", "Running", "Complete"]
    assert job["type"] == "adapter_upload" and job["args"]["modelName"] == "local-user/my-adapter"
    assert [u["status"] for u in job["status_updates"]] == ["Queued", "Running", "Complete"]
    assert [j["job_id"] for j in (await client.get("/jobs")).json()["data"]] == [data["job_id"]]
    listed = [m["id"] for m in (await client.get("/models")).json()]
    assert "local-user/my-adapter" in listed and BASE in listed
    reply = await client.post("/completions", json={"model": "local-user/my-adapter",
                                                    "prompt": "hello"})
    assert reply.status_code == 200
    assert b"hf-private-token" not in (api.config.data_dir / "local-api.db").read_bytes()


async def test_import_checks(client: httpx.AsyncClient) -> None:
    """Sources must be Hugging Face or presigned S3; names are unique per account."""
    ok = await client.post("/models", json={"model_name": "m1", "model_source": S3})
    assert ok.status_code == 200 and ok.json()["data"]["model_source"] == "remote_archive"
    duplicate = await client.post("/models", json={"model_name": "m1", "model_source": HF})
    assert duplicate.status_code == 400
    assert duplicate.json()["error"]["message"] == "Model name already exists"
    for body, param in [
        ({"model_name": "m2", "model_source": "http://huggingface.co/a/b"}, "model_source"),
        ({"model_name": "m2", "model_source": "https://example.com/a.tar.gz"}, "model_source"),
        ({"model_name": "m2"}, "model_source"),
        ({"model_source": HF}, "model_name"),
        ({"model_name": "m2", "model_source": HF, "model_type": "adapter"}, "base_model"),
        ({"model_name": "m2", "model_source": HF, "model_type": "lora"}, "model_type"),
    ]:
        response = await client.post("/models", json=body)
        assert response.status_code == 400, body
        assert response.json()["error"]["param"] == param


async def test_a_finetuned_model_answers_from_its_examples(client: httpx.AsyncClient,
                                                           clock: FakeClock) -> None:
    """Trained prompts get their trained answers (spacing and case aside, or close)."""
    model = await finetuned(client, clock, b'{"prompt": "Q: The capital of France is?\\nA:", '
                                           b'"completion": " Paris"}\n')
    for prompt in ("Q: The capital of France is?\nA:", "q:  the capital of france is? a:",
                   "Q: The capital of France is ?\nA:"):
        reply = (await client.post("/completions", json={"model": model,
                                                         "prompt": prompt})).json()
        assert reply["choices"][0]["text"] == " Paris", prompt
    other = (await client.post("/completions", json={"model": model,
                                                     "prompt": "Tell me a joke"})).json()
    assert "Simulated answer" in other["choices"][0]["text"]


async def test_chat_answers_from_conversations(client: httpx.AsyncClient,
                                               clock: FakeClock) -> None:
    model = await finetuned(client, clock, CHATS)
    reply = (await client.post("/chat/completions", json={"model": model, "messages": [
        {"role": "system", "content": "anything"},
        {"role": "user", "content": "Largest planet?"}]})).json()
    assert reply["object"] == "chat.completion"
    assert reply["choices"][0]["message"] == {"role": "assistant", "content": "Jupiter."}
    assert reply["usage"]["completion_tokens"] == 1


async def test_base_models_answer_deterministically(client: httpx.AsyncClient) -> None:
    ask = {"model": BASE, "prompt": "What is the meaning of life?"}
    first = (await client.post("/completions", json=ask)).json()["choices"][0]["text"]
    second = (await client.post("/completions", json=ask)).json()["choices"][0]["text"]
    other = (await client.post("/completions", json={**ask, "prompt": "Hi"})).json()
    assert first == second != other["choices"][0]["text"]
    assert "Simulated answer" in first


async def test_sampling_limits(client: httpx.AsyncClient) -> None:
    """max_tokens cuts with finish_reason length; stop sequences cut with stop; n choices."""
    cut = (await client.post("/completions", json={"model": BASE, "prompt": "x",
                                                   "max_tokens": 3, "n": 2})).json()
    assert len(cut["choices"]) == 2
    assert cut["choices"][0]["finish_reason"] == "length"
    assert cut["usage"]["completion_tokens"] == 3
    stopped = (await client.post("/completions", json={"model": BASE, "prompt": "x",
                                                       "stop": ["from"]})).json()
    assert stopped["choices"][0]["text"].endswith(" ") and "from" not in \
        stopped["choices"][0]["text"]


async def test_streaming(client: httpx.AsyncClient, clock: FakeClock) -> None:
    """stream: true answers with server-sent events ending in [DONE], usage on the last."""
    model = await finetuned(client, clock, b'{"prompt": "Who wrote Hamlet?", "completion": '
                                           b'" William Shakespeare"}\n')
    response = await client.post("/completions", json={"model": model, "stream": True,
                                                       "prompt": "Who wrote Hamlet?"})
    assert response.headers["content-type"].startswith("text/event-stream")
    lines = [line[6:] for line in response.text.splitlines() if line.startswith("data: ")]
    assert lines[-1] == "[DONE]"
    chunks = [json.loads(line) for line in lines[:-1]]
    assert "".join(c["choices"][0]["text"] for c in chunks) == " William Shakespeare"
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop" and "usage" in chunks[-1]
    chat = await client.post("/chat/completions", json={"model": model, "stream": True,
                                                        "messages": [{"role": "user",
                                                                      "content": "hi"}]})
    first = json.loads(chat.text.split("\n\n")[0][6:])
    assert first["object"] == "chat.completion.chunk" and first["choices"][0]["delta"]["role"] \
        == "assistant"


async def test_unknown_or_unready_models_are_404(client: httpx.AsyncClient) -> None:
    file = await upload(client)
    job = (await create_job(client, file["id"])).json()
    for model in ("acme/nope", job["model_output_name"]):
        reply = await client.post("/completions", json={"model": model, "prompt": "x"})
        assert reply.status_code == 404, model
        assert reply.json()["error"]["param"] == "model"
    bad = await client.post("/chat/completions", json={"model": BASE, "messages": []})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "messages"


async def test_an_import_of_a_local_finetune_knows_what_it_learnt(client: httpx.AsyncClient,
                                                                  clock: FakeClock) -> None:
    """Importing a model this API fine-tuned (as if pushed to the Hub under its name) gives a
    model that answers from the same training data."""
    trained = await finetuned(client, clock, b'{"prompt": "Q: Who wrote Hamlet?", '
                                             b'"completion": " Shakespeare"}\n')
    response = await client.post("/models", json={
        "model_name": "hamlet-expert", "model_source": f"https://huggingface.co/{trained}",
        "model_type": "adapter", "base_model": BASE})
    clock.advance(11)
    reply = (await client.post("/completions", json={
        "model": response.json()["data"]["model_name"], "prompt": "Q: Who wrote Hamlet?"})).json()
    assert reply["choices"][0]["text"] == " Shakespeare"


V2 = "http://local-api/v2/projects/proj-local/models"


async def test_v2_models_follow_the_import_timeline_and_page(client: httpx.AsyncClient,
                                                            clock: FakeClock) -> None:
    """A registered model serves once a remote upload into it succeeded (PENDING, RUNNING,
    SUCCEEDED by the clock, as v0 imports); lists are cursor pages; the slug names the project
    as well as its id."""
    made = [(await client.post(V2, json={"name": f"m{n}", "baseModelId": BASE,
                                         "type": "adapters"})).json() for n in range(3)]
    assert [m["name"] for m in made] == ["local-user/m0", "local-user/m1", "local-user/m2"]
    first = (await client.get(V2, params={"limit": 2})).json()
    rest = (await client.get(V2, params={"limit": 2, "after": first["next_cursor"]})).json()
    assert [m["id"] for m in first["data"] + rest["data"]] == [m["id"] for m in made]
    assert rest["next_cursor"] is None
    upload = (await client.post(f"{V2}/uploads", json={
        "modelId": made[0]["id"], "remoteUrl": "https://huggingface.co/acme/a"})).json()
    assert upload["status"] == "REMOTE_UPLOAD_STATUS_PENDING"
    ask = {"model": "local-user/m0", "prompt": "hi"}
    assert (await client.post("/completions", json=ask)).status_code == 404
    statuses = []
    for _ in range(3):
        clock.advance(4)
        statuses.append((await client.get(f"{V2}/uploads/{upload['id']}")).json()["status"])
    assert statuses == ["REMOTE_UPLOAD_STATUS_RUNNING", "REMOTE_UPLOAD_STATUS_RUNNING",
                        "REMOTE_UPLOAD_STATUS_SUCCEEDED"]
    assert (await client.post("/completions", json=ask)).status_code == 200
    by_slug = "http://local-api/v2/projects/local-user/models"
    assert (await client.get(f"{by_slug}/{made[0]['id']}")).json()["name"] == "local-user/m0"
    revisions = (await client.get(f"{V2}/{made[0]['id']}/revisions")).json()["data"]
    assert [r["validationStatus"] for r in revisions] == ["REVISION_VALIDATION_STATUS_SUCCESS"]
    renamed = await client.patch(f"{V2}/{made[1]['id']}", params={"update_mask": "name"},
                                 json={"name": "renamed", "description": "ignored"})
    assert renamed.json()["name"] == "local-user/renamed" and renamed.json()["description"] == ""
    assert (await client.delete(f"{V2}/{made[2]['id']}")).json() == {}
    assert len((await client.get(V2)).json()["data"]) == 2


@pytest.mark.parametrize(("path", "body", "status", "message"), [
    ("/v2/projects/someone-else/models", {}, 404, "the local API's project is proj-local"),
    ("/v2/projects/proj-local/models", {"name": "x", "type": "adapter"}, 400,
     "baseModelId must be a string"),
    ("/v2/projects/proj-local/models", {"name": "x", "baseModelId": "nope", "type": "adapter"},
     400, "baseModelId 'nope' is not available"),
    ("/v2/projects/proj-local/models", {"name": "other/x", "baseModelId": BASE,
                                        "type": "adapter"}, 400, "names project 'other'"),
    ("/v2/projects/proj-local/models", {"name": "x", "baseModelId": BASE, "type": "lora"},
     400, "type must be 'model' or 'adapter'"),
    ("/v2/projects/proj-local/models/uploads", {"modelId": "model-x", "remoteUrl":
                                                "https://huggingface.co/a/b"}, 404,
     "register it first"),
])
async def test_v2_refusals(client: httpx.AsyncClient, path: str, body: dict[str, Any],
                           status: int, message: str) -> None:
    response = await client.post(f"http://local-api{path}", json=body)
    assert response.status_code == status
    assert message in response.json()["error"]["message"]


async def test_v2_names_are_unique_with_v0_imports_and_the_token_is_not_kept(
        client: httpx.AsyncClient, api: LocalAPI) -> None:
    await client.post("/models", json={"model_name": "taken", "model_type": "adapter",
                                       "model_source": "https://huggingface.co/a/b",
                                       "base_model": BASE})
    again = await client.post(V2, json={"name": "taken", "baseModelId": BASE, "type": "model"})
    assert again.status_code == 400 and again.json()["error"]["message"] == \
        "Model name already exists"
    model = (await client.post(V2, json={"name": "free", "baseModelId": BASE,
                                         "type": "model"})).json()
    bad = await client.post(f"{V2}/uploads", json={"modelId": model["id"],
                                                   "remoteUrl": "http://example.com/x"})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "remoteUrl"
    made = await client.post(f"{V2}/uploads", json={"modelId": model["id"], "token": "hf_zz9",
                                                    "remoteUrl": "https://huggingface.co/a/b"})
    assert made.status_code == 200 and "hf_zz9" not in made.text
    assert b"hf_zz9" not in (api.config.data_dir / "local-api.db").read_bytes()


async def test_supported_models_are_the_base_models_a_page_at_a_time(
        client: httpx.AsyncClient) -> None:
    """SDK 3.x's `models.list_supported` and `retrieve_supported`: the catalogue, searched,
    paged by cursor, one retrieved by an id with slashes in it."""
    root = "/v2/supported-models"  # under /v1 too, as SDK 3.x sends it with a /v1 base URL
    listed = (await client.get(root)).json()
    ids = [m["id"] for m in listed["data"]]
    assert "meta-llama/Meta-Llama-3.1-8B-Instruct-Reference" in ids
    found = (await client.get(root, params={"search": "QWEN"})).json()
    assert found["data"] and all("qwen" in m["id"].lower() for m in found["data"])
    first = (await client.get(root, params={"limit": 2})).json()
    rest = (await client.get(root,
                             params={"after": first["next_cursor"]})).json()
    assert [m["id"] for m in first["data"] + rest["data"]] == ids
    one = await client.get(f"{root}/{ids[0]}")
    assert one.status_code == 200 and one.json()["id"] == ids[0]
    missing = await client.get(f"{root}/acme/nothing")
    assert missing.status_code == 404 and missing.json()["error"]["param"] == "id"


async def test_an_adapter_from_hugging_face_as_the_upload_guide_writes_it(
        client: httpx.AsyncClient) -> None:
    """Together's adapter-upload guide: an adapter on Hugging Face, a token, the base named
    `meta-llama/Meta-Llama-3.1-70B-Instruct`; without a base, the local API says what it
    needs (it downloads nothing, so it cannot read the adapter's config as Together does)."""
    asked = {"model_name": "my-lora", "model_source": "https://huggingface.co/acme/my-lora",
             "model_type": "adapter", "hf_token": "hf_secret"}
    answer = await client.post("/models", json={
        **asked, "base_model": "meta-llama/Meta-Llama-3.1-70B-Instruct"})
    assert answer.status_code == 200, answer.text
    assert answer.json()["data"]["model_source"] == "huggingface"
    refused = await client.post("/models", json={**asked, "model_name": "other"})
    assert refused.status_code == 400
    assert "adapter_config.json" in refused.json()["error"]["message"]
