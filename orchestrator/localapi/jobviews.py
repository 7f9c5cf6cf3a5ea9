"""How a fine-tuning job reads at a moment: Together's job, event and checkpoint shapes.

What never changes about a job once created (its plan, the static fields of its responses) is
built once per job and kept by the `JobViews` of its `LocalAPI` (at most MAX_KEPT jobs, then
rebuilt): rendering them dominated job reads, and status polls are most of the traffic.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import TYPE_CHECKING, Any

from orchestrator.localapi import catalogue, training
from orchestrator.localapi.responses import iso
from orchestrator.localapi.timeline import Event, JobPlan, JobView, view
from orchestrator.process import hold

if TYPE_CHECKING:
    from orchestrator.localapi.app import LocalAPI

__all__ = ["PRICE_PER_TOKEN", "JobViews", "event_json"]

PRICE_PER_TOKEN = 0.48 / 1_000_000
MAX_KEPT = 20_000

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


class JobViews:
    """The jobs of one local API as they read now; keeps what never changes about each."""

    def __init__(self, api: LocalAPI) -> None:
        self._api = api
        self._fixed: dict[str, _Fixed] = {}

    def view(self, row: dict[str, Any]) -> JobView:
        """Where the job stands now (status, step, events so far), from its row and the clock
        (a simulated job) or from what the trainer wrote (a trained one)."""
        if training.is_trained(row):
            return training.view(self._api, row, self.fixed(row).plan)
        return view(self.fixed(row).plan, model=row["model"], output_name=row["output_name"],
                    created_at=row["created_at"], cancelled_at=row["cancelled_at"],
                    now=self._api.clock())

    def json(self, row: dict[str, Any], *, full: bool,
             current: JobView | None = None) -> dict[str, Any]:
        """FinetuneResponse (`full`) or FinetuneResponseTruncated, as of now."""
        fixed = self.fixed(row)
        state = current or self.view(row)
        body = {**(fixed.full if full else fixed.truncated), "status": state.status,
                "updated_at": iso(state.updated_at), "token_count": state.token_count,
                "progress": {"estimate_available": True,
                             "seconds_remaining": state.seconds_remaining}}
        if state.started_at is not None:
            body["started_at"] = iso(state.started_at)
        if full:
            body.update({
                "epochs_completed": state.epochs_completed,
                "steps_completed": state.current_step, "evals_completed": state.evals_completed,
                "events": [event_json(row, e, fixed.plan) for e in state.events],
            })
        return body

    def fixed(self, row: dict[str, Any]) -> _Fixed:
        """The job's plan and static response fields, built on its first read."""
        known = self._fixed.get(row["id"])
        if known is not None:
            return known
        if len(self._fixed) > MAX_KEPT:
            self._fixed.clear()
        fixed = _build_fixed(self._api, row)
        self._fixed[row["id"]] = fixed
        return fixed


def _build_fixed(api: LocalAPI, row: dict[str, Any]) -> _Fixed:
    plan = JobPlan.from_json(row["plan"])
    base = api.base_model(row["model"])
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
        "wandb_name": req.get("wandb_name"), "wandb_entity": req.get("wandb_entity"),
        "from_checkpoint": req.get("from_checkpoint"),
        "random_seed": req.get("random_seed") or 42, "packing": req.get("packing", True),
        "from_hf_model": req.get("from_hf_model"),
        "hf_model_revision": req.get("hf_model_revision"),
        "max_seq_length": req.get("max_seq_length") or (base.limits()["max_seq_length_sft"]
                                                        if base else None),
    }
    full = {
        **truncated,
        "model_output_path": f"s3://local-api/{row['output_name']}",
        "trainingfile_numlines": req.get("trainingfile_numlines"),
        "trainingfile_size": req.get("trainingfile_size"),
        "eval_steps": max(0, plan.total_steps // plan.n_evals) if plan.n_evals else 0,
        "train_on_inputs": method.get("train_on_inputs", False),
        "job_id": row["id"], "param_count": base.params if base else 0,
        "queue_depth": 0, "wandb_url": "", "total_steps": plan.total_steps,
        "simulated": not training.is_trained(row),
    }
    # `adapter_output_name` is required by SDK 3.x's create response, null allowed: the name a
    # LoRA job's adapter is served under (the local API serves a LoRA job as its adapter).
    lora = req["training_type"].get("type") == "Lora"
    # Other empty values are left out, never sent as null: Together's OpenAPI document types
    # them as strings (a null breaks a client that checks it), and the SDKs take them absent.
    adapter = {"adapter_output_name": row["output_name"] if lora else None,
               "early_stopped": False}
    return _Fixed(plan, {**{k: v for k, v in truncated.items() if v is not None}, **adapter},
                  {**{k: v for k, v in full.items() if v is not None}, **adapter})


hold(_event_json, name="local API job events",
     why="a job's events are fixed; rendering them dominated job reads")
