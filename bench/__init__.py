"""Benchmarks; `python -m bench` runs them all. Shared here: a fresh child process per
measurement (both ends: `run_child` starts it, `report_child` is what it runs), what one
command costs (`measure_process`: its own CPU time and peak memory), an `orchestrator
local-api` process to measure against (`serve_local_api`), and the lines that report medians
against targets."""

from __future__ import annotations

import io
import json
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio

from orchestrator.log import configure_logging

__all__ = ["ProcessCost", "measure_process", "report_child", "report_medians", "run_child",
           "serve_local_api"]


def serve_local_api(data_dir: Path) -> tuple[subprocess.Popen[bytes], str]:
    """Start `orchestrator local-api` on a free loopback port, keeping its state in
    `data_dir`; the process and its base URL (`http://127.0.0.1:PORT`) once it answers."""
    import socket
    import time

    import httpx

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "orchestrator", "local-api", "--port",
                               str(port), "--data-dir", str(data_dir)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            httpx.get(f"{base}/", timeout=1)
            return server, base
        except httpx.TransportError:
            if time.monotonic() > deadline or server.poll() is not None:
                server.kill()
                raise
            time.sleep(0.05)


def run_child(module: str, *args: str) -> dict[str, float]:
    """`python -m <module> --child ARGS` in a fresh process (its own peak RSS, no warm caches
    of earlier measurements); the JSON object its last line prints."""
    out = subprocess.run([sys.executable, "-m", module, "--child", *args], capture_output=True,
                         text=True, check=True)
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def report_child(scenario: Callable[..., Awaitable[Mapping[str, float]]], *args: Any,
                 log_level: str = "info") -> None:
    """In the child: run `scenario(*args, workdir)` in a fresh temporary folder, its logs
    written (at `log_level`, so their cost counts) but thrown away, and print its figures as
    the JSON line `run_child` reads."""
    configure_logging(fmt="json", level=log_level, stream=io.StringIO())
    with tempfile.TemporaryDirectory() as tmp:
        result = anyio.run(scenario, *args, Path(tmp))
    print(json.dumps(result))


def report_medians(label: str, results: Sequence[Mapping[str, float]],
                   fields: Sequence[tuple[str, str]],
                   targets: Mapping[str, float]) -> list[tuple[str, float]]:
    """Print each field's median (and every run's value) and return (label, median) rows."""
    rows = []
    for key, unit in fields:
        median = statistics.median(r[key] for r in results)
        runs = ", ".join(f"{r[key]:.1f}" for r in results)
        target = f"target <= {targets[key]:g}; " if key in targets else ""
        print(f"  {key:<8} {median:8.1f} {unit:<4} ({target}runs: {runs})")
        rows.append((f"{label}: {key} {unit}", median))
    return rows


@dataclass(frozen=True)
class ProcessCost:
    """What one process did and cost: exit code, wall and CPU seconds, peak memory."""

    code: int
    wall: float
    cpu: float
    peak_mib: float
    stdout: str
    stderr: str


_LAUNCHER = """
import json, os, subprocess, sys, time
started = time.perf_counter()
process = subprocess.Popen(sys.argv[2:])
_, status, usage = os.wait4(process.pid, 0)
with open(sys.argv[1], "w") as out:
    json.dump([os.waitstatus_to_exitcode(status), time.perf_counter() - started,
               usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024], out)
"""
"""Starts the measured process from a small one: a child's peak memory counts that of the
process it was forked from, so a big parent (a test runner) would stand in its figure."""


def measure_process(command: Sequence[str], *, cwd: Path | None = None,
                    timeout: float | None = None) -> ProcessCost:
    """Run `command` to its end and measure that one process (os.wait4 reports its own
    usage, not that of other children)."""
    with tempfile.NamedTemporaryFile(suffix=".json") as report:
        result = subprocess.run([sys.executable, "-c", _LAUNCHER, report.name, *command],
                                cwd=cwd, capture_output=True, text=True, check=False,
                                timeout=timeout)
        code, wall, cpu, peak = json.loads(Path(report.name).read_text())
    return ProcessCost(code, wall, cpu, peak, result.stdout, result.stderr)
