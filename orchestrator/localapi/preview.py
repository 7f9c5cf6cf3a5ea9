"""How a training file is tokenized, and which tokens are learnt: `POST /v1/fine-tunes/preview`
(SDK 3.x's `fine_tuning.preview`: a file's first rows) and `GET /v1/fine-tunes/{id}/
download-tokenized-dataset` (`fine_tuning.retrieve_tokenized_dataset`: a job's whole file, as
a gzipped JSON-lines archive behind a signed URL that expires, `/downloads/tokenized/{id}`).

With the local trainer and a base it has weights for, the rows are tokenized by that base's
own tokenizer, in the trainer process, exactly as training builds its examples. Otherwise
there is no tokenizer here: the rows are split into the words the local API counts as
tokens (its usage figures do the same), and the answer says `"simulated": true`.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Route

from orchestrator.errors import shorten
from orchestrator.localapi import training
from orchestrator.localapi.errors import APIError, bad_request, not_found
from orchestrator.localapi.finetune_requests import fine_tunable, number
from orchestrator.localapi.handlers import api_of, json_body
from orchestrator.localapi.inference import pieces
from orchestrator.localapi.responses import JSONResponse, iso
from orchestrator.trainer.data import preview_rows, read_examples

if TYPE_CHECKING:
    from orchestrator.localapi.app import LocalAPI

__all__ = ["ROUTES"]

FORMATS = {"GENERAL": "general", "CONVERSATION": "conversation", "INSTRUCTION": "instruction"}
"""The validation report's dataset formats a preview takes, as SDK 3.x names them."""
PREVIEW_TIMEOUT = 120.0
"""Seconds a preview in the trainer may take (cold: its first tokenizer load)."""
MAX_TOKENIZED_ROWS = 100_000
"""The most rows of a training file a tokenized-dataset archive holds."""
DOWNLOAD_TTL = 6000
"""Seconds a tokenized dataset's download URL is valid (Together's presigned URLs: 100 min)."""


class _Words:
    """A stand-in tokenizer where no real one is: a token is a word with the space after it,
    its id a stable hash; a chat is rendered `role: content` a line each."""

    bos_token_id = None
    eos_token_id = None

    def __init__(self) -> None:
        self._seen: dict[int, str] = {}

    def __call__(self, text: str, add_special_tokens: bool = False) -> dict[str, list[int]]:
        del add_special_tokens
        ids = []
        for word in pieces(text):
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
    api = api_of(request)
    body = await json_body(request)
    base = fine_tunable(api, body.get("model"))
    model = base.id
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
    rows, real = await _rows(api, model, api.state.file_path(file_id), top_k=top_k,
                             train_on_inputs=train_on_inputs, max_seq_length=length)
    return JSONResponse({"dataset_format": dataset, "max_seq_length": length, "model": model,
                         "rows": rows, "train_on_inputs": train_on_inputs,
                         "simulated": not real})


async def _rows(api: LocalAPI, model: str, path: Path, *, top_k: int, train_on_inputs: bool,
                max_seq_length: int) -> tuple[list[dict[str, Any]], bool]:
    """The first `top_k` rows of `path` tokenized for `model`, and whether by a real
    tokenizer (the trainer's, for a base it has weights for)."""
    import anyio.to_thread  # noqa: PLC0415

    real = api.config.trainer == "peft" and (model in api.config.base_models
                                             or model.startswith(training.TINY_PREFIX))
    if real:
        ask = {"base": training.base_of(api, model), "file": str(path), "top_k": top_k,
               "train_on_inputs": train_on_inputs, "max_seq_length": max_seq_length}
        answer = await training.ask_trainer(api, "preview", ask, timeout=PREVIEW_TIMEOUT)
        return list(answer["rows"]), True

    def simulated() -> list[dict[str, Any]]:
        records = list(itertools.islice(read_examples(path), top_k))
        return preview_rows(records, _Words(), train_on_inputs=train_on_inputs,
                            max_seq_length=max_seq_length)

    return await anyio.to_thread.run_sync(simulated), False


def _signature(api: LocalAPI, job_id: str, expires: int) -> str:
    return hmac.new(api.config.api_key.encode(), f"tokenized:{job_id}:{expires}".encode(),
                    hashlib.sha256).hexdigest()


async def tokenized_dataset(request: Request) -> Response:
    """Where a job's tokenized dataset can be downloaded, for `DOWNLOAD_TTL` seconds: an
    archive made on first ask and kept (written then renamed)."""
    import anyio.to_thread  # noqa: PLC0415

    api = api_of(request)
    job_id = request.path_params["job_id"]
    row = api.state.finetune(job_id)
    if row is None:
        raise not_found(f"no fine-tuning job with id {job_id}", "id")
    made = api.config.data_dir / "tokenized" / f"{job_id}.jsonl.gz"
    if not made.exists():
        req = row["request"]
        base = api.base_model(row["model"])
        length = int(req.get("max_seq_length") or (base.limits()["max_seq_length_sft"]
                                                    if base else 4096))
        method = req.get("training_method") or {}
        path = api.state.file_path(req["training_file"])
        if api.state.file(req["training_file"]) is None or not path.is_file():
            raise not_found(f"job {job_id}'s training file {req['training_file']} was deleted: "
                            "there is nothing to tokenize", "id")
        rows, _ = await _rows(api, row["model"], path,
                              top_k=MAX_TOKENIZED_ROWS, max_seq_length=length,
                              train_on_inputs=method.get("train_on_inputs") is True)
        await anyio.to_thread.run_sync(_write_archive, made, rows)
    expires = int(api.clock()) + DOWNLOAD_TTL
    url = (f"{str(request.base_url).rstrip('/')}/downloads/tokenized/{job_id}?expires="
           f"{expires}&signature={_signature(api, job_id, expires)}")
    return JSONResponse({"url": url, "filename": made.name, "size": made.stat().st_size,
                         "content_type": "application/gzip", "expires_at": iso(expires)})


def _write_archive(made: Path, rows: list[dict[str, Any]]) -> None:
    import gzip  # noqa: PLC0415
    import os  # noqa: PLC0415
    import tempfile  # noqa: PLC0415

    made.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(dir=made.parent, prefix=f".{made.name}-")
    try:
        with os.fdopen(handle, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb") as packed:
            for row in rows:
                packed.write(json.dumps({"input_ids": row["input_ids"],
                                         "labels": row["labels"]}).encode() + b"\n")
        Path(name).replace(made)
    except BaseException:
        Path(name).unlink(missing_ok=True)
        raise


async def download_tokenized(request: Request) -> Response:
    """The archive itself, for whoever holds an unexpired signed URL (as a presigned URL:
    no key needed, nothing else reachable)."""
    api = api_of(request)
    job_id = request.path_params["job_id"]
    raw_expires = request.query_params.get("expires", "")
    given = request.query_params.get("signature", "")
    expires = int(raw_expires) if raw_expires.isdigit() and len(raw_expires) < 12 else 0
    if not hmac.compare_digest(given.encode(), _signature(api, job_id, expires).encode()) or \
            expires < api.clock():
        raise APIError(403, "the download URL is not valid or has expired: ask for a new one "
                            "(GET /v1/fine-tunes/{id}/download-tokenized-dataset)",
                       type_="forbidden")
    made = api.config.data_dir / "tokenized" / f"{job_id}.jsonl.gz"
    if not made.exists():
        raise not_found(f"no tokenized dataset for job {job_id}", "id")
    return FileResponse(made, media_type="application/gzip", filename=made.name)


ROUTES = [Route("/v1/fine-tunes/preview", preview, methods=["POST"]),
          Route("/v1/fine-tunes/{job_id}/download-tokenized-dataset", tokenized_dataset,
                methods=["GET"]),
          Route("/downloads/tokenized/{job_id}", download_tokenized, methods=["GET"])]
"""Matched in full, it wins over `/v1/fine-tunes/{job_id}` (which has no POST): `preview` is
not a job id."""
