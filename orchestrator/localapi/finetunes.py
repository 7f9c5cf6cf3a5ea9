"""Fine-tuning jobs: create (checked like Together checks them), read, cancel, delete, and the
events, checkpoints, metrics and download that the clock makes available (see timeline.py).

A test plans a job with the `X-Local-Job` header on create, a JSON object with any of
`duration` ("2s"), `outcome` (completed | error | user_error) and `fail_at` (share of the
duration, 0-1); otherwise the settings `local_job_duration` and `local_job_outcome` apply.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import io
import itertools
import json
import math
import re
import tarfile
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any, get_args

import anyio
import anyio.to_thread
import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from orchestrator.durations import parse_duration
from orchestrator.localapi import catalogue
from orchestrator.localapi.catalogue import BaseModel
from orchestrator.localapi.errors import APIError, bad_request, not_found
from orchestrator.localapi.handlers import api_of, json_body
from orchestrator.localapi.responses import JSONResponse, iso
from orchestrator.localapi.timeline import Event, JobPlan, JobView, view
from orchestrator.protocol.datacheck import examples
from orchestrator.protocol.finetune import DPO_PARAMETERS
from orchestrator.protocol.types import TERMINAL_JOB_STATUSES
from orchestrator.settings import LocalJobOutcome

if TYPE_CHECKING:
    from orchestrator.localapi.app import LocalAPI

__all__ = ["ROUTES"]

SECRET_FIELDS = ("wandb_key", "wandb_api_key", "hf_api_token")
SUFFIX = re.compile(r"^[A-Za-z0-9._-]{1,40}$")
PRICE_PER_TOKEN = 0.48 / 1_000_000
MAX_LEARNT = 100_000
"""Examples a simulated fine-tuned model answers from; the rest of a larger file is not kept."""


# -- checking a create request ---------------------------------------------------------------

SDK_ARGUMENTS = {
    "lora": "training_type.type ('Lora' or 'Full')", "lora_r": "training_type.lora_r",
    "lora_alpha": "training_type.lora_alpha", "lora_dropout": "training_type.lora_dropout",
    "lora_trainable_modules": "training_type.lora_trainable_modules",
    "dpo_beta": "training_method.dpo_beta", "rpo_alpha": "training_method.rpo_alpha",
    "simpo_gamma": "training_method.simpo_gamma",
    "dpo_normalize_logratios_by_length": "training_method.dpo_normalize_logratios_by_length",
    "dpo_reference_free": "training_method.dpo_reference_free",
    "lr_scheduler_type": "lr_scheduler.lr_scheduler_type",
    "min_lr_ratio": "lr_scheduler.lr_scheduler_args.min_lr_ratio",
    "scheduler_num_cycles": "lr_scheduler.lr_scheduler_args.num_cycles",
    "train_vision": "multimodal_params.train_vision",
}
"""Arguments of the SDKs' `fine_tuning.create` that are not fields of the request: the SDKs
fold them into objects (reference 3.2). Sent as they are, they would silently do nothing."""
STRING_FIELDS = ("training_file", "validation_file", "model", "from_checkpoint", "suffix",
                 "wandb_api_key", "wandb_key", "wandb_base_url", "wandb_project_name",
                 "wandb_name", "wandb_entity", "from_hf_model", "hf_model_revision",
                 "hf_api_token", "hf_output_repo_name")


def _plain_fields(body: dict[str, Any]) -> None:
    """Fields that are not objects have the type the spec gives them; SDK arguments that are
    not fields are named, with where they belong."""
    for name, where in SDK_ARGUMENTS.items():
        if name in body:
            raise bad_request(f"{name} is an argument of Together's SDK, not a field of the "
                              f"request: it goes in {where}", name)
    for name in STRING_FIELDS:
        if body.get(name) is not None and not isinstance(body[name], str):
            raise bad_request(f"{name} must be a string", name)
    if body.get("packing") is not None:
        _flag(body, "packing", True)


def _object(body: dict[str, Any], name: str, default: dict[str, Any]) -> dict[str, Any]:
    given = body.get(name)
    if given is None:
        return default
    if not isinstance(given, dict):
        raise bad_request(f"{name} must be an object", name)
    return given


def _flag(body: dict[str, Any], name: str, default: bool) -> bool:
    value = body.get(name, default)
    if not isinstance(value, bool):
        raise bad_request(f"{name} must be true or false", name)
    return value

def _number(body: dict[str, Any], name: str, default: float, low: float, high: float, *,
            integer: bool = False, low_open: bool = False, high_open: bool = False) -> Any:
    value = body.get(name, default)
    if value is None:
        value = default
    kind = int if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kind):
        raise bad_request(f"{name} must be {'an integer' if integer else 'a number'}", name)
    too_low = value <= low if low_open else value < low
    too_high = value >= high if high_open else value > high
    if too_low or too_high:
        left, right = "(" if low_open else "[", ")" if high_open else "]"
        raise bad_request(f"{name} must be in {left}{low:g}, {high:g}{right}, not {value}", name)
    return value


def _dataset(api: LocalAPI, file_id: Any, field: str) -> dict[str, Any]:
    if not isinstance(file_id, str) or not file_id:
        raise bad_request(f"{field} is required", field)
    row = api.state.file(file_id)
    if row is None or row["state"] == "awaiting_upload":
        raise bad_request(f"{field} {file_id} not found: upload it first (POST /v1/files)", field)
    if row["purpose"] != "fine-tune":
        raise bad_request(f"{field} {file_id} was uploaded with purpose {row['purpose']!r}, "
                          "not 'fine-tune'", field)
    if row["state"] != "processed":
        raise bad_request(f"{field} {file_id} has not been processed yet (POST "
                          f"/v1/files/{file_id}/preprocess)", field)
    if row["processing_status"] == "INVALID_FORMAT":
        report = json.loads(row["report"] or "{}")
        raise bad_request(f"{field} {file_id} is not a valid fine-tuning dataset: "
                          f"{report.get('error')}", field)
    return dict(row)


def _training_type(body: dict[str, Any], base: BaseModel,
                   limits: dict[str, Any]) -> dict[str, Any]:
    given = _object(body, "training_type", {"type": "Lora"})
    if given.get("type") not in ("Lora", "Full"):
        raise bad_request("training_type.type must be 'Lora' or 'Full'", "training_type")
    if given["type"] == "Full":
        if not base.supports_full:
            raise bad_request(f"full fine-tuning is not available for {base.id}; use LoRA",
                              "training_type")
        return {"type": "Full"}
    sizes = limits["lora_training"]
    lora: dict[str, Any] = {"type": "Lora", "lora_r": _number(
        given, "lora_r", sizes["default_rank"], 1, sizes["max_rank"], integer=True)}
    lora["lora_alpha"] = _number(given, "lora_alpha", 2 * lora["lora_r"], 1, 4096, integer=True)
    lora["lora_dropout"] = _number(given, "lora_dropout", 0.0, 0.0, 1.0, high_open=True)
    modules = given.get("lora_trainable_modules", "all-linear")
    if not isinstance(modules, str) or not modules:
        raise bad_request("lora_trainable_modules must be a non-empty string",
                          "lora_trainable_modules")
    lora["lora_trainable_modules"] = modules
    return lora


def _training_method(body: dict[str, Any], dataset_format: str | None) -> dict[str, Any]:
    given = _object(body, "training_method", {"method": "sft"})
    if given.get("method") not in ("sft", "dpo"):
        raise bad_request("training_method.method must be 'sft' or 'dpo'", "training_method")
    if given["method"] == "dpo":
        if dataset_format != "PREFERENCE":
            raise bad_request("DPO needs a preference dataset (input, preferred_output, "
                              "non_preferred_output)", "training_method")
        if "train_on_inputs" in given or body.get("train_on_inputs") is not None:
            raise bad_request("train_on_inputs applies to SFT, not DPO", "train_on_inputs")
        return {"method": "dpo",
                "dpo_beta": _number(given, "dpo_beta", 0.1, 0.0, 1e6, low_open=True),
                "rpo_alpha": _number(given, "rpo_alpha", 0.0, 0.0, 1e6),
                "simpo_gamma": _number(given, "simpo_gamma", 0.0, 0.0, 1e6),
                "dpo_normalize_logratios_by_length": _flag(
                    given, "dpo_normalize_logratios_by_length", False),
                "dpo_reference_free": _flag(given, "dpo_reference_free", False)}
    if dataset_format == "PREFERENCE":
        raise bad_request("a preference dataset needs training_method.method 'dpo'",
                          "training_method")
    for name in DPO_PARAMETERS:
        if name in given:
            raise bad_request(f"{name} applies to DPO, not SFT", name)
    inputs = given.get("train_on_inputs", body.get("train_on_inputs", "auto"))
    if not (isinstance(inputs, bool) or inputs == "auto"):
        raise bad_request("train_on_inputs must be true, false or 'auto'", "train_on_inputs")
    return {"method": "sft", "train_on_inputs": inputs}


def _lr_scheduler(body: dict[str, Any]) -> dict[str, Any]:
    given = _object(body, "lr_scheduler", {})
    kind = given.get("lr_scheduler_type", "cosine")
    if kind not in ("linear", "cosine"):
        raise bad_request("lr_scheduler_type must be 'linear' or 'cosine'", "lr_scheduler")
    args = _object(given, "lr_scheduler_args", {})
    ratio = _number(args, "min_lr_ratio", 0.0, 0.0, 1.0)
    scheduler_args: dict[str, Any] = {"min_lr_ratio": ratio}
    if kind == "cosine":
        scheduler_args["num_cycles"] = _number(args, "num_cycles", 0.5, 0.0, 100.0,
                                               low_open=True)
    return {"lr_scheduler_type": kind, "lr_scheduler_args": scheduler_args}


def _job_plan_override(request: Request) -> dict[str, Any]:
    raw = request.headers.get("x-local-job")
    if not raw:
        return {}
    try:
        plan = orjson.loads(raw)
    except orjson.JSONDecodeError:
        plan = None
    if not isinstance(plan, dict):
        raise bad_request("X-Local-Job must be a JSON object like {\"duration\": \"2s\", "
                          "\"outcome\": \"error\"}")
    if "duration" in plan:
        try:
            plan["duration"] = parse_duration(plan["duration"])
        except ValueError as exc:
            raise bad_request(f"X-Local-Job: {exc}") from None
    if plan.get("outcome", "completed") not in get_args(LocalJobOutcome):
        raise bad_request("X-Local-Job outcome must be completed, error or user_error")
    fail_at = plan.get("fail_at", 0.5)
    if isinstance(fail_at, bool) or not isinstance(fail_at, int | float) or \
            not 0 <= fail_at <= 1:
        raise bad_request("X-Local-Job fail_at must be a number from 0 to 1")
    return plan


def _resolve_model(api: LocalAPI, body: dict[str, Any]) -> tuple[BaseModel, str | None]:
    """The base model to train, from `model` or from a `from_checkpoint` job or model."""
    checkpoint = body.get("from_checkpoint")
    model = body.get("model")
    if checkpoint:
        job_ref = str(checkpoint).split(":")[0]
        row = api.state.finetune(job_ref) or api.state.finetune_by_output(job_ref)
        if row is None:
            raise bad_request(f"from_checkpoint {checkpoint!r}: no such fine-tuning job or "
                              "model", "from_checkpoint")
        model = row["model"]
    if not isinstance(model, str) or not model:
        raise bad_request("model is required", "model")
    base = catalogue.find(model)
    if base is None:
        raise bad_request(f"model {model!r} is not available for fine-tuning (see GET "
                          "/v1/fine-tunes/models/supported)", "model")
    return base, checkpoint


def _sequence_and_seed(body: dict[str, Any], limits: dict[str, Any],
                       method: str) -> dict[str, Any]:
    checked: dict[str, Any] = {}
    if body.get("max_seq_length") is not None:
        checked["max_seq_length"] = _number(body, "max_seq_length", 0,
                                            limits["min_max_seq_length"],
                                            limits[f"max_seq_length_{method}"], integer=True)
    if body.get("random_seed") is not None:
        checked["random_seed"] = _number(body, "random_seed", 0, 0, 2**32 - 1, integer=True)
    return checked


def _multimodal(body: dict[str, Any], base: BaseModel) -> None:
    params = _object(body, "multimodal_params", {})
    if _flag(params, "train_vision", False) and not base.limits()["supports_vision"]:
        raise bad_request(f"{base.id} does not support vision; train_vision must be false",
                          "multimodal_params")


async def create(request: Request) -> Response:
    api = api_of(request)
    body = await json_body(request)
    override = _job_plan_override(request)
    _plain_fields(body)
    base, checkpoint = _resolve_model(api, body)
    limits = base.limits()
    train = _dataset(api, body.get("training_file"), "training_file")
    validation_id = body.get("validation_file") or None
    validation = _dataset(api, validation_id, "validation_file") if validation_id else None
    train_report = json.loads(train["report"] or "{}")
    params: dict[str, Any] = {
        "n_epochs": _number(body, "n_epochs", 1, 1, limits["max_num_epochs"], integer=True),
        "n_checkpoints": _number(body, "n_checkpoints", 1, 1, limits["max_num_checkpoints"],
                                 integer=True),
        "n_evals": _number(body, "n_evals", 0, 0, limits["max_num_evals"], integer=True),
        "learning_rate": _number(body, "learning_rate", 1e-5, limits["min_learning_rate"],
                                 limits["max_learning_rate"]),
        "warmup_ratio": _number(body, "warmup_ratio", 0.0, 0.0, 1.0),
        "max_grad_norm": _number(body, "max_grad_norm", 1.0, 0.0, 1e9),
        "weight_decay": _number(body, "weight_decay", 0.0, 0.0, 1e9),
    }
    if params["n_evals"] and validation is None:
        raise bad_request("n_evals > 0 needs a validation_file", "n_evals")
    training_type = _training_type(body, base, limits)
    sizes = limits["lora_training" if training_type["type"] == "Lora" else "full_training"]
    batch = body.get("batch_size", "max")
    if batch in ("max", None):
        batch = sizes["max_batch_size"]
    else:
        batch = _number(body, "batch_size", 0, sizes["min_batch_size"],
                        sizes["max_batch_size"], integer=True)
    suffix = body.get("suffix")
    if suffix is not None and (not isinstance(suffix, str) or not SUFFIX.match(suffix)):
        raise bad_request("suffix must be 1-40 letters, digits, '.', '_' or '-'", "suffix")
    method = _training_method(body, train_report.get("dataset_format"))
    scheduler = _lr_scheduler(body)
    params.update(_sequence_and_seed(body, limits, method["method"]))
    _multimodal(body, base)

    job_id = f"ft-{uuid.uuid4()}"
    name = base.id.split("/")[-1]
    output_name = f"{api.config.namespace}/{name}{'-' + suffix if suffix else ''}-{job_id[3:11]}"
    samples = max(1, train["line_count"])
    seed = int.from_bytes(hashlib.blake2b(job_id.encode(), digest_size=4).digest(), "big")
    plan = JobPlan(
        duration=float(override.get("duration", api.config.job_duration)),
        n_epochs=params["n_epochs"],
        steps_per_epoch=max(1, math.ceil(samples / batch)),
        n_checkpoints=params["n_checkpoints"],
        n_evals=params["n_evals"],
        tokens_per_epoch=max(1, train["bytes"] // 4),
        seed=seed,
        outcome=str(override.get("outcome", api.config.job_outcome)),
        fail_at=float(override.get("fail_at", 0.5)),
    )
    wandb = body.get("wandb_key") or body.get("wandb_api_key")
    request_record = {
        **{k: v for k, v in body.items() if k not in SECRET_FIELDS},
        **params, "model": base.id, "batch_size": batch, "training_type": training_type,
        "training_method": method, "lr_scheduler": scheduler, "suffix": suffix,
        "validation_file": validation_id, "from_checkpoint": checkpoint,
        "wandb_configured": bool(wandb), "trainingfile_numlines": train["line_count"],
        "trainingfile_size": train["bytes"],
    }
    pairs = await anyio.to_thread.run_sync(_learnt, api.state.file_path(train["id"]))
    row = {"id": job_id, "created_at": api.clock(), "model": base.id,
           "output_name": output_name, "request": request_record, "plan": plan.to_json()}
    api.state.add_finetune(row, pairs)
    return JSONResponse(job_json(api, _stored(api, job_id), full=False))


def _learnt(path: Path) -> list[tuple[str, str]]:
    """What a simulated model learns from its training file: its first MAX_LEARNT examples,
    read a line at a time."""
    with path.open("rb") as lines:
        return list(itertools.islice(examples(lines), MAX_LEARNT))


# -- rendering a job -------------------------------------------------------------------------

def job_view(api: LocalAPI, row: dict[str, Any]) -> JobView:
    plan = _fixed(api, row).plan
    return view(plan, model=row["model"], output_name=row["output_name"],
                created_at=row["created_at"], cancelled_at=row["cancelled_at"], now=api.clock())


def event_json(row: dict[str, Any], event: Event, plan: JobPlan) -> dict[str, Any]:
    return _event_json(row["created_at"], row["model"], event, plan)


@functools.lru_cache(maxsize=65536)
def _event_json(created_at: float, model: str, event: Event, plan: JobPlan) -> dict[str, Any]:
    """A FineTuneEvent (cached: events are fixed, and rendering them dominated job reads)."""
    base = catalogue.find(model)
    return {
        "object": "fine-tune-event", "created_at": iso(created_at + event.offset),
        "level": event.level, "message": event.message, "type": event.type,
        "param_count": base.params if base else 0,
        "token_count": plan.tokens_per_epoch * plan.n_epochs,
        "total_steps": plan.total_steps, "wandb_url": "", "step": event.step,
        "checkpoint_path": event.checkpoint_path, "model_path": event.model_path,
        "training_offset": 0, "hash": "",
    }


@dataclasses.dataclass(frozen=True)
class _Fixed:
    """What never changes about a job once created: its plan and the static response fields."""

    plan: JobPlan
    truncated: dict[str, Any]
    full: dict[str, Any]


_FIXED: dict[str, _Fixed] = {}
"""By job id (ids are unique across instances); rebuilt after being cleared."""


def _fixed(api: LocalAPI, row: dict[str, Any]) -> _Fixed:
    known = _FIXED.get(row["id"])
    if known is not None:
        return known
    if len(_FIXED) > 20_000:
        _FIXED.clear()
    plan = JobPlan.from_json(row["plan"])
    req = row["request"]
    method = dict(req["training_method"])
    if method.get("train_on_inputs") == "auto":
        method["train_on_inputs"] = False  # what "auto" resolves to for masked datasets
    truncated: dict[str, Any] = {
        "id": row["id"], "created_at": iso(row["created_at"]),
        "user_id": api.config.namespace, "owner_address": api.config.namespace,
        "total_price": round(plan.tokens_per_epoch * plan.n_epochs * PRICE_PER_TOKEN * 1e9),
        "training_file": req["training_file"], "validation_file": req.get("validation_file"),
        "model": row["model"], "model_output_name": row["output_name"],
        "suffix": req.get("suffix"), "n_epochs": req["n_epochs"], "n_evals": req["n_evals"],
        "n_checkpoints": req["n_checkpoints"], "batch_size": req["batch_size"],
        "training_type": req["training_type"], "training_method": method,
        "learning_rate": req["learning_rate"], "lr_scheduler": req["lr_scheduler"],
        "warmup_ratio": req["warmup_ratio"], "max_grad_norm": req["max_grad_norm"],
        "weight_decay": req["weight_decay"], "wandb_project_name": req.get("wandb_project_name"),
        "wandb_name": req.get("wandb_name"), "from_checkpoint": req.get("from_checkpoint"),
        "random_seed": req.get("random_seed") or 42, "packing": req.get("packing", True),
    }
    base = catalogue.find(row["model"])
    full = {
        **truncated,
        "model_output_path": f"s3://local-api/{row['output_name']}",
        "trainingfile_numlines": req.get("trainingfile_numlines"),
        "trainingfile_size": req.get("trainingfile_size"),
        "eval_steps": max(0, plan.total_steps // plan.n_evals) if plan.n_evals else 0,
        "train_on_inputs": method.get("train_on_inputs", False),
        "job_id": row["id"], "param_count": base.params if base else 0,
        "queue_depth": 0, "wandb_url": "", "total_steps": plan.total_steps, "simulated": True,
    }
    fixed = _Fixed(plan, {k: v for k, v in truncated.items() if v is not None},
                   {k: v for k, v in full.items() if v is not None})
    _FIXED[row["id"]] = fixed
    return fixed


def job_json(api: LocalAPI, row: dict[str, Any], *, full: bool,
             current: JobView | None = None) -> dict[str, Any]:
    """FinetuneResponse (`full`) or FinetuneResponseTruncated, as of now."""
    fixed = _fixed(api, row)
    state = current or job_view(api, row)
    body = {**(fixed.full if full else fixed.truncated), "status": state.status,
            "updated_at": iso(state.updated_at), "token_count": state.token_count,
            "progress": {"estimate_available": True,
                         "seconds_remaining": state.seconds_remaining}}
    if state.started_at is not None:
        body["started_at"] = iso(state.started_at)
    if full:
        body.update({
            "epochs_completed": state.epochs_completed, "steps_completed": state.current_step,
            "evals_completed": state.evals_completed,
            "events": [event_json(row, e, fixed.plan) for e in state.events],
        })
    return body


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
    return JSONResponse({"object": "list", "data": [job_json(api, r, full=False) for r in rows]})


async def retrieve(request: Request) -> Response:
    return JSONResponse(job_json(api_of(request), _job(request), full=True))


async def cancel(request: Request) -> Response:
    api = api_of(request)
    row = _job(request)
    status = job_view(api, row).status
    if status in TERMINAL_JOB_STATUSES:
        raise bad_request(f"job {row['id']} is already {status}; it cannot be cancelled")
    api.state.cancel_finetune(row["id"], api.clock())
    return JSONResponse(job_json(api, _stored(api, row["id"]), full=False))


async def delete(request: Request) -> Response:
    api = api_of(request)
    row = _job(request)
    status = job_view(api, row).status
    if status not in TERMINAL_JOB_STATUSES:
        raise bad_request(f"job {row['id']} is {status}; cancel it before deleting it")
    api.state.delete_finetune(row["id"])
    return JSONResponse({"message": f"fine-tuning job {row['id']} deleted"})


async def events(request: Request) -> Response:
    api = api_of(request)
    row = _job(request)
    plan = _fixed(api, row).plan
    return JSONResponse({"object": "list", "data": [event_json(row, e, plan)
                                                    for e in job_view(api, row).events]})


async def checkpoints(request: Request) -> Response:
    api = api_of(request)
    row = _job(request)
    data = [{"step": step, "created_at": iso(row["created_at"] + offset),
             "path": row["output_name"] if kind == "Final" else f"{row['output_name']}:{step}",
             "checkpoint_type": kind}
            for step, offset, kind in job_view(api, row).checkpoints]
    return JSONResponse({"object": "list", "data": data})


async def metrics(request: Request) -> Response:
    return JSONResponse({"metrics": job_view(api_of(request), _job(request)).metrics})


async def download(request: Request) -> Response:
    """A small archive standing in for the trained weights (it says so inside)."""
    api = api_of(request)
    job_id = request.query_params.get("ft_id", "").split(":")[0]
    row = api.state.finetune(job_id)
    if row is None:
        raise not_found(f"no fine-tuning job with id {job_id}", "ft_id")
    status = job_view(api, row).status
    if status != "completed":
        raise bad_request(f"job {job_id} is {status}; only a completed job can be downloaded",
                          "ft_id")
    data = _archive(row, request.query_params.get("checkpoint") or "merged")
    ranged = request.headers.get("range", "")
    match = re.fullmatch(r"bytes=(\d{1,18})-(\d{0,18})", ranged)
    if ranged and not match:
        raise APIError(416, "requested range not satisfiable (use bytes=START-[END])",
                       type_="invalid_range")
    if match:
        start = int(match.group(1))
        end = min(len(data) - 1, int(match.group(2)) if match.group(2) else len(data) - 1)
        if start >= len(data):
            raise APIError(416, "requested range not satisfiable", type_="invalid_range")
        return Response(data[start:end + 1], status_code=206, media_type="application/octet-stream",
                        headers={"Content-Range": f"bytes {start}-{end}/{len(data)}"})
    return Response(data, media_type="application/octet-stream", headers={
        "Content-Disposition": f'attachment; filename="{row["id"]}.tar.gz"'})


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
    train = _dataset(api, body.get("training_file"), "training_file")
    epochs = _number(body, "n_epochs", 1, 1, 1000, integer=True)
    evals = _number(body, "n_evals", 0, 0, 1000, integer=True)
    validation_id = body.get("validation_file") or None
    validation = _dataset(api, validation_id, "validation_file") if validation_id else None
    train_tokens = train["bytes"] // 4 * epochs
    eval_tokens = (validation["bytes"] // 4 * evals) if validation else 0
    return JSONResponse({
        "estimation_available": True,
        "estimated_total_price": round((train_tokens + eval_tokens) * PRICE_PER_TOKEN, 6),
        "allowed_to_proceed": True, "user_limit": 1000.0,
        "estimated_train_token_count": train_tokens, "estimated_eval_token_count": eval_tokens,
    })


async def limits(request: Request) -> Response:
    name = request.query_params.get("model_name", "")
    base = catalogue.find(name)
    if base is None:
        message = f"model {name!r} is not available for fine-tuning"
        return JSONResponse({"message": message, "error": {
            "message": message, "type": "not_found", "param": "model_name", "code": None}},
            status_code=404)
    return JSONResponse({k: v for k, v in base.limits().items() if v is not None})


async def supported(request: Request) -> Response:
    return JSONResponse({"models": [model.id for model in catalogue.BASE_MODELS]})


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
