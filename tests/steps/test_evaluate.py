"""together/evaluate run alone (`StepEnvironment`) against a client that answers from a table
and counts what it was asked: scores, baseline and lift, failures shown, gates, a judge read
strictly, bounded concurrency, and an evaluation cut short resumed without asking again."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anyio
import pytest

from orchestrator.errors import PermanentError
from orchestrator.protocol.types import Completion, FineTuneJob
from orchestrator.providers.together.client import TogetherClient
from orchestrator.steps.context import Clients
from orchestrator.testing import StepEnvironment
from tests.conftest import CLI, write

QUESTIONS = {"Q: France?": " Paris", "Q: Japan?": " Tokyo", "Q: Italy?": " Rome",
             "Q: Kenya?": " Nairobi"}
TUNED, BASE = "me/tuned", "base/model"


class Answers(TogetherClient):
    """Answers each (model, prompt) from a table ("no idea" otherwise), counting the asks."""

    def __init__(self, table: dict[tuple[str, str], str], *, delay: float = 0.0,
                 fail_after: int | None = None) -> None:  # no HTTP client: nothing to open
        self.table, self.delay, self.fail_after = table, delay, fail_after
        self.asked: list[tuple[str, str]] = []
        self.in_flight = self.most_in_flight = 0
        self.jobs_read = 0

    async def complete(self, model: str, prompt: str, **params: Any) -> Completion:
        if self.fail_after is not None and len(self.asked) >= self.fail_after:
            msg = "the process died"
            raise RuntimeError(msg)
        self.asked.append((model, prompt))
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await anyio.sleep(self.delay)
        finally:
            self.in_flight -= 1
        return Completion(text=self.table.get((model, prompt), "no idea"))

    async def chat(self, model: str, messages: list[dict[str, Any]],
                   **params: Any) -> Completion:
        return await self.complete(model, str(messages[-1]["content"]), **params)

    async def retrieve_fine_tune(self, job_id: str) -> FineTuneJob:
        self.jobs_read += 1
        return FineTuneJob(id=job_id, status="completed", model=BASE)


def table(right: int, model: str = TUNED) -> dict[tuple[str, str], str]:
    """The first `right` questions answered right by `model`."""
    return {(model, q): a for q, a in list(QUESTIONS.items())[:right]}


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    (tmp_path / "eval.jsonl").write_text("".join(
        json.dumps({"prompt": q, "completion": a}) + "\n" for q, a in QUESTIONS.items()))
    return tmp_path


def environment(folder: Path, client: Answers) -> StepEnvironment:
    return StepEnvironment(folder, clients=Clients(client))


EVAL = {"model": TUNED, "file": "eval.jsonl", "scorers": ["exact_match", "contains"]}


async def test_scores_beside_the_jobs_base_model(folder: Path) -> None:
    client = Answers({**table(3), **table(1, BASE)})
    outputs = await environment(folder, client).run(
        "together/evaluate", {**EVAL, "job_id": "ft-1", "require": {
            "exact_match": ">= 0.75", "lift.exact_match": "> 0"}})
    assert outputs["scores"] == {"exact_match": 0.75, "contains": 0.75}
    assert outputs["baseline"] == {"model": BASE, "scores": {"exact_match": 0.25,
                                                             "contains": 0.25}}
    assert outputs["lift"] == {"exact_match": 0.5, "contains": 0.5}
    assert outputs["failures"]["exact_match"] == {"count": 1, "examples": [
        {"line": 4, "asked": "Q: Kenya?", "reference": " Nairobi", "answer": "no idea"}]}
    assert outputs["count"] == 4 and outputs["passed"] is True
    assert len(client.asked) == 8 and len(set(client.asked)) == 8


async def test_a_gate_that_fails_names_the_score_its_value_and_the_bound(folder: Path) -> None:
    client = Answers({**table(2), **table(3, BASE)})
    with pytest.raises(PermanentError) as failed:
        await environment(folder, client).run("together/evaluate", {
            **EVAL, "baseline": BASE,
            "require": {"exact_match": ">= 0.9", "lift.contains": "> 0"}})
    assert str(failed.value) == (
        f"quality gate failed for {TUNED}: exact_match is 0.5, required >= 0.9; "
        "lift.contains is -0.25, required > 0")


async def test_an_evaluation_cut_short_asks_only_what_was_not_answered(folder: Path) -> None:
    """The first attempt dies after three answers; the second gets its checkpoint and asks
    the five questions left (of four for the model and four for the baseline), none twice."""
    params = {**EVAL, "job_id": "ft-1", "concurrency": 1}
    first = Answers(table(4), fail_after=3)
    env = environment(folder, first)
    with pytest.raises(RuntimeError):
        await env.run("together/evaluate", params)
    saved = {k for k in env.checkpoint if "/" in k}
    assert len(saved) == 3 and env.checkpoint["baseline"] == BASE
    second = Answers(table(4))
    env.clients = Clients(second)
    outputs = await env.run("together/evaluate", params, attempt=2)
    assert len(second.asked) == 5 and not set(second.asked) & set(first.asked)
    assert second.jobs_read == 0  # the baseline was kept too
    assert outputs["scores"]["exact_match"] == 1.0


async def test_answers_for_another_version_of_the_file_are_not_reused(folder: Path) -> None:
    client = Answers(table(4))
    env = environment(folder, client)
    await env.run("together/evaluate", EVAL)
    (folder / "eval.jsonl").write_text(json.dumps({"prompt": "Q: France?",
                                                   "completion": " Lyon"}) + "\n")
    outputs = await env.run("together/evaluate", EVAL, attempt=2)
    assert outputs["scores"]["exact_match"] == 0.0 and len(client.asked) == 5


async def test_requests_are_concurrent_up_to_the_bound(folder: Path) -> None:
    client = Answers(table(4), delay=0.02)
    await environment(folder, client).run("together/evaluate", {**EVAL, "baseline": BASE,
                                                                 "concurrency": 3})
    assert client.most_in_flight == 3


async def test_a_judges_verdict_counts_only_when_it_is_one_of_two_words(folder: Path) -> None:
    judge = "judge/model"
    verdicts = {" Paris": "PASS", " Tokyo": "fail.", " Rome": "Probably PASS"}
    client = Answers(table(4))
    for answer, verdict in verdicts.items():
        for reference in QUESTIONS.values():
            client.table[(judge, f"A={answer}|R={reference}")] = verdict
    outputs = await environment(folder, client).run("together/evaluate", {
        "model": TUNED, "file": "eval.jsonl", "scorers": [],
        "judge": {"model": judge, "prompt": "A={answer}|R={reference}"}})
    assert outputs["scores"] == {"judge": 0.25}
    shown = outputs["failures"]["judge"]["examples"]
    assert [e.get("verdict") for e in shown] == [None, "Probably PASS", "no idea"]


def test_validate_refuses_a_bad_scorer_or_gate_in_one_line(cli: CLI, tmp_path: Path) -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        ({"scorers": ["exact_mach"]}, "unknown scorer 'exact_mach' (did you mean "
                                      "'exact_match'?)"),
        ({"require": {"exact_match": "0.9"}}, "require.exact_match: '0.9' is not a bound"),
        ({"require": {"lift.exact_match": "> 0"}}, "require.lift.exact_match: lift needs a "
                                                   "baseline"),
        ({"judge": {"model": "j", "prompt": "grade it"}}, "judge.prompt must contain {answer}"),
    ]
    for with_, message in cases:
        step = {"uses": "together/evaluate", "with": {"model": "m", "file": "e.jsonl", **with_}}
        write(tmp_path / "p.yaml", json.dumps({"name": "p", "steps": {"ev": step}}))
        refused = cli("validate", "p.yaml", check_code=2)
        assert refused.stderr.startswith("p.yaml:1:") and message in refused.stderr, \
            refused.stderr
        assert refused.stderr.count("\n") == 1
