"""How the local API behaves: where it keeps state, how long jobs take, what faults it injects."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from orchestrator.settings import FAULT_KINDS, LocalJobOutcome, parse_faults

if TYPE_CHECKING:
    from orchestrator.settings import Settings

__all__ = ["FAULT_KINDS", "LocalAPIConfig", "parse_faults"]


@dataclasses.dataclass(frozen=True)
class LocalAPIConfig:
    """Everything the local API needs to know; built from Settings or by tests directly."""

    data_dir: Path
    api_key: str = "local-key"
    job_duration: float = 10.0
    upload_duration: float = 3.0
    upload_url_ttl: float = 3600.0
    """How long an announced upload's URL is valid; until then, its bytes count as on their way."""
    job_outcome: LocalJobOutcome = "completed"
    faults: Mapping[str, float] = dataclasses.field(default_factory=dict)
    latency: float = 0.0
    retry_after: float = 1.0
    fault_seed: int | None = None
    namespace: str = "local-user"
    max_request_bytes: int = 32 * 2**20
    """The largest body of a request that is not a file upload (413 above)."""
    max_upload_bytes: int = 5 * 2**30
    """The largest file uploaded in one request, as Together's single-request limit."""
    request_timeout: float = 30.0
    """How long a client may take to send a request's headers, or a body that is not a file
    upload, and how long a file upload may pause (408, and the connection is closed)."""
    trainer: str = "simulated"
    """`simulated` (jobs progress by the clock) or `peft` (a trainer process trains them)."""
    base_models: Mapping[str, str] = dataclasses.field(default_factory=dict)
    """For the peft trainer: model names to model folders on disk (nothing is downloaded)."""
    trainer_threads: int = 0
    """CPU threads the trainer uses (0: torch's default, one per core)."""
    trainer_save_every: float = 5.0
    """Seconds between saves of a training job's state (what a restarted trainer continues
    from), besides each checkpoint."""

    @classmethod
    def from_settings(cls, settings: Settings) -> LocalAPIConfig:
        return cls(
            data_dir=Path(settings.local_data_dir),
            api_key=settings.local_api_key.get_secret_value(),
            job_duration=settings.local_job_duration,
            upload_duration=settings.local_upload_duration,
            upload_url_ttl=settings.local_upload_url_ttl,
            job_outcome=settings.local_job_outcome,
            faults=parse_faults(settings.local_faults),
            latency=settings.local_latency,
            retry_after=settings.local_retry_after,
            fault_seed=settings.local_fault_seed,
            max_request_bytes=settings.local_max_request_bytes,
            max_upload_bytes=settings.local_max_upload_bytes,
            request_timeout=settings.local_request_timeout,
            trainer=settings.local_trainer,
            base_models=dict(settings.local_base_models),
            trainer_threads=settings.local_trainer_threads,
            trainer_save_every=settings.local_trainer_save_every,
        )
