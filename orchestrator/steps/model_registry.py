"""`registry/*` steps: recording models, with their lineage, in the state store's registry."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from orchestrator.errors import PermanentError
from orchestrator.steps.context import StepContext
from orchestrator.steps.registry import StepRegistry
from orchestrator.store.records import ALIAS_PATTERN, AliasMove, ModelEntry

__all__ = ["TYPES"]

TYPES = StepRegistry()


class RecordParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1, description="the model's name, as inference calls it")
    base_model: str | None = None
    job_id: str | None = None
    training_file: str | None = None
    validation_file: str | None = None
    provider: str | None = None
    hyperparameters: dict[str, Any] = Field(default_factory=dict)
    metrics: dict[str, Any] = Field(default_factory=dict)
    tags: dict[str, Any] = Field(default_factory=dict)


@TYPES.step("registry/record-model", params=RecordParams,
               outputs=frozenset({"model", "recorded_at"}), provider=False)
async def record_model(ctx: StepContext, params: RecordParams) -> dict[str, Any]:
    """Records a model and where it came from (run, base model, data, job, metrics)."""
    if ctx.models is None:
        msg = "this run has no model registry"
        raise PermanentError(msg)
    entry = await ctx.models.record(ModelEntry(
        name=params.model, run_id=ctx.run_id, step_id=ctx.step_id, pipeline_name=ctx.run_name,
        provider=params.provider, base_model=params.base_model, job_id=params.job_id,
        training_file=params.training_file, validation_file=params.validation_file,
        hyperparameters=params.hyperparameters,
        metrics={k: v for k, v in params.metrics.items() if v is not None}, tags=params.tags,
    ))
    ctx.log.info("model recorded", model=entry.name)
    return {"model": entry.name, "recorded_at": entry.recorded_at}


class PromoteParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    alias: str = Field(pattern=ALIAS_PATTERN, description="e.g. production, staging")
    model: str = Field(min_length=1, description="the model the alias is to point at")
    why: str = Field(default="", max_length=2000, description="kept in the alias's history")


@TYPES.step("registry/promote", params=PromoteParams,
               outputs=frozenset({"alias", "model", "moved"}), provider=False)
async def promote(ctx: StepContext, params: PromoteParams) -> dict[str, Any]:
    """Points a registry alias (production, staging) at a model, with who and why; a move
    to where it points already is no move (a resumed or repeated run moves it once)."""
    if ctx.models is None:
        msg = "this run has no model registry"
        raise PermanentError(msg)
    moved = await ctx.models.move_alias(AliasMove(
        params.alias, params.model, f"run {ctx.run_id}", params.why, source=ctx.run_id))
    if moved is not None:
        ctx.log.info("alias moved", alias=params.alias, model=params.model)
    else:
        ctx.log.info("alias already there", alias=params.alias, model=params.model)
    return {"alias": params.alias, "model": params.model, "moved": moved is not None}
