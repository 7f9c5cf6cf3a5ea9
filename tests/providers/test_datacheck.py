"""The training-data rules (Together's, reference section 2.4), each with its line number."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from orchestrator.providers.together.datacheck import check_bytes, check_file, examples


def lines(*objects: Any) -> bytes:
    return b"".join(json.dumps(o).encode() + b"\n" for o in objects)


def problems(data: bytes, **kwargs: Any) -> list[str]:
    return [str(p) for p in check_bytes(data, **kwargs).problems]


USER, BOT = {"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}
IMAGE = {"type": "image_url", "image_url": {
    "url": "data:image/png;base64," + base64.b64encode(b"x" * 10).decode()}}


@pytest.mark.parametrize(("data", "fmt"), [
    pytest.param(lines({"text": "hello"}), "text", id="text"),
    pytest.param(lines({"messages": [USER, BOT]}), "conversational", id="conversational"),
    pytest.param(lines({"prompt": "p", "completion": "c"}), "instruction", id="instruction"),
    pytest.param(lines({"input": {"messages": [USER]}, "preferred_output": [BOT],
                        "non_preferred_output": [BOT]}), "preference", id="preference"),
    pytest.param(lines({"messages": [{"role": "user", "content": [{"type": "text",
                                                                  "text": "see"}, IMAGE]},
                                     {"role": "assistant", "content": [
                                         {"type": "text", "text": "a cat"}]}]}),
                 "conversational", id="image-in-user"),
])
def test_valid_formats(data: bytes, fmt: str) -> None:
    report = check_bytes(data)
    assert report.ok, report.problems
    assert (report.format, report.samples) == (fmt, 1)


@pytest.mark.parametrize(("data", "expected"), [
    pytest.param(b"", "the file is empty", id="empty"),
    pytest.param(b"\xff\xfe{}\n", "the file is not UTF-8 text", id="not-utf8"),
    pytest.param(lines({"text": "a"}) + b"\n" + lines({"text": "b"}),
                 "line 2: blank line", id="blank-line"),
    pytest.param(b'{"text": "a"\n', "line 1: not valid JSON", id="bad-json"),
    pytest.param(lines([1]), "line 1: a line must be a JSON object, not list", id="list"),
    pytest.param(lines({"text": "a", "label": 1}), "line 1: unknown key 'label' (a text",
                 id="extra-key"),
    pytest.param(lines({"question": "a"}), "line 1: no dataset format matches the keys question",
                 id="no-format"),
    pytest.param(lines({"text": "a"}, {"prompt": "p", "completion": "c"}),
                 "line 2: an instruction sample, but line 1 is text", id="mixed-formats"),
    pytest.param(lines({"messages": []}), "messages must be a non-empty list", id="no-messages"),
    pytest.param(lines({"messages": [{"role": "user"}, BOT]}),
                 "line 1: messages[1] is missing content", id="missing-content"),
    pytest.param(lines({"messages": [{"role": "robot", "content": "x"}, BOT]}),
                 "invalid role 'robot'", id="bad-role"),
    pytest.param(lines({"messages": [USER, USER, BOT]}), "two user messages in a row",
                 id="no-alternation"),
    pytest.param(lines({"messages": [USER]}), "has no assistant message", id="no-assistant"),
    pytest.param(lines({"messages": [USER, {**BOT, "weight": 2}]}), "weight must be 0 or 1",
                 id="bad-weight"),
    pytest.param(lines({"messages": [USER, {"role": "assistant", "content": [IMAGE]}]}),
                 "images are only allowed in user messages", id="image-from-assistant"),
    pytest.param(lines({"messages": [{"role": "user", "content": [{
        "type": "image_url", "image_url": {"url": "http://x/y.png"}}]}, BOT]}),
        "an image must be a data URL", id="image-url"),
    pytest.param(lines({"messages": [{"role": "user", "content": [IMAGE], "weight": 1}, BOT]}),
                 "a message with images cannot have a non-zero weight", id="image-weight"),
    pytest.param(lines({"messages": [USER, {"role": "assistant", "content": [
        {"type": "text", "text": "a"}]}]}), "mix of string and list contents",
        id="mixed-content"),
    pytest.param(lines({"input": {"messages": [USER, BOT]}, "preferred_output": [BOT],
                        "non_preferred_output": [BOT]}),
                 "input.messages must not end with an assistant message", id="dpo-last-turn"),
    pytest.param(lines({"input": {"messages": [USER]}, "preferred_output": [BOT, BOT],
                        "non_preferred_output": [BOT]}),
                 "preferred_output must be a list of exactly one assistant message",
                 id="dpo-two-outputs"),
])
def test_each_rule(data: bytes, expected: str) -> None:
    found = problems(data)
    assert any(expected in p for p in found), found


def test_every_problem_is_reported_not_just_the_first() -> None:
    data = lines({"text": "ok"}) + b"\n" + b"nope\n" + lines({"text": "x", "y": 1})
    assert [p.split(":")[0] for p in problems(data)] == ["line 2", "line 3", "line 4"]


def test_problem_cap() -> None:
    report = check_bytes(b"\n" * 500, max_problems=20)
    assert len(report.problems) == 20 and report.truncated


def test_file_types_and_purposes(tmp_path: Path) -> None:
    csv = tmp_path / "d.csv"
    csv.write_text("a,b\n1,2\n")
    assert "CSV files are not supported for fine-tune" in str(check_file(csv).problems[0])
    assert check_file(csv, purpose="eval").ok
    assert "no such file" in str(check_file(tmp_path / "none.jsonl").problems[0])


def test_examples_a_model_learns() -> None:
    data = lines({"prompt": "Q1", "completion": "A1"},
                 {"messages": [USER, BOT, {"role": "user", "content": "q2"},
                               {"role": "assistant", "content": "a2"}]},
                 {"text": "one two three four"})
    assert list(examples(data)) == [("Q1", "A1"), ("q", "a"), ("q2", "a2"),
                                    ("one two", " three four")]
