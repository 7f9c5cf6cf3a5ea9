"""The learning rate a fine-tune uses at each training step, as Together's parameters define it.

One definition for every side that needs it: the local API's simulated jobs report the series
a job's `learning_rate`, `lr_scheduler` and `warmup_ratio` give, and a real trainer trains
with the very same series. Linear warmup over `warmup_ratio` of the steps, then a linear or
cosine decay (with `num_cycles` half-waves for cosine) down to `min_lr_ratio` of the peak.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

__all__ = ["LRSchedule"]


@dataclasses.dataclass(frozen=True)
class LRSchedule:
    """A job's learning-rate schedule over `total_steps` optimizer steps."""

    learning_rate: float = 1e-5
    kind: str = "cosine"
    """`linear` or `cosine` (Together's `lr_scheduler_type`)."""
    warmup_ratio: float = 0.0
    min_lr_ratio: float = 0.0
    num_cycles: float = 0.5
    """Cosine only: half-waves over the decay; 0.5 decays once from the peak to the floor."""

    @classmethod
    def of_request(cls, request: Mapping[str, Any]) -> LRSchedule:
        """The schedule a stored create request (defaults filled in) asks for."""
        scheduler = request.get("lr_scheduler") or {}
        args = scheduler.get("lr_scheduler_args") or {}
        return cls(learning_rate=float(request.get("learning_rate", 1e-5)),
                   kind=str(scheduler.get("lr_scheduler_type", "cosine")),
                   warmup_ratio=float(request.get("warmup_ratio", 0.0)),
                   min_lr_ratio=float(args.get("min_lr_ratio", 0.0)),
                   num_cycles=float(args.get("num_cycles", 0.5)))

    def warmup_steps(self, total_steps: int) -> int:
        return math.ceil(self.warmup_ratio * total_steps)

    def at(self, step: int, total_steps: int) -> float:
        """The learning rate of optimizer step `step` (0-based: the first step is 0)."""
        warmup = self.warmup_steps(total_steps)
        if step < warmup:
            return self.learning_rate * (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        if self.kind == "linear":
            decay = 1.0 - progress
        else:
            decay = max(0.0, 0.5 * (1.0 + math.cos(math.pi * 2.0 * self.num_cycles * progress)))
        return self.learning_rate * (self.min_lr_ratio + (1.0 - self.min_lr_ratio) * decay)
