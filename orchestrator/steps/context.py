"""What a step is handed when it runs."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import anyio

from orchestrator.errors import PermanentError
from orchestrator.inputfiles import format_size
from orchestrator.process import hold
from orchestrator.store.rows import MAX_JSON_VALUE

if TYPE_CHECKING:
    from orchestrator.store.records import AliasMove, MetricPoint, ModelEntry

__all__ = ["NO_CLIENTS", "Clients", "ModelRegistry", "StepContext", "StepHost", "StepLogger",
           "process_lock"]

C = TypeVar("C")

_LOCAL_LOCKS: dict[str, anyio.Lock] = hold(
    {}, name="process locks", why="a step's exclusive block, where no state store grants locks")


@asynccontextmanager
async def process_lock(name: str) -> AsyncIterator[None]:
    """`exclusive` where no state store grants locks: one holder of `name` in this process."""
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

    async def move_alias(self, move: AliasMove) -> AliasMove | None:
        """Point an alias at a model; None if it points there already."""
        ...


class StepHost(Protocol):
    """The engine's side of a step's context: what the steps of one run share, and where a
    step's writes go.

    One host serves every step of a run (its executor), so a context holds the host, the
    step and the attempt, not a closure per capability: a waiting run's context was 1.1 KiB
    of closures.
    """

    @property
    def run_id(self) -> str: ...
    @property
    def run_name(self) -> str: ...
    @property
    def pipeline_dir(self) -> Path: ...
    @property
    def artifacts_dir(self) -> Path | None: ...
    @property
    def clients(self) -> Clients: ...
    @property
    def models(self) -> ModelRegistry | None: ...

    def step_log(self, step_id: str, attempt: int) -> StepLogger:
        """The attempt's logger, its lines at info and above kept with the attempt."""
        ...

    async def write_checkpoint(self, step_id: str, attempt: int, whole: dict[str, Any],
                               changed: dict[str, Any]) -> None:
        """Persist the step's whole checkpoint before returning; `changed` is all the event
        log needs."""
        ...

    def write_metrics(self, points: list[MetricPoint]) -> None:
        """Queue a job's metric points for the run's next commit."""
        ...

    async def secure_lease(self) -> float:
        """Renew the run's lease now; the seconds no other executor can take the run for."""
        ...

    def report(self, step_id: str, fields: Mapping[str, Any]) -> None:
        """Take a step's live progress (status, step, total_steps, loss...)."""
        ...

    def cancel_requested(self) -> bool: ...

    def exclusive(self, step_id: str, name: str) -> AbstractAsyncContextManager[None]:
        """Hold the lock `name` for the block: one holder at a time across every process
        that shares the state store (or within the process, without one)."""
        ...


class StepContext:
    """The run-time view a step gets of its run.

    `idempotency_key` is stable across attempts and resumes of this step (`run_id:step_id`): a
    step that causes a remote effect passes it wherever the remote side accepts one, or uses it
    to recognise an effect it caused before a crash.

    `last_checkpoint` is what the step saved with `checkpoint()` in an earlier attempt or before
    a crash, or `{}` on the first attempt. A step that must not repeat work checks it first.
    """

    __slots__ = ("_host", "_log", "attempt", "last_checkpoint", "step_id")

    def __init__(self, host: StepHost, step_id: str, attempt: int,
                 last_checkpoint: Mapping[str, Any]) -> None:
        self._host = host
        self.step_id = step_id
        self.attempt = attempt
        self.last_checkpoint: dict[str, Any] = dict(last_checkpoint)
        self._log: StepLogger | None = None

    @property
    def run_id(self) -> str:
        return self._host.run_id

    @property
    def run_name(self) -> str:
        return self._host.run_name

    @property
    def idempotency_key(self) -> str:
        return f"{self._host.run_id}:{self.step_id}"

    @property
    def pipeline_dir(self) -> Path:
        return self._host.pipeline_dir

    @property
    def artifacts_dir(self) -> Path | None:
        """The run's own folder for files it makes (charts, reports), created by whoever
        writes first; None where the engine keeps no files (a test's context)."""
        return self._host.artifacts_dir

    @property
    def clients(self) -> Clients:
        return self._host.clients

    @property
    def models(self) -> ModelRegistry | None:
        return self._host.models

    @property
    def log(self) -> StepLogger:
        """The attempt's logger (made on first use: most steps that wait never log)."""
        if self._log is None:
            self._log = self._host.step_log(self.step_id, self.attempt)
        return self._log

    def client(self, kind: type[C]) -> C:
        """The client of type `kind` that this run's provider offers (e.g. TogetherClient);
        PermanentError, saying which provider the run has, if it offers none."""
        return self._host.clients.get(kind)

    def report(self, fields: Mapping[str, Any]) -> None:
        """Show the step's live progress (status, step, total_steps, loss...) on a terminal."""
        self._host.report(self.step_id, fields)

    def exclusive(self, name: str) -> AbstractAsyncContextManager[None]:
        """`async with ctx.exclusive(name):` one holder of `name` at a time, across processes
        sharing the state store: e.g. one upload of the same bytes, the others then reuse it."""
        return self._host.exclusive(self.step_id, name)

    @property
    def cancel_requested(self) -> bool:
        """True once the run is being cancelled (not merely interrupted): a step that started
        something remote and paid should cancel it before it stops."""
        return self._host.cancel_requested()

    async def checkpoint(self, **data: Any) -> None:
        """Merge `data` into the step's checkpoint and commit it before returning.

        Once this returns, a crash of the process cannot lose `data`: the next attempt, or the
        resumed run, sees it in `last_checkpoint`. Values must be JSON-serialisable.
        """
        merged = {**self.last_checkpoint, **data}
        try:
            size = len(json.dumps(merged))
        except (TypeError, ValueError) as exc:
            msg = f"checkpoint values must be JSON-serialisable: {exc}"
            raise TypeError(msg) from None
        if size > MAX_JSON_VALUE:
            msg = (f"a checkpoint of {format_size(size)} of JSON; the store keeps at most "
                   f"{format_size(MAX_JSON_VALUE)}: keep large state in a file and its path "
                   "in the checkpoint")
            raise PermanentError(msg)
        await self._host.write_checkpoint(self.step_id, self.attempt, merged, data)
        self.last_checkpoint = merged

    async def secure_lease(self) -> float:
        """Before an effect outside the state store that must happen once (a paid job's
        create): make sure this executor still holds the run, and for how long no other can
        take it over (seconds, counted from now). Finish the effect, or give it up, within
        that time: a process cut off from the database after this call may still reach the
        provider, and the run's next executor must not find the effect half made.
        Raises LeaseLost when the run was taken over meanwhile."""
        return await self._host.secure_lease()

    def record_metrics(self, points: list[MetricPoint]) -> None:
        """Keep a job's figures with the run (`metrics RUN`, the loss curves): written with
        the step's next checkpoint or output, or within a moment; a point recorded again
        fills in what it lacked (see `MetricPoint`)."""
        if points:
            self._host.write_metrics(points)

    def resolve_path(self, path: str | Path) -> Path:
        """A path from the pipeline, made absolute against the pipeline file's folder."""
        candidate = Path(path).expanduser()
        return candidate if candidate.is_absolute() else self.pipeline_dir / candidate
