"""An async client for the Together API, and for the local API that speaks it.

One `httpx.AsyncClient` per process carries every request (connection pooling, timeouts). The
client retries only what is safe to retry: any request the server said it did not process
(429 and 503, or a connection that was never made), and idempotent requests (GET, and the
steps' own look-ups) after any transient fault. A create that fails ambiguously (its response
lost) is *not* repeated here: the steps that create things check for their own earlier effect
first, which is what makes those effects happen once. Waits longer than a few seconds go back
to the step as RateLimited, for its durable retry policy.

(Over 400 lines: one method per endpoint of the API the steps use, each a few lines over the
one request-and-retry path they share; the request bodies are built in `requests`.)
"""

from __future__ import annotations

import contextlib
import enum
import math
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

import anyio
import httpx
from pydantic import BaseModel

from orchestrator.errors import PermanentError, ProviderUnavailable, StepError, TransientError
from orchestrator.log import get_logger
from orchestrator.protocol.types import (
    Checkpoint,
    Completion,
    FileObject,
    FineTuneEvent,
    FineTuneJob,
    ModelUpload,
    PriceEstimate,
    RegisteredModel,
    RemoteUpload,
    UploadJob,
    Usage,
)
from orchestrator.providers.together.errors import (
    NotFound,
    error_from_response,
    error_from_transport,
)
from orchestrator.providers.together.multipart import (
    MultipartState,
    PartsExpired,
    plan_parts,
    send_parts,
)

__all__ = ["DEFAULT_BASE_URL", "TogetherClient"]

M = TypeVar("M", bound=BaseModel)

DEFAULT_BASE_URL = "https://api.together.xyz/v1"
MULTIPART_THRESHOLD = 5 * 2**30
"""Together's limit for a file sent in one request; larger ones are sent in parts."""
PART_SIZE = 250 * 2**20
"""The size of a part, as Together's SDKs cut them."""
MAX_PAGES = 100
"""A cursor-paged list is followed this far at most (a server that never ends it)."""
PartsCallback = Callable[[dict[str, Any], int], Awaitable[None]]
"""Told, during a multipart upload, the fields to merge into a checkpoint and how many parts
have been sent."""
MAX_WAIT_IN_CLIENT = 10.0
"""Longer server-requested waits are left to the step's retry policy (durable backoff)."""


ANNOUNCE_TRIES = 5
"""Announces of an upload in a row answered with another client's upload of the same bytes
that is gone by the time it is read (its upload URL expired unused) before giving up."""


class _State(enum.Enum):
    UNOPENED = "unopened"
    OPENED = "opened"
    CLOSED = "closed"


async def _file_chunks(path: Path) -> AsyncIterator[bytes]:
    async with await anyio.open_file(path, "rb") as handle:
        while chunk := await handle.read(1 << 20):
            yield chunk


class TogetherClient:
    """Files, fine-tunes, models, jobs and inference on Together (or the local API).

    Use as `async with TogetherClient(...) as client:`; pass `http` (an AsyncClient) or
    `transport` to choose where requests go, e.g. the local API in-process.
    """

    def __init__(
        self,
        *,
        api_key: str,
        base_url: str = DEFAULT_BASE_URL,
        http: httpx.AsyncClient | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout: float = 60.0,
        retries: int = 3,
        rng: random.Random | None = None,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
        project_id: str | None = None,
        multipart_threshold: int = MULTIPART_THRESHOLD,
        part_size: int = PART_SIZE,
        part_concurrency: int = 4,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._root = self.base_url.removesuffix("/v1")
        """Where the API's other versions live (`/v2/projects/...`, `/v3/whoami`)."""
        self._project_id = project_id
        self.multipart_threshold = multipart_threshold
        """Files larger than this go up in parts (Together's single-request limit)."""
        self._part_size = part_size
        self._part_concurrency = part_concurrency
        limits = httpx.Limits(max_connections=64, max_keepalive_connections=32)
        self._http = http or httpx.AsyncClient(
            base_url=self.base_url, transport=transport or _abortive_transport(limits),
            timeout=httpx.Timeout(timeout, connect=10.0), limits=limits,
        )
        self._auth = {"Authorization": f"Bearer {api_key}"}
        self._retries = retries
        self._rng = rng or random.Random()
        self._sleep = sleep
        self._state = _State.UNOPENED
        self._log = get_logger(component="provider")

    async def __aenter__(self) -> Self:
        if self._state is not _State.UNOPENED:
            msg = f"a TogetherClient can be opened once; this one is {self._state.value}"
            raise RuntimeError(msg)
        self._state = _State.OPENED
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        self._state = _State.CLOSED
        await self._http.aclose()

    def __repr__(self) -> str:  # never shows the key
        return f"TogetherClient(base_url={self.base_url!r})"

    # -- the request layer -------------------------------------------------------------------

    async def _request(self, method: str, path: str, *, idempotent: bool,
                       expect: tuple[int, ...] = (200,), **options: Any) -> httpx.Response:
        """Send one request, retrying what is safe to retry; raise our errors otherwise."""
        if self._state is not _State.OPENED:
            msg = f"the TogetherClient is {self._state.value}; use it inside `async with`"
            raise RuntimeError(msg)
        headers = {**self._auth, **options.pop("headers", {})}
        for attempt in range(self._retries + 1):
            last = attempt == self._retries
            try:
                response = await self._http.request(method, path, headers=headers, **options)
            except httpx.TransportError as exc:
                error = error_from_transport(exc, f"{self.base_url}{path}")
                never_sent = isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout)
                if last or not (idempotent or never_sent):
                    raise error from None
                self._log.debug("retrying request", method=method, path=path,
                                error=str(error), attempt=attempt + 1)
                await self._backoff(attempt, None)
                continue
            if response.status_code in expect:
                return response
            problem = error_from_response(response)
            unprocessed = response.status_code in (429, 503)
            if isinstance(problem, TransientError) and (idempotent or unprocessed) and not last:
                wait = problem.retry_after
                if wait is not None and wait > MAX_WAIT_IN_CLIENT:
                    raise problem  # the step's policy waits durably
                self._log.debug("retrying request", method=method, path=path,
                                status=response.status_code, attempt=attempt + 1)
                await self._backoff(attempt, wait)
                continue
            raise problem
        msg = "unreachable: the loop always returns or raises"
        raise AssertionError(msg)

    async def _backoff(self, attempt: int, retry_after: float | None) -> None:
        delay = self._rng.uniform(0, min(4.0, 0.5 * 2**attempt))
        await self._sleep(max(delay, retry_after or 0.0))

    async def _json(self, method: str, path: str, *, idempotent: bool, **options: Any) -> Any:
        return (await self._request(method, path, idempotent=idempotent, **options)).json()

    async def _get(self, path: str, model: type[M]) -> M:
        return model.model_validate(await self._json("GET", path, idempotent=True))

    async def _list(self, path: str, model: type[M]) -> list[M]:
        """A list endpoint's items (Together wraps them as `{"data": [...]}`)."""
        body = await self._json("GET", path, idempotent=True)
        return [model.model_validate(item) for item in body.get("data", [])]

    # -- files -------------------------------------------------------------------------------

    async def upload_file(self, path: Path, *, purpose: str = "fine-tune",
                          name: str | None = None, checksum: str | None = None,
                          on_announced: Callable[[str], Awaitable[None]] | None = None,
                          resume: Mapping[str, Any] | None = None,
                          on_parts: PartsCallback | None = None
                          ) -> tuple[FileObject, bool]:
        """Upload with the SDKs' flow: announce (302), PUT the bytes, preprocess; a file above
        `multipart_threshold` goes up in parts instead (initiate, the parts, complete).

        With `checksum` (SHA-256 hex), a server that already holds these bytes answers 409 with
        the existing file, which is returned instead. Returns the file and whether it was such
        an existing one. `on_announced` gets the new file's id before its bytes are sent (to
        record it, so that an upload cut short can be recognised as one's own). A multipart
        upload hands `on_parts` fields to merge into a checkpoint (and the parts sent so far)
        after initiating and after every part; that checkpoint given back as `resume`
        continues the upload with the parts not yet sent.
        """
        file_name = name or path.name
        file_type = path.suffix.lstrip(".").lower() or "jsonl"
        size = (await anyio.Path(path).stat()).st_size
        begun = MultipartState.from_checkpoint(resume or {})
        if size > self.multipart_threshold or begun is not None:
            return await self._upload_in_parts(
                path, size=size, form={"purpose": purpose, "file_name": file_name,
                                       "file_type": file_type, "checksum": checksum},
                resume=begun, replacing=list(resume or ()), on_parts=on_parts)
        form = {"purpose": purpose, "file_name": file_name, "file_type": file_type}
        if checksum:
            form["checksum"] = checksum
        for _ in range(ANNOUNCE_TRIES):
            start = await self._request("POST", "/files", idempotent=False, data=form,
                                        expect=(302, 409), follow_redirects=False)
            if start.status_code != 409:
                break
            try:
                return await self.retrieve_file(start.json()["file_id"]), True
            except NotFound:  # that upload was abandoned, and forgotten since: announce again
                continue
        else:
            msg = "the provider keeps naming an upload of these bytes it then forgets"
            raise ProviderUnavailable(msg)
        location = start.headers.get("location")
        file_id = start.headers.get("x-together-file-id")
        if not location or not file_id:
            msg = "the provider's upload answer lacks Location or X-Together-File-Id"
            raise ProviderUnavailable(msg)
        if on_announced is not None:
            await on_announced(file_id)
        try:
            put = await self._http.put(location, content=_file_chunks(path),
                                       headers={"Content-Length": str(size)})
        except httpx.TransportError as exc:
            raise error_from_transport(exc, "the upload URL") from None
        if put.status_code != 200:
            raise error_from_response(put)
        return await self.preprocess_file(file_id), False

    async def _upload_in_parts(self, path: Path, *, size: int, form: dict[str, Any],
                               resume: MultipartState | None, replacing: Iterable[str],
                               on_parts: PartsCallback | None) -> tuple[FileObject, bool]:
        """The multipart flow, continuing `resume` when its upload still takes parts (else
        abandoning it and beginning again)."""

        async def sent(number: int, etag: str, count: int) -> None:
            if on_parts is not None:
                await on_parts(MultipartState.part_fields(number, etag), count)

        state = resume
        if state is not None and state.of != (size, form["checksum"]):
            self._log.info("the file changed since its upload began; starting it again",
                           upload_id=state.upload_id)
            await self._abort_parts(state)
            state = None
        if state is not None:
            try:
                return await self._send_and_complete(path, state, on_sent=sent), False
            except (PartsExpired, NotFound) as exc:
                self._log.info("the interrupted upload cannot continue; starting it again",
                               upload_id=state.upload_id, reason=str(exc))
                await self._abort_parts(state)
        part_size, parts = plan_parts(size, self._part_size)
        start = await self._request(
            "POST", "/files/multipart/initiate", idempotent=False, expect=(200, 409),
            json={**{k: v for k, v in form.items() if v}, "file_size": size,
                  "num_parts": parts})
        if start.status_code == 409:
            return await self.retrieve_file(start.json()["file_id"]), True
        state = MultipartState.from_initiate(start.json(), part_size,
                                             of=(size, form["checksum"]))
        if on_parts is not None:
            await on_parts(state.checkpoint_fields(replacing=replacing), 0)
        try:
            return await self._send_and_complete(path, state, on_sent=sent), False
        except PermanentError:
            await self._abort_parts(state)
            raise

    async def _send_and_complete(self, path: Path, state: MultipartState, *,
                                 on_sent: Callable[[int, str, int], Awaitable[None]]
                                 ) -> FileObject:
        await send_parts(self._http, path, state, concurrency=self._part_concurrency,
                         retries=self._retries, on_sent=on_sent, sleep=self._sleep)
        body = await self._json("POST", "/files/multipart/complete", idempotent=True, json={
            "upload_id": state.upload_id, "file_id": state.file_id,
            "parts": state.completion()})
        return FileObject.model_validate(body.get("file", body))

    async def _abort_parts(self, state: MultipartState) -> None:
        """Tell the provider to drop an upload's parts (best effort: they expire anyway)."""
        with contextlib.suppress(StepError):
            await self._request("POST", "/files/multipart/abort", idempotent=True,
                                json={"upload_id": state.upload_id, "file_id": state.file_id})

    async def preprocess_file(self, file_id: str) -> FileObject:
        """Ask the provider to check an uploaded file's data (idempotent: a processed file is
        returned as it is)."""
        body = await self._json("POST", f"/files/{file_id}/preprocess", idempotent=True)
        return FileObject.model_validate(body)

    async def list_files(self) -> list[FileObject]:
        return await self._list("/files", FileObject)

    async def retrieve_file(self, file_id: str) -> FileObject:
        return await self._get(f"/files/{file_id}", FileObject)

    async def delete_file(self, file_id: str) -> None:
        await self._request("DELETE", f"/files/{file_id}", idempotent=True)

    # -- fine-tuning -------------------------------------------------------------------------

    async def create_fine_tune(self, request: Mapping[str, Any], *,
                               headers: Mapping[str, str] | None = None,
                               within: float | None = None) -> FineTuneJob:
        """Create a job. Not retried after an ambiguous failure (see the module docstring).
        With `within`, given up (an ambiguous failure) once that many seconds have passed:
        the connection is then reset, so no byte of it reaches the server later."""
        with anyio.move_on_after(math.inf if within is None else within) as scope:
            body = await self._json("POST", "/fine-tunes", idempotent=False,
                                    json=dict(request), headers=dict(headers or {}))
        if scope.cancelled_caught:
            msg = (f"creating the fine-tuning job took longer than {within:g}s (the time "
                   "this process surely holds the run); it may or may not exist")
            raise ProviderUnavailable(msg)
        return FineTuneJob.model_validate(body)

    async def retrieve_fine_tune(self, job_id: str) -> FineTuneJob:
        return await self._get(f"/fine-tunes/{job_id}", FineTuneJob)

    async def list_fine_tunes(self) -> list[FineTuneJob]:
        return await self._list("/fine-tunes", FineTuneJob)

    async def cancel_fine_tune(self, job_id: str) -> FineTuneJob:
        body = await self._json("POST", f"/fine-tunes/{job_id}/cancel", idempotent=True)
        return FineTuneJob.model_validate(body)

    async def fine_tune_events(self, job_id: str) -> list[FineTuneEvent]:
        return await self._list(f"/fine-tunes/{job_id}/events", FineTuneEvent)

    async def fine_tune_checkpoints(self, job_id: str) -> list[Checkpoint]:
        return await self._list(f"/fine-tunes/{job_id}/checkpoints", Checkpoint)

    async def estimate_price(self, request: Mapping[str, Any]) -> PriceEstimate:
        """What a job would cost (`POST /fine-tunes/estimate-price`; changes nothing)."""
        body = await self._json("POST", "/fine-tunes/estimate-price", idempotent=True,
                                json=dict(request))
        return PriceEstimate.model_validate(body)

    async def model_limits(self, model: str) -> dict[str, Any]:
        """`GET /fine-tunes/models/limits`: what a base model allows (epochs, LoRA ranks...)."""
        limits: dict[str, Any] = await self._json("GET", "/fine-tunes/models/limits",
                                                  idempotent=True, params={"model_name": model})
        return limits

    async def fine_tune_metrics(self, job_id: str, *,
                                since_step: int | None = None) -> list[dict[str, float]]:
        """The job's recorded metrics in order; with `since_step`, those of later training
        steps only (Together filters by a JSON body, even on GET)."""
        options = {} if since_step is None else {"json": {"global_step_from": since_step}}
        body = await self._json("GET", f"/fine-tunes/{job_id}/metrics", idempotent=True,
                                **options)
        metrics: list[dict[str, float]] = body.get("metrics", [])
        return metrics

    # -- models and their import jobs --------------------------------------------------------

    async def upload_model(self, request: Mapping[str, Any]) -> ModelUpload:
        """Import a model or adapter (`POST /models`). Raises ModelNameTaken for a used name."""
        body = await self._json("POST", "/models", idempotent=False, json=dict(request))
        data = body.get("data", body) if isinstance(body, dict) else body
        return ModelUpload.model_validate(data)

    async def list_models(self) -> list[dict[str, Any]]:
        body = await self._json("GET", "/models", idempotent=True)
        models: list[dict[str, Any]] = body if isinstance(body, list) else body.get("data", [])
        return models

    async def retrieve_job(self, job_id: str) -> UploadJob:
        return await self._get(f"/jobs/{job_id}", UploadJob)

    async def list_jobs(self) -> list[UploadJob]:
        return await self._list("/jobs", UploadJob)

    # -- the v2 model API: registered models, filled by remote uploads ----------------------

    async def project_id(self) -> str:
        """The project the key belongs to (given, else asked of `GET /v3/whoami` once)."""
        if self._project_id is None:
            body = await self._json("GET", f"{self._root}/v3/whoami", idempotent=True)
            project = body.get("project") if isinstance(body, dict) else None
            found = project.get("id") if isinstance(project, dict) else body.get("project_id")
            if not isinstance(found, str) or not found:
                msg = "the provider's /v3/whoami names no project; set the step's project_id"
                raise ProviderUnavailable(msg)
            self._project_id = found
        return self._project_id

    def _models_v2(self, project: str) -> str:
        return f"{self._root}/v2/projects/{project}/models"

    async def _pages(self, url: str, model: type[M]) -> list[M]:
        """Every item of a cursor-paged list (`data`, `next_cursor`, `?after=`)."""
        items: list[M] = []
        after: str | None = None
        for _ in range(MAX_PAGES):
            params = {"after": after} if after else {}
            body = await self._json("GET", url, idempotent=True, params=params)
            items += [model.model_validate(item) for item in body.get("data") or []]
            after = body.get("next_cursor")
            if not after:
                break
        return items

    async def register_model(self, project: str, *, name: str, base_model: str,
                             model_type: str, description: str) -> RegisteredModel:
        """Register a model or adapter (v2). Raises ModelNameTaken for a used name."""
        body = await self._json("POST", self._models_v2(project), idempotent=False, json={
            "name": name, "baseModelId": base_model, "type": model_type,
            "description": description})
        return RegisteredModel.model_validate(body)

    async def registered_models(self, project: str) -> list[RegisteredModel]:
        return await self._pages(self._models_v2(project), RegisteredModel)

    async def start_remote_upload(self, project: str, *, model_id: str, remote_url: str,
                                  token: str | None = None) -> RemoteUpload:
        """Import files into a registered model from Hugging Face or a presigned URL."""
        request = {"modelId": model_id, "remoteUrl": remote_url}
        if token:
            request["token"] = token
        body = await self._json("POST", f"{self._models_v2(project)}/uploads", idempotent=False,
                                json=request)
        return RemoteUpload.model_validate(body)

    async def retrieve_remote_upload(self, project: str, upload_id: str) -> RemoteUpload:
        return await self._get(f"{self._models_v2(project)}/uploads/{upload_id}", RemoteUpload)

    async def remote_uploads(self, project: str) -> list[RemoteUpload]:
        return await self._pages(f"{self._models_v2(project)}/uploads", RemoteUpload)

    # -- inference ---------------------------------------------------------------------------

    async def complete(self, model: str, prompt: str, **params: Any) -> Completion:
        body = await self._json("POST", "/completions", idempotent=True,
                                json={"model": model, "prompt": prompt, **params})
        choice = body["choices"][0]
        return Completion(text=choice.get("text", ""), finish_reason=choice.get("finish_reason"),
                          model=body.get("model", model),
                          usage=Usage.model_validate(body.get("usage") or {}))

    async def stream(self, model: str, *, prompt: str | None = None,
                     messages: list[dict[str, Any]] | None = None,
                     **params: Any) -> Completion:
        """A completion (`prompt`) or chat (`messages`) streamed as server-sent events, as
        Together sends them: the whole answer, and how long its first piece of text took.
        Not retried here (a stream half read cannot be resumed): the step's policy retries."""
        import json  # noqa: PLC0415
        import time  # noqa: PLC0415

        chat = messages is not None
        path = "/chat/completions" if chat else "/completions"
        body = {"model": model, **({"messages": messages} if chat else {"prompt": prompt}),
                **params, "stream": True}
        started = time.monotonic()
        first: float | None = None
        pieces: list[str] = []
        finish: str | None = None
        usage: dict[str, Any] = {}
        try:
            async with self._http.stream("POST", path, json=body, headers=self._auth) as answer:
                if answer.status_code != 200:
                    await answer.aread()
                    raise error_from_response(answer)
                async for line in answer.aiter_lines():
                    if not line.startswith("data:") or line[5:].strip() == "[DONE]":
                        continue
                    chunk = json.loads(line[5:])
                    choice = (chunk.get("choices") or [{}])[0]
                    text = ((choice.get("delta") or {}).get("content") if chat
                            else choice.get("text")) or ""
                    if text and first is None:
                        first = time.monotonic() - started
                    pieces.append(text)
                    finish = choice.get("finish_reason") or finish
                    usage = chunk.get("usage") or usage
        except httpx.TransportError as exc:
            raise error_from_transport(exc, f"{self.base_url}{path}") from None
        except ValueError as exc:  # a line that is not JSON
            msg = f"the provider's stream from {path} is not server-sent JSON: {exc}"
            raise ProviderUnavailable(msg) from None
        return Completion(text="".join(pieces), finish_reason=finish, model=model,
                          usage=Usage.model_validate(usage),
                          first_token_after=first if first is not None
                          else time.monotonic() - started)

    async def chat(self, model: str, messages: list[dict[str, Any]],
                   **params: Any) -> Completion:
        body = await self._json("POST", "/chat/completions", idempotent=True,
                                json={"model": model, "messages": messages, **params})
        choice = body["choices"][0]
        return Completion(text=(choice.get("message") or {}).get("content") or "",
                          finish_reason=choice.get("finish_reason"),
                          model=body.get("model", model),
                          usage=Usage.model_validate(body.get("usage") or {}))


_PROXIES = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY",
            "all_proxy")


def _abortive_transport(limits: httpx.Limits) -> httpx.AsyncHTTPTransport | None:
    """Connections closed with a reset (SO_LINGER 0), not a graceful FIN: a request given up
    on (a create past its deadline, cut off by a partition) has its unsent bytes discarded
    by the kernel instead of retransmitted once the network is back, where they would make
    the server act for a client that already moved on. None (httpx's own transport) where
    the environment names a proxy: a transport of ours would make httpx ignore it."""
    import os  # noqa: PLC0415
    import socket  # noqa: PLC0415
    import struct  # noqa: PLC0415

    if any(os.environ.get(name) for name in _PROXIES):
        return None
    return httpx.AsyncHTTPTransport(limits=limits, socket_options=[
        (socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))])
