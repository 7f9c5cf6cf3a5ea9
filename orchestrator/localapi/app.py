"""The local Together-compatible API: one object holding its config, clock and state, and the
ASGI app that serves it (in-process through httpx, or over loopback through uvicorn): the
routes of every endpoint module behind the gate (see `gate`).

`GET /v3/whoami` (not in the reference spec) answers a fixed local identity: Together's CLI
asks for it before any command that changes something.
"""

from __future__ import annotations

import random
import sqlite3
import tempfile
import threading
import time
from collections.abc import Callable

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Match, Route

from orchestrator.errors import ConfigError
from orchestrator.localapi import (
    catalogue,
    files,
    finetunes,
    inference,
    model_uploads,
    models,
    multipart,
    preview,
    projects,
    supported,
)
from orchestrator.localapi.config import LocalAPIConfig
from orchestrator.localapi.errors import APIError, error_response
from orchestrator.localapi.gate import Gate
from orchestrator.localapi.handlers import api_of
from orchestrator.localapi.jobviews import JobViews
from orchestrator.localapi.openapi import V1_ALIASED, document
from orchestrator.localapi.responses import JSONResponse
from orchestrator.localapi.state import LocalState
from orchestrator.trainer.client import TrainerProcess, missing_extra
from orchestrator.trainer.store import TrainingStore

__all__ = ["DOCS", "NOTICE", "LocalAPI", "docs_text"]

DOCS = """\
orchestrator local Together-compatible API
==========================================

{training}

Base URL: /v1 for SDK 2.x, the server's root for SDK 3.x (also accepted: /v1/v1/..., /v1/v2/...,
which SDK 3.x sends when its base URL ends in /v1). Every /v0, /v1, /v2 and /v3 request
needs Authorization: Bearer <local_api_key>.

Files        GET /v1/files, POST /v1/files (302 + Location + X-Together-File-Id, or 409 with
             file_id when the same bytes, by sha256 checksum, are there), PUT <Location>,
             POST /v1/files/{id}/preprocess, POST /v1/files/upload (multipart/form-data),
             POST /v1/files/multipart/initiate|complete|abort (files in parts; PUT each
             part to its URL, answered with its MD5 as ETag),
             GET|DELETE /v1/files/{id}, GET /v1/files/{id}/content
Fine-tunes   POST|GET /v1/fine-tunes, GET|DELETE /v1/fine-tunes/{id},
             POST /v1/fine-tunes/{id}/cancel, GET /v1/fine-tunes/{id}/events|checkpoints|metrics,
             POST /v1/fine-tunes/estimate-price, GET /v1/fine-tunes/models/limits?model_name=,
             POST /v1/fine-tunes/preview (how a file's first rows tokenize),
             GET /v1/fine-tunes/{id}/download-tokenized-dataset (a signed URL, 100 min),
             GET /v1/fine-tunes/models/supported, GET /v1/finetune/download?ft_id=
Models       GET /v1/models, POST /v1/models (also /v0/models), GET /v1/jobs, GET /v1/jobs/{id}
Models (v2)  project proj-local (GET /v3/whoami): POST|GET /v2/projects/{project}/models,
             GET|PATCH|DELETE .../models/{id}, GET .../models/{id}/revisions|files,
             POST|GET .../models/uploads (import from Hugging Face or a presigned URL),
             GET .../models/uploads/{id}, GET .../models/uploads/{id}/events,
             POST .../models/upload/create|complete (a folder's files direct, in parts:
             PUT each to its URL, answered with its MD5 as ETag; complete makes a revision);
             GET /v2/supported-models, GET /v2/supported-models/{id} (the base models);
             each also under /v1 (/v1/projects/..., /v1/supported-models): SDK 2.x sends
             them beside its base URL
Inference    POST /v1/completions, POST /v1/chat/completions (stream: true for SSE);
             GET /v1/local/inference: every request taken, counted by model and prompt

Bounds: a request body up to local_max_request_bytes, a file upload up to
local_max_upload_bytes (else 413); headers, and a body that is not an upload, within
local_request_timeout, and no upload pausing longer (else 408 and the connection closes).
SDK arguments that are not request fields (lora, lora_r, dpo_beta, ...) are refused, with
where they go (training_type.lora_r, training_method.dpo_beta, ...).

Testing aids (headers): X-Local-Fault: 429|500|503|drop|none, X-Local-Latency: 200ms (<= 60s),
X-Local-Job: {"duration": "2s", "outcome": "error"|"user_error", "fail_at": 0.5} on create.
Settings: local_faults ("429=0.05,500=0.02,503=0.02,drop=0.01"), local_latency,
local_retry_after, local_fault_seed, local_job_outcome, local_upload_duration,
local_max_request_bytes, local_max_upload_bytes, local_request_timeout; the trainer's:
local_trainer (simulated | peft), local_base_models, local_trainer_threads,
local_trainer_save_every.
"""

SIMULATED_TRAINING = """\
SIMULATED: no model is trained here. Fine-tuning jobs move through
pending -> queued -> running -> compressing -> uploading -> completed by the clock
(setting local_job_duration; 10s by default, set e.g. 20m for realistic timing),
and a fine-tuned model answers from the examples it was trained on
(local-api --trainer peft, or setting local_trainer = "peft", trains for real)."""

REAL_TRAINING = """\
REAL: the local trainer (LoRA with peft) trains every fine-tuning job, one at a time, in a
process of its own, on the built-in tiny bases (local/tiny-llama: random weights, a toy) or
the model folders the setting local_base_models maps names to; nothing is downloaded.
Fine-tuned models, tiny and mapped bases, and adapter folders imported from this machine
(file:// URLs) answer from their weights; other models' answers are simulated."""

NOTICE = {
    "simulated": "This is the orchestrator's local Together-compatible API. Fine-tuning is "
                 "simulated: jobs progress by the clock and no model is trained; a fine-tuned "
                 "model answers from its training examples.",
    "peft": "This is the orchestrator's local Together-compatible API. Fine-tuning is real: "
            "the local trainer trains LoRA adapters with peft on the bases it has weights for "
            "(the built-in local/tiny-llama is a toy with random weights).",
}


def docs_text(trainer: str) -> str:
    """What GET /docs says: which endpoints there are, and whether training is real."""
    return DOCS.replace("{training}", REAL_TRAINING if trainer == "peft" else SIMULATED_TRAINING)


class LocalAPI:
    """The local API's config, clock, random source and on-disk state, plus its ASGI `app`."""

    def __init__(self, config: LocalAPIConfig, *, clock: Callable[[], float] = time.time,
                 rng: random.Random | None = None) -> None:
        self.config = config
        self.clock = clock
        self.rng = rng or random.Random(config.fault_seed)
        self._state: LocalState | None = None
        self._training: TrainingStore | None = None
        self._trainer: TrainerProcess | None = None
        self._lock = threading.Lock()
        if config.trainer == "peft":
            missing = missing_extra()
            if missing is not None:
                msg = f"local_trainer peft: {missing}"
                raise ConfigError(msg)
        self.asked = inference.AskedLog()
        """Every inference request taken, counted (a testing aid: GET /v1/local/inference)."""
        self.jobs = JobViews(self)
        """Fine-tuning jobs as they read now (what never changes about each is kept)."""
        starlette = Starlette(routes=_routes(), exception_handlers={
            APIError: _api_error, HTTPException: _http_error})
        starlette.state.api = self
        self.app = Gate(starlette, self)

    def base_models(self) -> list[catalogue.BaseModel]:
        """Every base model this API serves: the catalogue's, then the mapped folders'."""
        mapped = sorted(self.config.base_models) if self.config.trainer == "peft" else []
        return [*catalogue.BASE_MODELS, *(m for m in map(self.base_model, mapped) if m)]

    def base_model(self, name: str) -> catalogue.BaseModel | None:
        """The base model `name` names: one of the catalogue's, or (with the real trainer) a
        model folder the setting local_base_models maps it to."""
        found = catalogue.find(name)
        if found is None and self.config.trainer == "peft" and name in self.config.base_models:
            found = catalogue.mapped(name, self.config.base_models[name])
        return found

    @property
    def state(self) -> LocalState:
        """The on-disk state, opened on first use (in-process clients never send a lifespan)."""
        if self._state is None:
            with self._lock:
                if self._state is None:
                    self._state = LocalState(self.config.data_dir)
        return self._state

    @property
    def training(self) -> TrainingStore:
        """The jobs the local trainer trains, as it left them (opened on first use)."""
        if self._training is None:
            self.state  # noqa: B018  (the folder and database first)
            with self._lock:
                if self._training is None:
                    self._training = TrainingStore(self.config.data_dir)
        return self._training

    def trainer(self) -> TrainerProcess:
        """The trainer process, started if it is not running (it continues any job a dead
        trainer left)."""
        if self._trainer is None:
            with self._lock:
                if self._trainer is None:
                    self._trainer = TrainerProcess(
                        self.config.data_dir.resolve(), threads=self.config.trainer_threads,
                        save_every=self.config.trainer_save_every)
        self._trainer.start()
        return self._trainer

    def check_state(self) -> None:
        """Open the on-disk state now and prove it writable: ConfigError, in one line, for a
        data folder that cannot hold it (instead of a 500 for every request later)."""
        where = self.config.data_dir
        try:
            state = self.state
            with tempfile.TemporaryFile(dir=state.files_dir):
                pass
            state.check_writable()
            if self.config.trainer == "peft":
                self.trainer()  # at once: jobs a killed server left continue now
        except (OSError, sqlite3.Error) as exc:
            self.close()
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            msg = f"the local API's data folder {where} cannot be used: {reason}"
            raise ConfigError(msg) from None

    def close(self) -> None:
        if self._trainer is not None:
            self._trainer.close()
            self._trainer = None
        if self._training is not None:
            self._training.close()
            self._training = None
        if self._state is not None:
            self._state.close()
            self._state = None


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, APIError)
    return exc.response()


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        return error_response(404, f"no such endpoint: {request.method} {request.url.path}",
                              type_="not_found")
    if exc.status_code == 405:
        allowed = _allowed_methods(request)
        return error_response(405, f"method {request.method} is not allowed on "
                                   f"{request.url.path} (allowed: {', '.join(allowed)})",
                              type_="method_not_allowed", headers={"Allow": ", ".join(allowed)})
    return error_response(exc.status_code, str(exc.detail))


def _allowed_methods(request: Request) -> list[str]:
    """Every method some route serves at this path (routes of one path are split by method,
    and the one Starlette refused with knows only its own)."""
    methods: set[str] = set()
    for route in request.app.routes:
        match, _ = route.matches({**request.scope, "method": "OPTIONS"})
        if match is not Match.NONE and isinstance(route, Route) and route.methods:
            methods |= route.methods
    return sorted(methods)


async def root(request: Request) -> Response:
    return JSONResponse({
        "name": "orchestrator local Together-compatible API",
        "simulated": api_of(request).config.trainer != "peft",
        "notice": NOTICE[api_of(request).config.trainer],
        "docs": str(request.url_for("docs")),
        "base_url": f"{str(request.base_url).rstrip('/')}/v1",
    })


async def whoami(request: Request) -> Response:
    """Who the key belongs to: Together's CLI asks before any command that changes things."""
    namespace = api_of(request).config.namespace
    return JSONResponse({
        # SDK 3.x's shape (a project API key) ...
        "type": "project_api_key", "api_key": {"id": "key-local"},
        "organization": {"id": projects.ORGANIZATION_ID, "name": "local"},
        "project": {"id": projects.PROJECT_ID, "name": namespace, "slug": namespace},
        # ... and the flat one the 2.x CLI reads.
        "api_key_id": "key-local", "organization_id": projects.ORGANIZATION_ID,
        "organization_name": "local", "project_id": projects.PROJECT_ID,
        "project_name": namespace, "project_slug": namespace, "user_id": namespace,
    })


async def docs(request: Request) -> Response:
    return PlainTextResponse(docs_text(api_of(request).config.trainer))


async def openapi(request: Request) -> Response:
    """This server's own OpenAPI document (see `openapi`)."""
    return JSONResponse(document())


def _routes() -> list[BaseRoute]:
    # Routes are tried in order: the ones polled most (a job's status) come first.
    v2 = [*projects.ROUTES, *model_uploads.ROUTES, *supported.ROUTES]
    return [
        *finetunes.ROUTES,
        *preview.ROUTES,  # a full match beats /v1/fine-tunes/{job_id}'s method-less one
        *inference.ROUTES,
        *files.ROUTES,
        *multipart.ROUTES,
        *models.ROUTES,
        *v2,
        *(Route("/v1" + r.path.removeprefix("/v2"), r.endpoint, methods=r.methods)
          for r in v2 if isinstance(r, Route) and r.path.startswith(V1_ALIASED)),
        Route("/", root, name="root"),
        Route("/docs", docs, name="docs"),
        Route("/openapi.json", openapi, methods=["GET"]),
        Route("/v3/whoami", whoami, methods=["GET"]),
    ]
