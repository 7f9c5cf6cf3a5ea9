"""Fine-tune request rules that both the launch step and the local API check."""

from __future__ import annotations

__all__ = ["DPO_PARAMETERS", "SDK_ARGUMENTS"]

DPO_PARAMETERS = ("dpo_beta", "rpo_alpha", "simpo_gamma", "dpo_normalize_logratios_by_length",
                  "dpo_reference_free")
"""`training_method` fields that mean something only for DPO: an SFT request carrying one is
refused (Together ignores them silently, which hides a mistaken sweep)."""

SDK_ARGUMENTS = {
    "lora": "training_type.type ('Lora' or 'Full')", "lora_r": "training_type.lora_r",
    "lora_alpha": "training_type.lora_alpha", "lora_dropout": "training_type.lora_dropout",
    "lora_trainable_modules": "training_type.lora_trainable_modules",
    "dpo_beta": "training_method.dpo_beta", "rpo_alpha": "training_method.rpo_alpha",
    "simpo_gamma": "training_method.simpo_gamma",
    "dpo_normalize_logratios_by_length": "training_method.dpo_normalize_logratios_by_length",
    "dpo_reference_free": "training_method.dpo_reference_free",
    "lr_scheduler_type": "lr_scheduler.lr_scheduler_type",
    "min_lr_ratio": "lr_scheduler.lr_scheduler_args.min_lr_ratio",
    "scheduler_num_cycles": "lr_scheduler.lr_scheduler_args.num_cycles",
    "train_vision": "multimodal_params.train_vision",
}
"""Arguments of the SDKs' `fine_tuning.create` that are not fields of the request: the SDKs
fold them into objects (reference 3.2). Sent as they are, they would silently do nothing."""
