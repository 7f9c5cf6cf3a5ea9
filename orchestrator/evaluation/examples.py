"""The examples of an evaluation file, in Together's dataset formats: a chat's `messages`
whose last turn is the assistant's (the reference; the turns before it are asked), or a
`prompt` with its `completion` (the reference).

Bounded like every file read on a user's word: a regular file, at most `MAX_BYTES`, at most
`MAX_EXAMPLES` examples; a bad line is refused naming the file's line and what is wrong.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.inputfiles import UnreadableFile, read_regular, utf8_text

__all__ = ["MAX_BYTES", "MAX_EXAMPLES", "EvalExample", "EvalFileError", "read_examples"]

MAX_BYTES = 64 * 2**20
MAX_EXAMPLES = 10_000


class EvalFileError(ValueError):
    """An evaluation file that cannot be used: one line naming the file, its line and why."""


@dataclass(frozen=True)
class EvalExample:
    """One question and the answer it should get."""

    line: int
    reference: str
    prompt: str | None = None
    messages: tuple[dict[str, Any], ...] | None = None

    @property
    def asked(self) -> str:
        """What was asked, as text (the last user turn of a chat)."""
        if self.prompt is not None:
            return self.prompt
        return str((self.messages or ({},))[-1].get("content", ""))


def _content(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _example(record: Any, line: int) -> EvalExample:
    if not isinstance(record, dict):
        msg = "not a JSON object"
        raise ValueError(msg)  # noqa: TRY004  (a bad line of the file, not a bad call)
    if "messages" in record:
        messages = record["messages"]
        if not isinstance(messages, list) or len(messages) < 2 or \
                not all(isinstance(m, dict) for m in messages):
            msg = "messages must be a list of at least two turns"
            raise ValueError(msg)
        last = messages[-1]
        reference = _content(last.get("content"))
        if last.get("role") != "assistant" or reference is None:
            msg = "the last message must be the assistant's, with text content (the reference)"
            raise ValueError(msg)
        asked = tuple({"role": str(m.get("role")), "content": m.get("content")}
                      for m in messages[:-1])
        if not all(isinstance(m["content"], str) for m in asked):
            msg = "every message's content must be text"
            raise ValueError(msg)
        return EvalExample(line, reference, messages=asked)
    prompt, completion = _content(record.get("prompt")), _content(record.get("completion"))
    if prompt is None or completion is None:
        msg = ("neither a chat (messages, the last the assistant's) nor prompt and completion "
               "as text")
        raise ValueError(msg)
    return EvalExample(line, completion, prompt=prompt)


def read_examples(path: Path, shown: str | None = None) -> tuple[list[EvalExample], str]:
    """The file's examples and the SHA-256 of its bytes (a resumed evaluation checks it is
    scoring the same file); EvalFileError naming `shown` (the path as the pipeline wrote it)."""
    where = shown or str(path)
    try:
        data = read_regular(path, max_bytes=MAX_BYTES)
        text = utf8_text(data)
    except UnreadableFile as exc:
        raise EvalFileError(f"{where}: {exc}") from None
    examples: list[EvalExample] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        if len(examples) == MAX_EXAMPLES:
            msg = f"{where}: more than {MAX_EXAMPLES:,} examples; split the file"
            raise EvalFileError(msg)
        try:
            examples.append(_example(json.loads(line), number))
        except (ValueError, RecursionError) as exc:
            reason = "not JSON" if isinstance(exc, json.JSONDecodeError | RecursionError) \
                else str(exc)
            raise EvalFileError(f"{where}:{number}: {reason}") from None
    if not examples:
        raise EvalFileError(f"{where}: no examples")
    return examples, hashlib.sha256(data).hexdigest()
