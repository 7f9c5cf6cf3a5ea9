"""The training-data rules (Together's, reference section 2.4), each with its line number."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.protocol.datacheck import check_bytes, check_file, examples


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
    pytest.param(b"\xff\xfe{}\n", "line 1: not UTF-8 text: byte 0xff at column 1", id="not-utf8"),
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
    assert list(examples(data.splitlines())) == [("Q1", "A1"), ("q", "a"), ("q2", "a2"),
                                    ("one two", " three four")]


# -- hostile files: every one a problem of a line, never an exception ------------------------

@pytest.mark.parametrize(("data", "expected"), [
    pytest.param(b"[" * 200_000 + b"\n", "line 1: not valid JSON (depth limit exceeded",
                 id="200000-nested-arrays"),
    pytest.param(b'{"text": ' + b"9" * 10_000 + b"}\n", "line 1: not valid JSON (number is "
                 "infinity when parsed as double", id="10000-digit-number"),
    pytest.param(lines({"text": "fine"}) + '{"text": "café"}\n'.encode("latin-1")
                 + b'{"text": "\xff"}\n', "line 2: not UTF-8 text: byte 0xe9 at column 14 "
                 "(the whole file must be UTF-8)", id="latin-1-line"),
    pytest.param(lines("just a string"), "line 1: a line must be a JSON object, not string",
                 id="string-line"),
])
def test_hostile_lines_are_problems_of_their_line(data: bytes, expected: str) -> None:
    found = problems(data)
    assert any(p.startswith(expected) for p in found), found
    assert sum("UTF-8" in p for p in found) <= 1  # the first bad byte, not every one


def test_a_line_longer_than_the_bound_is_skipped_unheld() -> None:
    """A line over max_line_bytes is one problem; the lines after it are still checked and
    the file's hash still covers every byte."""
    import hashlib
    import io

    from orchestrator.protocol.datacheck import check_stream

    data = lines({"text": "a"}) + b'{"text": "' + b"x" * 5000 + b'"}\n' + b"nope\n"
    report = check_stream(io.BytesIO(data), size=len(data), max_line_bytes=1024)
    assert [str(p) for p in report.problems] == [
        "line 2: the line is longer than 1 KiB", "line 3: not valid JSON (invalid literal, "
        "expected 'null' at column 1)"]
    data = lines({"text": "a"}, {"text": "b"})
    assert check_stream(io.BytesIO(data), size=len(data)).sha256 == \
        hashlib.sha256(data).hexdigest()


def test_things_that_are_not_regular_files_are_refused_unread(tmp_path: Path) -> None:
    import os

    fifo = tmp_path / "pipe.jsonl"
    os.mkfifo(fifo)
    for path, kind in (("/dev/zero", "a character device"), (fifo, "a FIFO"),
                       (tmp_path, "a directory")):
        assert [str(p) for p in check_file(path).problems] == [f"is {kind}, not a regular file"]


_JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
                     | st.text(max_size=8),
                     lambda inner: st.lists(inner, max_size=4)
                     | st.dictionaries(st.sampled_from(["text", "messages", "prompt",
                                                        "completion", "role", "content",
                                                        "type", "weight", "input", "x"]),
                                       inner, max_size=4), max_leaves=20)


@given(st.one_of(st.binary(max_size=300),
                 st.lists(_JSON, max_size=5).map(
                     lambda objs: b"".join(json.dumps(o).encode() + b"\n" for o in objs))))
@settings(max_examples=400, deadline=None)
def test_any_bytes_give_a_report_never_an_exception(data: bytes) -> None:
    """Whatever a file holds, the check returns a report, with a line for each problem of a
    line, in bounded time."""
    report = check_bytes(data)
    assert report.ok == (not report.problems)
    assert all(p.line is None or 1 <= p.line <= max(1, data.count(b"\n") + 1)
               for p in report.problems)
    list(examples(data.splitlines()))


def test_checking_streams_in_bounded_memory(tmp_path: Path) -> None:
    """`check-data` of a 40 MB file stays far below the file's size in memory (it held the
    bytes, then the text, then a list of lines: 3.6x the file before)."""
    from tests.cli.helpers import measured

    path = tmp_path / "big.jsonl"
    line = json.dumps({"prompt": "What is the capital of France? " * 3,
                       "completion": "Paris. " * 20}).encode() + b"\n"
    with path.open("wb") as out:
        out.write(line * (40 * 2**20 // len(line)))
    baseline = measured("check-data", str(tmp_path / "none.jsonl"))
    cost = measured("check-data", str(path))
    assert cost.code == 0 and "ok (" in cost.stdout, cost
    assert cost.peak_mib - baseline.peak_mib < 20, (cost, baseline)


# -- the quick path and the block reader give what the long way gives ------------------------

_VALUES = st.one_of(st.none(), st.booleans(), st.integers(-2, 3), st.text(max_size=3),
                    st.sampled_from(["user", "assistant", "system", "tool"]))
_MESSAGE = st.dictionaries(st.sampled_from(["role", "content", "weight", "name", "extra"]),
                           _VALUES | st.lists(_VALUES, max_size=2), max_size=4)
_SAMPLES = st.one_of(
    st.fixed_dictionaries({"messages": st.lists(_MESSAGE, max_size=5)}),
    st.fixed_dictionaries({"messages": st.lists(st.fixed_dictionaries({
        "role": st.sampled_from(["user", "assistant", "system"]), "content": st.text(max_size=3)},
        optional={"weight": st.sampled_from([0, 1, True, 2, 0.0])}), min_size=1, max_size=5)}),
    st.dictionaries(st.sampled_from(["text", "prompt", "completion", "messages"]), _VALUES,
                    max_size=3))


@given(sample=_SAMPLES)
@settings(max_examples=400, deadline=None)
def test_the_quick_path_accepts_only_what_the_long_way_finds_valid(
        sample: dict[str, Any]) -> None:
    """A 1 GiB file took a minute, every line checked the long way: the common valid lines
    are now told at a glance. Whatever the quick path accepts, the long way accepts too,
    with the same format and the same weights flag."""
    from orchestrator.protocol.datacheck import DataReport, _Checker, _quick_format

    quick_report, slow_report = DataReport(), DataReport()
    quick = _quick_format(sample, quick_report)
    if quick is None:
        return
    assert _Checker(slow_report, 100).sample(sample, 1, "fine-tune") == quick
    assert slow_report.problems == []
    assert slow_report.has_weights == quick_report.has_weights


@given(chunks=st.lists(st.sampled_from([b'{"text": "a"}', b"", b"  ", b"nope",
                                        b'{"text": "' + b"x" * 40 + b'"}', b"\xff",
                                        b'{"prompt": "p", "completion": "c"}']),
                       max_size=12),
       newline_at_end=st.booleans(), block=st.sampled_from([1, 3, 7, 16, 1 << 18]))
@settings(max_examples=300, deadline=None)
def test_lines_cut_from_blocks_of_any_size_are_the_same_lines(
        chunks: list[bytes], newline_at_end: bool, block: int) -> None:
    """The file is read a block at a time: a line cut across blocks, or longer than the bound
    across several, is one line; the report and the hash are those of any block size."""
    import io

    from orchestrator.protocol import datacheck

    data = b"\n".join(chunks) + (b"\n" if newline_at_end and chunks else b"")
    reports = []
    for size in (block, 1 << 18):
        original = datacheck.BLOCK
        datacheck.BLOCK = size
        try:
            reports.append(datacheck.check_stream(io.BytesIO(data), size=len(data),
                                                  max_line_bytes=32))
        finally:
            datacheck.BLOCK = original
    assert reports[0] == reports[1]


def test_a_report_says_whether_a_dataset_calls_tools_or_reasons() -> None:
    """What Together's validation report says of a dataset (SDK 3.x reads it): tool calls,
    parallel ones, reasoning."""
    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    sample = {"messages": [
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": "", "tool_calls": [call, {**call, "id": "c2"}],
         "reasoning": "two cities"}]}
    report = check_bytes((json.dumps(sample) + "\n").encode())
    assert report.ok, report.problems
    assert (report.has_tools, report.has_parallel_tool_calls, report.has_reasoning) == (
        True, True, True)
    plain = check_bytes(b'{"prompt": "a", "completion": " b"}\n')
    assert (plain.has_tools, plain.has_parallel_tool_calls, plain.has_reasoning) == (
        False, False, False)
