"""Hostile requests to the local API: whatever a client sends, the answer is a 4xx in
Together's error shape (never a 500), and the connection stays usable."""

from __future__ import annotations

import functools
import json
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from anyio.from_thread import BlockingPortal, start_blocking_portal
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator.localapi import LocalAPI, LocalAPIConfig, local_client
from orchestrator.testing import FakeClock
from tests.localapi.conftest import BASE, INSTRUCTIONS


class Client:
    """The in-process client (httpx over the ASGI app) called from synchronous tests, which
    hypothesis needs; an exception in the app raises here, so a 500 cannot hide."""

    def __init__(self, portal: BlockingPortal, client: httpx.AsyncClient) -> None:
        self._portal = portal
        self._client = client

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        return self._portal.call(functools.partial(self._client.request, method, url,
                                                   **kwargs))

    def raw(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        """A request to a full URL (not under /v1), sent as given."""
        return self._portal.call(functools.partial(self._client.request, method, url,
                                                   **kwargs))

    def get(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", url, **kwargs)

    def post(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("POST", url, **kwargs)

    def put(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("PUT", url, **kwargs)

    def delete(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("DELETE", url, **kwargs)


@contextmanager
def serving(config: LocalAPIConfig, clock: FakeClock | None = None) -> Iterator[Client]:
    api = LocalAPI(config, clock=clock) if clock else LocalAPI(config)
    with start_blocking_portal() as portal, portal.wrap_async_context_manager(
            local_client(config, api=api)) as client:
        yield Client(portal, client)


def upload(client: Client, data: bytes = INSTRUCTIONS) -> str:
    start = client.post("/files", data={"purpose": "fine-tune", "file_name": "train.jsonl"})
    client.put(start.headers["location"], content=data)
    file_id = start.headers["x-together-file-id"]
    client.post(f"/files/{file_id}/preprocess")
    return str(file_id)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Client, str, str]]:
    """One app for every example (module scope: hypothesis runs hundreds), with a processed
    training file and a job to point requests at."""
    with serving(LocalAPIConfig(data_dir=tmp_path_factory.mktemp("api"), job_duration=1.0,
                                upload_duration=1.0)) as client:
        file_id = upload(client)
        job = client.post("/fine-tunes", json={"training_file": file_id, "model": BASE})
        assert job.status_code == 200, job.text
        yield client, file_id, job.json()["id"]


FIELDS = ["training_file", "validation_file", "model", "n_epochs", "n_checkpoints", "n_evals",
          "batch_size", "learning_rate", "lr_scheduler", "lr_scheduler_type",
          "lr_scheduler_args", "min_lr_ratio", "num_cycles", "warmup_ratio", "max_grad_norm",
          "weight_decay", "suffix", "training_type", "type", "lora_r", "lora_alpha",
          "lora_dropout", "lora_trainable_modules", "training_method", "method",
          "train_on_inputs", "dpo_beta", "rpo_alpha", "simpo_gamma", "packing",
          "max_seq_length", "random_seed", "multimodal_params", "train_vision",
          "from_checkpoint", "wandb_api_key", "prompt", "messages", "role", "content",
          "max_tokens", "stop", "stream", "temperature", "n", "model_name", "model_source",
          "model_type", "base_model", "hf_token", "description", "lora"]
SCALARS = (st.none() | st.booleans() | st.integers(-2**70, 2**70)
           | st.floats(allow_nan=False, allow_infinity=False)
           | st.sampled_from(["max", "auto", "Lora", "Full", "sft", "dpo", "cosine", "linear",
                              "user", "assistant", BASE, "https://huggingface.co/org/repo", ""])
           | st.text(max_size=20))
JSON = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3)
                    | st.dictionaries(st.sampled_from(FIELDS), inner, max_size=5),
                    max_leaves=25)
ENDPOINTS = [("POST", "/fine-tunes"), ("POST", "/fine-tunes/estimate-price"),
             ("POST", "/completions"), ("POST", "/chat/completions"),
             ("POST", "/models"), ("POST", "/../v0/models")]


def _assert_answered(response: Any) -> None:
    """Answered: not a server error, and a refusal in Together's error shape (file contents
    aside: their range errors are plain text, as any file server's)."""
    assert response.status_code < 500, (response.status_code, response.text[:300])
    if response.status_code >= 400 and "json" in response.headers.get("content-type", ""):
        assert "message" in response.json()["error"]


@given(endpoint=st.sampled_from(ENDPOINTS),
       body=st.dictionaries(st.sampled_from(FIELDS), JSON, max_size=8),
       valid_base=st.booleans())
@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_any_json_body_gets_an_answer_not_a_server_error(
        served: tuple[Client, str, str], endpoint: tuple[str, str], body: dict[str, Any],
        valid_base: bool) -> None:
    """Random bodies, and valid ones with random fields over them (to get past the first
    checks): answered, every time."""
    client, file_id, _ = served
    if valid_base:
        body = {"training_file": file_id, "model": BASE, "prompt": "Q: hi?",
                "messages": [{"role": "user", "content": "hi"}], "model_name": "m-1",
                "model_source": "https://huggingface.co/org/repo", "model_type": "adapter",
                "base_model": BASE, **body}
    _assert_answered(client.request(*endpoint, json=body))


@given(path=st.sampled_from(["/fine-tunes/{job}", "/fine-tunes/{job}/events",
                             "/fine-tunes/{job}/checkpoints", "/fine-tunes/{job}/metrics",
                             "/finetune/download", "/fine-tunes/models/limits",
                             "/fine-tunes", "/files/{file}", "/files/{file}/content",
                             "/models", "/jobs", "/jobs/x"]),
       params=st.dictionaries(st.sampled_from(["ft_id", "checkpoint", "checkpoint_step",
                                               "model_name", "limit", "after", "force"]),
                              st.text(max_size=30), max_size=3),
       headers=st.dictionaries(st.sampled_from(["range", "x-local-job"]),
                               st.text(st.characters(min_codepoint=32, max_codepoint=126),
                                       max_size=60), max_size=2))
@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_any_query_and_header_gets_an_answer_not_a_server_error(
        served: tuple[Client, str, str], path: str, params: dict[str, str],
        headers: dict[str, str]) -> None:
    client, file_id, job_id = served
    url = path.format(job=job_id, file=file_id)
    _assert_answered(client.get(url, params=params, headers=headers))


@pytest.mark.parametrize(("body", "message"), [
    pytest.param(b'{"n_epochs": ' + b"1" * 5000 + b"}", "the request body must be a JSON "
                 "object (number is infinity when parsed as double at line 1, column 14)",
                 id="5000-digit-integer"),
    pytest.param(b"[" * 100_000 + b"]" * 100_000, "the request body must be a JSON object "
                 "(depth limit exceeded at line 1, column 1026)", id="nested-100000-deep"),
])
def test_absurd_json_is_a_400(served: tuple[Client, str, str], body: bytes,
                              message: str) -> None:
    client, _, _ = served
    response = client.post("/fine-tunes", content=body,
                           headers={"content-type": "application/json"})
    assert (response.status_code, response.json()["error"]["message"]) == (400, message)


@pytest.mark.parametrize(("fields", "message"), [
    pytest.param({"lora": "yes"}, "lora is an argument of Together's SDK, not a field of the "
                 "request: it goes in training_type.type ('Lora' or 'Full')", id="lora-yes"),
    pytest.param({"lora_r": 10**9}, "lora_r is an argument of Together's SDK, not a field of "
                 "the request: it goes in training_type.lora_r", id="top-level-lora-r"),
    pytest.param({"training_type": {"type": "Lora", "lora_r": 10**9}},
                 "lora_r must be in [1, 64], not 1000000000", id="lora-r-huge"),
    pytest.param({"training_type": {"type": "Lora", "lora_dropout": -3}},
                 "lora_dropout must be in [0, 1), not -3", id="lora-dropout-negative"),
    pytest.param({"training_method": {"method": "sft", "train_on_inputs": 1}},
                 "train_on_inputs must be true, false or 'auto'", id="train-on-inputs-1"),
    pytest.param({"training_method": {"method": "sft", "dpo_beta": 0.2}},
                 "dpo_beta applies to DPO, not SFT", id="dpo-beta-with-sft"),
    pytest.param({"packing": "yes"}, "packing must be true or false", id="packing-yes"),
    pytest.param({"max_seq_length": 10**9}, "max_seq_length must be in [512, 32768], not "
                 "1000000000", id="max-seq-length"),
    pytest.param({"lr_scheduler": {"lr_scheduler_args": [1]}},
                 "lr_scheduler_args must be an object", id="scheduler-args-list"),
    pytest.param({"suffix": 7}, "suffix must be a string", id="suffix-number"),
])
def test_fine_tune_parameters_are_checked_as_together_checks_them(
        served: tuple[Client, str, str], fields: dict[str, Any], message: str) -> None:
    client, file_id, _ = served
    response = client.post("/fine-tunes", json={"training_file": file_id, "model": BASE,
                                                **fields})
    assert (response.status_code, response.json()["error"]["message"]) == (400, message)


def test_an_absurd_range_is_a_416(tmp_path: Path, clock: FakeClock) -> None:
    """On a completed job's download (any other is refused before the range is read), a
    5,000-digit Range is a 416; a sane one is still served."""
    with serving(LocalAPIConfig(data_dir=tmp_path, job_duration=1.0), clock) as client:
        job = client.post("/fine-tunes", json={"training_file": upload(client), "model": BASE})
        clock.advance(60)
        params = {"ft_id": job.json()["id"]}
        absurd = client.get("/finetune/download", params=params,
                            headers={"Range": "bytes=" + "9" * 5000 + "-"})
        assert (absurd.status_code, absurd.json()["error"]["type"]) == (416, "invalid_range")
        assert client.get("/finetune/download", params=params,
                          headers={"Range": "bytes=0-1"}).status_code == 206


def test_a_backwards_or_foreign_range_is_a_416(tmp_path: Path, clock: FakeClock) -> None:
    """`Range: bytes=5-2` was answered 206 with no bytes (a download) or a plain-text 400 (a
    file's content): both are a 416 in Together's shape, with the size it could serve."""
    with serving(LocalAPIConfig(data_dir=tmp_path, job_duration=1.0), clock) as client:
        file_id = upload(client)
        job = client.post("/fine-tunes", json={"training_file": file_id, "model": BASE})
        clock.advance(60)
        for url, params in (("/finetune/download", {"ft_id": job.json()["id"]}),
                            (f"/files/{file_id}/content", {})):
            for bad in ("bytes=5-2", "bytes=x-1", "items=0-1", "bytes=" + "9" * 18 + "-",
                        "bytes=-"):
                refused = client.get(url, params=params, headers={"Range": bad})
                assert refused.status_code == 416, (url, bad, refused.text)
                assert refused.json()["error"]["type"] == "invalid_range"
                assert refused.headers["content-range"].startswith("bytes */")
            served = client.get(url, params=params, headers={"Range": "bytes=2-4"})
            assert served.status_code == 206 and len(served.content) == 3
            whole = client.get(url, params=params).content
            assert client.get(url, params=params, headers={"Range": "bytes=-3"}
                              ).content == whole[-3:]


@pytest.mark.parametrize("content", [
    pytest.param(7, id="number"), pytest.param({"text": "hi"}, id="object"),
    pytest.param(None, id="null-for-user"), pytest.param(["hi"], id="list-of-strings"),
    pytest.param([{"type": "text", "text": 5}], id="text-part-not-text"),
    pytest.param([{"text": "no type"}], id="part-without-type"),
])
def test_chat_content_that_is_not_text_or_parts_is_a_400(served: tuple[Client, str, str],
                                                         content: Any) -> None:
    client, _, _ = served
    response = client.post("/chat/completions", json={
        "model": BASE, "messages": [{"role": "system", "content": "be brief"},
                                    {"role": "user", "content": content}]})
    assert response.status_code == 400, response.text
    assert response.json()["error"]["message"].startswith("messages[1].content")
    parts = client.post("/chat/completions", json={"model": BASE, "messages": [
        {"role": "user", "content": [{"type": "text", "text": "hi"},
                                     {"type": "image_url", "image_url": {"url": "x"}}]}]})
    assert parts.status_code == 200


@pytest.mark.parametrize("field", ["n_epochs", "n_checkpoints", "n_evals", "batch_size",
                                   "learning_rate", "warmup_ratio", "max_grad_norm",
                                   "weight_decay", "max_seq_length", "packing", "suffix",
                                   "validation_file", "train_on_inputs", "lr_scheduler",
                                   "training_method", "model"])
def test_null_where_together_requires_a_value_is_a_400_naming_the_field(
        served: tuple[Client, str, str], field: str) -> None:
    """`n_epochs: null` was taken as the default; Together's spec lets only random_seed
    and training_type be null (the SDKs leave an unset field out)."""
    client, file_id, _ = served
    response = client.post("/fine-tunes", json={"training_file": file_id, "model": BASE,
                                                field: None})
    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["param"], error["message"]) == (
        field, f"{field} must not be null: leave it out for its default")
    nested = client.post("/fine-tunes", json={"training_file": file_id, "model": BASE,
                                              "training_type": {"type": "Lora", "lora_r": None}})
    assert nested.json()["error"]["message"] == ("lora_r must not be null: leave it out for "
                                                 "its default")
    for nullable in ("random_seed", "training_type"):
        assert client.post("/fine-tunes/estimate-price", json={
            "training_file": file_id, "model": BASE, nullable: None}).status_code == 200


def test_405_says_which_methods_are_allowed(served: tuple[Client, str, str]) -> None:
    client, _, _ = served
    response = client.delete("/files")
    assert response.status_code == 405
    assert response.headers["allow"] == "GET, HEAD, POST"
    assert "allowed: GET, HEAD, POST" in response.json()["error"]["message"]


def test_bodies_beyond_the_limit_are_413(tmp_path: Path) -> None:
    """A declared or streamed body over max_request_bytes is refused unread; an upload over
    max_upload_bytes too, and its partial file is gone."""
    config = LocalAPIConfig(data_dir=tmp_path, max_request_bytes=1024, max_upload_bytes=4096)
    with serving(config) as client:
        response = client.post("/completions", content=json.dumps(
            {"model": BASE, "prompt": "x" * 2000}), headers={"content-type": "application/json"})
        assert response.status_code == 413
        assert response.json()["error"]["message"] == ("the request body is larger than "
                                                       "1 KiB")

        async def chunks(size: int, count: int) -> AsyncIterator[bytes]:  # no Content-Length
            for _ in range(count):
                yield b"m" * size

        assert client.post("/completions", content=chunks(600, 2)).status_code == 413
        start = client.post("/files", data={"purpose": "fine-tune", "file_name": "t.jsonl"})
        put = client.put(start.headers["location"], content=chunks(1000, 5))
        assert put.status_code == 413
        assert not list((tmp_path / "files").iterdir())


def test_an_upload_token_in_any_script_is_a_403(served: tuple[Client, str, str]) -> None:
    """schemathesis found it: a non-ASCII `token` on an upload URL was a 500 (the constant-
    time comparison refuses non-ASCII text); it is a wrong token like any other."""
    client, file_id, _ = served
    for url in (f"/../uploads/{file_id}", f"/../uploads/{file_id}/parts/1"):
        refused = client.put(url, params={"token": "¡x", "upload_id": "u"}, content=b"x")
        assert refused.status_code == 403, (url, refused.text)
