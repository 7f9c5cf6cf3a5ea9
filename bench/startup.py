"""Start-up time of the commands people type most: `--help`, `validate` and `runs`.

Runs the installed `orchestrator` console script repeatedly and prints the median wall time.
Beside it, the floor on this machine right now: starting Python and importing the libraries
`validate` cannot do without (pydantic, PyYAML). The machines are shared and their speed drifts
by 2x within an hour, so compare a figure with its floor rather than across days. `runs` reads
a state database holding one finished run, in a folder of its own.
(`make install` byte-compiles the package; on machines that set PYTHONDONTWRITEBYTECODE, an
uncompiled package adds ~25 ms to every start.)

    python -m bench.startup [--repeat 21]
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
COMMANDS = (["--help"], ["validate", str(HELLO)], ["runs"])
FLOOR = ("import pydantic, yaml\nclass M(pydantic.BaseModel):\n    x: int = 0\n"
         "M.model_validate({'x': 1})")
TARGETS = {"runs": 0.15}
"""Targets beside the general one (TARGET) for commands that have their own."""
TARGET = 0.3


def time_command(command: list[str], repeat: int, cwd: Path) -> list[float]:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        subprocess.run(command, cwd=cwd, check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        times.append(time.perf_counter() - started)
    return times


def main(argv: list[str] | None = None) -> list[tuple[str, float]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=21)
    args = parser.parse_args(argv)
    script = shutil.which("orchestrator", path=str(Path(sys.executable).parent))
    if script is None:
        msg = "the orchestrator console script is not installed next to this Python"
        raise SystemExit(msg)
    print(f"start-up, median of {args.repeat} runs (target <= {TARGET}s unless shown)")
    rows = []
    cases = [("floor: python + import pydantic, yaml + one model", [sys.executable, "-c", FLOOR])]
    cases += [("orchestrator " + " ".join(c).replace(str(ROOT) + "/", ""), [script, *c])
              for c in COMMANDS]
    with tempfile.TemporaryDirectory() as folder:
        subprocess.run([script, "run", str(HELLO)], cwd=folder, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for label, command in cases:
            times = time_command(command, args.repeat, Path(folder))
            median = statistics.median(times)
            target = TARGETS.get(command[-1]) if command[0] == script else None
            note = f"   target <= {target * 1000:.0f} ms" if target else ""
            print(f"  {label:<52} {median * 1000:6.0f} ms   (min {min(times) * 1000:.0f}, "
                  f"max {max(times) * 1000:.0f}){note}")
            rows.append((label, median * 1000))
    return rows


if __name__ == "__main__":
    main()
