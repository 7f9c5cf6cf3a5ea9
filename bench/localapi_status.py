"""The local API must never be the bottleneck: job-status requests per second, in-process.

1,000 fine-tuning jobs are created through the API, then `GET /v1/fine-tunes/{id}` (the full
job, events included, as a pipeline's wait step polls it) is requested round-robin over them,
two ways:

- the API itself: calling its ASGI app directly, which is what serving a request costs the
  local API (whether the API could ever be the bottleneck);
- end to end through the in-process httpx client, one at a time and 16 at once: what a poll
  costs a pipeline. httpx's own client work is most of it (about 300 µs a request on these
  machines even with a transport that does nothing, measured beside it as "httpx alone"),
  and a real server would cost the same on the client side.

    python -m bench.localapi_status [--jobs 1000] [--requests 5000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio
import httpx

from orchestrator.localapi import LocalAPI, LocalAPIConfig, local_client

BASE = "meta-llama/Meta-Llama-3.1-8B-Instruct-Reference"
DATA = b"".join(b'{"prompt": "Q: %d?", "completion": " %d"}\n' % (i, i) for i in range(50))
TARGET = 2000


async def _setup(client: httpx.AsyncClient, jobs: int) -> list[str]:
    file = (await client.post("/files/upload", data={"purpose": "fine-tune",
                                                     "file_name": "t.jsonl"},
                              files={"file": ("t.jsonl", DATA)})).json()
    ids = []
    for _ in range(jobs):
        response = await client.post("/fine-tunes", json={"training_file": file["id"],
                                                          "model": BASE, "n_epochs": 3})
        ids.append(response.json()["id"])
    return ids


async def _measure(client: httpx.AsyncClient, ids: list[str], requests: int,
                   concurrency: int) -> float:
    """Requests per second."""
    per_worker = requests // concurrency

    async def worker(offset: int) -> None:
        for i in range(per_worker):
            response = await client.get(f"/fine-tunes/{ids[(offset + i * 7) % len(ids)]}")
            assert response.status_code == 200

    started = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for w in range(concurrency):
            tg.start_soon(worker, w * 131)
    return per_worker * concurrency / (time.perf_counter() - started)


async def _measure_app(api: LocalAPI, ids: list[str], requests: int) -> float:
    """Requests per second handled by the ASGI app called directly (no HTTP client)."""
    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    status: list[int] = []

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            status.append(message["status"])

    headers = [(b"authorization", f"Bearer {api.config.api_key}".encode()),
               (b"host", b"local-api")]
    started = time.perf_counter()
    for i in range(requests):
        path = f"/v1/fine-tunes/{ids[(i * 7) % len(ids)]}"
        await api.app({"type": "http", "method": "GET", "path": path,
                       "raw_path": path.encode(), "query_string": b"", "headers": headers,
                       "scheme": "http", "server": ("local-api", 80), "root_path": "",
                       "http_version": "1.1", "asgi": {"version": "3.0"}}, receive, send)
    elapsed = time.perf_counter() - started
    assert set(status) == {200}, set(status)
    return requests / elapsed


async def _measure_httpx_alone(requests: int) -> float:
    """httpx's own cost: a client whose transport answers a canned 4 KB response."""
    body = b'{"x": "' + b"y" * 4300 + b'"}'

    class Canned(httpx.AsyncBaseTransport):
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            return httpx.Response(200, content=body)

    async with httpx.AsyncClient(transport=Canned(), base_url="http://local-api/v1") as client:
        started = time.perf_counter()
        for _ in range(requests):
            await client.get("/fine-tunes/ft-00000000-0000-0000-0000-000000000000")
        return requests / (time.perf_counter() - started)


async def run(jobs: int, requests: int, repeat: int) -> dict[str, list[float]]:
    with tempfile.TemporaryDirectory() as tmp:
        config = LocalAPIConfig(data_dir=Path(tmp), job_duration=60.0)
        api = LocalAPI(config)
        async with local_client(config, api=api) as client:
            ids = await _setup(client, jobs)
            results: dict[str, list[float]] = {"the API itself (ASGI app, no client)": [
                await _measure_app(api, ids, requests) for _ in range(repeat)]}
            for concurrency in (1, 16):
                results[f"through httpx in-process, {concurrency:>2} at a time"] = [
                    await _measure(client, ids, requests, concurrency) for _ in range(repeat)]
            results["httpx alone (canned transport), for scale"] = [
                await _measure_httpx_alone(requests) for _ in range(repeat)]
            return results


def main(argv: list[str] | None = None) -> list[tuple[str, float]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    results = anyio.run(run, args.jobs, args.requests, args.repeat)
    print(f"local API, GET /v1/fine-tunes/{{id}} in-process with {args.jobs} jobs stored, "
          f"median of {args.repeat} (target >= {TARGET}/s)")
    rows = []
    for label, rates in results.items():
        median = statistics.median(rates)
        runs = ", ".join(f"{r:.0f}" for r in rates)
        print(f"  {label:<44} {median:7.0f} requests/s   (runs: {runs})")
        rows.append((f"local API job status, {label}: req/s", median))
    return rows


if __name__ == "__main__":
    main()
