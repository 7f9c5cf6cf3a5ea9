"""A soak: a fleet of workers on PostgreSQL under a stream of LoRA runs, with random kills,
network partitions and one database restart, for a bounded time; then what it did.

Each worker is a host of its own (a network namespace, bench/netns.py; where namespaces
cannot be made the workers share this machine's network and no partition is cut, said in one
line), the database a PostgreSQL server of the bench's own (bench/pgserver.py: restarted once,
half way), the provider `orchestrator local-api` over the network. A run is submitted every
`--every` seconds with `run --detach`; every few seconds a random worker is SIGKILLed (and a
new one started on its host) or its host's link is cut for two lease TTLs and healed. When
the time is up the stream stops and the fleet gets `--drain` seconds to finish.

It prints runs submitted and succeeded, fine-tune jobs and models per run and files per
distinct dataset (each must be exactly 1: nothing lost, nothing done twice), how long a
killed or cut-off worker's runs took to reach another (p50, p90, max, from the lease events),
and any run not finished at the end.

    python -m bench.soak [--minutes 10] [--workers 3] [--every 2] [--seed 1]

A bench of its own, not in `python -m bench`, because it runs for minutes; `make test` runs a
short form of it (tests/cli/test_soak.py).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psycopg

from bench.netns import Host, Hosts, hosts
from bench.pgserver import NotHere, PrivatePostgres, private_postgres

REPO = Path(__file__).resolve().parents[1]
KEY = "soak-key"
TTL = 3.0
DATASETS = 2
"""The LoRA pipeline uploads two datasets: its training and its validation file."""


@dataclass
class Worker:
    host: Host | None
    proc: subprocess.Popen[bytes]


@dataclass
class Soak:
    """The fleet, and what was done to it (when each victim's trouble began, by pid)."""

    folder: Path
    env: dict[str, str]
    net: Hosts | None
    workers: list[Worker] = field(default_factory=list)
    trouble: dict[int, float] = field(default_factory=dict)
    """pid -> when it was killed or cut off (wall clock, as the lease events are)."""
    kills: int = 0
    cuts: int = 0

    def start_worker(self, host: Host | None) -> Worker:
        log = (self.folder / f"worker-{time.monotonic_ns()}.log").open("wb")
        argv = [sys.executable, "-m", "orchestrator", "worker"]
        proc = subprocess.Popen(host.command(argv) if host else argv, cwd=self.folder,
                                env=self.env, stdout=subprocess.DEVNULL, stderr=log)
        log.close()
        worker = Worker(host, proc)
        self.workers.append(worker)
        return worker

    def kill_one(self, rng: random.Random) -> None:
        victim = self.workers.pop(rng.randrange(len(self.workers)))
        self.trouble[victim.proc.pid] = time.time()
        victim.proc.kill()
        victim.proc.wait()
        self.kills += 1
        self.start_worker(victim.host)

    def cut_one(self, rng: random.Random) -> None:
        assert self.net is not None
        victim = rng.choice(self.workers)
        assert victim.host is not None
        self.trouble[victim.proc.pid] = time.time()
        self.net.cut(victim.host)
        self.cuts += 1
        time.sleep(2 * TTL)  # the partition's length is the point here, not a wait for it
        self.net.heal(victim.host)

    def stop(self) -> None:
        for worker in self.workers:
            worker.proc.send_signal(signal.SIGTERM)
        for worker in self.workers:
            try:
                worker.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                worker.proc.kill()
                worker.proc.wait()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def local_api(folder: Path, job: str) -> Iterator[tuple[int, Path]]:
    """`orchestrator local-api` on every address: its port and data folder."""
    port, data = _free_port(), folder / "api-data"
    env = {**os.environ, "ORCH_LOCAL_API_KEY": KEY, "ORCH_LOCAL_JOB_DURATION": job,
           "ORCH_LOCAL_UPLOAD_DURATION": "200ms"}
    with (folder / "local-api.log").open("wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "orchestrator", "local-api", "--host",
                                 "0.0.0.0", "--allow-remote", "--port", str(port),
                                 "--data-dir", str(data)], env=env, stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the local API did not start: see local-api.log")
            time.sleep(0.1)  # polling the server's readiness, with a deadline
        yield port, data
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _rows(url: str, query: str) -> list[tuple[object, ...]]:
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute(query).fetchall()


def _api_count(data: Path, table: str) -> int:
    import sqlite3

    conn = sqlite3.connect(data / "local-api.db")
    try:
        return int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])
    finally:
        conn.close()


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))] if ordered \
        else float("nan")


def takeovers(url: str, trouble: dict[int, float]) -> list[float]:
    """Seconds from a worker's trouble to each of its runs' lease reaching another."""
    found = []
    for (data, ts) in _rows(url, "SELECT data, ts FROM events WHERE kind = 'lease_acquired'"):
        lease = json.loads(str(data))
        previous = lease.get("previous_owner")
        if previous:
            pid = int(str(previous).split(":")[1])
            if pid in trouble and float(str(ts)) >= trouble[pid]:
                found.append(float(str(ts)) - trouble[pid])
    return found


@dataclass(frozen=True)
class Plan:
    """What a soak does: for how long, with how many workers, how often a run comes."""

    minutes: float = 10.0
    workers: int = 3
    every: float = 2.0
    seed: int = 1
    drain: float = 120.0
    job: str = "3s"


def soak(plan: Plan) -> dict[str, float]:
    """Run the soak; its figures (see the module docstring)."""
    with tempfile.TemporaryDirectory(prefix="soak-") as tmp, contextlib.ExitStack() as stack:
        folder = Path(tmp)
        shutil.copytree(REPO / "pipelines" / "data", folder / "data")
        shutil.copy(REPO / "pipelines" / "lora-finetune.yaml", folder / "lora.yaml")
        try:
            net: Hosts | None = stack.enter_context(hosts())
        except NotHere as exc:
            print(f"  no partitions: {exc}")
            net = None
        service = net.service if net else "127.0.0.1"
        db: PrivatePostgres = stack.enter_context(private_postgres(
            *([service] if net else [])))
        port, data = stack.enter_context(local_api(folder, plan.job))
        env = {k: v for k, v in os.environ.items() if not k.startswith("ORCH_")}
        env.update(ORCH_STATE_URL=db.url_at(service), TOGETHER_API_KEY=KEY,
                   TOGETHER_BASE_URL=f"http://{service}:{port}/v1",
                   ORCH_WORKER_POLL_INTERVAL="200ms", ORCH_LEASE_TTL=f"{TTL:g}s",
                   ORCH_BUSY_TIMEOUT="2", ORCH_MAX_RECOVERIES="100", ORCH_LOG_LEVEL="warning")
        fleet = Soak(folder, env, net)
        stack.callback(fleet.stop)
        for _ in range(plan.workers):
            fleet.start_worker(net.add() if net else None)
        submitted, restarted = stream(fleet, db, plan)
        deadline = time.monotonic() + plan.drain
        while time.monotonic() < deadline and _ended(db.url) < submitted:
            time.sleep(0.5)  # draining, with a deadline
        return report(fleet, db.url, data, submitted=submitted, restarted=restarted,
                      drain=plan.drain)


def _ended(url: str) -> int:
    return int(str(_rows(url, "SELECT count(*) FROM runs WHERE status IN "
                              "('succeeded', 'failed', 'cancelled')")[0][0]))


def stream(fleet: Soak, db: PrivatePostgres, plan: Plan) -> tuple[int, bool]:
    """Runs submitted every `plan.every` seconds for `plan.minutes`, amid kills, partitions
    and, half way, one database restart; how many were submitted, and whether it restarted."""
    rng = random.Random(plan.seed)
    submitted, restarted = 0, False
    started = time.monotonic()
    end = started + plan.minutes * 60
    next_run, next_trouble = started, started + rng.uniform(3, 6)
    while time.monotonic() < end:
        now = time.monotonic()
        if now >= next_run:
            done = subprocess.run(
                [sys.executable, "-m", "orchestrator", "run", "--detach", "lora.yaml",
                 "--provider", "together", "-i", "poll_interval=200ms"],
                cwd=fleet.folder, env=fleet.env, capture_output=True, timeout=60, check=False)
            submitted += done.returncode == 0
            next_run = now + plan.every
        elif not restarted and now >= started + plan.minutes * 30:
            db.stop()
            time.sleep(2.0)  # the outage's length is the point, not a wait for it
            db.start()
            restarted = True
        elif now >= next_trouble:
            if fleet.net is not None and rng.random() < 0.5:
                fleet.cut_one(rng)
            else:
                fleet.kill_one(rng)
            next_trouble = time.monotonic() + rng.uniform(3, 6)
        else:
            time.sleep(0.05)  # the loop's cadence; nothing waits on it
    return submitted, restarted


def report(fleet: Soak, url: str, data: Path, *, submitted: int, restarted: bool,
           drain: float) -> dict[str, float]:
    """Print what the soak did and return its figures."""
    statuses = dict(_rows(url, "SELECT status, count(*) FROM runs GROUP BY status"))
    unfinished = [str(r[0]) for r in _rows(url, "SELECT id FROM runs WHERE status NOT IN "
                                                "('succeeded', 'failed', 'cancelled')")]
    models = int(str(_rows(url, "SELECT count(*) FROM models")[0][0]))
    moved = takeovers(url, fleet.trouble)
    jobs, files = _api_count(data, "finetunes"), _api_count(data, "files")
    succeeded = int(str(statuses.get("succeeded", 0)))
    figures = {
        "runs submitted": submitted, "runs succeeded": succeeded,
        "runs unfinished": len(unfinished), "jobs per run": jobs / max(1, submitted),
        "models per succeeded run": models / max(1, succeeded),
        "files per dataset": files / DATASETS, "kills": fleet.kills, "cuts": fleet.cuts,
        "db restarts": int(restarted), "takeover p50 s": percentile(moved, 0.5),
        "takeover p90 s": percentile(moved, 0.9),
        "takeover max s": max(moved) if moved else float("nan")}
    print(f"  runs: {submitted} submitted, {succeeded} succeeded, statuses {statuses}")
    print(f"  per run: {figures['jobs per run']:.2f} jobs, "
          f"{figures['models per succeeded run']:.2f} models; "
          f"{figures['files per dataset']:.2f} files per dataset (each must be 1)")
    print(f"  trouble: {fleet.kills} kills, {fleet.cuts} partitions, {int(restarted)} "
          f"database restart; takeover p50 {figures['takeover p50 s']:.1f} s, p90 "
          f"{figures['takeover p90 s']:.1f} s, max {figures['takeover max s']:.1f} s "
          f"({len(moved)} runs moved)")
    if unfinished:
        print(f"  NOT FINISHED after {drain:g}s of draining: {', '.join(unfinished)}")
        for log in sorted(fleet.folder.glob("worker-*.log")):
            print(f"  {log.name}: {log.read_text()[-1500:]}")
    return figures


def main(argv: list[str] | None = None) -> list[tuple[str, float]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="how long the stream runs")
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--every", type=float, default=2.0, help="seconds between runs")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--drain", type=float, default=120.0,
                        help="seconds the fleet gets to finish once the stream stops")
    parser.add_argument("--job", default="3s", help="how long each fine-tune job takes")
    args = parser.parse_args(argv)
    print(f"soak: {args.workers} workers on PostgreSQL, a LoRA run every {args.every:g}s for "
          f"{args.minutes:g} min, with kills, partitions and a database restart")
    figures = soak(Plan(args.minutes, args.workers, args.every, args.seed, args.drain,
                        args.job))
    return [(f"soak: {name}", float(value)) for name, value in figures.items()]


if __name__ == "__main__":
    main()
