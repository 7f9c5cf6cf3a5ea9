"""Request bodies the Together API takes, built from the arguments its SDKs take.

A step's parameters use the SDK's names (`lora`, `lora_r`, `training_method`, `dpo_beta`...,
as `client.fine_tuning.create` takes them); the REST API wants them nested (`training_type`,
`training_method`, `lr_scheduler`). The translation lives here, beside the client, the way
Together's SDKs keep it beside theirs, so every caller builds the same request.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from orchestrator.protocol.finetune import DPO_PARAMETERS

if TYPE_CHECKING:
    from orchestrator.providers.together.client import TogetherClient

__all__ = ["estimate_request", "fine_tune_request"]

_PLAIN = ("training_file", "model", "from_checkpoint", "validation_file", "n_epochs",
          "n_checkpoints", "n_evals", "batch_size", "learning_rate", "warmup_ratio",
          "max_grad_norm", "weight_decay", "packing", "max_seq_length", "random_seed",
          "wandb_api_key", "wandb_base_url", "wandb_project_name", "wandb_name",
          "from_hf_model", "hf_model_revision", "hf_api_token", "hf_output_repo_name",
          "wandb_entity", "gradient_accumulation_steps", "early_stopping_enabled",
          "early_stopping_patience", "early_stopping_min_delta", "early_stopping_warmup_evals")
"""Arguments that go into the request as they are."""


async def fine_tune_request(client: TogetherClient, args: Mapping[str, Any], *,
                            suffix: str) -> dict[str, Any]:
    """Together's create request for the SDK-style `args` (nulls left out, as the SDKs do).
    A LoRA request without `lora_r` asks the API for the model's default rank first."""
    scheduler = {"min_lr_ratio": args.get("min_lr_ratio", 0.0)}
    lr_scheduler = args.get("lr_scheduler", "cosine")  # the SDK default
    if lr_scheduler == "cosine":
        scheduler["num_cycles"] = args.get("scheduler_num_cycles", 0.5)
    request = {name: args.get(name) for name in _PLAIN}
    request.update({
        "suffix": suffix,
        "lr_scheduler": {"lr_scheduler_type": lr_scheduler, "lr_scheduler_args": scheduler},
        "training_type": await _training_type(client, args),
        "training_method": _training_method(args),
        "multimodal_params": {"train_vision": True} if args.get("train_vision") else None,
    })
    return {k: v for k, v in request.items() if v is not None}


async def _training_type(client: TogetherClient, args: Mapping[str, Any]) -> dict[str, Any]:
    if not args.get("lora", True):
        return {"type": "Full"}
    rank = args.get("lora_r")
    if rank is None:  # as the SDKs do: the model's default (or largest) LoRA rank
        model = args.get("model") or str(args.get("from_checkpoint")).split(":")[0]
        limits = await client.model_limits(model)
        lora = limits.get("lora_training") or {}
        rank = int(lora.get("default_rank") or lora.get("max_rank") or 8)
    return {"type": "Lora", "lora_r": rank, "lora_alpha": args.get("lora_alpha") or 2 * rank,
            "lora_dropout": args.get("lora_dropout", 0.0),
            "lora_trainable_modules": args.get("lora_trainable_modules", "all-linear")}


def _training_method(args: Mapping[str, Any]) -> dict[str, Any]:
    if args.get("training_method", "sft") == "sft":
        return {"method": "sft", "train_on_inputs": args.get("train_on_inputs", "auto")}
    extra = {name: args.get(name) for name in DPO_PARAMETERS}
    return {"method": "dpo", **{k: v for k, v in extra.items() if v is not None}}


_ESTIMATED = ("training_file", "validation_file", "model", "from_checkpoint", "n_epochs",
              "n_evals", "training_method", "training_type")
"""What `POST /fine-tunes/estimate-price` reads of a create request."""


def estimate_request(create: Mapping[str, Any]) -> dict[str, Any]:
    """The estimate-price request for the job `create` (a `fine_tune_request`) would start."""
    return {name: create[name] for name in _ESTIMATED if create.get(name) is not None}
