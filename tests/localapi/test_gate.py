"""The gate in front of every route: keys, path forms, latency and injected faults."""

from __future__ import annotations

import dataclasses
import random
from collections import Counter

import anyio
import httpx
import pytest

from orchestrator.localapi import LocalAPI, LocalAPIConfig, local_client, parse_faults
from orchestrator.testing import FakeClock
from tests.localapi.conftest import create_job, upload


async def test_root_and_docs_say_training_is_simulated(client: httpx.AsyncClient) -> None:
    root = (await client.get("http://local-api/")).json()
    assert root["simulated"] is True and "no model is trained" in root["notice"]
    docs = (await client.get("http://local-api/docs")).text
    assert "SIMULATED" in docs


async def test_key_is_required(local_config: LocalAPIConfig, api: LocalAPI) -> None:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=api.app),
                                 base_url="http://x/v1") as bare:
        missing = await bare.get("/files")
        wrong = await bare.get("/files", headers={"Authorization": "Bearer nope"})
        right = await bare.get("/files", headers={"Authorization": "Bearer local-key"})
    assert (missing.status_code, wrong.status_code, right.status_code) == (401, 401, 200)
    assert "send Authorization: Bearer <key>" in missing.json()["error"]["message"]
    assert wrong.json()["error"] == {"message": "invalid API key provided",
                                     "type": "invalid_api_key", "param": None, "code": None}


async def test_doubled_v1_prefix_is_accepted(client: httpx.AsyncClient) -> None:
    """SDK 3.x pointed at .../v1 sends /v1/v1/...: same answers."""
    assert (await client.get("http://local-api/v1/v1/files")).json() == \
        (await client.get("/files")).json()


async def test_unknown_routes_and_methods_are_error_data(client: httpx.AsyncClient) -> None:
    missing = await client.get("/nope")
    assert missing.status_code == 404 and missing.json()["error"]["type"] == "not_found"
    method = await client.put("/files")
    assert method.status_code == 405 and "not allowed" in method.json()["error"]["message"]


@pytest.mark.parametrize(("fault", "status"), [("429", 429), ("503", 503), ("500", 500)])
async def test_forced_faults(client: httpx.AsyncClient, fault: str, status: int) -> None:
    response = await client.get("/files", headers={"X-Local-Fault": fault})
    assert response.status_code == status
    assert set(response.json()["error"]) == {"message", "type", "param", "code"}
    if status in (429, 503):
        assert response.headers["retry-after"] == "1"
        assert response.headers["retry-after-ms"] == "1000"


async def test_a_dropped_connection_still_did_the_work(client: httpx.AsyncClient) -> None:
    """`drop` handles the request, then loses the response: the job exists, the client errs."""
    file = await upload(client)
    with pytest.raises(httpx.RemoteProtocolError):
        await client.post("/fine-tunes", json={
            "training_file": file["id"], "model": "meta-llama/Meta-Llama-3.1-8B-Instruct-"
                                                  "Reference"}, headers={"X-Local-Fault": "drop"})
    assert len((await client.get("/fine-tunes")).json()["data"]) == 1


async def test_latency(client: httpx.AsyncClient) -> None:
    started = anyio.current_time()
    await client.get("/files", headers={"X-Local-Latency": "200ms"})
    assert anyio.current_time() - started >= 0.2


async def test_configured_shares_are_what_a_client_sees(local_config: LocalAPIConfig,
                                                       clock: FakeClock) -> None:
    """Over 4,000 requests each fault's observed share is within 1.5 points of its setting."""
    shares = {"429": 0.10, "500": 0.05, "503": 0.05, "drop": 0.05}
    config = dataclasses.replace(local_config, faults=shares)
    api = LocalAPI(config, clock=clock, rng=random.Random(7))
    seen: Counter[str] = Counter()
    requests = 4000
    async with local_client(config, api=api) as client:
        for _ in range(requests):
            try:
                response = await client.get("/fine-tunes/models/supported")
            except httpx.RemoteProtocolError:
                seen["drop"] += 1
            else:
                seen[str(response.status_code)] += 1
    for kind, share in shares.items():
        assert abs(seen[kind] / requests - share) < 0.015, (kind, seen)
    assert abs(seen["200"] / requests - 0.75) < 0.02


def test_fault_settings_are_checked() -> None:
    assert parse_faults("429=0.1, drop=0.05") == {"429": 0.1, "drop": 0.05}
    for text, message in [("418=0.1", "bad fault '418=0.1'"), ("429=lots", "bad fault share"),
                          ("429=1.5", "between 0 and 1"), ("429=0.6,500=0.6", "add up to 1.2")]:
        with pytest.raises(ValueError, match=message):
            parse_faults(text)


async def test_job_plan_header_is_checked(client: httpx.AsyncClient) -> None:
    file = await upload(client)
    response = await client.post("/fine-tunes", json={
        "training_file": file["id"], "model": "meta-llama/Meta-Llama-3.1-8B-Instruct-Reference"},
        headers={"X-Local-Job": "[1]"})
    assert response.status_code == 400 and "X-Local-Job must be a JSON object" in response.text
    bad = await create_job(client, file["id"], plan={"outcome": "exploded"})
    assert bad.status_code == 400 and "outcome must be" in bad.text


async def test_bad_test_headers_are_400s(client: httpx.AsyncClient) -> None:
    for header, value, fragment in [("X-Local-Fault", "418", "X-Local-Fault must be one of"),
                                    ("X-Local-Latency", "soon", "bad duration 'soon'")]:
        response = await client.get("/files", headers={header: value})
        assert response.status_code == 400, header
        assert fragment in response.json()["error"]["message"]
