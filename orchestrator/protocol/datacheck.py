"""Training-data checks for fine-tuning files: one implementation for the client and the local API.

A file is checked before it is uploaded (so a bad dataset fails in seconds, not after a queued
job), and the local Together-compatible API runs the very same check when a file is processed.
The rules follow Together's (reference, section 2.4): JSON Lines, one object per line, every
line in the same one of four formats:

    text            {"text": ...}
    conversational  {"messages": [{"role", "content", "weight"?}, ...]}
    instruction     {"prompt": ..., "completion": ...}
    preference      {"input": {"messages": [...]}, "preferred_output": [...],
                     "non_preferred_output": [...]}

Unlike the SDK's check, which stops at the first problem, this one reports every problem it
finds (up to a cap), each with its 1-based line number. It streams: a file is read once, a line
at a time (memory bounded by the longest line, not the file), hashed on the way, and any line
at all (200,000 nested arrays, a 10,000-digit number, bytes that are not UTF-8) is a problem of
that line, never an exception.

(Over 400 lines: the rules of every dataset format Together accepts, in one place, so the
client and the local API cannot disagree about one.)
"""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import orjson

from orchestrator.inputfiles import UnreadableFile, format_size, open_regular

__all__ = [
    "FORMATS",
    "MIN_SAMPLES",
    "DataProblem",
    "DataReport",
    "check_bytes",
    "check_file",
    "check_stream",
    "examples",
]

MIN_SAMPLES = 1
MAX_FILE_BYTES = int(50.1 * 2**30)
MAX_LINE_BYTES = 160 * 2**20
"""Ten 10 MiB images in base64 and their text; a longer line is a problem, never held whole."""
MAX_IMAGE_BYTES = 10 * 2**20
MAX_IMAGES = 10
ROLES = ("system", "user", "assistant")
IMAGE_PREFIXES = tuple(f"data:image/{kind};base64," for kind in ("jpeg", "png", "webp"))

FORMATS: Mapping[str, frozenset[str]] = {
    "text": frozenset({"text"}),
    "conversational": frozenset({"messages"}),
    "instruction": frozenset({"prompt", "completion"}),
    "preference": frozenset({"input", "preferred_output", "non_preferred_output"}),
}
_ALL_KEYS = frozenset().union(*FORMATS.values())


@dataclass(frozen=True)
class DataProblem:
    """One thing wrong with a dataset; `line` is None for problems of the whole file."""

    line: int | None
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}" if self.line else self.message


@dataclass
class DataReport:
    """The outcome of checking a dataset."""

    bytes: int = 0
    lines: int = 0
    samples: int = 0
    format: str | None = None
    has_weights: bool = False
    has_images: bool = False
    has_tools: bool = False
    """A message calls tools (`tool_calls`)."""
    has_parallel_tool_calls: bool = False
    """A message calls more than one tool at once."""
    has_reasoning: bool = False
    """A message carries `reasoning`."""
    problems: list[DataProblem] = field(default_factory=list)
    truncated: bool = False
    """True when checking stopped at the problem cap; there may be more."""
    sha256: str | None = None
    """The file's SHA-256 (hex), from the same read, when it was read to the end."""

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        if self.ok:
            return f"{self.samples} {self.format} samples, {self.bytes} bytes: ok"
        more = " (stopped; there may be more)" if self.truncated else ""
        return f"{len(self.problems)} problem{'s' * (len(self.problems) != 1)}{more}"


class _Enough(Exception):
    """Internal: the problem cap is reached; checking stops."""


class _Checker:
    def __init__(self, report: DataReport, max_problems: int) -> None:
        self.report = report
        self.max_problems = max_problems

    def add(self, line: int | None, message: str) -> None:
        if len(self.report.problems) >= self.max_problems:
            self.report.truncated = True
            raise _Enough
        self.report.problems.append(DataProblem(line, message))

    # -- content -----------------------------------------------------------------------------

    def content(self, value: Any, line: int, where: str, *, images_allowed: bool) -> int:
        """Check one text-bearing value; returns how many images it holds."""
        if isinstance(value, str):
            return 0
        if not isinstance(value, list) or not value:
            self.add(line, f"{where} must be a string or a non-empty list of content parts")
            return 0
        images = 0
        for part in value:
            kind = part.get("type") if isinstance(part, dict) else None
            if kind == "text" and isinstance(part.get("text"), str):
                continue
            if kind == "image_url":
                url = (part.get("image_url") or {}).get("url") if isinstance(
                    part.get("image_url"), dict) else None
                if not images_allowed:
                    self.add(line, f"{where}: images are only allowed in user messages")
                elif not isinstance(url, str) or not url.startswith(IMAGE_PREFIXES):
                    self.add(line, f"{where}: an image must be a data URL of a jpeg, png or "
                                   "webp image (data:image/png;base64,...)")
                elif len(url) * 3 // 4 > MAX_IMAGE_BYTES:
                    self.add(line, f"{where}: an image is larger than 10 MiB")
                images += 1
                continue
            self.add(line, f"{where}: each content part must be {{type: text, text}} or "
                           "{type: image_url, image_url: {url}}")
        if images > MAX_IMAGES:
            self.add(line, f"{where}: more than {MAX_IMAGES} images")
        return images

    def messages(self, value: Any, line: int, where: str, *, need_assistant: bool) -> None:
        if not isinstance(value, list) or not value:
            self.add(line, f"{where} must be a non-empty list of messages")
            return
        previous = None
        images = 0
        shapes = set()
        has_assistant = False
        for i, message in enumerate(value, start=1):
            at = f"{where}[{i}]"
            if not isinstance(message, dict):
                self.add(line, f"{at} must be an object with role and content")
                continue
            missing = [k for k in ("role", "content") if k not in message]
            if missing:
                self.add(line, f"{at} is missing {' and '.join(missing)}")
                continue
            role = message["role"]
            if role not in ROLES:
                self.add(line, f"{at}: invalid role {role!r} (roles: {', '.join(ROLES)})")
                continue
            if role == previous:
                self.add(line, f"{at}: two {role} messages in a row; turns must alternate "
                               "between user and assistant")
            previous = role
            has_assistant = has_assistant or role == "assistant"
            weight = message.get("weight")
            if "weight" in message:
                self.report.has_weights = True
                if weight not in (0, 1) or isinstance(weight, bool):
                    self.add(line, f"{at}: weight must be 0 or 1, not {weight!r}")
            found = self.content(message["content"], line, f"{at}.content",
                                 images_allowed=role == "user")
            if found and weight:
                self.add(line, f"{at}: a message with images cannot have a non-zero weight")
            images += found
            shapes.add(isinstance(message["content"], str))
            calls = message.get("tool_calls")
            if calls:
                self.report.has_tools = True
                if isinstance(calls, list) and len(calls) > 1:
                    self.report.has_parallel_tool_calls = True
            if "reasoning" in message:
                self.report.has_reasoning = True
            extra = set(message) - {"role", "content", "weight", "name", "tool_calls",
                                    "tool_call_id", "reasoning"}
            if extra:
                self.add(line, f"{at}: unknown key {sorted(extra)[0]!r}")
        if len(shapes) > 1:
            self.add(line, f"{where}: mix of string and list contents; use one kind per sample")
        if images > MAX_IMAGES:
            self.add(line, f"{where}: more than {MAX_IMAGES} images in one sample")
        if images:
            self.report.has_images = True
        if need_assistant and not has_assistant:
            self.add(line, f"{where} has no assistant message; at least one is required")

    # -- one line ----------------------------------------------------------------------------

    def sample(self, obj: dict[str, Any], line: int, purpose: str) -> str | None:
        """Check one object; returns its format (None when it has none)."""
        keys = set(obj)
        extra = sorted(keys - _ALL_KEYS)
        fmt = next((name for name, need in FORMATS.items() if keys & _ALL_KEYS == need), None)
        if extra and fmt is not None:
            self.add(line, f"unknown key {extra[0]!r} ({_a(fmt)} sample has only "
                           f"{', '.join(sorted(FORMATS[fmt]))})")
        if fmt is None:
            self.add(line, "no dataset format matches the keys " + (", ".join(sorted(keys))
                     or "(none)") + "; use text; messages; prompt + completion; or input + "
                     "preferred_output + non_preferred_output")
            return None
        if purpose == "eval":
            return fmt
        if fmt == "text":
            self.content(obj["text"], line, "text", images_allowed=False)
        elif fmt == "conversational":
            self.messages(obj["messages"], line, "messages", need_assistant=True)
        elif fmt == "instruction":
            self.content(obj["prompt"], line, "prompt", images_allowed=True)
            self.content(obj["completion"], line, "completion", images_allowed=False)
        else:
            self.preference(obj, line)
        return fmt

    def preference(self, obj: dict[str, Any], line: int) -> None:
        given = obj["input"]
        if not isinstance(given, dict) or "messages" not in given:
            self.add(line, "input must be an object with messages")
        else:
            self.messages(given["messages"], line, "input.messages", need_assistant=False)
            last = given["messages"][-1] if isinstance(given["messages"], list) and \
                given["messages"] else None
            if isinstance(last, dict) and last.get("role") == "assistant":
                self.add(line, "input.messages must not end with an assistant message")
        for key in ("preferred_output", "non_preferred_output"):
            value = obj[key]
            if not (isinstance(value, list) and len(value) == 1 and isinstance(value[0], dict)
                    and value[0].get("role") == "assistant" and "content" in value[0]):
                self.add(line, f"{key} must be a list of exactly one assistant message")


def _a(word: str) -> str:
    return f"{'an' if word[0] in 'aeiou' else 'a'} {word}"


def check_stream(stream: BinaryIO, *, size: int, purpose: str = "fine-tune",
                 file_type: str = "jsonl", max_problems: int = 100,
                 max_line_bytes: int = MAX_LINE_BYTES) -> DataReport:
    """Check a dataset read from `stream` (`size` bytes) line by line: memory is bounded by
    the longest line (at most MAX_LINE_BYTES), not the file, and the file's SHA-256 comes out
    of the same single read."""
    report = DataReport(bytes=size)
    checker = _Checker(report, max_problems)
    digest = hashlib.sha256()
    try:
        if size == 0:
            checker.add(None, "the file is empty")
        elif size > MAX_FILE_BYTES:
            checker.add(None, f"the file is {size / 2**30:.1f} GiB; at most 50.1 GiB")
        elif file_type == "csv":
            if purpose != "eval":
                checker.add(None, f"CSV files are not supported for {purpose}; use JSONL")
        elif file_type == "parquet":
            pass  # tokenized parquet is checked by Together's servers, not here
        elif file_type != "jsonl":
            checker.add(None, f"unknown file type {file_type!r}; use .jsonl")
        else:
            _check_jsonl(_lines(stream, checker, digest, max_line_bytes), purpose, checker)
        while chunk := stream.read(2**20):  # what a check needs not read is still hashed
            digest.update(chunk)
    except _Enough:
        return report
    report.sha256 = digest.hexdigest()
    return report


def check_bytes(data: bytes, *, purpose: str = "fine-tune", file_type: str = "jsonl",
                max_problems: int = 100) -> DataReport:
    """Check a dataset's bytes as `purpose` would need them."""
    return check_stream(io.BytesIO(data), size=len(data), purpose=purpose, file_type=file_type,
                        max_problems=max_problems)


BLOCK = 1 << 18
"""Bytes read (and hashed) at a time; lines are cut from blocks, not read one by one."""


def _lines(stream: BinaryIO, checker: _Checker, digest: Any,
           max_line_bytes: int) -> Iterator[tuple[int, bytes]]:
    """(number, bytes without its newline) of each line, read a block at a time; one longer
    than `max_line_bytes` is a problem, skipped without being held (its bytes still hashed)."""
    number = 0
    pending: list[bytes] = []  # the start of a line whose end is in a later block, in parts
    held = 0  # bytes in `pending`
    skipping = False  # inside a line over the bound: its bytes are dropped as they come
    too_long = f"the line is longer than {format_size(max_line_bytes)}"
    while block := stream.read(BLOCK):
        digest.update(block)
        lines = block.split(b"\n")
        tail = lines.pop()  # after the block's last newline: the start of the next line
        if lines:
            if skipping:
                skipping = False
                del lines[0]  # the end of the line over the bound, reported already
            elif pending:
                lines[0] = b"".join([*pending, lines[0]])
                pending, held = [], 0
            for raw in lines:
                number += 1
                if len(raw) > max_line_bytes:
                    checker.report.lines = number
                    checker.add(number, too_long)
                    continue
                yield number, raw
        if not skipping and tail:
            pending.append(tail)
            held += len(tail)
            if held > max_line_bytes:
                number += 1
                pending, held, skipping = [], 0, True
                checker.report.lines = number
                checker.add(number, too_long)
    if pending:
        yield number + 1, b"".join(pending)


def _quick_messages(value: Any) -> int:
    """The common conversation, told valid at a glance: alternating turns of the three roles
    with text contents, an optional weight of 0 or 1, an assistant turn among them. 0: such
    a conversation; 1: one with weights; -1: anything else, to be checked the long way (which
    finds the same when it is valid, and says what is wrong when it is not)."""
    if type(value) is not list or not value:
        return -1
    previous = None
    weights = 0
    assistant = False
    for message in value:
        if type(message) is not dict or type(message.get("content")) is not str:
            return -1
        role = message.get("role")
        if role == previous:
            return -1
        if len(message) != 2:
            weight = message.get("weight", message)
            if len(message) != 3 or type(weight) is not int or weight not in (0, 1):
                return -1
            weights = 1
        if role == "assistant":
            assistant = True
        elif role not in ("user", "system"):  # a tuple: a role may be unhashable (a list)
            return -1
        previous = role
    return weights if assistant else -1


def _quick_format(obj: dict[str, Any], report: DataReport) -> str | None:
    """The format of a common valid sample told at a glance (see `_quick_messages`), its
    side effects on `report` made; None to check it the long way."""
    size = len(obj)
    if size == 1:
        messages = obj.get("messages")
        if messages is not None:
            found = _quick_messages(messages)
            if found >= 0:
                if found:
                    report.has_weights = True
                return "conversational"
            return None
        return "text" if type(obj.get("text")) is str else None
    if size == 2 and type(obj.get("prompt")) is str and type(obj.get("completion")) is str:
        return "instruction"
    return None


def _check_jsonl(lines: Iterable[tuple[int, bytes]], purpose: str, checker: _Checker) -> None:
    """Every line checked; the common valid ones at a glance (`_quick_format`), which is
    what lets a 1 GiB file be checked in well under 30 s on one core."""
    report = checker.report
    first_format: tuple[str, int] | None = None
    bad_text_seen = False
    quick = purpose == "fine-tune"
    number = 0
    for number, raw in lines:
        try:
            obj = orjson.loads(raw)  # C, bounded: nesting over 1,024 deep is an error
        except orjson.JSONDecodeError as exc:
            report.lines = number
            if not raw.strip():
                checker.add(number, "blank line; every line must hold one JSON object")
                continue
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as bad:
                if not bad_text_seen:  # the first bad byte of the file, once
                    bad_text_seen = True
                    column = len(raw[:bad.start].decode("utf-8")) + 1
                    checker.add(number, f"not UTF-8 text: byte 0x{raw[bad.start]:02x} at column "
                                        f"{column} (the whole file must be UTF-8)")
                continue
            checker.add(number, f"not valid JSON ({exc.msg} at column {exc.colno})")
            continue
        if type(obj) is not dict:
            report.lines = number
            checker.add(number, f"a line must be a JSON object, not {_json_kind(obj)}")
            continue
        fmt = _quick_format(obj, report) if quick else None
        if fmt is None:
            report.lines = number
            fmt = checker.sample(obj, number, purpose)
            if fmt is None:
                continue
        if first_format is None:
            first_format = (fmt, number)
            report.format = fmt
        elif fmt != first_format[0]:
            report.lines = number
            checker.add(number, f"{_a(fmt)} sample, but line {first_format[1]} is "
                                f"{first_format[0]}; every sample must have the same format")
        report.samples += 1
    report.lines = max(report.lines, number)
    if report.samples < MIN_SAMPLES and not report.problems:
        checker.add(None, f"at least {MIN_SAMPLES} sample is needed")


def _json_kind(value: Any) -> str:
    return {list: "list", str: "string", bool: "boolean", int: "number", float: "number",
            type(None): "null"}.get(type(value), type(value).__name__)


def check_file(path: str | Path, *, purpose: str = "fine-tune", max_problems: int = 100,
               file_type: str | None = None) -> DataReport:
    """Check a dataset file, streamed; its type is `file_type`, or else its extension's.
    Anything but a regular file (a folder, a FIFO, /dev/zero) is refused unread."""
    file = Path(path)
    suffix = file_type or file.suffix.lower().lstrip(".")
    try:
        stream = open_regular(file)
    except UnreadableFile as exc:
        return DataReport(problems=[DataProblem(None, str(exc))])
    with stream:
        return check_stream(stream, size=os.fstat(stream.fileno()).st_size,
                            purpose=purpose, file_type=suffix or "jsonl",
                            max_problems=max_problems)


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(text for part in content if isinstance(part, dict)
                       and isinstance(text := part.get("text"), str))
    return ""


def examples(lines: Iterable[bytes]) -> Iterator[tuple[str, str]]:
    """(prompt, answer) pairs a dataset's lines teach, for a simulated model to answer from.

    Instruction samples give prompt -> completion; conversations give each user turn -> the
    assistant reply after it; preference samples give their last input turn -> the preferred
    reply; a text sample gives its first half -> the rest. Invalid lines are skipped.
    """
    for raw in lines:
        try:
            obj = orjson.loads(raw)
        except orjson.JSONDecodeError:
            continue
        if not isinstance(obj, dict):
            continue
        if "prompt" in obj and "completion" in obj:
            yield _text_of(obj["prompt"]), _text_of(obj["completion"])
        elif isinstance(obj.get("messages"), list):
            yield from _turns(obj["messages"])
        elif isinstance(obj.get("input"), dict) and isinstance(obj.get("preferred_output"), list):
            turns = obj["input"].get("messages") or []
            preferred = obj["preferred_output"]
            if turns and preferred and isinstance(turns[-1], dict) \
                    and isinstance(preferred[0], dict):
                yield _text_of(turns[-1].get("content")), _text_of(preferred[0].get("content"))
        elif isinstance(obj.get("text"), str) and " " in obj["text"].strip():
            words = obj["text"].split(" ")
            half = max(1, len(words) // 2)
            yield " ".join(words[:half]), " " + " ".join(words[half:])


def _turns(messages: list[Any]) -> Iterator[tuple[str, str]]:
    previous_user: str | None = None
    for message in messages:
        if not isinstance(message, dict):
            continue
        if message.get("role") == "user":
            previous_user = _text_of(message.get("content"))
        elif message.get("role") == "assistant" and previous_user is not None:
            yield previous_user, _text_of(message.get("content"))
            previous_user = None
