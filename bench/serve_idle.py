"""`orchestrator serve` doing nothing costs (almost) nothing.

Starts `orchestrator serve pipelines/` (a worker and a scheduler with the shipped schedules) on
a fresh state database, lets it settle, then reads the CPU time the process spends over a
window from /proc: the share of one core an idle service takes. `--history N` first fills the
database with N finished runs, as a service that has been up for months has: its worker asks
for claimable runs every second, and that question must not grow with the history.

    python -m bench.serve_idle [--seconds 30] [--repeat 3] [--history 50000]
"""

from __future__ import annotations

import argparse
import os
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import anyio

from orchestrator.runtime import open_runtime
from orchestrator.settings import load_settings

REPO = Path(__file__).resolve().parent.parent
TARGET = 1.0  # percent of one core


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of process `pid` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    return ticks / os.sysconf("SC_CLK_TCK")


def seed_history(state: Path, runs: int) -> None:
    """`runs` finished runs in a fresh state database (written directly: seeding through the
    store would take longer than the measurement)."""
    async def create() -> None:
        async with open_runtime(load_settings(state_url=f"sqlite:///{state}"), engine=False):
            pass

    anyio.run(create)
    conn = sqlite3.connect(state)
    with conn:
        conn.executemany(
            "INSERT INTO runs (id, pipeline_name, pipeline_path, pipeline_text, inputs, status, "
            "created_at, finished_at, lease_generation) VALUES (?, 'hello', '/hello.yaml', ?, "
            "'{}', ?, ?, ?, 1)",
            [(f"r-old-{i}", "x" * 1000, "succeeded" if i % 10 else "failed", i, i + 60.0)
             for i in range(runs)])
    conn.close()


def measure(seconds: float, history: int = 0) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        if history:
            seed_history(Path(tmp) / "state.db", history)
        env = {k: v for k, v in os.environ.items() if not k.startswith("ORCH_")}
        env["ORCH_STATE_URL"] = f"sqlite:///{tmp}/state.db"
        env["ORCH_LOCAL_DATA_DIR"] = f"{tmp}/local-api"
        proc = subprocess.Popen([sys.executable, "-m", "orchestrator", "serve",
                                 str(REPO / "pipelines"), "--log-format", "json",
                                 "--ui-port", "0"],
                                cwd=tmp, env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)
        try:
            assert proc.stderr is not None
            for line in proc.stderr:  # until "...: worker ... and scheduler ...; Ctrl-C stops"
                if "Ctrl-C stops" in line:
                    break
            else:
                raise RuntimeError(f"serve did not start (exit code {proc.wait()})")
            time.sleep(2)  # the benchmark's own settling time, not a wait for a condition
            before, started = cpu_seconds(proc.pid), time.monotonic()
            time.sleep(seconds)
            used, elapsed = cpu_seconds(proc.pid) - before, time.monotonic() - started
        finally:
            proc.send_signal(signal.SIGINT)
            proc.communicate(timeout=30)
    return 100 * used / elapsed


def main(argv: list[str] | None = None) -> list[tuple[str, float]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--history", type=int, default=50_000, metavar="RUNS",
                        help="finished runs in the state database (default 50000; 0: empty)")
    args = parser.parse_args(argv)
    shares = [measure(args.seconds, args.history) for _ in range(args.repeat)]
    median = statistics.median(shares)
    runs = ", ".join(f"{s:.2f}" for s in shares)
    print(f"orchestrator serve, idle for {args.seconds:g}s with {args.history:,} finished runs "
          f"in its state, median of {args.repeat}")
    print(f"  CPU {median:6.2f} % of one core (target < {TARGET:g}; runs: {runs})")
    return [("serve idle: % of one core", median)]


if __name__ == "__main__":
    main()
