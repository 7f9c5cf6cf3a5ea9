"""Checking a fine-tune create request the way Together does, and what the job will be.

Every refusal is a 400 in Together's words naming the field (`param`); an SDK argument sent as
a request field (`lora_r`, `dpo_beta`, ...) is refused with where it goes instead.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
import uuid
from typing import TYPE_CHECKING, Any, get_args

import orjson
from starlette.requests import Request

from orchestrator.durations import parse_duration
from orchestrator.localapi.catalogue import BaseModel
from orchestrator.localapi.errors import bad_request
from orchestrator.localapi.timeline import JobPlan
from orchestrator.protocol.finetune import DPO_PARAMETERS, SDK_ARGUMENTS
from orchestrator.settings import LocalJobOutcome

if TYPE_CHECKING:
    from orchestrator.localapi.app import LocalAPI

__all__ = ["SECRET_FIELDS", "NewJob", "checked_job", "dataset", "fine_tunable",
           "job_plan_override", "number"]

SECRET_FIELDS = ("wandb_key", "wandb_api_key", "hf_api_token")
SUFFIX = re.compile(r"^[A-Za-z0-9._-]{1,40}$")

NULLABLE_FIELDS = ("random_seed", "training_type")
"""The fields of a create request Together's spec lets be null."""
CREATE_FIELDS = ("training_file", "validation_file", "packing", "max_seq_length", "model",
                 "n_epochs", "n_checkpoints", "n_evals", "batch_size", "learning_rate",
                 "lr_scheduler", "warmup_ratio", "max_grad_norm", "weight_decay", "random_seed",
                 "suffix", "wandb_api_key", "wandb_base_url", "wandb_project_name",
                 "wandb_name", "wandb_entity", "train_on_inputs", "training_method",
                 "training_type", "multimodal_params", "from_checkpoint", "from_hf_model",
                 "hf_model_revision", "hf_api_token", "hf_output_repo_name",
                 "gradient_accumulation_steps", "early_stopping_enabled",
                 "early_stopping_patience", "early_stopping_min_delta",
                 "early_stopping_warmup_evals")
"""The fields of a create request, as Together's spec lists them (and SDK 3.x sends)."""
STRING_FIELDS = ("training_file", "validation_file", "model", "from_checkpoint", "suffix",
                 "wandb_api_key", "wandb_key", "wandb_base_url", "wandb_project_name",
                 "wandb_name", "wandb_entity", "from_hf_model", "hf_model_revision",
                 "hf_api_token", "hf_output_repo_name")


def _plain_fields(body: dict[str, Any]) -> None:
    """Fields that are not objects have the type the spec gives them, and a value: null only
    where the spec allows it (NULLABLE_FIELDS; the SDKs leave unset fields out); SDK
    arguments that are not fields are named, with where they belong."""
    for name in CREATE_FIELDS:
        if name in body and body[name] is None and name not in NULLABLE_FIELDS:
            raise bad_request(f"{name} must not be null: leave it out for its default", name)
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

def number(body: dict[str, Any], name: str, default: float, low: float, high: float, *,
            integer: bool = False, low_open: bool = False, high_open: bool = False) -> Any:
    if name in body and body[name] is None:
        raise bad_request(f"{name} must not be null: leave it out for its default", name)
    value = body.get(name, default)
    kind = int if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kind):
        raise bad_request(f"{name} must be {'an integer' if integer else 'a number'}", name)
    too_low = value <= low if low_open else value < low
    too_high = value >= high if high_open else value > high
    if too_low or too_high:
        left, right = "(" if low_open else "[", ")" if high_open else "]"
        raise bad_request(f"{name} must be in {left}{low:g}, {high:g}{right}, not {value}", name)
    return value


def dataset(api: LocalAPI, file_id: Any, field: str) -> dict[str, Any]:
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
    lora: dict[str, Any] = {"type": "Lora", "lora_r": number(
        given, "lora_r", sizes["default_rank"], 1, sizes["max_rank"], integer=True)}
    lora["lora_alpha"] = number(given, "lora_alpha", 2 * lora["lora_r"], 1, 4096, integer=True)
    lora["lora_dropout"] = number(given, "lora_dropout", 0.0, 0.0, 1.0, high_open=True)
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
                "dpo_beta": number(given, "dpo_beta", 0.1, 0.0, 1e6, low_open=True),
                "rpo_alpha": number(given, "rpo_alpha", 0.0, 0.0, 1e6),
                "simpo_gamma": number(given, "simpo_gamma", 0.0, 0.0, 1e6),
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
    ratio = number(args, "min_lr_ratio", 0.0, 0.0, 1.0)
    scheduler_args: dict[str, Any] = {"min_lr_ratio": ratio}
    if kind == "cosine":
        scheduler_args["num_cycles"] = number(args, "num_cycles", 0.5, 0.0, 100.0,
                                               low_open=True)
    return {"lr_scheduler_type": kind, "lr_scheduler_args": scheduler_args}


def job_plan_override(request: Request) -> dict[str, Any]:
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
    return fine_tunable(api, model), checkpoint


def fine_tunable(api: LocalAPI, model: object) -> BaseModel:
    """The base model a request's `model` names; a 400 naming `model` otherwise (saying how
    to map one to a folder, with the real trainer)."""
    if not isinstance(model, str) or not model:
        raise bad_request("model is required", "model")
    base = api.base_model(model)
    if base is None:
        mapping = (", or map it to a model folder on disk with the setting local_base_models"
                   if api.config.trainer == "peft" else "")
        raise bad_request(f"model {model!r} is not available for fine-tuning (see GET "
                          f"/v1/fine-tunes/models/supported){mapping}", "model")
    return base


def _accumulation_and_stopping(body: dict[str, Any], params: dict[str, Any],
                               validation: object) -> dict[str, Any]:
    """`gradient_accumulation_steps` and early stopping, checked as SDK 3.x checks them
    (early stopping needs a validation file and n_evals >= patience + warmup_evals + 1)."""
    checked: dict[str, Any] = {"gradient_accumulation_steps": number(
        body, "gradient_accumulation_steps", 1, 1, 1024, integer=True)}
    enabled = body.get("early_stopping_enabled", False)
    if not isinstance(enabled, bool):
        raise bad_request("early_stopping_enabled must be true or false",
                          "early_stopping_enabled")
    if not enabled:
        return checked
    patience = number(body, "early_stopping_patience", 2, 1, 1000, integer=True)
    warmup = number(body, "early_stopping_warmup_evals", 1, 0, 1000, integer=True)
    checked.update(early_stopping_enabled=True, early_stopping_patience=patience,
                   early_stopping_warmup_evals=warmup,
                   early_stopping_min_delta=number(body, "early_stopping_min_delta", 0.0, 0.0,
                                                   1e9))
    if validation is None:
        raise bad_request("early stopping needs a validation_file", "early_stopping_enabled")
    if params["n_evals"] < patience + warmup + 1:
        raise bad_request(f"early stopping needs n_evals >= patience + warmup_evals + 1 = "
                          f"{patience + warmup + 1} (n_evals is {params['n_evals']})", "n_evals")
    return checked


def _sequence_and_seed(body: dict[str, Any], limits: dict[str, Any],
                       method: str) -> dict[str, Any]:
    checked: dict[str, Any] = {}
    if body.get("max_seq_length") is not None:
        checked["max_seq_length"] = number(body, "max_seq_length", 0,
                                            limits["min_max_seq_length"],
                                            limits[f"max_seq_length_{method}"], integer=True)
    if body.get("random_seed") is not None:
        checked["random_seed"] = number(body, "random_seed", 0, 0, 2**32 - 1, integer=True)
    return checked


def _multimodal(body: dict[str, Any], base: BaseModel) -> None:
    params = _object(body, "multimodal_params", {})
    if _flag(params, "train_vision", False) and not base.limits()["supports_vision"]:
        raise bad_request(f"{base.id} does not support vision; train_vision must be false",
                          "multimodal_params")


@dataclasses.dataclass(frozen=True)
class NewJob:
    """A create request that passed every check: what the job is and how it will go."""

    id: str
    model: str
    output_name: str
    plan: JobPlan
    request: dict[str, Any]
    """The request as stored (secrets left out), with every default filled in."""
    training_file: str


def checked_job(api: LocalAPI, body: dict[str, Any], override: dict[str, Any]) -> NewJob:
    """The job a create request asks for, checked as Together checks it (400 otherwise);
    `override` is the test's X-Local-Job plan."""
    _plain_fields(body)
    base, checkpoint = _resolve_model(api, body)
    limits = base.limits()
    train = dataset(api, body.get("training_file"), "training_file")
    validation_id = body.get("validation_file") or None
    validation = dataset(api, validation_id, "validation_file") if validation_id else None
    train_report = json.loads(train["report"] or "{}")
    params: dict[str, Any] = {
        "n_epochs": number(body, "n_epochs", 1, 1, limits["max_num_epochs"], integer=True),
        "n_checkpoints": number(body, "n_checkpoints", 1, 1, limits["max_num_checkpoints"],
                                 integer=True),
        "n_evals": number(body, "n_evals", 0, 0, limits["max_num_evals"], integer=True),
        "learning_rate": number(body, "learning_rate", 1e-5, limits["min_learning_rate"],
                                 limits["max_learning_rate"]),
        "warmup_ratio": number(body, "warmup_ratio", 0.0, 0.0, 1.0),
        "max_grad_norm": number(body, "max_grad_norm", 1.0, 0.0, 1e9),
        "weight_decay": number(body, "weight_decay", 0.0, 0.0, 1e9),
    }
    if params["n_evals"] and validation is None:
        raise bad_request("n_evals > 0 needs a validation_file", "n_evals")
    training_type = _training_type(body, base, limits)
    sizes = limits["lora_training" if training_type["type"] == "Lora" else "full_training"]
    batch = body.get("batch_size", "max")
    if batch in ("max", None):
        batch = sizes["max_batch_size"]
    else:
        batch = number(body, "batch_size", 0, sizes["min_batch_size"],
                        sizes["max_batch_size"], integer=True)
    suffix = body.get("suffix")
    if suffix is not None and (not isinstance(suffix, str) or not SUFFIX.match(suffix)):
        raise bad_request("suffix must be 1-40 letters, digits, '.', '_' or '-'", "suffix")
    method = _training_method(body, train_report.get("dataset_format"))
    scheduler = _lr_scheduler(body)
    params.update(_sequence_and_seed(body, limits, method["method"]))
    _multimodal(body, base)
    params.update(_accumulation_and_stopping(body, params, validation))

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
        learning_rate=float(params["learning_rate"]),
        lr_scheduler=scheduler["lr_scheduler_type"],
        warmup_ratio=float(params["warmup_ratio"]),
        min_lr_ratio=float(scheduler["lr_scheduler_args"]["min_lr_ratio"]),
        num_cycles=float(scheduler["lr_scheduler_args"].get("num_cycles", 0.5)),
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
    return NewJob(job_id, base.id, output_name, plan, request_record, train["id"])
