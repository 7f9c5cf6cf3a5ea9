"""What a fine-tuning job trains, as the server hands it to the trainer (no torch here).

Made from a create request the server checked (`localapi.finetune_requests`), stored with the
job (`store.TrainingStore.queue`), read back by the trainer process.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

from orchestrator.protocol.schedule import LRSchedule

__all__ = ["TrainSpec", "spread"]


@dataclasses.dataclass(frozen=True)
class TrainSpec:
    """A job's training, every Together parameter the trainer honours, resolved."""

    output_name: str
    base: dict[str, str]
    """`{"tiny": "local/tiny-llama"}` or `{"folder": "/path/to/model"}`."""
    base_name: str
    """The model name the request gave (what the job's responses say it trained)."""
    training_file: str
    """The dataset's path on disk."""
    validation_file: str | None
    n_train: int
    """Examples in the training file (lines; the step count is planned from it)."""
    n_epochs: int
    batch_size: int
    learning_rate: float
    lr_scheduler: str
    warmup_ratio: float
    min_lr_ratio: float
    num_cycles: float
    max_grad_norm: float
    weight_decay: float
    lora_r: int
    lora_alpha: int
    lora_dropout: float
    lora_trainable_modules: str
    random_seed: int
    n_checkpoints: int
    n_evals: int
    max_seq_length: int
    train_on_inputs: bool

    @property
    def steps_per_epoch(self) -> int:
        return max(1, math.ceil(self.n_train / self.batch_size))

    @property
    def total_steps(self) -> int:
        return self.n_epochs * self.steps_per_epoch

    @property
    def schedule(self) -> LRSchedule:
        return LRSchedule(self.learning_rate, self.lr_scheduler, self.warmup_ratio,
                          self.min_lr_ratio, self.num_cycles)

    @property
    def checkpoint_steps(self) -> list[int]:
        """Where checkpoints are saved; the last (the final model) at the end."""
        return spread(self.total_steps, max(1, min(self.n_checkpoints, self.total_steps)))

    @property
    def eval_steps(self) -> list[int]:
        return spread(self.total_steps, min(self.n_evals, self.total_steps)) \
            if self.validation_file else []

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> TrainSpec:
        return cls(**data)


def spread(total: int, count: int) -> list[int]:
    """`count` steps spread evenly over `total`, the last at the end (none for count 0)."""
    return sorted({max(1, round(total * i / count)) for i in range(1, count + 1)})
