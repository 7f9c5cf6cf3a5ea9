"""Fine-tuning jobs' routes: create (checked in `finetune_requests`), read (rendered by
`jobviews`), cancel, delete, and the events, checkpoints, metrics and download that the clock
makes available (see timeline.py).

A test plans a job with the `X-Local-Job` header on create, a JSON object with any of
`duration` ("2s"), `outcome` (completed | error | user_error) and `fail_at` (share of the
duration, 0-1); otherwise the settings `local_job_duration` and `local_job_outcome` apply.
"""

from __future__ import annotations

import io
import itertools
import json
import tarfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import anyio.to_thread
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Route

from orchestrator.localapi import catalogue, training
from orchestrator.localapi.errors import APIError, bad_request, not_found
from orchestrator.localapi.finetune_requests import (
    NewJob,
    checked_job,
    dataset,
    job_plan_override,
    number,
)
from orchestrator.localapi.handlers import api_of, byte_ranges, json_body
from orchestrator.localapi.jobviews import PRICE_PER_TOKEN, event_json
from orchestrator.localapi.responses import JSONResponse, iso
from orchestrator.protocol.datacheck import examples
from orchestrator.protocol.types import TERMINAL_JOB_STATUSES

if TYPE_CHECKING:
    from orchestrator.localapi.app import LocalAPI

__all__ = ["ROUTES"]

MAX_LEARNT = 100_000
"""Examples a simulated fine-tuned model answers from; the rest of a larger file is not kept."""


async def create(request: Request) -> Response:
    api = api_of(request)
    job = checked_job(api, await json_body(request), job_plan_override(request))
    if api.config.trainer == "peft":
        return _create_trained(api, job)
    pairs = await anyio.to_thread.run_sync(_learnt, api.state.file_path(job.training_file))
    row = {"id": job.id, "created_at": api.clock(), "model": job.model,
           "output_name": job.output_name, "request": job.request, "plan": job.plan.to_json()}
    api.state.add_finetune(row, pairs)
    return JSONResponse(_created(api, job.id))


def _created(api: LocalAPI, job_id: str) -> dict[str, Any]:
    """A new job as the create call answers it: the whole job, but no events (SDK 3.x reads
    the create answer's events with an enum of upper-case types, unlike every other call's,
    and a job just made has nothing to report)."""
    body = api.jobs.json(_stored(api, job_id), full=True)
    body.pop("events", None)
    return body


def _create_trained(api: LocalAPI, job: NewJob) -> Response:
    """A job the local trainer trains: refused (400) for what it cannot honour, else queued."""
    refused = training.refusal(job.request)
    if refused is not None:
        raise training.refuse(*refused)
    base = training.base_of(api, job.model)
    row = {"id": job.id, "created_at": api.clock(), "model": job.model,
           "output_name": job.output_name, "request": {**job.request, "local_trainer": "peft"},
           "plan": job.plan.to_json()}
    api.state.add_finetune(row, ())
    training.queue(api, job, base)
    return JSONResponse(_created(api, job.id))


def _learnt(path: Path) -> list[tuple[str, str]]:
    """What a simulated model learns from its training file: its first MAX_LEARNT examples,
    read a line at a time."""
    with path.open("rb") as lines:
        return list(itertools.islice(examples(lines), MAX_LEARNT))


def _stored(api: LocalAPI, job_id: str) -> dict[str, Any]:
    """The job's row; 404 if it does not exist (or was deleted meanwhile)."""
    row = api.state.finetune(job_id)
    if row is None:
        raise not_found(f"no fine-tuning job with id {job_id}", "id")
    return row


def _job(request: Request) -> dict[str, Any]:
    return _stored(api_of(request), request.path_params["job_id"])


# -- the endpoints ---------------------------------------------------------------------------

async def list_jobs(request: Request) -> Response:
    api = api_of(request)
    rows = api.state.finetunes()
    return JSONResponse({"object": "list", "data": [api.jobs.json(r, full=False) for r in rows]})


async def retrieve(request: Request) -> Response:
    return JSONResponse(api_of(request).jobs.json(_job(request), full=True))


async def cancel(request: Request) -> Response:
    api = api_of(request)
    row = _job(request)
    status = api.jobs.view(row).status
    if status in TERMINAL_JOB_STATUSES:
        raise bad_request(f"job {row['id']} is already {status}; it cannot be cancelled")
    api.state.cancel_finetune(row["id"], api.clock())
    if training.is_trained(row):
        training.cancel(api, row)
    return JSONResponse(api.jobs.json(_stored(api, row["id"]), full=False))


async def delete(request: Request) -> Response:
    api = api_of(request)
    row = _job(request)
    status = api.jobs.view(row).status
    if status not in TERMINAL_JOB_STATUSES:
        raise bad_request(f"job {row['id']} is {status}; cancel it before deleting it")
    api.state.delete_finetune(row["id"])
    if training.is_trained(row):
        training.forget(api, row)
    return JSONResponse({"message": f"fine-tuning job {row['id']} deleted"})


async def events(request: Request) -> Response:
    api = api_of(request)
    row = _job(request)
    plan = api.jobs.fixed(row).plan
    return JSONResponse({"object": "list", "data": [event_json(row, e, plan)
                                                    for e in api.jobs.view(row).events]})


async def checkpoints(request: Request) -> Response:
    api = api_of(request)
    row = _job(request)
    data = [{"step": step, "created_at": iso(row["created_at"] + offset),
             "path": row["output_name"] if kind == "Final" else f"{row['output_name']}:{step}",
             "checkpoint_type": kind}
            for step, offset, kind in api.jobs.view(row).checkpoints]
    return JSONResponse({"object": "list", "data": data})


async def metrics(request: Request) -> Response:
    """The job's metrics so far, optionally only those of `global_step_from`..`_to` (a JSON
    body, even on GET, as Together takes it)."""
    rows = api_of(request).jobs.view(_job(request)).metrics
    body = await json_body(request) if await request.body() else {}
    bounds = []
    for name in ("global_step_from", "global_step_to"):
        value = body.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise bad_request(f"{name} must be an integer", name)
        bounds.append(value)
    low, high = bounds
    if low is not None or high is not None:
        rows = [row for row in rows
                if (low is None or row["train/global_step"] >= low)
                and (high is None or row["train/global_step"] <= high)]
    return JSONResponse({"metrics": rows})


async def download(request: Request) -> Response:
    """The trained weights as a tar.gz archive: a real job's peft folder (or merged model), or
    for a simulated job a small archive standing in for them (it says so inside)."""
    api = api_of(request)
    job_id = request.query_params.get("ft_id", "").split(":")[0]
    row = api.state.finetune(job_id)
    if row is None:
        raise not_found(f"no fine-tuning job with id {job_id}", "ft_id")
    status = api.jobs.view(row).status
    if status != "completed":
        raise bad_request(f"job {job_id} is {status}; only a completed job can be downloaded",
                          "ft_id")
    kind = request.query_params.get("checkpoint") or "merged"
    if kind not in ("merged", "adapter", "model_output_path"):
        raise bad_request("checkpoint must be 'merged', 'adapter' or 'model_output_path'",
                          "checkpoint")
    if training.is_trained(row):  # from disk, Range honoured by Starlette
        step = _step(request)
        if step is not None:  # a step's checkpoint is its adapter (`checkpoint` ignored)
            kind = "adapter"
        elif kind == "model_output_path":  # the whole model: for LoRA, base and adapter merged
            kind = "merged"
        return FileResponse(await training.archive(api, row, kind, step),
                            media_type="application/octet-stream",
                            filename=f"{row['id']}.tar.gz")
    data = _archive(row, kind)
    ranges = byte_ranges(request, len(data))
    if ranges:
        if len(ranges) > 1:
            raise APIError(416, "requested range not satisfiable: one range at a time",
                           type_="invalid_range",
                           headers={"Content-Range": f"bytes */{len(data)}"})
        start, end = ranges[0]
        return Response(data[start:end + 1], status_code=206, media_type="application/octet-stream",
                        headers={"Content-Range": f"bytes {start}-{end}/{len(data)}"})
    return Response(data, media_type="application/octet-stream", headers={
        "Content-Disposition": f'attachment; filename="{row["id"]}.tar.gz"'})


def _step(request: Request) -> int | None:
    """The checkpoint a download asks for: `checkpoint_step`, or an `ft-...:STEP` id (None:
    the final model)."""
    raw = request.query_params.get("checkpoint_step") or \
        request.query_params.get("ft_id", "").partition(":")[2]
    if not raw:
        return None
    if not raw.isdigit() or len(raw) > 9:
        raise bad_request("checkpoint_step must be a step number", "checkpoint_step")
    return int(raw) or None  # 0: the final model, as Together takes it


def _archive(row: dict[str, Any], kind: str) -> bytes:
    req = row["request"]
    lora = req["training_type"]
    files = {
        "README.md": (f"# {row['output_name']}\n\nSimulated by the orchestrator's local API: no "
                      f"model was trained. Base model {row['model']}, job {row['id']}.\n"),
        "adapter_config.json": json.dumps({
            "base_model_name_or_path": row["model"], "peft_type": "LORA",
            "r": lora.get("lora_r", 0), "lora_alpha": lora.get("lora_alpha", 0),
            "lora_dropout": lora.get("lora_dropout", 0.0), "simulated": True,
            "checkpoint": kind}, indent=2),
        "adapter_model.safetensors": "simulated weights\n",
    }
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, text in files.items():
            payload = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            info.mtime = int(row["created_at"])
            archive.addfile(info, io.BytesIO(payload))
    return buffer.getvalue()


async def estimate_price(request: Request) -> Response:
    api = api_of(request)
    body = await json_body(request)
    train = dataset(api, body.get("training_file"), "training_file")
    epochs = number(body, "n_epochs", 1, 1, 1000, integer=True)
    evals = number(body, "n_evals", 0, 0, 1000, integer=True)
    validation_id = body.get("validation_file") or None
    validation = dataset(api, validation_id, "validation_file") if validation_id else None
    train_tokens = train["bytes"] // 4 * epochs
    eval_tokens = (validation["bytes"] // 4 * evals) if validation else 0
    return JSONResponse({
        "estimation_available": True,
        "estimated_total_price": round((train_tokens + eval_tokens) * PRICE_PER_TOKEN, 6),
        "allowed_to_proceed": True, "user_limit": 1000.0,
        "estimated_train_token_count": train_tokens, "estimated_eval_token_count": eval_tokens,
    })


async def limits(request: Request) -> Response:
    """What a base model allows; for a fine-tuning job (its id, `id:step`, or its output
    name: what the SDKs ask before training `from_checkpoint`), what its base model allows."""
    api = api_of(request)
    name = request.query_params.get("model_name", "")
    base = api.base_model(name)
    if base is None:
        ref = name.split(":")[0]  # `ft-...:STEP` or `name:STEP`: the job's checkpoint
        job = api.state.finetune(ref) or api.state.finetune_by_output(ref)
        base = api.base_model(job["model"]) if job is not None else None
        if base is not None:
            return JSONResponse({**{k: v for k, v in base.limits().items() if v is not None},
                                 "model_name": name})
    if base is None:
        message = f"model {name!r} is not available for fine-tuning"
        return JSONResponse({"message": message, "error": {
            "message": message, "type": "not_found", "param": "model_name", "code": None}},
            status_code=404)
    return JSONResponse({k: v for k, v in base.limits().items() if v is not None})


async def supported(request: Request) -> Response:
    mapped = sorted(api_of(request).config.base_models) \
        if api_of(request).config.trainer == "peft" else []
    return JSONResponse({"models": [model.id for model in catalogue.BASE_MODELS] + mapped})


ROUTES = [  # the status poll first: routes are tried in order
    Route("/v1/fine-tunes/{job_id}", retrieve, methods=["GET"]),
    Route("/v1/fine-tunes", list_jobs, methods=["GET"]),
    Route("/v1/fine-tunes", create, methods=["POST"]),
    Route("/v1/fine-tunes/estimate-price", estimate_price, methods=["POST"]),
    Route("/v1/fine-tunes/models/limits", limits, methods=["GET"]),
    Route("/v1/fine-tunes/models/supported", supported, methods=["GET"]),
    Route("/v1/fine-tunes/{job_id}", delete, methods=["DELETE"]),
    Route("/v1/fine-tunes/{job_id}/cancel", cancel, methods=["POST"]),
    Route("/v1/fine-tunes/{job_id}/events", events, methods=["GET"]),
    Route("/v1/fine-tunes/{job_id}/checkpoints", checkpoints, methods=["GET"]),
    Route("/v1/fine-tunes/{job_id}/metrics", metrics, methods=["GET"]),
    Route("/v1/finetune/download", download, methods=["GET"]),
]
