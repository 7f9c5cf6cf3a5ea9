"""The base models the trainer fine-tunes: built-in tiny ones, or folders the user maps.

A built-in tiny base (`local/tiny-llama`) is a Llama-architecture model made from a fixed
config and seed (random weights: it knows nothing, which is the point of fine-tuning it) with a
fixed byte-level tokenizer (every byte a token, plus `<s>`, `</s>`, `<pad>`) and a plain chat
template. Made once per data folder (write, then rename) and identical for every job, so any
adapter trained on it fits it. A mapped base is any causal LM folder transformers can load
(`config.json`, weights, tokenizer). Nothing is ever downloaded.

Imports torch: the trainer process's, never the server's (`spec_for` is for the server).
"""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["CHAT_TEMPLATE", "TINY_BASES", "TinyBase", "load_base", "prepared_base"]

CHAT_TEMPLATE = (
    "{% for message in messages %}{{ '<|' + message['role'] + '|>\\n' + message['content'] }}"
    "{% if message['role'] == 'assistant' %}{{ '</s>' }}{% endif %}{{ '\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}")
"""The built-in chat template: each turn `<|role|>` and its text; an assistant's ends `</s>`."""


@dataclasses.dataclass(frozen=True)
class TinyBase:
    """A built-in base: its architecture, made from `seed`."""

    name: str
    hidden: int
    layers: int
    heads: int
    intermediate: int
    seed: int = 0
    max_positions: int = 1024

    @property
    def folder_name(self) -> str:
        return self.name.replace("/", "--")

    def parameters(self) -> int:
        vocab = 259
        per_layer = 4 * self.hidden * self.hidden + 3 * self.hidden * self.intermediate + \
            2 * self.hidden
        return 2 * vocab * self.hidden + self.layers * per_layer + self.hidden


TINY_BASES: Mapping[str, TinyBase] = {
    "local/tiny-llama": TinyBase("local/tiny-llama", hidden=256, layers=2, heads=4,
                                 intermediate=512),
}
"""The built-in bases (measured: 8 question/answer pairs recalled exactly after ~100 steps of
LoRA at learning rate 5e-3, ~4 s on 2 cores)."""


def _tokenizer() -> Any:
    """The byte-level tokenizer of the tiny bases: 256 byte tokens, then `<s>` (256),
    `</s>` (257), `<pad>` (258); no merges, so a text's tokens are its UTF-8 bytes."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers  # noqa: PLC0415
    from transformers import PreTrainedTokenizerFast  # noqa: PLC0415

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    byte_char = dict(enumerate(_bytes_to_unicode()))
    vocab = {byte_char[b]: b for b in range(256)}
    assert set(vocab) == set(alphabet)
    core = Tokenizer(models.BPE(vocab=vocab, merges=[], fuse_unk=False))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    core.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=core, bos_token="<s>", eos_token="</s>", pad_token="<pad>")
    tokenizer.add_special_tokens({"bos_token": "<s>", "eos_token": "</s>",
                                  "pad_token": "<pad>"})
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def _bytes_to_unicode() -> list[str]:
    """GPT-2's printable stand-in for each byte, in byte order (what ByteLevel uses)."""
    printable = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
                 + list(range(ord("®"), ord("ÿ") + 1)))
    chars, extra = {}, 0
    for b in range(256):
        if b in printable:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + extra)
            extra += 1
    return [chars[b] for b in range(256)]


def _build_tiny(base: TinyBase, folder: Path) -> None:
    import torch  # noqa: PLC0415
    from transformers import LlamaConfig, LlamaForCausalLM  # noqa: PLC0415

    tokenizer = _tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=base.hidden, intermediate_size=base.intermediate,
        num_hidden_layers=base.layers, num_attention_heads=base.heads,
        num_key_value_heads=base.heads, max_position_embeddings=base.max_positions,
        tie_word_embeddings=False, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(base.seed)
    try:
        model = LlamaForCausalLM(config)
    finally:
        torch.random.set_rng_state(generator_state)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    (folder / "README.md").write_text(
        f"# {base.name}\n\nA built-in tiny base of the orchestrator's local trainer: a "
        f"Llama-architecture model of {base.parameters():,} parameters with random weights "
        f"(seed {base.seed}) and a byte-level tokenizer. It knows nothing: it exists to be "
        "fine-tuned on a CPU in seconds.\n", encoding="utf-8")


def prepared_base(name: str, cache: Path) -> Path:
    """The folder of built-in base `name` under `cache`, made on first use (in a temporary
    folder, renamed into place: a crash leaves no half-made base)."""
    base = TINY_BASES[name]
    folder = cache / base.folder_name
    if (folder / "config.json").exists():
        return folder
    cache.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{base.folder_name}-", dir=cache))
    try:
        _build_tiny(base, scratch)
        try:
            scratch.replace(folder)
        except OSError:  # another process made it meanwhile
            if not (folder / "config.json").exists():
                raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return folder


def load_tokenizer(base: Mapping[str, Any], cache: Path) -> Any:
    """The tokenizer of a job's `base` alone (a preview needs no weights)."""
    from transformers import AutoTokenizer  # noqa: PLC0415

    folder = prepared_base(base["tiny"], cache) if "tiny" in base else Path(base["folder"])
    return AutoTokenizer.from_pretrained(folder)


def load_base(base: Mapping[str, Any], cache: Path, device: str) -> tuple[Any, Any]:
    """The model and tokenizer a job's `base` names (`{"tiny": name}` or `{"folder": path}`),
    on `device`, in evaluation mode."""
    import torch  # noqa: PLC0415
    from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: PLC0415

    folder = prepared_base(base["tiny"], cache) if "tiny" in base else Path(base["folder"])
    tokenizer = AutoTokenizer.from_pretrained(folder)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    dtype = torch.bfloat16 if device == "cuda" and torch.cuda.is_bf16_supported() else \
        torch.float32
    model: Any = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype)
    model = model.to(device)
    model.eval()
    return model, tokenizer
