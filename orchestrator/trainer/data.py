"""Training examples as token ids and loss labels, from Together's dataset formats.

- `{"text": ...}`: every token is learnt.
- `{"prompt": ..., "completion": ...}`: the completion is learnt (and the prompt too with
  `train_on_inputs`); the example ends with the tokenizer's end-of-sequence token.
- `{"messages": [{"role", "content"}, ...]}`: rendered with the tokenizer's chat template (or
  the built-in one when it has none); the assistants' turns are learnt (every turn with
  `train_on_inputs`).

Labels are -100 where nothing is learnt (the loss ignores them). An example longer than
`max_seq_length` is cut to it. The files were checked at upload (`protocol.datacheck`).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["IGNORED", "Example", "preview_rows", "read_examples", "tokenized"]

IGNORED = -100


@dataclass(frozen=True)
class Example:
    ids: tuple[int, ...]
    labels: tuple[int, ...]

    @property
    def learnt(self) -> int:
        return sum(1 for label in self.labels if label != IGNORED)


def read_examples(path: Path) -> Iterator[dict[str, Any]]:
    """The records of a JSONL dataset, blank lines skipped."""
    with path.open("rb") as lines:
        for line in lines:
            if line.strip():
                record = json.loads(line)
                if isinstance(record, dict):
                    yield record


def _encode(tokenizer: Any, text: str) -> list[int]:
    ids: list[int] = tokenizer(text, add_special_tokens=False)["input_ids"]
    return ids


def _segments(record: dict[str, Any], tokenizer: Any) -> list[tuple[str, bool]]:
    """The example's text in pieces, each marked whether it is an answer (learnt)."""
    if isinstance(record.get("messages"), list):
        messages = [{"role": str(m.get("role")), "content": _content(m.get("content"))}
                    for m in record["messages"] if isinstance(m, dict)]
        pieces: list[tuple[str, bool]] = []
        rendered = ""
        for index, message in enumerate(messages):
            if message["role"] == "assistant":
                prefix = tokenizer.apply_chat_template(messages[:index], tokenize=False,
                                                       add_generation_prompt=True)
                pieces.append((prefix[len(rendered):], False))
                rendered = prefix
            full = tokenizer.apply_chat_template(messages[:index + 1], tokenize=False)
            pieces.append((full[len(rendered):], message["role"] == "assistant"))
            rendered = full
        return pieces
    if "prompt" in record and "completion" in record:
        return [(str(record["prompt"]), False), (str(record["completion"]), True)]
    return [(str(record.get("text", "")), True)]


def _content(content: Any) -> str:
    if isinstance(content, list):
        return "".join(str(part.get("text", "")) for part in content
                       if isinstance(part, dict) and part.get("type") == "text")
    return "" if content is None else str(content)


def tokenized(records: Sequence[dict[str, Any]], tokenizer: Any, *, train_on_inputs: bool,
              max_seq_length: int) -> list[Example]:
    """Each record as an example (an empty one, nothing to learn, is left out)."""
    examples = []
    bos = tokenizer.bos_token_id
    eos = tokenizer.eos_token_id
    for record in records:
        ids: list[int] = [bos] if bos is not None else []
        labels: list[int] = [IGNORED] * len(ids)
        chat = isinstance(record.get("messages"), list)
        for text, answer in _segments(record, tokenizer):
            piece = _encode(tokenizer, text)
            ids += piece
            labels += piece if (answer or train_on_inputs) else [IGNORED] * len(piece)
        if not chat and eos is not None:  # a chat template ends its assistant turns itself
            ids.append(eos)
            labels.append(eos)
        ids, labels = ids[:max_seq_length], labels[:max_seq_length]
        example = Example(tuple(ids), tuple(labels))
        if example.learnt:
            examples.append(example)
    return examples


def preview_rows(records: Sequence[dict[str, Any]], tokenizer: Any, *, train_on_inputs: bool,
                 max_seq_length: int) -> list[dict[str, Any]]:
    """Each record as `POST /fine-tunes/preview` shows it (SDK 3.x's FineTunePreviewRow):
    its token ids and strings, its labels (-100 where not learnt), the spans learnt, and
    whether it was cut at `max_seq_length`. Built the way training builds its examples."""
    rows = []
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    for record in records:
        ids: list[int] = [bos] if bos is not None else []
        labels: list[int] = [IGNORED] * len(ids)
        for text, answer in _segments(record, tokenizer):
            piece = _encode(tokenizer, text)
            ids += piece
            labels += piece if (answer or train_on_inputs) else [IGNORED] * len(piece)
        if not isinstance(record.get("messages"), list) and eos is not None:
            ids.append(eos)
            labels.append(eos)
        truncated = len(ids) > max_seq_length
        ids, labels = ids[:max_seq_length], labels[:max_seq_length]
        spans: list[list[int]] = []
        for index, label in enumerate(labels):
            if label == IGNORED:
                continue
            if spans and spans[-1][1] == index:
                spans[-1][1] = index + 1
            else:
                spans.append([index, index + 1])
        rows.append({"input_ids": ids, "labels": labels,
                     "tokens": list(tokenizer.convert_ids_to_tokens(ids)),
                     "num_tokens": len(ids), "num_trained_tokens": sum(e - b for b, e in spans),
                     "trained_spans": spans, "truncated": truncated})
    return rows
