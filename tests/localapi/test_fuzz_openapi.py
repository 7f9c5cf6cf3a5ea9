"""schemathesis over the local API's own OpenAPI document (`GET /openapi.json`): for every
operation it describes, requests it generates from the document (valid ones, aimed at real
files, jobs and models, and invalid ones of every kind) never get a 5xx.

Bounded: a fixed number of examples per operation and mode, each operation its own test (the
suite's workers share them out); the whole runs in well under a minute on 2 cores.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.routing import Route

from orchestrator.localapi import LocalAPIConfig
from orchestrator.localapi.app import _routes
from orchestrator.localapi.openapi import document
from orchestrator.localapi.projects import PROJECT_ID
from tests.localapi.conftest import BASE
from tests.localapi.test_hostile_requests import Client, serving, upload

with warnings.catch_warnings():  # its import warns of things this suite does not use
    warnings.simplefilter("ignore")
    import schemathesis
    from schemathesis import GenerationMode
    from schemathesis.core.result import Ok

EXAMPLES = 20
"""Examples per operation and mode (valid, invalid)."""
AUTH = {"Authorization": "Bearer local-key"}
SCHEMA = schemathesis.openapi.from_dict(document())
OPERATIONS = {op.label: op for op in (result.ok() for result in SCHEMA.get_all_operations()
                                      if isinstance(result, Ok))
              if "x-alias-of" not in op.definition.raw}
"""Every operation but the aliases (/v1/projects/... for /v2/projects/...: the same handler)."""


def test_the_document_names_every_route_the_server_has() -> None:
    """What it routes and what its document describes are one list (HEAD aside)."""
    routed = {(method, re.sub(r"\{(\w+):\w+\}", r"{\1}", route.path))  # {id:path}: {id}
              for route in _routes() if isinstance(route, Route)
              for method in route.methods or () if method != "HEAD"}
    described = {(method.upper(), path) for path, methods in document()["paths"].items()
                 for method in methods}
    assert routed == described


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Client, dict[str, str]]]:
    """One API for every example, holding a real file, job, project model and upload: the
    ids valid examples aim at."""
    config = LocalAPIConfig(data_dir=tmp_path_factory.mktemp("api"), job_duration=1.0,
                            upload_duration=1.0)
    with serving(config) as client:
        file_id = upload(client)
        job = client.post("/fine-tunes", json={"training_file": file_id, "model": BASE})
        model = client.post(f"/../v2/projects/{PROJECT_ID}/models", json={
            "name": "fuzzed", "type": "adapter", "baseModelId": BASE})
        remote = client.post(f"/../v2/projects/{PROJECT_ID}/models/uploads", json={
            "modelId": model.json()["id"], "remoteUrl": "https://huggingface.co/org/repo"})
        yield client, {"file_id": file_id, "job_id": job.json()["id"],
                       "project_id": PROJECT_ID, "model_id": model.json()["id"],
                       "upload_id": remote.json()["id"]}


def _request(case: Any) -> dict[str, Any] | None:
    """The case as httpx's keyword arguments (schemathesis writes them for requests), or None
    for one no HTTP client can send (a header with a line break)."""
    given = case.as_transport_kwargs(base_url="http://local-api")
    headers = {**given.get("headers", {}), **AUTH}
    if any(not isinstance(v, str) or not v.isprintable() or not v.isascii()
           for v in headers.values()):
        return None  # httpx sends ASCII header values only
    sent: dict[str, Any] = {"method": given["method"], "url": given["url"],
                            "headers": headers, "params": given.get("params") or None,
                            "follow_redirects": False}
    if "json" in given:
        sent["json"] = given["json"]
    files, data = given.get("files"), given.get("data")
    if files:
        sent["files"] = [(name, (filename, value if isinstance(value, bytes | str)
                                 else str(value))) for name, (filename, value) in files]
    if isinstance(data, bytes | str):
        sent["content"] = data
    elif data is not None:
        sent["data"] = {k: v if isinstance(v, str | bytes) else str(v) for k, v in data.items()}
    return sent


@pytest.mark.parametrize("label", sorted(OPERATIONS))
def test_no_request_the_document_describes_gets_a_server_error(
        served: tuple[Client, dict[str, str]], label: str) -> None:
    client, ids = served
    operation = OPERATIONS[label]
    real = {p.name: ids[p.name] for p in operation.path_parameters if p.name in ids}
    answered: list[int] = []
    bounded = settings(max_examples=EXAMPLES, deadline=None, database=None,
                       suppress_health_check=list(HealthCheck))
    for mode, fixed in ((GenerationMode.POSITIVE, real), (GenerationMode.NEGATIVE, {})):
        strategy = operation.as_strategy(mode, path_parameters=fixed or None)

        def check(case: Any, aim: bool) -> None:  # one per mode: hypothesis decorates it
            if aim:
                _aim(case, ids)
            _check(client, case, answered)

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            bounded(given(case=strategy, aim=st.booleans())(check))()
    assert answered, "requests were sent"


def _aim(case: Any, ids: dict[str, str]) -> None:
    """Point the case's body and query at real things where they name one (a base model, a
    file, a job, a model), so that it passes the first checks and reaches the later ones."""
    real = {"model": BASE, "base_model": BASE, "baseModelId": BASE, "model_name": BASE,
            "training_file": ids["file_id"], "validation_file": ids["file_id"],
            "file_id": ids["file_id"], "ft_id": ids["job_id"], "modelId": ids["model_id"]}
    for part in (case.body, case.query):
        if isinstance(part, dict):
            part.update({k: v for k, v in real.items() if k in part})


def _check(client: Client, case: Any, answered: list[int]) -> None:
    request = _request(case)
    if request is None:
        return
    try:
        response = client.raw(**request)
    except httpx.InvalidURL:
        return  # not a request any client can send
    answered.append(response.status_code)
    assert response.status_code < 500, (request, response.status_code, response.text[:300])
