"""How the local API behaves: where it keeps state, how long jobs take, what faults it injects."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from orchestrator.settings import LocalJobOutcome

if TYPE_CHECKING:
    from orchestrator.settings import Settings

__all__ = ["FAULT_KINDS", "LocalAPIConfig", "parse_faults"]

FAULT_KINDS = ("429", "500", "503", "drop")
"""429 and 503 carry Retry-After; 500 is a bare server error; `drop` handles the request, then
drops the connection before the response arrives (the client cannot know it succeeded)."""


def parse_faults(text: str) -> dict[str, float]:
    """`"429=0.05,500=0.02,drop=0.01"` to shares per fault kind; raises ValueError."""
    shares: dict[str, float] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        kind, sep, share = item.partition("=")
        kind = kind.strip()
        if not sep or kind not in FAULT_KINDS:
            msg = (f"bad fault {item!r}: use kind=share with kinds {', '.join(FAULT_KINDS)}, "
                   "e.g. 429=0.05,drop=0.01")
            raise ValueError(msg)
        try:
            value = float(share)
        except ValueError:
            msg = f"bad fault share {share!r} for {kind}: use a number between 0 and 1"
            raise ValueError(msg) from None
        if not 0 <= value <= 1:
            msg = f"fault share for {kind} must be between 0 and 1, not {value}"
            raise ValueError(msg)
        shares[kind] = value
    if sum(shares.values()) > 1:
        msg = f"fault shares add up to {sum(shares.values()):g}; at most 1"
        raise ValueError(msg)
    return shares


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
        )
