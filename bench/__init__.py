"""Benchmarks; `python -m bench` runs them all. Shared here: a fresh child process per
measurement, and the lines that report medians against targets."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from collections.abc import Mapping, Sequence

__all__ = ["report_medians", "run_child"]


def run_child(module: str, *args: str) -> dict[str, float]:
    """`python -m <module> --child ARGS` in a fresh process (its own peak RSS, no warm caches
    of earlier measurements); the JSON object its last line prints."""
    out = subprocess.run([sys.executable, "-m", module, "--child", *args], capture_output=True,
                         text=True, check=True)
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


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
