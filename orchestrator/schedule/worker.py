"""The worker loop: claim runs that need an executor and execute them, many at once.

Claims go through the store (`claim_runs`), so any number of workers on one state database
never execute a run twice: queued runs (`run --detach`, the scheduler), runs whose executor
crashed (at once when it ran on this machine and its process is gone, else once its lease
expired), and runs whose cancellation nobody carries out. While it has free
capacity the worker asks again every `poll_interval`, and at once when the store announces
work (PostgreSQL's NOTIFY: a run queued or put back); a run finishing frees capacity at once.
Where work is announced, the poll only finds crashed executors' runs (and failed
cancellations), and runs `ANNOUNCED_POLL_FACTOR` times less often: a fleet of 4 idle workers
over 10,000 waiting runs spent 4.7-6.7 % of a core polling every second, 2.4 % every 5 s.

A worker that is stopped (Ctrl-C, SIGTERM) puts the runs it was executing back in the queue,
their remote jobs left running: the next worker picks them up where they were.
"""

from __future__ import annotations

import functools
import math
from contextlib import suppress

import anyio
from anyio.abc import TaskStatus

from orchestrator.engine.orchestrator import Orchestrator
from orchestrator.engine.rungroup import RunGroup
from orchestrator.errors import ConfigError, LeaseLost, RunBusy, RunStranded
from orchestrator.log import get_logger
from orchestrator.owners import owner_is_dead
from orchestrator.store.base import WORK
from orchestrator.store.records import Lease, RunStatus

__all__ = ["ANNOUNCED_POLL_FACTOR", "Worker"]

ANNOUNCED_POLL_FACTOR = 5


class Worker:
    """Executes claimed runs on `orch` until cancelled."""

    def __init__(self, orch: Orchestrator, *, max_runs: int = 100,
                 poll_interval: float = 1.0) -> None:
        self._orch = orch
        self._max_runs = max_runs
        self._poll_interval = poll_interval * (ANNOUNCED_POLL_FACTOR if orch.store.announces
                                               else 1)
        self._freed = anyio.Event()
        self._log = get_logger()
        self.finished: list[tuple[str, RunStatus]] = []
        """(run id, status) of every run this worker finished, in order (for tests and stats)."""

    async def run_forever(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
                          ) -> None:
        async with anyio.create_task_group() as tg:
            runs = RunGroup(tg)
            # A store that announces queued runs (PostgreSQL) wakes the loop at once.
            tg.start_soon(self._orch.store.watch, WORK, self._wake, name="watch for work")
            task_status.started()
            try:
                while True:
                    await self.claim_once(runs)
                    timeout = self._poll_interval if len(runs) < self._max_runs else math.inf
                    with anyio.move_on_after(timeout):
                        await self._freed.wait()
                    self._freed = anyio.Event()
            finally:  # stopped: every run put back in the queue, a few at a time
                with anyio.CancelScope(shield=True):
                    await runs.stop()

    def _wake(self) -> None:
        self._freed.set()

    async def claim_once(self, runs: RunGroup) -> list[str]:
        """Claim as many runs as there is room for and start them in `runs`; their ids."""
        room = self._max_runs - len(runs)
        if room <= 0:
            return []
        try:
            # An executor on this machine whose process is gone is known dead at once: its
            # runs are taken over now, not when its lease expires.
            dead = [owner for owner in await self._orch.store.lease_owners()
                    if owner != self._orch.owner and owner_is_dead(owner)]
            leases = await self._orch.store.claim_runs(
                self._orch.owner, limit=room, ttl=self._orch.config.lease_ttl,
                max_recoveries=self._orch.config.max_recoveries, dead_owners=dead)
        except Exception as exc:  # noqa: BLE001  (the store may be busy; try again later)
            self._log.warning("could not claim runs", error=f"{type(exc).__name__}: {exc}")
            return []
        for lease in leases:
            runs.start(f"run {lease.run_id}", functools.partial(self._execute, lease))
        return [lease.run_id for lease in leases]

    async def _execute(self, lease: Lease) -> None:
        log = self._log.bind(run_id=lease.run_id)
        try:
            plan = await self._orch.plan_resume(lease.run_id)
            log.info("executing a claimed run", pipeline=plan.pipeline.name,
                     status=plan.run.status.value)
            if plan.nothing_to_do:
                await self._orch.store.release_lease(lease)
                return
            try:
                outcome = await self._orch.execute(plan, lease=lease, requeue=True)
            except ConfigError as exc:  # e.g. a secret this worker's environment lacks
                await self._orch.give_up(lease, str(exc))
                self.finished.append((lease.run_id, RunStatus.FAILED))
                return
            self.finished.append((lease.run_id, outcome.status))
        except ConfigError as exc:  # the stored pipeline no longer loads here
            log.error("cannot execute the run", error=str(exc))  # noqa: TRY400  (no trace)
            await self._orch.give_up(lease, str(exc))
            self.finished.append((lease.run_id, RunStatus.FAILED))
        except (LeaseLost, RunBusy, RunStranded) as exc:
            log.warning("run left to another executor", error=str(exc))
        except Exception as exc:  # one run's trouble must not stop the worker
            log.exception("executing the run failed", error=f"{type(exc).__name__}: {exc}")
            # Give the run back: held, its lease would be renewed by this process's heartbeat
            # for as long as it lives, and no one would execute it.
            with anyio.CancelScope(shield=True), suppress(Exception):
                await self._orch.store.release_lease(lease)
        finally:
            self._freed.set()
