"""Completions and chat completions, plain or streamed as server-sent events.

A model the local trainer trained (and its base, and a mapped base) answers for real: the
trainer process generates from its weights (greedy at temperature 0; `max_tokens`, `stop`,
sampling with `temperature`, `top_p`, `top_k` and `seed` honoured). Every other model is
simulated: a base model answers deterministically from the prompt (the same prompt always gets
the same answer, and the answer says it is simulated); a simulated fine-tuned model answers
with what its training data taught for that prompt (same text up to case and spacing, or a
close match), which is what lets a smoke test tell that "training" took; other prompts get its
base model's answer.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import re
import time
import uuid
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from orchestrator.localapi.errors import APIError, bad_request
from orchestrator.localapi.handlers import api_of, json_body
from orchestrator.localapi.models import ServedModel, resolve
from orchestrator.localapi.responses import JSONResponse
from orchestrator.localapi.state import normalise_prompt
from orchestrator.localapi.training import ask_trainer

if TYPE_CHECKING:
    from orchestrator.localapi.app import LocalAPI

__all__ = ["ROUTES", "AskedLog", "answer", "pieces"]

_PIECES = re.compile(r"\S+\s*|\s+")


class AskedLog:
    """Every completion and chat request this server took, counted by model and prompt (the
    last user message of a chat): a testing aid (`GET /v1/local/inference`) that lets a test
    count what a client asked, e.g. that a resumed evaluation asked nothing twice. In memory,
    bounded: the first `MAX_KEYS` distinct prompts are counted, the rest only in `total`."""

    MAX_KEYS = 100_000

    def __init__(self) -> None:
        self.counts: dict[tuple[str, str], int] = {}
        self.total = 0

    def add(self, model: str, prompt: str) -> None:
        self.total += 1
        key = (model, prompt[:500])
        if key in self.counts or len(self.counts) < self.MAX_KEYS:
            self.counts[key] = self.counts.get(key, 0) + 1

    def to_json(self) -> dict[str, Any]:
        return {"total": self.total, "requests": [
            {"model": model, "prompt": prompt, "count": count}
            for (model, prompt), count in self.counts.items()]}


async def asked(request: Request) -> Response:
    return JSONResponse(api_of(request).asked.to_json())


def pieces(text: str) -> list[str]:
    """Text split the way usage counts it: one "token" per word with its trailing space."""
    return _PIECES.findall(text)


def answer(api: LocalAPI, model: ServedModel, prompt: str) -> str:
    """What `model` says to `prompt`."""
    if model.learnt_from is not None:
        learnt = api.state.answer(model.learnt_from, prompt)
        if learnt is None:
            learnt = _closest(api, model.learnt_from, prompt)
        if learnt is not None:
            return learnt
    digest = hashlib.blake2b(f"{model.base}\0{prompt}".encode(), digest_size=4).hexdigest()
    excerpt = " ".join(prompt.split())[:60]
    return (f"Simulated answer {digest} from {model.name} to \"{excerpt}\": the local API runs "
            "no language model; fine-tune one on examples to teach it answers.")


def _closest(api: LocalAPI, model_name: str, prompt: str) -> str | None:
    keys = api.state.learnt_examples(model_name)
    close = difflib.get_close_matches(normalise_prompt(prompt), keys, n=1, cutoff=0.85)
    return str(keys[close[0]]) if close else None


def _model(api: LocalAPI, body: dict[str, Any]) -> ServedModel:
    name = body.get("model")
    if not isinstance(name, str) or not name:
        raise bad_request("model is required", "model")
    served = resolve(api, name)
    if served is None:
        raise APIError(404, f"Unable to access model {name}. It does not exist, or is not ready "
                            "yet (a fine-tune must be completed, an import Complete).",
                       type_="model_not_available", param="model")
    return served


def _limits(body: dict[str, Any]) -> tuple[int, list[str], int]:
    max_tokens = body.get("max_tokens", 512)
    if max_tokens is None:
        max_tokens = 512
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        raise bad_request("max_tokens must be a positive integer", "max_tokens")
    stop = body.get("stop") or []
    if isinstance(stop, str):
        stop = [stop]
    if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
        raise bad_request("stop must be a string or a list of strings", "stop")
    n = body.get("n", 1) or 1
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= 128:
        raise bad_request("n must be an integer from 1 to 128", "n")
    return max_tokens, stop, n


def _sampling(body: dict[str, Any]) -> dict[str, Any]:
    """The sampling parameters a real model honours, checked (400 otherwise)."""
    found: dict[str, Any] = {}
    for name, low, high in (("temperature", 0.0, 2.0), ("top_p", 0.0, 1.0)):
        value = body.get(name)
        if value is not None:
            if isinstance(value, bool) or not isinstance(value, int | float) or \
                    not low <= value <= high:
                raise bad_request(f"{name} must be a number from {low:g} to {high:g}", name)
            found[name] = float(value)
    for name, low in (("top_k", 1), ("seed", 0)):
        value = body.get(name)
        if value is not None:
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise bad_request(f"{name} must be a whole number from {low}", name)
            found[name] = value
    return found


async def _generated(api: LocalAPI, served: ServedModel, body: dict[str, Any], *,
                     prompt: str | None, messages: list[dict[str, str]] | None,
                     max_tokens: int, stop: list[str]) -> tuple[str, str, dict[str, int]]:
    """A real model's answer, why it ended, and its usage (the trainer process generates)."""
    assert served.weights is not None
    payload = {**served.weights, "prompt": prompt, "messages": messages,
               "max_tokens": max_tokens, "stop": stop, **_sampling(body)}
    result = await ask_trainer(api, "generate", payload, timeout=GENERATE_TIMEOUT)
    usage = {"prompt_tokens": result["prompt_tokens"],
             "completion_tokens": result["completion_tokens"],
             "total_tokens": result["prompt_tokens"] + result["completion_tokens"]}
    return str(result["text"]), str(result["finish_reason"]), usage


GENERATE_TIMEOUT = 600.0
"""Seconds an answer may take: the first one loads the model (and, cold, torch)."""


def _shape(text: str, max_tokens: int, stop: list[str]) -> tuple[str, str]:
    """The text as the sampler would return it, and why it ended."""
    reason = "stop"
    cut = min((text.index(s) for s in stop if s and s in text), default=None)
    if cut is not None:
        text = text[:cut]
    words = pieces(text)
    if len(words) > max_tokens:
        text, reason = "".join(words[:max_tokens]), "length"
    return text, reason


def _usage(prompt: str, text: str) -> dict[str, int]:
    prompt_tokens, completion_tokens = len(pieces(prompt)), len(pieces(text))
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def _sse(chunks: list[dict[str, Any]]) -> StreamingResponse:
    async def events() -> AsyncIterator[bytes]:
        for chunk in chunks:
            yield f"data: {json.dumps(chunk)}\n\n".encode()
        yield b"data: [DONE]\n\n"

    return StreamingResponse(events(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache"})


async def completions(request: Request) -> Response:
    api = api_of(request)
    body = await json_body(request)
    served = _model(api, body)
    prompt = body.get("prompt")
    if not isinstance(prompt, str):
        raise bad_request("prompt is required and must be a string", "prompt")
    max_tokens, stop, n = _limits(body)
    api.asked.add(served.name, prompt)
    if served.weights is not None:
        text, reason, usage = await _generated(api, served, body, prompt=prompt, messages=None,
                                               max_tokens=max_tokens, stop=stop)
    else:
        text, reason = _shape(answer(api, served, prompt), max_tokens, stop)
        usage = _usage(prompt, text)
    if body.get("echo"):
        text = prompt + text
    ident, created = f"cmpl-{uuid.uuid4().hex}", int(time.time())
    if body.get("stream"):
        words = [*pieces(text), ""]
        chunks = [{"id": ident, "object": "completion.chunk", "created": created,
                   "model": served.name,
                   "token": {"id": i, "text": piece, "logprob": 0.0, "special": False},
                   "choices": [{"index": 0, "text": piece,
                                "finish_reason": reason if last else None}],
                   "usage": usage if last else None, "finish_reason": reason if last else None}
                  for i, piece in enumerate(words) for last in [i == len(words) - 1]]
        return _sse(chunks)
    return JSONResponse({
        "id": ident, "object": "text.completion", "created": created, "model": served.name,
        "prompt": [], "usage": usage,
        "choices": [{"index": i, "text": text, "finish_reason": reason, "seed": 0}
                    for i in range(n)],
    })


ROLES = ("system", "user", "assistant", "tool")


def _text_of(content: Any, where: str) -> str:
    """A message's content as text: a string, or a list of content parts (`{"type": "text",
    "text": ...}`; other parts, such as images, add no text). A 400 naming the message
    otherwise."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for part in content:
            if not isinstance(part, dict) or not isinstance(part.get("type"), str):
                raise bad_request(f"{where}.content parts must be objects with a type "
                                  "(e.g. {\"type\": \"text\", \"text\": \"...\"})", "messages")
            if part["type"] == "text":
                if not isinstance(part.get("text"), str):
                    raise bad_request(f"{where}.content: a text part needs its text as a "
                                      "string", "messages")
                texts.append(part["text"])
        return "".join(texts)
    raise bad_request(f"{where}.content must be a string or a list of content parts",
                      "messages")


def _message_texts(messages: Any) -> list[tuple[str, str]]:
    """(role, text) of each message, checked as Together checks them (400 otherwise)."""
    if not isinstance(messages, list) or not messages:
        raise bad_request("messages is required: a non-empty list of {role, content}",
                          "messages")
    found = []
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, dict) or message.get("role") not in ROLES:
            raise bad_request(f"{where} needs a role ({', '.join(ROLES)}) and content",
                              "messages")
        content = message.get("content")
        if content is None and message["role"] == "assistant":
            content = ""  # an assistant turn that called tools has no content
        found.append((message["role"], _text_of(content, where)))
    return found


def _last_user_text(texts: list[tuple[str, str]]) -> str:
    for role, text in reversed(texts):
        if role == "user":
            return text
    raise bad_request("messages holds no user message", "messages")


async def chat(request: Request) -> Response:
    api = api_of(request)
    body = await json_body(request)
    texts = _message_texts(body.get("messages"))
    served = _model(api, body)
    question = _last_user_text(texts)
    max_tokens, stop, n = _limits(body)
    api.asked.add(served.name, question)
    if served.weights is not None:
        text, reason, usage = await _generated(
            api, served, body, prompt=None, max_tokens=max_tokens, stop=stop,
            messages=[{"role": role, "content": content} for role, content in texts])
    else:
        text, reason = _shape(answer(api, served, question), max_tokens, stop)
        usage = _usage(" ".join(text for _, text in texts), text)
    ident, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
    if body.get("stream"):
        chunks = [{"id": ident, "object": "chat.completion.chunk", "created": created,
                   "model": served.name, "choices": [{
                       "index": 0, "delta": {"role": "assistant", "content": piece},
                       "finish_reason": None}]}
                  for piece in pieces(text)]
        chunks.append({"id": ident, "object": "chat.completion.chunk", "created": created,
                       "model": served.name, "choices": [{
                           "index": 0, "delta": {"role": "assistant", "content": ""},
                           "finish_reason": reason}], "usage": usage})
        return _sse(chunks)
    return JSONResponse({
        "id": ident, "object": "chat.completion", "created": created, "model": served.name,
        "prompt": [], "usage": usage,
        "choices": [{"index": i, "message": {"role": "assistant", "content": text},
                     "finish_reason": reason, "seed": 0} for i in range(n)],
    })


ROUTES = [
    Route("/v1/completions", completions, methods=["POST"]),
    Route("/v1/chat/completions", chat, methods=["POST"]),
    Route("/v1/local/inference", asked, methods=["GET"]),
]
