"""A fleet of `orchestrator worker` processes on one state database, SQLite or PostgreSQL.

- throughput: 5-step no-op runs (a chain of `core/echo`), queued all at once, with 1, 2 and 4
  worker processes on this machine: runs per second from queued to the last one finished.
- latency: on an idle fleet (two workers, polling every second as by default), the time from
  a run being queued to its `run_started` event, one run at a time, each queued at a random
  moment of the workers' poll (PostgreSQL wakes the workers with NOTIFY; SQLite has only the
  poll): p50, p90 and the slowest. Target on PostgreSQL: p90 <= 100 ms.
- waiting: 10,000 runs waiting in a durable `core/sleep`, spread over 4 workers: the CPU the
  fleet spends while they wait (target < 5% of one core), then how long the fleet takes to
  stop (SIGTERM: every run handed back to the queue; target 10 s).

    python -m bench.fleet [--runs 200] [--samples 50] [--waiting 10000] [--postgres URL]

Each figure comes from a fresh database (a new SQLite file, or a new schema of `--postgres`,
dropped after). The workers are real processes: their start-up is not counted, only the work.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import anyio

from bench.serve_idle import cpu_seconds
from orchestrator.ids import new_batch_id, new_run_id
from orchestrator.store.base import StateStore
from orchestrator.store.opening import open_store
from orchestrator.store.records import NewBatch, NewRun, RunStatus

POSTGRES = "postgresql://postgres@127.0.0.1:5432/test"
CHAIN = "name: chain\nsteps:\n  s0: {uses: core/echo, with: {v: 0}}\n" + "".join(
    f'  s{i}: {{uses: core/echo, with: {{v: "${{{{ steps.s{i - 1}.outputs.v }}}}"}}}}\n'
    for i in range(1, 5))
STOP_LIMIT = 120.0
"""Seconds a fleet is given to stop before the bench kills it and says so."""
SLEEPER = "name: sleeper\nsteps:\n  nap: {uses: core/sleep, with: {duration: 1h}}\n"


@contextlib.contextmanager
def database(kind: str, folder: Path, postgres: str) -> Iterator[str]:
    """A fresh, empty state database of `kind`; its URL."""
    name = f"bench_{time.monotonic_ns()}"
    if kind == "sqlite":
        yield f"sqlite:///{folder / f'{name}.db'}"
        return
    import psycopg

    try:
        yield f"{postgres}?schema={name}"
    finally:
        with psycopg.connect(postgres, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")  # type: ignore[arg-type]


class Fleet:
    """`count` worker processes on `url`, serving once entered; stopped (Ctrl-C) on exit."""

    def __init__(self, url: str, folder: Path, count: int, *, max_runs: int = 100,
                 poll: str = "1s") -> None:
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("ORCH_")}
        self.env.update(ORCH_STATE_URL=url, ORCH_WORKER_POLL_INTERVAL=poll,
                        ORCH_LOG_LEVEL="warning")
        self.folder, self.count, self.max_runs = folder, count, max_runs
        self.procs: list[subprocess.Popen[bytes]] = []

    def __enter__(self) -> Fleet:
        for n in range(self.count):
            log = self.folder / f"worker-{n}-{time.monotonic_ns()}.log"
            with log.open("wb") as out:  # a file, not a pipe: a full pipe would stall it
                self.procs.append(subprocess.Popen(
                    [sys.executable, "-m", "orchestrator", "worker", "--max-runs",
                     str(self.max_runs)], cwd=self.folder, env=self.env,
                    stdout=subprocess.DEVNULL, stderr=out))
            deadline = time.monotonic() + 60
            while b"Ctrl-C stops" not in log.read_bytes():
                if self.procs[-1].poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"a worker did not start: {log.read_text()[-2000:]}")
                time.sleep(0.02)  # polling the log for readiness, with a deadline
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> float:
        """SIGTERM every worker; the seconds until the last one exited (each one still
        running after STOP_LIMIT is killed, and named in the error)."""
        started = time.monotonic()
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        late = []
        for n, proc in enumerate(self.procs):
            try:
                proc.wait(timeout=max(0.1, STOP_LIMIT - (time.monotonic() - started)))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                late.append(n)
        if late:
            msg = f"workers {late} were still running {STOP_LIMIT:g}s after SIGTERM"
            raise RuntimeError(msg)
        return time.monotonic() - started

    def cpu(self) -> float:
        return sum(cpu_seconds(proc.pid) for proc in self.procs)


async def queue_batch(store: StateStore, text: str, runs: int) -> str:
    """`runs` queued runs of `text` in one transaction (cells of a batch without a cap)."""
    batch_id = new_batch_id()
    await store.create_batch(NewBatch(batch_id, "p", "/p.yaml", text, {}),
                             [NewRun(f"{batch_id}-{n}", "p", "/p.yaml", text, {},
                                     status=RunStatus.QUEUED) for n in range(runs)])
    return batch_id


async def count(store: StateStore, batch_id: str, status: RunStatus) -> int:
    return sum(r.status is status for r in await store.list_runs(batch_id=batch_id,
                                                                 limit=None))


async def until(check: Callable[[], Awaitable[bool]], deadline: float, *,
                every: float = 0.02) -> None:
    """Poll `check()` every `every` seconds until true; fails past `deadline` seconds."""
    limit = time.monotonic() + deadline
    while not await check():
        if time.monotonic() > limit:
            raise RuntimeError("timed out")
        await anyio.sleep(every)


def throughput(kind: str, workers: int, runs: int, postgres: str) -> float:
    """Runs per second of `runs` chain runs over `workers` processes."""
    with tempfile.TemporaryDirectory() as tmp, database(kind, Path(tmp), postgres) as url:
        async def measure() -> float:
            async with open_store(url) as store:
                with Fleet(url, Path(tmp), workers, poll="100ms"):
                    started = time.perf_counter()
                    batch = await queue_batch(store, CHAIN, runs)
                    # Asked every 50 ms: reading every run's row more often would take the
                    # fleet's CPU (the figure's resolution is 50 ms in seconds of work).
                    await until(lambda: _all(store, batch, runs), 600, every=0.05)
                    return runs / (time.perf_counter() - started)

        return anyio.run(measure)


async def _all(store: StateStore, batch: str, runs: int) -> bool:
    return await count(store, batch, RunStatus.SUCCEEDED) == runs


def latency(kind: str, samples: int, postgres: str) -> list[float]:
    """Seconds from queued to started, one run at a time, on an idle fleet of two."""
    with tempfile.TemporaryDirectory() as tmp, database(kind, Path(tmp), postgres) as url:
        async def measure() -> list[float]:
            found = []
            rng = random.Random(7)
            async with open_store(url) as store:
                with Fleet(url, Path(tmp), 2, poll="1s"):
                    for _ in range(samples):
                        run = await store.create_run(NewRun(
                            new_run_id(), "chain", "/chain.yaml", CHAIN, {},
                            status=RunStatus.QUEUED))

                        async def done(run_id: str = run.id) -> bool:
                            return (await store.get_run(run_id)).status.finished

                        await until(done, 60)
                        events = await store.get_events(run.id)
                        started = next(e.ts for e in events if e.kind == "run_started")
                        found.append(started - run.created_at)
                        # Idle again, then queued at a random moment of the poll's second
                        # (a fixed pause would always land at the same point of it).
                        await anyio.sleep(0.3 + rng.random())
            return found

        return anyio.run(measure)


def waiting_cpu(kind: str, runs: int, seconds: float, postgres: str) -> tuple[float, float]:
    """Percent of one core 4 workers spend while `runs` runs sleep (all of them started), and
    the seconds they take to stop, every run handed back."""
    with tempfile.TemporaryDirectory() as tmp, database(kind, Path(tmp), postgres) as url:
        async def measure() -> tuple[float, float]:
            async with open_store(url) as store:
                with Fleet(url, Path(tmp), 4, max_runs=runs) as fleet:
                    batch = await queue_batch(store, SLEEPER, runs)

                    async def all_asleep() -> bool:
                        steps = 0
                        for r in await store.list_runs(batch_id=batch, limit=None):
                            if r.status is RunStatus.RUNNING and r.lease_owner is not None:
                                steps += 1
                        return steps == runs

                    await until(all_asleep, 900, every=1.0)
                    await anyio.sleep(5)  # settling: the last runs' first checkpoints
                    before, started = fleet.cpu(), time.monotonic()
                    await anyio.sleep(seconds)
                    share = 100 * (fleet.cpu() - before) / (time.monotonic() - started)
                    stopped = fleet.stop()
                handed_back = await count(store, batch, RunStatus.QUEUED)
                if handed_back != runs:
                    msg = f"{runs - handed_back} runs were not handed back at the stop"
                    raise RuntimeError(msg)
                return share, stopped

        return anyio.run(measure)


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def main(argv: list[str] | None = None) -> list[tuple[str, float]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200, help="runs per throughput figure")
    parser.add_argument("--samples", type=int, default=50, help="runs timed for latency")
    parser.add_argument("--waiting", type=int, default=10_000, help="sleeping runs (0: skip)")
    parser.add_argument("--seconds", type=float, default=20.0, help="CPU window while waiting")
    parser.add_argument("--postgres", default=POSTGRES, help="a PostgreSQL server ('': skip)")
    args = parser.parse_args(argv)
    kinds = ["sqlite", "postgresql"] if args.postgres else ["sqlite"]
    rows = []
    print(f"fleet of worker processes: throughput of {args.runs} 5-step no-op runs")
    for kind in kinds:
        figures = [throughput(kind, n, args.runs, args.postgres) for n in (1, 2, 4)]
        scaling = ", ".join(f"{n} workers {f:.0f} runs/s" for n, f in zip((1, 2, 4), figures,
                                                                           strict=True))
        print(f"  {kind:<10} {scaling}")
        rows += [(f"fleet {kind}: runs/s with {n} workers", f)
                 for n, f in zip((1, 2, 4), figures, strict=True)]
    print(f"queued to started on an idle fleet of 2 (poll 1 s), {args.samples} runs")
    for kind in kinds:
        found = latency(kind, args.samples, args.postgres)
        p50, p90 = percentile(found, 0.5) * 1000, percentile(found, 0.9) * 1000
        slowest = max(found) * 1000
        target = "  (target: p90 <= 100)" if kind == "postgresql" else ""
        print(f"  {kind:<10} p50 {p50:6.1f} ms   p90 {p90:6.1f} ms   max {slowest:6.1f} ms"
              f"{target}")
        rows += [(f"fleet {kind}: queued->started p50 ms", p50),
                 (f"fleet {kind}: queued->started p90 ms", p90),
                 (f"fleet {kind}: queued->started max ms", slowest)]
    if args.waiting:
        print(f"{args.waiting:,} runs asleep over 4 workers: CPU of the fleet over "
              f"{args.seconds:g}s, then the time to stop it (SIGTERM)")
        for kind in kinds:
            share, stopped = waiting_cpu(kind, args.waiting, args.seconds, args.postgres)
            print(f"  {kind:<10} {share:6.2f} % of one core (target < 5); stopped in "
                  f"{stopped:.1f} s, every run handed back (target 10)")
            rows += [(f"fleet {kind}: % of a core, {args.waiting} waiting", share),
                     (f"fleet {kind}: s to stop, {args.waiting} waiting", stopped)]
    return rows


if __name__ == "__main__":
    main()
