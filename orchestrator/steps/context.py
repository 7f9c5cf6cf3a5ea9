"""What a step is handed when it runs."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import anyio

from orchestrator.errors import PermanentError

if TYPE_CHECKING:
    from orchestrator.store.records import MetricPoint, ModelEntry

__all__ = ["NO_CLIENTS", "CheckpointWriter", "Clients", "Exclusive", "MetricsWriter",
           "ModelRegistry", "ProgressReporter", "StepContext", "StepLogger"]

C = TypeVar("C")

CheckpointWriter = Callable[[dict[str, Any], dict[str, Any]], Awaitable[None]]
"""Persists a step's whole checkpoint dict before returning (the engine's side of
`checkpoint`); the second dict is what changed, which is all the event log needs."""

MetricsWriter = Callable[[list["MetricPoint"]], None]
"""Queues a job's metric points for the run's next commit (the engine's side of
`record_metrics`)."""

ProgressReporter = Callable[[Mapping[str, Any]], None]
"""Takes a step's live progress (status, step, total_steps, loss...); shown on a terminal."""

Exclusive = Callable[[str], AbstractAsyncContextManager[None]]
"""Holds a named lock for the block: one holder at a time across every process that shares
the state store (the engine's), or within this process (the default)."""

_LOCAL_LOCKS: dict[str, anyio.Lock] = {}


@asynccontextmanager
async def _process_lock(name: str) -> AsyncIterator[None]:
    async with _LOCAL_LOCKS.setdefault(name, anyio.Lock()):
        yield


class Clients:
    """The clients a run's provider offers its steps, found by their type.

    A step asks for the client it speaks (`ctx.client(TogetherClient)`), so a provider of
    another kind, or none, is a clear refusal instead of an attribute error half-way through.
    """

    __slots__ = ("_clients", "provider")

    def __init__(self, *clients: object, provider: str | None = None) -> None:
        self._clients = clients
        self.provider = provider
        """The provider the clients belong to, for messages (never a key)."""

    def get(self, kind: type[C]) -> C:
        """The client of type `kind`; PermanentError if this run's provider has none."""
        for client in self._clients:
            if isinstance(client, kind):
                return client
        where = (f"the run's provider {self.provider} offers none" if self.provider
                 else "the run has no provider")
        msg = (f"this step needs a {kind.__name__}, but {where} (setting provider: local or "
               "together)")
        raise PermanentError(msg)


NO_CLIENTS = Clients()


class StepLogger(Protocol):
    """`ctx.log`: structlog's level methods and `bind`. What a step logs at info and above is
    also kept with its attempt (`logs RUN` shows it, whichever process ran the step)."""

    def bind(self, **fields: Any) -> StepLogger: ...
    def debug(self, event: str, *args: Any, **fields: Any) -> Any: ...
    def info(self, event: str, *args: Any, **fields: Any) -> Any: ...
    def warning(self, event: str, *args: Any, **fields: Any) -> Any: ...
    def error(self, event: str, *args: Any, **fields: Any) -> Any: ...
    def exception(self, event: str, *args: Any, **fields: Any) -> Any: ...


class ModelRegistry(Protocol):
    """Where `registry/*` steps record models (the state store's registry)."""

    async def record(self, entry: ModelEntry) -> ModelEntry: ...


def _no_progress(_: Mapping[str, Any]) -> None:
    return None


def _never() -> bool:
    return False


def _no_metrics(_: list[MetricPoint]) -> None:
    return None


class StepContext:
    """The run-time view a step gets of its run.

    `idempotency_key` is stable across attempts and resumes of this step (`run_id:step_id`): a
    step that causes a remote effect passes it wherever the remote side accepts one, or uses it
    to recognise an effect it caused before a crash.

    `last_checkpoint` is what the step saved with `checkpoint()` in an earlier attempt or before
    a crash, or `{}` on the first attempt. A step that must not repeat work checks it first.
    """

    __slots__ = (
        "_cancel_requested",
        "_write_checkpoint",
        "_write_metrics",
        "artifacts_dir",
        "attempt",
        "clients",
        "exclusive",
        "idempotency_key",
        "last_checkpoint",
        "log",
        "models",
        "pipeline_dir",
        "report",
        "run_id",
        "run_name",
        "step_id",
    )

    def __init__(
        self,
        *,
        run_id: str,
        run_name: str,
        step_id: str,
        attempt: int,
        pipeline_dir: Path,
        log: StepLogger,
        last_checkpoint: Mapping[str, Any],
        write_checkpoint: CheckpointWriter,
        clients: Clients = NO_CLIENTS,
        models: ModelRegistry | None = None,
        report: ProgressReporter = _no_progress,
        cancel_requested: Callable[[], bool] = _never,
        exclusive: Exclusive = _process_lock,
        write_metrics: MetricsWriter = _no_metrics,
        artifacts_dir: Path | None = None,
    ) -> None:
        self.run_id = run_id
        self.run_name = run_name
        self.step_id = step_id
        self.attempt = attempt
        self.idempotency_key = f"{run_id}:{step_id}"
        self.pipeline_dir = pipeline_dir
        self.log = log
        self.clients = clients
        self.last_checkpoint: dict[str, Any] = dict(last_checkpoint)
        self._write_checkpoint = write_checkpoint
        self._write_metrics = write_metrics
        self.artifacts_dir = artifacts_dir
        """The run's own folder for files it makes (charts, reports), created by whoever
        writes first; None where the engine keeps no files (a test's context)."""
        self.models = models
        self.report = report
        self._cancel_requested = cancel_requested
        self.exclusive = exclusive
        """`async with ctx.exclusive(name):` one holder of `name` at a time, across processes
        sharing the state store: e.g. one upload of the same bytes, the others then reuse it."""

    def client(self, kind: type[C]) -> C:
        """The client of type `kind` that this run's provider offers (e.g. TogetherClient);
        PermanentError, saying which provider the run has, if it offers none."""
        return self.clients.get(kind)

    @property
    def cancel_requested(self) -> bool:
        """True once the run is being cancelled (not merely interrupted): a step that started
        something remote and paid should cancel it before it stops."""
        return self._cancel_requested()

    async def checkpoint(self, **data: Any) -> None:
        """Merge `data` into the step's checkpoint and commit it before returning.

        Once this returns, a crash of the process cannot lose `data`: the next attempt, or the
        resumed run, sees it in `last_checkpoint`. Values must be JSON-serialisable.
        """
        merged = {**self.last_checkpoint, **data}
        try:
            json.dumps(merged)
        except (TypeError, ValueError) as exc:
            msg = f"checkpoint values must be JSON-serialisable: {exc}"
            raise TypeError(msg) from None
        await self._write_checkpoint(merged, data)
        self.last_checkpoint = merged

    def record_metrics(self, points: list[MetricPoint]) -> None:
        """Keep a job's figures with the run (`metrics RUN`, the loss curves): written with
        the step's next checkpoint or output, or within a moment; a point recorded again
        fills in what it lacked (see `MetricPoint`)."""
        if points:
            self._write_metrics(points)

    def resolve_path(self, path: str | Path) -> Path:
        """A path from the pipeline, made absolute against the pipeline file's folder."""
        candidate = Path(path).expanduser()
        return candidate if candidate.is_absolute() else self.pipeline_dir / candidate
