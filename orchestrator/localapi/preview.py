"""`POST /v1/fine-tunes/preview` (SDK 3.x's `fine_tuning.preview`): how the first rows of a
training file will be tokenized, and which tokens are learnt.

With the local trainer and a base it has weights for, the rows are tokenized by that base's
own tokenizer, in the trainer process, exactly as training builds its examples. Otherwise
there is no tokenizer here: the rows are split into the words the local API counts as
tokens (its usage figures do the same), and the answer says `"simulated": true`.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
from collections.abc import Sequence
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from orchestrator.errors import shorten
from orchestrator.localapi import training
from orchestrator.localapi.errors import APIError, bad_request
from orchestrator.localapi.finetune_requests import number
from orchestrator.localapi.handlers import api_of, json_body
from orchestrator.localapi.responses import JSONResponse
from orchestrator.trainer.client import TrainerError
from orchestrator.trainer.data import preview_rows, read_examples

__all__ = ["ROUTES"]

FORMATS = {"GENERAL": "general", "CONVERSATION": "conversation", "INSTRUCTION": "instruction"}
"""The validation report's dataset formats a preview takes, as SDK 3.x names them."""
PREVIEW_TIMEOUT = 120.0
"""Seconds a preview in the trainer may take (cold: its first tokenizer load)."""


class _Words:
    """A stand-in tokenizer where no real one is: a token is a word with the space after it,
    its id a stable hash; a chat is rendered `role: content` a line each."""

    bos_token_id = None
    eos_token_id = None
    _WORDS = re.compile(r"\S+\s*|\s+")

    def __init__(self) -> None:
        self._seen: dict[int, str] = {}

    def __call__(self, text: str, add_special_tokens: bool = False) -> dict[str, list[int]]:
        del add_special_tokens
        ids = []
        for word in self._WORDS.findall(text):
            ident = int.from_bytes(hashlib.blake2b(word.encode(), digest_size=3).digest(),
                                   "big")
            self._seen[ident] = word
            ids.append(ident)
        return {"input_ids": ids}

    def convert_ids_to_tokens(self, ids: Sequence[int]) -> list[str]:
        return [self._seen.get(i, "") for i in ids]

    def apply_chat_template(self, messages: Sequence[dict[str, str]], *, tokenize: bool = False,
                            add_generation_prompt: bool = False) -> str:
        del tokenize
        text = "".join(f"{m['role']}: {m['content']}\n" for m in messages)
        return text + ("assistant: " if add_generation_prompt else "")


async def preview(request: Request) -> Response:
    import anyio.to_thread  # noqa: PLC0415

    api = api_of(request)
    body = await json_body(request)
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise bad_request("model is required", "model")
    base = api.base_model(model)
    if base is None:
        raise bad_request(f"model {model!r} is not available for fine-tuning (see GET "
                          "/v1/fine-tunes/models/supported)", "model")
    file_id = str(body.get("training_file") or "")
    row = api.state.file(file_id) if file_id else None
    if row is None or not row["report"]:
        raise bad_request(f"training_file {shorten(file_id)!r}: no processed file with this "
                          "id", "training_file")
    dataset = FORMATS.get(str(json.loads(row["report"]).get("dataset_format")))
    if dataset is None:
        raise bad_request("a preview takes a valid SFT dataset (general, conversation or "
                          "instruction)", "training_file")
    top_k = number(body, "top_k", 10, 1, 100, integer=True)
    train_on_inputs = body.get("train_on_inputs", False)
    if not isinstance(train_on_inputs, bool):
        raise bad_request("train_on_inputs must be true or false", "train_on_inputs")
    if body.get("training_method", "sft") != "sft":
        raise bad_request("a preview is of supervised fine-tuning (sft) only",
                          "training_method")
    length = int(base.limits()["max_seq_length_sft"])
    path = api.state.file_path(file_id)
    real = api.config.trainer == "peft" and (model in api.config.base_models
                                             or model.startswith(training.TINY_PREFIX))
    if real:
        weights = training.base_of(api, model)
        ask = {"base": weights, "file": str(path), "top_k": top_k,
               "train_on_inputs": train_on_inputs, "max_seq_length": length}
        try:
            answer = await anyio.to_thread.run_sync(
                lambda: api.trainer().ask("preview", ask, timeout=PREVIEW_TIMEOUT))
        except TrainerError as exc:
            raise APIError(503, f"the local trainer could not answer: {exc}",
                           type_="service_unavailable") from None
        rows = answer["rows"]
    else:
        def simulated() -> list[dict[str, Any]]:
            records = list(itertools.islice(read_examples(path), top_k))
            return preview_rows(records, _Words(), train_on_inputs=train_on_inputs,
                                max_seq_length=length)

        rows = await anyio.to_thread.run_sync(simulated)
    return JSONResponse({"dataset_format": dataset, "max_seq_length": length, "model": model,
                         "rows": rows, "train_on_inputs": train_on_inputs,
                         "simulated": not real})


ROUTES = [Route("/v1/fine-tunes/preview", preview, methods=["POST"])]
"""Matched in full, it wins over `/v1/fine-tunes/{job_id}` (which has no POST): `preview` is
not a job id."""
