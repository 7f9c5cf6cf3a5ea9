"""together/evaluate: score a model on an evaluation file, beside a baseline, behind gates.

Every example is asked of the model (and of the baseline: `baseline: MODEL`, or by default
the base model of `job_id`'s fine-tune), at most `concurrency` requests at a time, through the
run's provider; each answer is scored as it arrives and checkpointed (answers that arrive
while a checkpoint is being written go in the next one, together; after a slow write of a
big checkpoint, a little later), so a killed evaluation, resumed, asks only what it had not
been answered. Scores are the share of examples each scorer passes; the lift is the model's
minus the baseline's. `require:` gates fail the step in one line naming the score, its value
and the bound, so a step after it (`register`) never runs for a model that fails.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import anyio
from pydantic import Field, model_validator

from orchestrator.errors import PermanentError, ProviderUnavailable, first_failure
from orchestrator.evaluation.examples import EvalExample, EvalFileError, read_examples
from orchestrator.evaluation.gates import GateError, failures, parse_gates
from orchestrator.evaluation.scorers import Scorer, ScorerError, parse_verdict, scorer
from orchestrator.steps.context import StepContext
from orchestrator.steps.together.common import TYPES, Params, together_client

if TYPE_CHECKING:
    from orchestrator.providers.together.client import TogetherClient

__all__ = ["EvaluateParams", "evaluate"]

JUDGE_PROMPT = (
    "You grade an answer against a reference answer.\n"
    "Question: {question}\nReference answer: {reference}\nAnswer to grade: {answer}\n"
    "Reply with exactly one word: PASS if the answer says what the reference says, FAIL "
    "otherwise.")
WRITE_QUICK = 0.02
WRITE_PAUSE_RATIO = 3.0
WRITE_PAUSE_MAX = 1.0
"""A checkpoint that took longer than WRITE_QUICK seconds to write (thousands of answers) is
followed by a pause of WRITE_PAUSE_RATIO times as long (at most WRITE_PAUSE_MAX) in which
answers gather for the next write: at most a quarter of the time goes to writing, and a crash
loses at most that pause's answers (asked again)."""
EXCERPT = 200
"""Characters of a question, reference or answer kept in a failure's example."""


def _expression(value: object) -> bool:
    return "${{" in str(value)


class JudgeParams(Params):
    model: str = Field(min_length=1)
    prompt: str = Field(default=JUDGE_PROMPT, max_length=20_000,
                        description="{question}, {reference} and {answer} are filled in")
    pass_word: str = Field(default="PASS", min_length=1)
    fail_word: str = Field(default="FAIL", min_length=1)
    max_tokens: int = Field(default=8, ge=1, le=256)

    @model_validator(mode="after")
    def _placeholders(self) -> JudgeParams:
        if "{answer}" not in self.prompt:
            msg = "judge.prompt must contain {answer} (and may use {question}, {reference})"
            raise ValueError(msg)
        return self


class EvaluateParams(Params):
    model: str = Field(min_length=1)
    file: str = Field(min_length=1, description="an evaluation file: chat or prompt/completion")
    baseline: str | None = None
    job_id: str | None = Field(default=None, description="without baseline: its base model is")
    scorers: list[str] | dict[str, dict[str, Any] | None] = Field(
        default_factory=lambda: ["exact_match"])
    judge: JudgeParams | None = None
    max_tokens: int = Field(default=64, ge=1, le=4096)
    temperature: float = Field(default=0.0, ge=0, le=2)
    stop: list[str] | None = None
    concurrency: int = Field(default=4, ge=1, le=64)
    require: dict[str, str | float] = Field(default_factory=dict)
    examples_shown: int = Field(default=3, ge=0, le=20)

    def scorer_options(self) -> dict[str, dict[str, Any]]:
        if isinstance(self.scorers, list):
            return {name: {} for name in self.scorers}
        return {name: dict(options or {}) for name, options in self.scorers.items()}

    def scorer_names(self) -> list[str]:
        return [*self.scorer_options(), *(["judge"] if self.judge is not None else [])]

    @model_validator(mode="after")
    def _checked(self) -> EvaluateParams:
        options = self.scorer_options()
        if not options and self.judge is None:
            msg = "give at least one scorer (scorers: [exact_match, ...]) or a judge"
            raise ValueError(msg)
        if not _expression(self.scorers):
            for name, given in options.items():
                if name == "judge":
                    msg = "judge is configured on its own (judge: {model: ...}), not a scorer"
                    raise ValueError(msg)
                try:
                    scorer(name, given)
                except ScorerError as exc:
                    raise ValueError(str(exc)) from None
        if not _expression(self.require) and not _expression(self.scorers):
            try:
                parse_gates(self.require, self.scorer_names(),
                            baseline=self.baseline is not None or self.job_id is not None)
            except GateError as exc:
                raise ValueError(str(exc)) from None
        return self


def _cut(text: str) -> str:
    return text if len(text) <= EXCERPT else text[:EXCERPT] + "…"


class _Asker:
    """Asks one example of one model, and scores the answer."""

    def __init__(self, client: TogetherClient, params: EvaluateParams,
                 scorers: dict[str, Scorer]) -> None:
        self.client, self.params, self.scorers = client, params, scorers

    async def _ask(self, model: str, example: EvalExample, *, max_tokens: int) -> str:
        from orchestrator.providers.together.errors import NotFound  # noqa: PLC0415

        sampling: dict[str, Any] = {"max_tokens": max_tokens,
                                    "temperature": self.params.temperature}
        if self.params.stop:
            sampling["stop"] = self.params.stop
        try:
            if example.messages is not None:
                answer = await self.client.chat(model, list(example.messages), **sampling)
            else:
                answer = await self.client.complete(model, example.prompt or "", **sampling)
        except NotFound as exc:  # a fine-tuned model can take a while to become servable
            raise ProviderUnavailable(f"model {model} is not served (yet): {exc}") from None
        return answer.text

    async def record(self, model: str, example: EvalExample) -> dict[str, Any]:
        """What is kept of one answer: each scorer's verdict (1/0) and an excerpt."""
        text = await self._ask(model, example, max_tokens=self.params.max_tokens)
        passed = [int(check(text, example.reference)) for check in self.scorers.values()]
        kept: dict[str, Any] = {"s": passed, "a": _cut(text)}
        judge = self.params.judge
        if judge is not None:
            prompt = (judge.prompt.replace("{question}", example.asked)
                      .replace("{reference}", example.reference).replace("{answer}", text))
            verdict_text = await self._ask(judge.model, EvalExample(0, "", prompt=prompt),
                                           max_tokens=judge.max_tokens)
            verdict = parse_verdict(verdict_text, passed=judge.pass_word,
                                    failed=judge.fail_word)
            passed.append(int(bool(verdict)))
            if verdict is None:
                kept["v"] = _cut(verdict_text)
        return kept


async def _baseline(ctx: StepContext, client: TogetherClient,
                    params: EvaluateParams) -> str | None:
    if params.baseline is not None:
        return params.baseline or None
    if params.job_id is None:
        return None
    saved = ctx.last_checkpoint.get("baseline")
    if isinstance(saved, str):
        return saved
    base = (await client.retrieve_fine_tune(params.job_id)).model
    if not base:
        msg = f"fine-tuning job {params.job_id} names no base model: set baseline: MODEL"
        raise PermanentError(msg)
    await ctx.checkpoint(baseline=base)
    return base


async def _answer_all(ctx: StepContext, asker: _Asker, examples: list[EvalExample],
                      models: list[str], round_: str) -> None:
    """Ask every example not answered yet, `concurrency` at a time; answers are checkpointed
    as they come, those that arrive during a write in the next write. A request that fails
    stops the asking; what was answered before it is kept, then its error is raised."""
    saved = ctx.last_checkpoint
    todo = [(m, i) for m in range(len(models)) for i in range(len(examples))
            if f"{round_}/{m}/{i}" not in saved]
    total = len(models) * len(examples)
    done = total - len(todo)
    if not todo:
        return
    if done:
        ctx.log.info("evaluation continues", answered=done, remaining=len(todo))
    pending: Iterator[tuple[int, int]] = iter(todo)
    send, receive = anyio.create_memory_object_stream[tuple[str, dict[str, Any]]](
        max_buffer_size=math.inf)

    failed: list[Exception] = []

    async def worker(out: anyio.abc.ObjectSendStream[tuple[str, dict[str, Any]]]) -> None:
        async with out:
            for m, i in pending:  # shared: each example is taken by one worker
                if failed:
                    return
                try:
                    kept = await asker.record(models[m], examples[i])
                except Exception as exc:  # noqa: BLE001  (raised once the answers are kept)
                    failed.append(exc)
                    return
                await out.send((f"{round_}/{m}/{i}", kept))

    async def writer() -> None:
        nonlocal done
        async with receive:
            async for key, kept in receive:
                batch = {key: kept}
                while True:
                    try:
                        more_key, more = receive.receive_nowait()
                    except (anyio.WouldBlock, anyio.EndOfStream):
                        break
                    batch[more_key] = more
                started = time.monotonic()
                await ctx.checkpoint(**batch)
                spent = time.monotonic() - started
                done += len(batch)
                ctx.report({"status": "evaluating", "step": done, "total_steps": total})
                if spent > WRITE_QUICK:
                    # A big checkpoint is written whole each time: let answers gather for a
                    # while, so writing stays a fraction of the evaluation, not all of it.
                    await anyio.sleep(min(WRITE_PAUSE_MAX, WRITE_PAUSE_RATIO * spent))

    try:
        async with anyio.create_task_group() as group:
            group.start_soon(writer)
            async with send:
                for _ in range(min(asker.params.concurrency, len(todo))):
                    group.start_soon(worker, send.clone())
    except BaseExceptionGroup as group_failed:  # a checkpoint that could not be written
        first = first_failure(group_failed, anyio.get_cancelled_exc_class())
        if first is None:
            raise
        raise first from None
    if failed:  # every answer that came is kept; the first request that failed is the error
        raise failed[0]


def _scores(records: list[dict[str, Any]], names: list[str]) -> dict[str, float]:
    return {name: round(sum(r["s"][k] for r in records) / len(records), 4)
            for k, name in enumerate(names)}


def _failures(records: list[dict[str, Any]], examples: list[EvalExample], names: list[str],
              shown: int) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for k, name in enumerate(names):
        missed = [i for i, r in enumerate(records) if not r["s"][k]]
        if missed:
            found[name] = {"count": len(missed), "examples": [
                {"line": examples[i].line, "asked": _cut(examples[i].asked),
                 "reference": _cut(examples[i].reference), "answer": records[i]["a"],
                 **({"verdict": records[i]["v"]} if "v" in records[i] else {})}
                for i in missed[:shown]]}
    return found


@TYPES.step("together/evaluate", params=EvaluateParams,
            outputs=frozenset({"model", "file", "count", "scores", "baseline", "lift",
                               "failures", "passed", "gates"}))
async def evaluate(ctx: StepContext, params: EvaluateParams) -> dict[str, Any]:
    """Scores a model on an evaluation file (beside a baseline), and applies its gates."""
    client = together_client(ctx)
    try:
        examples, digest = await anyio.to_thread.run_sync(
            read_examples, ctx.resolve_path(params.file), params.file)
    except EvalFileError as exc:
        raise PermanentError(str(exc)) from None
    options = params.scorer_options()
    try:
        checks = {name: scorer(name, given) for name, given in options.items()}
        baseline = await _baseline(ctx, client, params)
        gates = parse_gates(params.require, params.scorer_names(), baseline=baseline is not None)
    except (ScorerError, GateError) as exc:
        raise PermanentError(str(exc)) from None
    models = [params.model, *([baseline] if baseline else [])]
    round_ = digest[:12]  # answers kept for another version of the file are not this one's
    await _answer_all(ctx, _Asker(client, params, checks), examples, models, round_)
    saved = ctx.last_checkpoint
    names = params.scorer_names()
    records = [[saved[f"{round_}/{m}/{i}"] for i in range(len(examples))]
               for m in range(len(models))]
    scores = _scores(records[0], names)
    base_scores = _scores(records[1], names) if baseline else None
    lift = {name: round(scores[name] - base_scores[name], 4) for name in names} \
        if base_scores is not None else None
    ctx.log.info("eval scores", model=params.model, count=len(examples), scores=scores,
                 **({"baseline": baseline, "baseline_scores": base_scores, "lift": lift}
                    if baseline else {}))
    result = {"model": params.model, "file": params.file, "count": len(examples),
              "scores": scores,
              "baseline": {"model": baseline, "scores": base_scores} if baseline else None,
              "lift": lift, "failures": _failures(records[0], examples, names,
                                                  params.examples_shown),
              "gates": [str(gate) for gate in gates]}
    failed = failures(gates, scores, base_scores)
    if failed:
        # Kept with the step (`show`, a batch's grid read it), though it fails.
        await ctx.checkpoint(result={**result, "passed": False})
        raise PermanentError(f"quality gate failed for {params.model}: " + "; ".join(failed))
    return {**result, "passed": True}
