"""Start-up: each command's whole process, beside `python -c pass` timed in the same run.

The machines are shared and their speed drifts by 2x within an hour, so each figure is paired
with the floor measured alternately with it (a run of the command, a run of the floor, ...),
and both are medians. Figures: `--help`, `validate`, the read-only commands (`runs`, `show`,
`models`: target 0.15 s), the Python API's import (`from orchestrator import run_file`:
target 0.3 s) and a one-step pipeline's whole process (`run one.yaml`, a core/echo step:
target 0.3 s). `runs` and `show` read a state database holding that run, in a folder of their
own. (`make install` byte-compiles the package; on machines that set
PYTHONDONTWRITEBYTECODE, an uncompiled package adds ~25 ms to every start.)

    python -m bench.startup [--repeat 10]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HELLO = ROOT / "pipelines" / "hello.yaml"
ONE_STEP = "name: one\nsteps:\n  hello: {uses: core/echo, with: {message: hi}}\n"
FLOOR = [sys.executable, "-c", "pass"]


def time_once(command: list[str], cwd: Path) -> float:
    started = time.perf_counter()
    subprocess.run(command, cwd=cwd, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def paired(command: list[str], repeat: int, cwd: Path) -> tuple[list[float], list[float]]:
    """`command`'s times and the floor's, taken alternately."""
    times, floors = [], []
    for _ in range(repeat):
        times.append(time_once(command, cwd))
        floors.append(time_once(FLOOR, cwd))
    return times, floors


def main(argv: list[str] | None = None) -> list[tuple[str, float]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=10)
    args = parser.parse_args(argv)
    script = shutil.which("orchestrator", path=str(Path(sys.executable).parent))
    if script is None:
        msg = "the orchestrator console script is not installed next to this Python"
        raise SystemExit(msg)
    print(f"start-up, median of {args.repeat} runs, each beside `python -c pass` timed "
          "alternately with it")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "one.yaml").write_text(ONE_STEP)
        done = subprocess.run([script, "run", "one.yaml"], cwd=folder, check=True,
                              capture_output=True, text=True)
        run_id = next(word for word in done.stderr.split() if word.startswith("r-"))
        cases = [
            ("orchestrator --help", [script, "--help"], None),
            ("orchestrator validate hello.yaml", [script, "validate", str(HELLO)], None),
            ("orchestrator runs", [script, "runs"], 0.15),
            ("orchestrator show RUN", [script, "show", run_id], 0.15),
            ("orchestrator models", [script, "models"], 0.15),
            ("python: from orchestrator import run_file",
             [sys.executable, "-c", "from orchestrator import run_file"], 0.3),
            ("orchestrator run one.yaml (a core/echo step)", [script, "run", "one.yaml"], 0.3),
        ]
        for label, command, target in cases:
            times, floors = paired(command, args.repeat, folder)
            median, floor = statistics.median(times), statistics.median(floors)
            note = f"   target <= {target * 1000:.0f} ms" if target else ""
            print(f"  {label:<46} {median * 1000:6.0f} ms   python -c pass {floor * 1000:4.0f}"
                  f" ms   (+{(median - floor) * 1000:.0f} ms){note}")
            rows.append((label, median * 1000))
    return rows


if __name__ == "__main__":
    main()
