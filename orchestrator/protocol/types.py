"""What the Together API returns, as pydantic models that tolerate fields they do not know.

Only what the orchestrator reads is declared; everything else a response carries is kept
(`extra="allow"`), so a newer API adding fields never breaks a pipeline.
"""

from __future__ import annotations

from typing import Any

from pydantic import AliasChoices, BaseModel, ConfigDict, Field

__all__ = [
    "TERMINAL_JOB_STATUSES",
    "Checkpoint",
    "Completion",
    "FileObject",
    "FineTuneEvent",
    "FineTuneJob",
    "ModelUpload",
    "PriceEstimate",
    "RegisteredModel",
    "RemoteUpload",
    "UploadJob",
    "Usage",
]

TERMINAL_JOB_STATUSES = frozenset({"completed", "cancelled", "error", "user_error"})


class _Response(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)


class FileObject(_Response):
    id: str
    filename: str = ""
    bytes: int = 0
    purpose: str = ""
    processed: bool = Field(default=False, validation_alias=AliasChoices("Processed",
                                                                          "processed"))
    line_count: int = Field(default=0, validation_alias=AliasChoices("LineCount",
                                                                     "line_count"))
    processing_status: str | None = None
    validation_report: dict[str, Any] | None = None


class FineTuneEvent(_Response):
    type: str = ""
    message: str = ""
    level: str | None = None
    created_at: str | None = None
    step: int | None = None


class FineTuneJob(_Response):
    id: str
    status: str
    model: str | None = None
    model_output_name: str | None = None
    suffix: str | None = None
    token_count: int | None = None
    training_file: str | None = None
    validation_file: str | None = None
    created_at: str | None = None
    events: list[FineTuneEvent] = Field(default_factory=list)
    progress: dict[str, Any] | None = None
    steps_completed: int | None = None
    total_steps: int | None = None

    @property
    def finished(self) -> bool:
        return self.status in TERMINAL_JOB_STATUSES

    @property
    def failed(self) -> bool:
        """Ended without a model: an error, the user's data, or a cancel."""
        return self.finished and self.status != "completed"

    @property
    def seconds_remaining(self) -> float | None:
        """The API's estimate of the time to the job's next status, when it gives one."""
        progress = self.progress or {}
        remaining = progress.get("seconds_remaining")
        if progress.get("estimate_available") and isinstance(remaining, int | float):
            return float(remaining)
        return None


class Checkpoint(_Response):
    step: int = 0
    path: str = ""
    checkpoint_type: str = ""
    created_at: str | None = None


class ModelUpload(_Response):
    """`POST /models`: the import job and the (namespaced) model name."""

    job_id: str
    model_name: str
    model_id: str | None = None
    model_source: str | None = None


class UploadJob(_Response):
    job_id: str
    status: str
    type: str = ""
    status_updates: list[dict[str, Any]] = Field(default_factory=list)
    args: dict[str, Any] = Field(default_factory=dict)


class RegisteredModel(_Response):
    """A model registered in a project (the v2 API, `POST /v2/projects/{p}/models`)."""

    id: str
    name: str
    base_model_id: str | None = Field(default=None, validation_alias=AliasChoices(
        "baseModelId", "base_model_id"))
    description: str | None = None


REMOTE_UPLOAD_FAILED = frozenset({"REMOTE_UPLOAD_STATUS_FAILED", "REMOTE_UPLOAD_STATUS_ERROR"})


class RemoteUpload(_Response):
    """An import of files into a registered model (`POST /v2/projects/{p}/models/uploads`)."""

    id: str
    status: str
    model_id: str = Field(default="", validation_alias=AliasChoices("modelId", "model_id"))
    remote_url: str = Field(default="", validation_alias=AliasChoices("remoteUrl",
                                                                      "remote_url"))
    status_message: str | None = Field(default=None, validation_alias=AliasChoices(
        "statusMessage", "status_message"))

    @property
    def succeeded(self) -> bool:
        return self.status == "REMOTE_UPLOAD_STATUS_SUCCEEDED"

    @property
    def failed(self) -> bool:
        return self.status in REMOTE_UPLOAD_FAILED


class PriceEstimate(_Response):
    """`POST /fine-tunes/estimate-price`: what a job would cost, before it is created."""

    estimation_available: bool = True
    estimated_total_price: float | None = None
    estimated_train_token_count: int | None = None
    estimated_eval_token_count: int | None = None
    allowed_to_proceed: bool = True
    user_limit: float | None = None
    unavailable_reason: str | None = None

    @property
    def usd(self) -> float | None:
        return self.estimated_total_price if self.estimation_available else None

    @property
    def tokens(self) -> int | None:
        if self.estimated_train_token_count is None:
            return None
        return self.estimated_train_token_count + (self.estimated_eval_token_count or 0)


class Usage(_Response):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


class Completion(_Response):
    """The first choice of a completion or chat completion, flattened."""

    text: str
    finish_reason: str | None = None
    model: str = ""
    usage: Usage = Field(default_factory=Usage)
    first_token_after: float | None = None
    """Seconds from the request to its first piece of text, for an answer streamed as
    server-sent events (None when not streamed)."""

