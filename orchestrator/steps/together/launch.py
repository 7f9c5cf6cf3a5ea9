"""together/launch-fine-tune: one job per step, adopted on re-entry by its run-scoped token.

Before creating the job it asks for the job's price (`estimate-price`, as Together's SDK does
before every create) and keeps it in its outputs (`estimated_price_usd`, `estimated_tokens`):
the run's record of what it was told it would pay. An estimate the provider cannot give is a
warning, never a failed launch; a budget is enforced before the run starts (`run`).

The create itself is fenced like a write: the step records that it is creating (a fenced
checkpoint), renews the run's lease by the database's clock (`ctx.secure_lease`), and gives
the create half the lease's time, its connection reset if it runs out. A worker cut off from
the database after that cannot have its create reach the provider once another worker may
hold the run; one cut off before it never sends the create at all.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, StrictBool, model_validator

from orchestrator.errors import StepError
from orchestrator.faults import fault_point
from orchestrator.protocol.finetune import DPO_PARAMETERS
from orchestrator.providers.together.requests import estimate_request, fine_tune_request
from orchestrator.steps.context import StepContext
from orchestrator.steps.together.common import (
    TYPES,
    Params,
    run_token,
    together_client,
)

if TYPE_CHECKING:
    from orchestrator.protocol.types import FineTuneJob
    from orchestrator.providers.together.client import TogetherClient

__all__ = ["LaunchParams", "cancel_launched_job", "launch_fine_tune"]

class LaunchParams(Params):
    """Every field of Together's create request; LoRA settings become `training_type`."""

    training_file: str
    model: str | None = None
    from_checkpoint: str | None = None
    validation_file: str | None = None
    n_epochs: int = Field(default=1, ge=1)
    n_checkpoints: int = Field(default=1, ge=1)
    n_evals: int = Field(default=0, ge=0)
    batch_size: int | Literal["max"] = "max"
    learning_rate: float = Field(default=1e-5, gt=0)
    lr_scheduler: Literal["linear", "cosine"] = "cosine"
    min_lr_ratio: float = Field(default=0.0, ge=0, le=1)
    scheduler_num_cycles: float = Field(default=0.5, gt=0)
    warmup_ratio: float = Field(default=0.0, ge=0, le=1)
    max_grad_norm: float = Field(default=1.0, ge=0)
    weight_decay: float = Field(default=0.0, ge=0)
    suffix: str | None = Field(default=None, max_length=29, pattern=r"^[A-Za-z0-9._-]+$")
    lora: StrictBool = True
    lora_r: int | None = Field(default=None, ge=1)
    lora_alpha: int | None = Field(default=None, ge=1)
    lora_dropout: float = Field(default=0.0, ge=0, lt=1)
    lora_trainable_modules: str = "all-linear"
    training_method: Literal["sft", "dpo"] = "sft"
    train_on_inputs: StrictBool | Literal["auto"] = "auto"
    dpo_beta: float | None = Field(default=None, gt=0)
    rpo_alpha: float | None = Field(default=None, ge=0)
    simpo_gamma: float | None = Field(default=None, ge=0)
    dpo_normalize_logratios_by_length: StrictBool | None = None
    dpo_reference_free: StrictBool | None = None
    packing: StrictBool | None = None
    max_seq_length: int | None = Field(default=None, ge=1)
    random_seed: int | None = None
    wandb_api_key: str | None = Field(default=None, description="use ${{ secrets.NAME }}")
    wandb_base_url: str | None = None
    wandb_project_name: str | None = None
    wandb_name: str | None = None
    wandb_entity: str | None = None
    gradient_accumulation_steps: int | None = Field(default=None, ge=1, le=1024)
    train_vision: StrictBool = Field(default=False, description="train a multimodal model's "
                                                                "vision encoder too")
    early_stopping_enabled: StrictBool = False
    early_stopping_patience: int | None = Field(default=None, ge=1)
    early_stopping_min_delta: float | None = Field(default=None, ge=0)
    early_stopping_warmup_evals: int | None = Field(default=None, ge=0)
    from_hf_model: str | None = None
    hf_model_revision: str | None = None
    hf_api_token: str | None = Field(default=None, description="use ${{ secrets.NAME }}")
    hf_output_repo_name: str | None = None

    @model_validator(mode="after")
    def _model_or_checkpoint(self) -> LaunchParams:
        if not self.model and not self.from_checkpoint:
            msg = "give model (the base model) or from_checkpoint"
            raise ValueError(msg)
        if self.early_stopping_enabled:  # as SDK 3.x checks it, before anything is paid for
            if not self.validation_file:
                msg = "early_stopping_enabled needs a validation_file"
                raise ValueError(msg)
            needed = (self.early_stopping_patience or 2) + \
                (1 if self.early_stopping_warmup_evals is None
                 else self.early_stopping_warmup_evals) + 1
            if self.n_evals < needed:
                msg = (f"early stopping needs n_evals >= patience + warmup_evals + 1 = "
                       f"{needed} (n_evals is {self.n_evals})")
                raise ValueError(msg)
        if self.n_evals and not self.validation_file:
            msg = "n_evals > 0 needs a validation_file"
            raise ValueError(msg)
        dpo_only = [name for name in DPO_PARAMETERS if getattr(self, name) is not None]
        if self.training_method == "sft" and dpo_only:
            msg = f"{dpo_only[0]} applies to training_method dpo, not sft"
            raise ValueError(msg)
        if self.training_method == "dpo" and self.train_on_inputs != "auto":
            msg = "train_on_inputs applies to training_method sft, not dpo"
            raise ValueError(msg)
        return self


async def _job_with_suffix(client: TogetherClient, suffix: str) -> FineTuneJob | None:
    """The job a launch created, known by the run-scoped token in its suffix."""
    return next((j for j in await client.list_fine_tunes() if j.suffix == suffix), None)


def _launch_outputs(job: Any, adopted: bool, saved: dict[str, Any]) -> dict[str, Any]:
    return {"job_id": job.id, "model_output_name": job.model_output_name or "",
            "status": job.status, "adopted": adopted,
            "estimated_price_usd": saved.get("estimated_price_usd"),
            "estimated_tokens": saved.get("estimated_tokens")}


async def _estimate(ctx: StepContext, client: TogetherClient,
                    request: dict[str, Any]) -> dict[str, Any]:
    """The job's estimated price and tokens (None each when the provider cannot say)."""
    try:
        estimate = await client.estimate_price(estimate_request(request))
    except StepError as exc:
        ctx.log.warning("the provider gave no price estimate; launching anyway", error=str(exc))
        return {"estimated_price_usd": None, "estimated_tokens": None}
    if not estimate.allowed_to_proceed:
        ctx.log.warning("the provider says this job exceeds the account's limit",
                        estimated_usd=estimate.usd, user_limit=estimate.user_limit)
    ctx.log.info("price estimate", estimated_usd=estimate.usd, tokens=estimate.tokens)
    return {"estimated_price_usd": estimate.usd, "estimated_tokens": estimate.tokens}


async def cancel_launched_job(ctx: StepContext) -> None:
    """The launch step's side of cancelling a run: cancel the job it created, if it still
    runs. A launch cut short by a crash left only its suffix: the job is found by it."""
    client = together_client(ctx)
    saved = ctx.last_checkpoint
    job_id = saved.get("job_id")
    if job_id is None and saved.get("suffix"):
        found = await _job_with_suffix(client, str(saved["suffix"]))
        job_id = found.id if found is not None else None
    if job_id is None:
        return
    job = await client.retrieve_fine_tune(str(job_id))
    if job.finished:
        return
    job = await client.cancel_fine_tune(str(job_id))
    ctx.log.warning("cancelled the fine-tuning job", job_id=job_id, status=job.status)


@TYPES.step("together/launch-fine-tune", params=LaunchParams,
               outputs=frozenset({"job_id", "model_output_name", "status", "adopted",
                                  "estimated_price_usd", "estimated_tokens"}),
               cancel=cancel_launched_job)
async def launch_fine_tune(ctx: StepContext, params: LaunchParams) -> dict[str, Any]:
    """Starts a fine-tuning job exactly once per run (see the module docstring)."""
    client = together_client(ctx)
    saved = ctx.last_checkpoint
    if "job_id" in saved:
        return _launch_outputs(await client.retrieve_fine_tune(saved["job_id"]), True, saved)
    token = run_token(ctx.idempotency_key)
    suffix = f"{params.suffix}-{token}" if params.suffix else token
    if saved.get("creating"):
        # An earlier attempt may have created the job and died before recording it.
        found = await _job_with_suffix(client, suffix)
        if found is not None:
            ctx.log.info("adopting the job an earlier attempt created", job_id=found.id)
            await ctx.checkpoint(job_id=found.id)
            return _launch_outputs(found, True, ctx.last_checkpoint)
    request = await fine_tune_request(client, params.model_dump(), suffix=suffix)
    await ctx.checkpoint(creating=True, suffix=suffix, **await _estimate(ctx, client, request))
    fault_point("before_remote_create", ctx.step_id)
    held = await ctx.secure_lease()
    job = await client.create_fine_tune(request, within=held / 2)
    fault_point("after_remote_create", ctx.step_id)
    await ctx.checkpoint(job_id=job.id)
    ctx.log.info("fine-tuning job created", job_id=job.id, model=params.model)
    return _launch_outputs(job, False, ctx.last_checkpoint)
