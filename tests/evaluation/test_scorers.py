"""Scorers, verdicts, gates and evaluation files: small pure functions, each case a line."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.evaluation.examples import EvalFileError, read_examples
from orchestrator.evaluation.gates import GateError, failures, parse_gates
from orchestrator.evaluation.scorers import ScorerError, parse_verdict, scorer


@pytest.mark.parametrize(("name", "options", "answer", "reference", "passed"), [
    ("exact_match", {}, " Paris ", "Paris", True),
    ("exact_match", {}, "Paris  is", "Paris is", True),
    ("exact_match", {}, "paris", "Paris", False),
    ("exact_match", {"ignore_case": True}, "paris", "Paris", True),
    ("exact_match", {"normalize_whitespace": False}, " Paris", "Paris", False),
    ("contains", {}, "It is PARIS, of course", "Paris", True),
    ("contains", {"ignore_case": False}, "It is PARIS", "Paris", False),
    ("contains", {}, "anything", "", False),
    ("regex", {"pattern": r"^\s*[A-Z][a-z]+$"}, " Paris", "x", True),
    ("regex", {"pattern": r"^\d+$"}, "12a", "x", False),
    ("regex", {"pattern": r"^\s*{reference}\.?$"}, "a.b.", "a.b", True),
    ("regex", {"pattern": r"^\s*{reference}$"}, "axb", "a.b", False),
    ("json_valid", {}, ' {"a": [1, 2]} ', "", True),
    ("json_valid", {}, "{'a': 1}", "", False),
    ("number", {}, "The answer is 42.", "42", True),
    ("number", {}, "about 41.9", "42", False),
    ("number", {"tolerance": 0.5}, "about 41.9", "42", True),
    ("number", {"tolerance": 0.01, "relative": True}, "1,010", "1000", True),
    ("number", {"tolerance": 0.001, "relative": True}, "1,010", "1000", False),
    ("number", {}, "no number here", "3", False),
])
def test_scorers(name: str, options: dict[str, object], answer: str, reference: str,
                 passed: bool) -> None:
    assert scorer(name, options)(answer, reference) is passed


@pytest.mark.parametrize(("name", "options", "message"), [
    ("exact_mach", {}, "unknown scorer 'exact_mach' (did you mean 'exact_match'?)"),
    ("exact_match", {"ignorecase": True}, "unknown option 'ignorecase'"),
    ("exact_match", {"ignore_case": "yes"}, "option ignore_case must be bool"),
    ("number", {"tolerance": -1}, "option tolerance must be a number from 0"),
    ("regex", {}, "option pattern is required"),
    ("regex", {"pattern": "("}, "is not a regular expression"),
    ("regex", {"pattern": "a" * 1001}, "longer than 1000 characters"),
])
def test_a_bad_scorer_is_one_line_naming_it(name: str, options: dict[str, object],
                                            message: str) -> None:
    with pytest.raises(ScorerError) as refused:
        scorer(name, options)
    assert message in str(refused.value) and "\n" not in str(refused.value)


@pytest.mark.parametrize(("text", "verdict"), [
    ("PASS", True), (" pass.\n", True), ("FAIL", False), ("Fail", False),
    ("PASS, clearly", None), ("Maybe", None), ("", None), ("PASS FAIL", None),
])
def test_a_judges_verdict_is_read_strictly(text: str, verdict: bool | None) -> None:
    assert parse_verdict(text) is verdict


def test_gates_read_their_grammar_and_name_what_fails() -> None:
    gates = parse_gates({"exact_match": ">= 0.9", "lift.exact_match": "> 0",
                         "baseline.contains": "<0.5", "contains": "== 1"},
                        ["exact_match", "contains"], baseline=True)
    assert [str(g) for g in gates] == ["exact_match >= 0.9", "lift.exact_match > 0",
                                       "baseline.contains < 0.5", "contains == 1"]
    assert failures(gates, {"exact_match": 0.95, "contains": 1.0},
                    {"exact_match": 0.2, "contains": 0.1}) == []
    assert failures(gates, {"exact_match": 0.45, "contains": 1.0},
                    {"exact_match": 0.5, "contains": 0.1}) == [
        "exact_match is 0.45, required >= 0.9", "lift.exact_match is -0.05, required > 0"]


@pytest.mark.parametrize(("require", "baseline", "message"), [
    ({"exact_match": "0.9"}, True, "'0.9' is not a bound"),
    ({"exact_match": 0.9}, True, "0.9 is not a bound"),
    ({"exact_match": ">= ninety"}, True, "is not a bound"),
    ({"exact_match": "=> 0.9"}, True, "is not a bound"),
    ({"exact": ">= 0.9"}, True, "no scorer 'exact' in this step"),
    ({"lift.exact_match": "> 0"}, False, "lift needs a baseline"),
    ({"best.exact_match": "> 0"}, True, "no scorer 'best.exact_match'"),
])
def test_a_bad_gate_is_one_line_naming_it(require: dict[str, object], baseline: bool,
                                          message: str) -> None:
    with pytest.raises(GateError) as refused:
        parse_gates(require, ["exact_match"], baseline=baseline)
    assert message in str(refused.value) and "\n" not in str(refused.value)


def test_an_eval_file_gives_questions_and_references(tmp_path: Path) -> None:
    path = tmp_path / "eval.jsonl"
    path.write_text(
        '{"prompt": "Q: 2+2?\\nA:", "completion": " 4"}\n\n'
        '{"messages": [{"role": "system", "content": "Be brief."}, '
        '{"role": "user", "content": "Capital of France?"}, '
        '{"role": "assistant", "content": "Paris"}]}\n')
    examples, digest = read_examples(path)
    assert [(e.line, e.reference, e.asked) for e in examples] == [
        (1, " 4", "Q: 2+2?\nA:"), (3, "Paris", "Capital of France?")]
    assert examples[1].messages is not None and len(examples[1].messages) == 2
    assert len(digest) == 64


@pytest.mark.parametrize(("content", "message"), [
    ('{"prompt": "x"}\n', "eval.jsonl:1: neither a chat"),
    ('{"prompt": "x", "completion": " y"}\n[1]\n', "eval.jsonl:2: not a JSON object"),
    ('{"messages": [{"role": "user", "content": "x"}, {"role": "user", "content": "y"}]}\n',
     "eval.jsonl:1: the last message must be the assistant's"),
    ("{nope\n", "eval.jsonl:1: not JSON"),
    ("[" * 100_000 + "\n", "eval.jsonl:1: not JSON"),
    ("\n\n", "eval.jsonl: no examples"),
])
def test_a_bad_eval_file_is_one_line_naming_file_and_line(tmp_path: Path, content: str,
                                                          message: str) -> None:
    path = tmp_path / "eval.jsonl"
    path.write_text(content)
    with pytest.raises(EvalFileError) as refused:
        read_examples(path, "eval.jsonl")
    assert message in str(refused.value) and "\n" not in str(refused.value)


def test_an_eval_file_is_bounded(tmp_path: Path) -> None:
    path = tmp_path / "eval.jsonl"
    path.write_text('{"prompt": "q", "completion": " a"}\n' * 10_001)
    with pytest.raises(EvalFileError, match="more than 10,000 examples"):
        read_examples(path, "eval.jsonl")
    with pytest.raises(EvalFileError, match="is a directory"):
        read_examples(tmp_path, "data")
