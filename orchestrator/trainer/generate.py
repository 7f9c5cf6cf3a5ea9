"""Answers from a base model, or a base with a fine-tuned adapter: what completions serve.

Loaded models stay loaded (the `loaded` most recently used), so a smoke test's prompt is
answered in milliseconds once the model is in memory. Greedy at temperature 0 (the default);
sampling (temperature, top_p, top_k) from the request's seed when it gives one. Generation
stops at the end-of-sequence token, at `max_tokens`, or where a `stop` string appears (the
text is cut before it, as Together does).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from orchestrator.trainer.bases import load_base

__all__ = ["Models"]


class Models:
    """The models this trainer process keeps loaded for answering."""

    def __init__(self, cache: Path, device: str, *, loaded: int = 3) -> None:
        self._cache = cache
        self._device = device
        self._kept = loaded
        self._models: OrderedDict[str, tuple[Any, Any]] = OrderedDict()

    def _load(self, base: Mapping[str, str], adapter: str | None) -> tuple[Any, Any]:
        key = f"{sorted(base.items())}|{adapter}"
        found = self._models.get(key)
        if found is not None:
            self._models.move_to_end(key)
            return found
        model, tokenizer = load_base(base, self._cache, self._device)
        if adapter is not None:
            from peft import PeftModel  # noqa: PLC0415

            model = PeftModel.from_pretrained(model, adapter)
            model.eval()
        self._models[key] = (model, tokenizer)
        while len(self._models) > self._kept:
            self._models.popitem(last=False)
        return model, tokenizer

    def generate(self, *, base: Mapping[str, str], adapter: str | None, prompt: str | None,
                 messages: Sequence[Mapping[str, str]] | None, max_tokens: int,
                 temperature: float, top_p: float, top_k: int, stop: Sequence[str],
                 seed: int | None) -> dict[str, Any]:
        """The answer, why it ended (`stop` or `length`), and the tokens counted."""
        import torch  # noqa: PLC0415

        model, tokenizer = self._load(base, adapter)
        if messages is not None:
            text = tokenizer.apply_chat_template(list(messages), tokenize=False,
                                                 add_generation_prompt=True)
            ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        else:
            ids = tokenizer(prompt or "", add_special_tokens=False)["input_ids"]
            if tokenizer.bos_token_id is not None:
                ids = [tokenizer.bos_token_id, *ids]
        limit = int(getattr(model.config, "max_position_embeddings", 4096))
        ids = ids[-max(1, limit - max_tokens):]
        tensor = torch.tensor([ids], device=self._device)
        sampling = temperature > 0
        if seed is not None:
            torch.manual_seed(seed)
        options: dict[str, Any] = {"max_new_tokens": max_tokens, "do_sample": sampling,
                                   "pad_token_id": tokenizer.pad_token_id,
                                   "eos_token_id": tokenizer.eos_token_id}
        if sampling:
            options.update(temperature=temperature, top_p=top_p, top_k=top_k)
        with torch.no_grad():
            out = model.generate(input_ids=tensor, attention_mask=torch.ones_like(tensor),
                                 **options)
        new = out[0, len(ids):].tolist()
        ended = bool(new) and new[-1] == tokenizer.eos_token_id
        answer = tokenizer.decode(new, skip_special_tokens=True)
        reason = "stop" if ended else ("length" if len(new) >= max_tokens else "stop")
        cut = min((answer.index(s) for s in stop if s and s in answer), default=None)
        if cut is not None:
            answer, reason = answer[:cut], "stop"
        return {"text": answer, "finish_reason": reason, "prompt_tokens": len(ids),
                "completion_tokens": len(new)}
