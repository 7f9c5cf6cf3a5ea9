"""The base models the local API offers, with their fine-tuning limits.

The names are real Together model ids, so a pipeline written against the local API runs
unchanged against Together; the numbers are plausible, not Together's current ones. Beside
them, the local trainer's built-in tiny bases (`local/...`: a toy model a CPU trains in
seconds, for real with `local_trainer = "peft"`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["BASE_MODELS", "BaseModel", "find", "mapped"]


@dataclass(frozen=True)
class BaseModel:
    id: str
    organization: str
    display_name: str
    params: int
    context_length: int
    lora_max_rank: int = 64
    max_batch_size: int = 32
    min_batch_size: int = 8
    supports_full: bool = True
    created: int = 1_720_000_000
    max_epochs: int = 20

    @property
    def object_id(self) -> str:
        """The model's id in SDK 3.x's model registry (`ml_...`, what `models create` takes as
        `baseModelId`): stable, made from the name."""
        import hashlib  # noqa: PLC0415

        return "ml_" + hashlib.sha256(self.id.encode()).hexdigest()[:24]

    def limits(self) -> dict[str, Any]:
        """`GET /fine-tunes/models/limits` for this model (every field any SDK requires)."""
        lora = {
            "max_batch_size": self.max_batch_size,
            "max_batch_size_dpo": max(self.min_batch_size, self.max_batch_size // 2),
            "min_batch_size": self.min_batch_size,
            "max_rank": self.lora_max_rank,
            "default_rank": min(16, self.lora_max_rank),
            "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                               "down_proj"],
        }
        full = {"max_batch_size": self.max_batch_size // 2,
                "max_batch_size_dpo": self.max_batch_size // 4,
                "min_batch_size": self.min_batch_size}
        return {
            "model_name": self.id,
            "max_num_epochs": self.max_epochs,
            "max_num_evals": 100,
            "max_num_checkpoints": 20,
            "max_learning_rate": 1.0,
            "min_learning_rate": 1e-8,
            "supports_vision": False,
            "supports_tools": True,
            "supports_reasoning": False,
            "supports_full_training": self.supports_full,
            "merge_output_lora": True,
            "default_gradient_accumulation_steps": 1,
            "max_seq_length_sft": min(self.context_length, 32768),
            "max_seq_length_dpo": min(self.context_length, 16384),
            "min_max_seq_length": 512,
            "lora_training": lora,
            "full_training": full if self.supports_full else None,
        }

    def info(self) -> dict[str, Any]:
        """A `GET /models` entry."""
        return {
            "id": self.id, "object": "model", "created": self.created, "type": "chat",
            "display_name": self.display_name, "organization": self.organization,
            "link": f"https://huggingface.co/{self.id}", "license": "see the model card",
            "context_length": self.context_length,
            "pricing": {"hourly": 0, "input": 0.18, "output": 0.18, "base": 0, "finetune": 0},
        }


BASE_MODELS: tuple[BaseModel, ...] = (
    BaseModel("meta-llama/Meta-Llama-3.1-8B-Instruct-Reference", "Meta",
              "Meta Llama 3.1 8B Instruct Reference", 8_030_261_248, 131_072),
    BaseModel("meta-llama/Meta-Llama-3.1-70B-Instruct-Reference", "Meta",
              "Meta Llama 3.1 70B Instruct Reference", 70_553_706_496, 131_072,
              max_batch_size=16, supports_full=False),
    # The name Together's adapter-upload guide gives as an adapter's serverless base.
    BaseModel("meta-llama/Meta-Llama-3.1-70B-Instruct", "Meta", "Meta Llama 3.1 70B Instruct",
              70_553_706_496, 131_072, max_batch_size=16, supports_full=False),
    BaseModel("meta-llama/Llama-3.2-3B-Instruct", "Meta", "Llama 3.2 3B Instruct",
              3_212_749_824, 131_072),
    BaseModel("Qwen/Qwen2.5-7B-Instruct", "Qwen", "Qwen 2.5 7B Instruct", 7_615_616_512,
              32_768),
    BaseModel("Qwen/Qwen2.5-14B-Instruct", "Qwen", "Qwen 2.5 14B Instruct", 14_770_033_664,
              32_768, max_batch_size=16),
    BaseModel("mistralai/Mistral-7B-Instruct-v0.2", "Mistral AI", "Mistral 7B Instruct v0.2",
              7_241_732_096, 32_768),
    BaseModel("google/gemma-2-9b-it", "Google", "Gemma 2 9B Instruct", 9_241_705_984, 8_192),
    BaseModel("local/tiny-llama", "orchestrator", "Tiny Llama (built in: random weights, a toy)",
              1_444_608, 1024, max_batch_size=64, min_batch_size=1, supports_full=False,
              max_epochs=1000),
)

_BY_ID = {model.id: model for model in BASE_MODELS}


def find(model_id: str) -> BaseModel | None:
    """The base model `model_id` names (case-sensitive, as Together's ids are)."""
    return _BY_ID.get(model_id)


def mapped(model_id: str, folder: str) -> BaseModel:
    """A model folder the local trainer was given as a base (setting local_base_models): LoRA
    only, its context length and size from its `config.json` where it says them."""
    try:
        config = json.loads((Path(folder).expanduser() / "config.json").read_text())
    except (OSError, ValueError):
        config = {}
    context = config.get("max_position_embeddings") if isinstance(config, dict) else None
    context = context if isinstance(context, int) and context > 0 else 4096
    return BaseModel(model_id, "local", f"{model_id} (a model folder: {folder})", 0, context,
                     max_batch_size=64, min_batch_size=1, supports_full=False, max_epochs=1000)
