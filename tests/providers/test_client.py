"""The Together client's error handling and retries, against handler functions (MockTransport).

These are the only tests with a mock transport: everything else talks to the local API.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from orchestrator.errors import PermanentError, ProviderUnavailable, RateLimited
from orchestrator.providers.together.client import TogetherClient
from orchestrator.providers.together.errors import (
    ModelNameTaken,
    NotFound,
    TogetherAPIError,
    error_from_transport,
)

KEY = "sk-secret-key-0123456789"
Handler = Callable[[httpx.Request], httpx.Response]


def error(status: int, message: str, param: str | None = None,
          headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.Response(status, json={"error": {"message": message, "type": "x",
                                                  "param": param, "code": None}},
                          headers=headers)


class Recorder:
    """Serves scripted responses in order and records the requests."""

    def __init__(self, *responses: httpx.Response | Exception) -> None:
        self.responses = list(responses)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.responses.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


def client_for(handler: Handler, slept: list[float] | None = None) -> TogetherClient:
    async def sleep(seconds: float) -> None:
        (slept if slept is not None else []).append(seconds)

    return TogetherClient(api_key=KEY, base_url="https://api.example/v1",
                          transport=httpx.MockTransport(handler), sleep=sleep)


async def test_401_says_how_to_set_the_key_and_hides_it() -> None:
    recorder = Recorder(error(401, "Invalid API key"))
    async with client_for(recorder) as client:
        with pytest.raises(TogetherAPIError) as caught:
            await client.list_files()
    assert "Set TOGETHER_API_KEY" in str(caught.value)
    assert KEY not in str(caught.value) and KEY not in repr(client)
    assert recorder.requests[0].headers["authorization"] == f"Bearer {KEY}"


async def test_429_is_retried_after_the_servers_wait() -> None:
    slept: list[float] = []
    recorder = Recorder(error(429, "slow", headers={"retry-after-ms": "1500"}),
                        httpx.Response(200, json={"data": []}))
    async with client_for(recorder, slept) as client:
        assert await client.list_files() == []
    assert len(recorder.requests) == 2 and slept and slept[0] >= 1.5


async def test_a_long_retry_after_goes_back_to_the_step() -> None:
    """A wait longer than the client's cap is raised as RateLimited for the step's policy."""
    recorder = Recorder(error(429, "slow", headers={"retry-after": "120"}))
    async with client_for(recorder) as client:
        with pytest.raises(RateLimited) as caught:
            await client.list_files()
    assert caught.value.retry_after == 120.0 and len(recorder.requests) == 1


@pytest.mark.parametrize(("status", "calls"), [(503, 2), (500, 1), (409, 1)])
async def test_a_create_is_retried_only_when_not_processed(status: int, calls: int) -> None:
    """503/429 mean "not processed": safe to resend a POST. 500 may have been processed."""
    recorder = Recorder(error(status, "busy"), httpx.Response(200, json={
        "id": "ft-1", "status": "pending"}))
    async with client_for(recorder) as client:
        if calls == 2:
            assert (await client.create_fine_tune({"model": "m"})).id == "ft-1"
        else:
            with pytest.raises(ProviderUnavailable, match=f"HTTP {status}"):
                await client.create_fine_tune({"model": "m"})
    assert len(recorder.requests) == calls


async def test_reads_are_retried_after_any_transient_fault() -> None:
    recorder = Recorder(error(500, "oops"), httpx.ReadError("reset"),
                        httpx.Response(200, json={"id": "ft-1", "status": "running"}))
    async with client_for(recorder) as client:
        assert (await client.retrieve_fine_tune("ft-1")).status == "running"
    assert len(recorder.requests) == 3


async def test_a_lost_response_to_a_create_is_not_resent() -> None:
    """The server may have created the job: the step, not the client, decides (by its token)."""
    recorder = Recorder(httpx.RemoteProtocolError("Server disconnected"))
    async with client_for(recorder) as client:
        with pytest.raises(ProviderUnavailable, match=r"connection to .* failed"):
            await client.create_fine_tune({"model": "m"})
    assert len(recorder.requests) == 1


async def test_a_connection_never_made_is_safe_to_retry() -> None:
    recorder = Recorder(httpx.ConnectError("refused"),
                        httpx.Response(200, json={"id": "ft-1", "status": "pending"}))
    async with client_for(recorder) as client:
        assert (await client.create_fine_tune({"model": "m"})).id == "ft-1"
    assert len(recorder.requests) == 2


async def test_4xx_are_permanent_with_the_apis_message() -> None:
    cases: list[tuple[httpx.Response, type[Exception], str]] = [
        (error(400, "n_epochs must be in [1, 20]", "n_epochs"), TogetherAPIError,
         r"n_epochs must be in \[1, 20\] \[n_epochs\] \(HTTP 400 on POST /v1/fine-tunes\)"),
        (error(404, "no such model"), NotFound, "no such model"),
        (error(400, "Model name already exists", "model_name"), ModelNameTaken,
         "Model name already exists"),
        (httpx.Response(422, text="<html>nope</html>"), TogetherAPIError, "<html>nope</html>"),
    ]
    for response, kind, message in cases:
        recorder = Recorder(response)
        async with client_for(recorder) as client:
            with pytest.raises(kind, match=message):
                await client.create_fine_tune({"model": "m"})
        assert len(recorder.requests) == 1
        assert issubclass(kind, PermanentError)


def _transport_errors(base: type[Exception]) -> list[type[Exception]]:
    found = []
    for sub in base.__subclasses__():
        found.append(sub)
        found.extend(_transport_errors(sub))
    return found


@pytest.mark.parametrize("kind", _transport_errors(httpx.TransportError),
                         ids=lambda k: k.__name__)
def test_every_httpx_transport_error_is_mapped(kind: type[httpx.TransportError]) -> None:
    """No httpx transport error escapes unmapped: all are ProviderUnavailable (retryable)."""
    mapped = error_from_transport(kind("boom"), "https://api.example/v1/files")
    assert isinstance(mapped, ProviderUnavailable)
    assert "api.example" in str(mapped)


async def test_upload_flow_and_reuse(tmp_path: Path) -> None:
    """Announce (302), PUT the bytes without the key, preprocess; a 409 returns the existing."""
    data = tmp_path / "t.jsonl"
    data.write_bytes(b'{"text": "hello world"}\n')
    file_json = {"id": "file-1", "object": "file", "filename": "t.jsonl", "bytes": 24,
                 "purpose": "fine-tune", "LineCount": 1, "Processed": True}
    recorder = Recorder(
        httpx.Response(302, headers={"Location": "https://upload.example/put?sig=1",
                                     "X-Together-File-Id": "file-1"}),
        httpx.Response(200), httpx.Response(200, json=file_json),
        httpx.Response(409, json={"file_id": "file-1", "error": {"message": "exists"}}),
        httpx.Response(200, json=file_json))
    async with client_for(recorder) as client:
        first, reused = await client.upload_file(data, checksum="ab" * 32)
        assert (first.id, first.line_count, reused) == ("file-1", 1, False)
        again, reused = await client.upload_file(data, checksum="ab" * 32)
        assert (again.id, reused) == ("file-1", True)
    announce, put = recorder.requests[0], recorder.requests[1]
    assert b"checksum=" + b"ab" * 32 in announce.content
    assert put.method == "PUT" and "authorization" not in put.headers
    assert put.content == data.read_bytes()


async def test_lifecycle_misuse_is_explained() -> None:
    client = client_for(Recorder())
    with pytest.raises(RuntimeError, match="is unopened"):
        await client.list_files()
    async with client:
        pass
    with pytest.raises(RuntimeError, match="can be opened once"):
        await client.__aenter__()


def test_retry_after_forms() -> None:
    from orchestrator.providers.together.errors import retry_after

    def response(headers: dict[str, str]) -> httpx.Response:
        return httpx.Response(429, headers=headers, request=httpx.Request("GET", "http://x"))

    assert retry_after(response({"retry-after-ms": "250"})) == 0.25
    assert retry_after(response({"retry-after": "3"})) == 3.0
    assert retry_after(response({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"})) == 0.0
    assert retry_after(response({})) is None





async def test_an_upload_named_by_a_409_and_gone_when_read_is_announced_again(
        tmp_path: Path) -> None:
    """The server answered the announce with another client's upload of the same bytes
    (409), which expired unused before it was read (404): the bytes are announced again and
    sent, never a step failed for a file nobody will ever finish (seen in the random-kill
    test, with a 2 s upload URL lifetime)."""
    data = tmp_path / "train.jsonl"
    data.write_text('{"text": "x"}\n')
    done = {"id": "file-2", "object": "file", "filename": "t.jsonl", "bytes": 14,
            "purpose": "fine-tune", "processed": True}
    recorder = Recorder(
        httpx.Response(409, json={"file_id": "file-1", "message": "uploading"}),
        error(404, "no file with id file-1"),
        httpx.Response(302, headers={"location": "https://uploads.example/put",
                                     "x-together-file-id": "file-2"}),
        httpx.Response(200),
        httpx.Response(200, json=done))
    async with client_for(recorder) as client:
        file, reused = await client.upload_file(data, checksum="ab" * 32)
    assert (file.id, reused) == ("file-2", False)
    assert [r.method for r in recorder.requests] == ["POST", "GET", "POST", "PUT", "POST"]


async def test_a_stream_refused_is_the_error_its_body_says() -> None:
    recorder = Recorder(error(404, "model not found", "model"))
    async with client_for(recorder) as client:
        with pytest.raises(NotFound, match="model not found"):
            await client.stream("nope", prompt="hi", max_tokens=4)
    assert recorder.requests[0].url.path.endswith("/completions")
    assert json.loads(recorder.requests[0].content)["stream"] is True


async def test_a_stream_that_is_not_server_sent_json_is_one_line() -> None:
    recorder = Recorder(httpx.Response(200, text="data: {not json\n\n"))
    async with client_for(recorder) as client:
        with pytest.raises(ProviderUnavailable, match="not server-sent JSON"):
            await client.stream("m", messages=[{"role": "user", "content": "hi"}])


async def test_a_create_given_a_deadline_gives_up_at_it() -> None:
    """A create that cannot finish within the time its run is surely held is given up (an
    ambiguous failure: the step looks for the job before creating again)."""
    import anyio

    async def never(request: httpx.Request) -> httpx.Response:
        await anyio.sleep(3600)
        raise AssertionError("unreachable")

    client = TogetherClient(api_key=KEY, base_url="https://api.example/v1",
                            transport=httpx.MockTransport(never))
    async with client:
        with anyio.fail_after(10), pytest.raises(ProviderUnavailable) as caught:
            await client.create_fine_tune({"model": "m", "training_file": "f"}, within=0.1)
    assert "longer than 0.1s" in str(caught.value) and "may or may not exist" in str(caught.value)


def test_connections_are_reset_when_closed_unless_a_proxy_is_named(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """SO_LINGER 0: bytes of a request given up on are dropped, never sent late."""
    import socket
    import struct

    from orchestrator.providers.together.client import _abortive_transport

    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY",
                 "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    transport = _abortive_transport(httpx.Limits())
    assert transport is not None
    options = list(transport._pool._socket_options or ())
    assert (socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)) in options
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    assert _abortive_transport(httpx.Limits()) is None
