"""Fine-tune request rules that both the launch step and the local API check."""

from __future__ import annotations

__all__ = ["DPO_PARAMETERS"]

DPO_PARAMETERS = ("dpo_beta", "rpo_alpha", "simpo_gamma", "dpo_normalize_logratios_by_length",
                  "dpo_reference_free")
"""`training_method` fields that mean something only for DPO: an SFT request carrying one is
refused (Together ignores them silently, which hides a mistaken sweep)."""
