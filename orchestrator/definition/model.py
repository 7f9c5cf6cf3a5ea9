"""The pipeline file's structure as pydantic models.

These check the *shape* of a file (keys, types, ranges). What needs the whole file at once (step
types, references, the DAG) is checked in `orchestrator.definition.loader`.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from orchestrator.cron import check_cron, check_timezone
from orchestrator.definition.fields import Duration
from orchestrator.definition.matrix import MatrixSpec

__all__ = [
    "DEFAULT_RETRY",
    "BudgetSpec",
    "ConcurrencySpec",
    "Defaults",
    "InputSpec",
    "InputType",
    "PipelineHeader",
    "RetrySpec",
    "ScheduleSpec",
    "StepConcurrencySpec",
    "StepSpec",
]

ID_PATTERN = r"^[A-Za-z_][A-Za-z0-9_-]*$"
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"

InputType = Literal["string", "integer", "number", "boolean", "path", "duration", "list",
                    "object"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class InputSpec(_Strict):
    """A typed pipeline input; without a `default` it must be given with `-i name=value`."""

    type: InputType = "string"
    default: Any = None
    description: str | None = None

    @property
    def required(self) -> bool:
        return "default" not in self.model_fields_set


class RetrySpec(_Strict):
    """Exponential backoff: attempt n waits up to `initial_delay * multiplier**(n-1)`, capped."""

    max_attempts: int = Field(default=3, ge=1, le=1000)
    initial_delay: Duration = 1.0
    max_delay: Duration = 60.0
    multiplier: float = Field(default=2.0, ge=1.0, le=100.0)
    jitter: Literal["full", "none"] = "full"

    def merged_over(self, base: RetrySpec) -> RetrySpec:
        """This spec's explicitly given fields on top of `base` (a step tweaking the default)."""
        return base.model_copy(update={k: getattr(self, k) for k in self.model_fields_set})


DEFAULT_RETRY = RetrySpec()


class Defaults(_Strict):
    """What every step inherits unless it says otherwise; `retry: null` means no retries."""

    retry: RetrySpec | None = DEFAULT_RETRY
    timeout: Duration | None = None


class ConcurrencySpec(_Strict):
    """At most `limit` holders of `key` at once, across every run sharing the state store.

    `key` may hold expressions of `inputs`, `matrix` and `run` (e.g. one key per provider
    account); runs whose keys render alike share the limit.
    """

    key: str = Field(min_length=1, max_length=200)
    limit: int = Field(ge=1, le=100_000)


class StepConcurrencySpec(ConcurrencySpec):
    """A step's slot; with `until`, it is held from this step until step `until` ends.

    A fine-tune job occupies the account's quota from its launch until it finishes, so the
    launch step takes the slot and gives it back when the wait step is done:
    `concurrency: {key: together, limit: 4, until: wait}`.
    """

    until: str | None = None


class BudgetSpec(_Strict):
    """`budget:` what the fine-tunes a pipeline (or a batch: all its cells) launches may cost,
    by the provider's estimate; `run` refuses a launch above it unless `--yes`."""

    max_usd: float = Field(gt=0, le=1e9, description="the most the launches may cost, in USD")


OBJECTIVE_PATTERN = r"^(eval_loss|train_loss|(eval|lift|baseline)\.[A-Za-z_][A-Za-z0-9_]*)$"
"""What a batch's cells are ranked by: a final loss, or a score of an evaluate step (the
model's `eval.SCORER`, its `lift.SCORER` over the baseline, the `baseline.SCORER`)."""


class SelectSpec(_Strict):
    """`select:` how a batch's best cell is chosen (`show BATCH`, `batches`, `promote BATCH`)."""

    by: str = Field(json_schema_extra={"pattern": OBJECTIVE_PATTERN},
                    description="eval_loss, train_loss, eval.SCORER, lift.SCORER or "
                                "baseline.SCORER (the scores of a together/evaluate step)")
    max: bool | None = Field(default=None, description="higher is better (default: true for "
                                                       "scores, false for losses)")

    @field_validator("by")
    @classmethod
    def _objective(cls, value: str) -> str:
        if not re.fullmatch(OBJECTIVE_PATTERN, value):
            msg = (f"{value!r} is not an objective: eval_loss, train_loss, eval.SCORER, "
                   "lift.SCORER or baseline.SCORER")
            raise ValueError(msg)
        return value

    @property
    def maximize(self) -> bool:
        return self.max if self.max is not None else not self.by.endswith("_loss")


class ScheduleSpec(_Strict):
    """When the pipeline runs by itself (under `orchestrator scheduler` or `serve`)."""

    cron: str = Field(description="five cron fields, e.g. '0 2 * * *', or @daily, @hourly...")
    timezone: str = "UTC"
    inputs: dict[str, Any] = Field(default_factory=dict)
    overlap: Literal["skip", "queue", "cancel_other", "allow"] = "skip"
    catch_up: Literal["none", "latest", "all"] = "none"

    @model_validator(mode="before")
    @classmethod
    def _bare_cron(cls, data: Any) -> Any:
        return {"cron": data} if isinstance(data, str) else data

    @field_validator("cron")
    @classmethod
    def _valid_cron(cls, value: str) -> str:
        check_cron(value)
        return value.strip()

    @field_validator("timezone")
    @classmethod
    def _valid_zone(cls, value: str) -> str:
        check_timezone(value)
        return value


class StepSpec(_Strict):
    """One step. `retry` and `timeout` left out inherit `defaults`; `null` switches them off."""

    uses: str
    with_: dict[str, Any] = Field(default_factory=dict, alias="with")
    needs: list[str] = Field(default_factory=list)
    retry: RetrySpec | None = None
    timeout: Duration | None = None
    concurrency: StepConcurrencySpec | None = None
    description: str | None = None

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @model_validator(mode="before")
    @classmethod
    def _python_mapping(cls, data: Any) -> Any:
        # `uses: {python: module:function}` reads better in YAML than the one-string form.
        if isinstance(data, dict) and isinstance(data.get("uses"), dict):
            uses = data["uses"]
            if set(uses) == {"python"} and isinstance(uses["python"], str):
                data = {**data, "uses": f"python:{uses['python']}"}
        return data

    @field_validator("needs", mode="before")
    @classmethod
    def _single_need(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    def inherits(self, field: str) -> bool:
        """True when the file left `field` out, so the pipeline default applies."""
        return field not in self.model_fields_set


class PipelineHeader(_Strict):
    """Everything in a pipeline file except the steps' insides (validated one by one)."""

    name: str = Field(pattern=NAME_PATTERN, max_length=100)
    description: str | None = None
    inputs: dict[str, InputSpec] = Field(default_factory=dict)
    defaults: Defaults = Defaults()
    matrix: MatrixSpec | None = None
    concurrency: ConcurrencySpec | None = None
    schedule: ScheduleSpec | None = None
    budget: BudgetSpec | None = None
    select: SelectSpec | None = None
    steps: dict[str, Any] = Field(min_length=1)
    on_success: dict[str, Any] | None = Field(
        default=None, description="steps run after every step succeeded (e.g. a notice)")
    on_failure: dict[str, Any] | None = Field(
        default=None, description="steps run after a step failed for good (e.g. a notice)")
