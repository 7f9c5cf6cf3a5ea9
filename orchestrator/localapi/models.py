"""Models: the catalogue, fine-tuned outputs and imported models/adapters, and their jobs.

`POST /v1/models` (also `/v0/models`, the older docs' path) imports a model or adapter from a
Hugging Face repository URL or a presigned S3 URL. Nothing is downloaded: the import job goes
Queued -> Running -> Complete by the clock (setting `local_upload_duration`). Names are unique
per account: a second import under one name is refused with "Model name already exists".
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlparse

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from orchestrator.durations import parse_duration
from orchestrator.localapi import catalogue, training
from orchestrator.localapi.errors import APIError, bad_request, not_found
from orchestrator.localapi.handlers import api_of, json_body
from orchestrator.localapi.responses import JSONResponse, iso
from orchestrator.localapi.timeline import SIMULATED

if TYPE_CHECKING:
    from orchestrator.localapi.app import LocalAPI

__all__ = ["NAME", "PHASE_MESSAGES", "ROUTES", "ServedModel", "check_base_model",
           "import_phases", "import_plan", "learnt_from", "name_taken", "resolve", "source_kind",
           "upload_succeeded"]

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


@dataclass(frozen=True)
class ServedModel:
    """A model that can answer requests, and where its learnt answers (if any) come from."""

    name: str
    base: str
    learnt_from: str | None
    """The fine-tuned model whose training examples this one answers from."""
    weights: dict[str, Any] | None = None
    """Real weights that answer (`{"base": ..., "adapter": folder or None}`): the trainer
    generates from them; None for a simulated model."""


def source_kind(source: str) -> str | None:
    """`huggingface` or `remote_archive` for an acceptable source URL, else None."""
    url = urlparse(source)
    if url.scheme != "https" or not url.hostname:
        return None
    if url.hostname in ("huggingface.co", "www.huggingface.co"):
        parts = [p for p in url.path.split("/") if p]
        return "huggingface" if len(parts) >= 2 else None
    presigned = "X-Amz-Signature" in parse_qs(url.query) or "Signature" in parse_qs(url.query)
    if url.hostname.endswith("amazonaws.com") and presigned and \
            url.path.endswith((".zip", ".tar.gz", ".tgz", ".tar")):
        return "remote_archive"
    return None


PHASE_MESSAGES = {"queued": "Job queued", "running": f"Processing model weights {SIMULATED}",
                  "complete": "Model is ready for inference",
                  "failed": f"Import failed: planned failure {SIMULATED}"}
"""What each phase of an import says, in either API (v0 jobs, v2 remote uploads)."""


def import_phases(api: LocalAPI, plan: dict[str, Any], created_at: float
                  ) -> list[tuple[float, str]]:
    """The phases of an import reached so far, each with when it began (epoch seconds): queued,
    running after a fifth of its duration, then complete at its end or failed half way."""
    duration = plan["duration"]
    steps = [(0.0, "queued"), (0.2 * duration, "running")]
    if plan.get("outcome", "completed") == "completed":
        steps.append((duration, "complete"))
    else:
        steps.append((0.5 * duration, "failed"))
    elapsed = api.clock() - created_at
    return [(created_at + offset, phase) for offset, phase in steps if offset <= elapsed]


def upload_succeeded(api: LocalAPI, row: dict[str, Any]) -> float | None:
    """When a v2 remote upload succeeded (it is then a revision of its model), or None."""
    at, phase = import_phases(api, row["plan"], row["created_at"])[-1]
    return at if phase == "complete" else None


def _registered_ready(api: LocalAPI, model_id: str) -> bool:
    """A v2 registered model serves once one of its remote uploads succeeded."""
    return any(upload_succeeded(api, up) is not None for up in api.state.remote_uploads(model_id))


V0_STATUS = {"queued": "Queued", "running": "Running", "complete": "Complete", "failed": "Failed"}


def _import_status(api: LocalAPI, row: dict[str, Any]) -> tuple[str, list[dict[str, Any]], float]:
    """An import job's status, its status updates so far, and when it last changed."""
    seen = import_phases(api, row["plan"], row["created_at"])
    updates = [{"status": V0_STATUS[phase], "message": PHASE_MESSAGES[phase],
                "timestamp": iso(at)} for at, phase in seen]
    return V0_STATUS[seen[-1][1]], updates, seen[-1][0]


def import_job_json(api: LocalAPI, row: dict[str, Any]) -> dict[str, Any]:
    status, updates, changed = _import_status(api, row)
    req = row["request"]
    return {
        "type": "adapter_upload" if req.get("model_type") == "adapter" else "model_upload",
        "job_id": row["job_id"], "status": status, "status_updates": updates,
        "args": {"description": req.get("description") or "", "modelName": row["model_name"],
                 "modelSource": req["model_source"]},
        "created_at": iso(row["created_at"]), "updated_at": iso(changed),
    }


def name_taken(api: LocalAPI, name: str) -> bool:
    """Whether a model of this full name exists, however it was made (names are unique per
    account across fine-tunes, v0 imports and v2 registered models)."""
    state = api.state
    return state.imported_by_name(name) is not None or \
        state.finetune_by_output(name) is not None or \
        state.project_model_by_name(name) is not None


def import_plan(api: LocalAPI, request: Request) -> dict[str, Any]:
    """How a new import will go: `local_upload_duration`, unless X-Local-Job says otherwise."""
    override = request.headers.get("x-local-job")
    plan: dict[str, Any] = {"duration": api.config.upload_duration, "outcome": "completed"}
    if override:
        try:
            given = orjson.loads(override)
            plan["duration"] = parse_duration(given.get("duration", plan["duration"]))
            plan["outcome"] = given.get("outcome", "completed")
        except (orjson.JSONDecodeError, ValueError, TypeError, AttributeError):
            raise bad_request("X-Local-Job must be a JSON object like {\"duration\": "
                              "\"2s\"}") from None
    return plan


def check_base_model(api: LocalAPI, base: object, param: str) -> None:
    """A base model this API serves (a 400 naming `param` otherwise)."""
    if not isinstance(base, str):
        raise bad_request(f"{param} must be a string", param)
    if api.base_model(base) is None:
        raise bad_request(f"{param} {base!r} is not available", param)


def learnt_from(api: LocalAPI, source: str) -> str | None:
    """The fine-tuned model an import's source holds, if this API fine-tuned it (pushed to the
    Hub under the same name, it knows what that model learnt)."""
    repo = "/".join(p for p in urlparse(source).path.split("/") if p)[:200]
    return repo if api.state.finetune_by_output(repo) is not None else None


async def upload(request: Request) -> Response:
    api = api_of(request)
    body = await json_body(request)
    name = body.get("model_name")
    if not isinstance(name, str) or not NAME.match(name):
        raise bad_request("model_name is required: 1-100 letters, digits, '.', '_' or '-'",
                          "model_name")
    source = body.get("model_source")
    if not isinstance(source, str) or not source:
        raise bad_request("model_source is required", "model_source")
    local = local_adapter_folder(api, source, model_type=body.get("model_type"),
                                 base=body.get("base_model"), param="model_source")
    if local is not None:
        body = {**body, "base_model": local[1]}
    kind = "local_folder" if local else source_kind(source)
    if kind is None:
        raise bad_request("model_source must be a Hugging Face repository URL "
                          "(https://huggingface.co/org/name) or a presigned S3 URL of a .zip or "
                          ".tar.gz archive", "model_source")
    model_type = body.get("model_type") or "model"
    if model_type not in ("model", "adapter"):
        raise bad_request("model_type must be 'model' or 'adapter'", "model_type")
    base = body.get("base_model")
    if model_type == "adapter" and not (base or body.get("lora_model")):
        raise bad_request("an adapter needs base_model (the serverless model it adapts): "
                          "Together reads it from the adapter's adapter_config.json, which the "
                          "local API does not download (it does read a local folder's, with "
                          "local_trainer = \"peft\")", "base_model")
    if base is not None and base != "" and local is None:
        check_base_model(api, base, "base_model")
    full_name = f"{api.config.namespace}/{name}"
    if name_taken(api, full_name):
        raise bad_request("Model name already exists", "model_name")
    plan = import_plan(api, request)
    record = {k: v for k, v in body.items() if k != "hf_token"}
    record.update(model_type=model_type, hf_token_given=bool(body.get("hf_token")))
    job_id, model_id = f"job-{uuid.uuid4()}", f"model-{uuid.uuid4()}"
    if local is not None:  # a real adapter: copied in at once, ready when the call returns
        record["local_adapter"] = await training.keep_adapter(api, local[0], job_id,
                                                              "model_source")
        plan = {"duration": 0.0, "outcome": "completed"}
    api.state.add_import({"job_id": job_id, "model_id": model_id, "model_name": full_name,
                          "created_at": api.clock(), "request": record, "plan": plan})
    return JSONResponse({
        "data": {"job_id": job_id, "model_name": full_name, "model_id": model_id,
                 "model_source": kind},
        "message": f"Adapter imported from {local[0]}: the local trainer serves it" if local else
                   f"Processing model weights. Job created {SIMULATED}",
    })


def local_adapter_folder(api: LocalAPI, source: str, *, model_type: object, base: object,
                         param: str) -> tuple[Path, str] | None:
    """With the local trainer, a peft adapter folder on this machine (`file:///path`, or an
    absolute path) imports for real (v0 `model_source`, v2 `remoteUrl`): the folder and its
    base, which must be one the trainer has weights for (without `base`, the one its
    `adapter_config.json` names, as Together reads it). None for every other source."""
    if api.config.trainer != "peft" or not source.startswith(("file://", "/")):
        return None
    folder = Path(urlparse(source).path if source.startswith("file://") else source)
    if not folder.is_absolute() or not folder.is_dir():
        raise bad_request(f"{param} {folder}: no such folder on the local API's machine", param)
    if model_type != "adapter":
        raise bad_request(f"a local folder ({param}) imports as an adapter of a base the "
                          "local trainer has weights for", param)
    named = str(base or "") or training.adapter_base(folder, param)
    training.base_of(api, named)  # a 400 if it has no weights
    return folder, named


async def get_job(request: Request) -> Response:
    api = api_of(request)
    job_id = request.path_params["job_id"]
    row = api.state.imported(job_id)
    if row is None:
        raise not_found(f"no job with id {job_id}", "jobId")
    return JSONResponse(import_job_json(api, row))


async def list_jobs(request: Request) -> Response:
    api = api_of(request)
    return JSONResponse({"data": [import_job_json(api, row) for row in api.state.imports()]})


def _info(name: str, created: float, namespace: str, context: int) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": int(created), "type": "chat",
            "display_name": name.rsplit("/", maxsplit=1)[-1], "organization": namespace,
            "link": "", "license": "", "context_length": context,
            "pricing": {"hourly": 0, "input": 0.2, "output": 0.2, "base": 0, "finetune": 0}}


async def list_models(request: Request) -> Response:
    api = api_of(request)
    models = [m.info() for m in catalogue.BASE_MODELS]
    for row in api.state.finetunes():
        if api.jobs.view(row).status == "completed":
            base = api.base_model(row["model"])
            models.append(_info(row["output_name"], row["created_at"], api.config.namespace,
                                base.context_length if base else 8192))
    for row in api.state.imports():
        if _import_status(api, row)[0] == "Complete":
            models.append(_info(row["model_name"], row["created_at"], api.config.namespace,
                                8192))
    for row in api.state.project_models():
        if _registered_ready(api, row["id"]):
            base = api.base_model(row["request"]["base_model_id"])
            models.append(_info(row["name"], row["created_at"], api.config.namespace,
                                base.context_length if base else 8192))
    return JSONResponse(models)


def resolve(api: LocalAPI, name: str) -> ServedModel | None:
    """The model `name` if it can answer now: a base model, a completed fine-tune or import."""
    if api.config.trainer == "peft" and (name.startswith(training.TINY_PREFIX)
                                         or name in api.config.base_models):
        try:
            return ServedModel(name, name, None, {"base": training.base_of(api, name),
                                                  "adapter": None})
        except APIError:
            return None
    if catalogue.find(name) is not None:
        return ServedModel(name, name, None)
    row = api.state.finetune_by_output(name)
    if row is not None:
        if api.jobs.view(row).status != "completed":
            return None
        if training.is_trained(row):
            return ServedModel(name, row["model"], None, training.weights_of(api, row))
        return ServedModel(name, row["model"], name)
    registered = api.state.project_model_by_name(name)
    if registered is not None:
        uploads = [up for up in api.state.remote_uploads(registered["id"])
                   if upload_succeeded(api, up) is not None]
        if not uploads:
            return None
        base = registered["request"]["base_model_id"]
        if uploads[-1]["request"].get("local_adapter"):
            return ServedModel(name, base, None, {"base": training.base_of(api, base),
                                                  "adapter": uploads[-1]["request"][
                                                      "local_adapter"]})
        return ServedModel(name, base,
                           learnt_from(api, uploads[-1]["request"]["remote_url"]))
    imported = api.state.imported_by_name(name)
    if imported is None or _import_status(api, imported)[0] != "Complete":
        return None
    req = imported["request"]
    if req.get("local_adapter"):
        return ServedModel(name, req["base_model"], None, {
            "base": training.base_of(api, req["base_model"]), "adapter": req["local_adapter"]})
    return ServedModel(name, req.get("base_model") or name,
                       learnt_from(api, req["model_source"]))


ROUTES = [
    Route("/v1/models", list_models, methods=["GET"]),
    Route("/v1/models", upload, methods=["POST"]),
    Route("/v0/models", upload, methods=["POST"]),
    Route("/v1/jobs", list_jobs, methods=["GET"]),
    Route("/v1/jobs/{job_id}", get_job, methods=["GET"]),
]
