"""Where cost grows with the size of the work: each figure beside its target.

- `validate` of a 10,000-step chain (a real process; target <= 1 s), and the share of a run of
  it spent loading the file (target < 20 %);
- `show` of that 10,000-step run (a real process; target <= 0.5 s), beside `runs` of the same
  store: the start-up every command pays;
- the state a no-op step leaves: bytes in the state database per step of that run, all tables
  and indexes but the pipeline's text (target <= 250 B);
- engine overhead per step of a 1,000-step chain, committed (target <= 0.25 ms);
- memory per waiting run: 10,000 runs asleep in one process, the growth of its resident memory
  from before they started, per run (target <= 15 KiB): started in the process with one
  pipeline, and created queued then resumed by id as a worker takes them (each from its
  stored text);
- `runs`, `show`, `logs` and `models` (real processes) over 100,000 finished runs (and 10,000
  models), against the same over 1,000 (and 100): the ratio (target <= 1.5).

    python -m bench.scale [--repeat 3] [--steps 10000] [--waiting 10000] [--history 100000]
"""

from __future__ import annotations

import argparse
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import anyio

from bench import report_child, run_child
from bench.engine_overhead import chain_pipeline
from bench.engine_overhead import measure as overhead

TARGETS = {"validate_s": 1.0, "load_share": 0.20, "show_s": 0.5, "bytes_per_step": 250.0,
           "ms_per_step": 0.25, "kib_per_waiting_run": 15.0, "history_ratio": 1.5}
STATE = Path(".orchestrator") / "state.db"
WAITING = """
name: waiting
steps:
  first: {uses: core/echo, with: {x: 1}}
  nap: {uses: core/sleep, with: {duration: 1h}, needs: [first]}
  last: {uses: core/echo, with: {slept: "${{ steps.nap.outputs.slept }}"}}
"""


def _timed(args: list[str], cwd: Path, repeat: int) -> list[float]:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "orchestrator", *args], cwd=cwd, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        times.append(time.perf_counter() - started)
    return times


async def chain_run(steps: int, place: str, scratch: Path) -> dict[str, float]:
    """In a child: load the chain, run it with its state in `place` (the parent reads it
    afterwards); the load's share of the whole."""
    from orchestrator.runtime import open_runtime
    from orchestrator.settings import load_settings
    from orchestrator.steps.builtin import load_pipeline

    del scratch
    work = Path(place)
    (work / "chain.yaml").write_text(chain_pipeline(steps))
    started = time.perf_counter()
    pipeline = load_pipeline(work / "chain.yaml")
    loaded = time.perf_counter()
    settings = load_settings(state_url=f"sqlite:///{work / STATE}")  # where `show` looks
    async with open_runtime(settings) as rt:
        outcome = await rt.orchestrator.run(pipeline, {})
    done = time.perf_counter()
    assert outcome.status.value == "succeeded", outcome
    return {"load_share": (loaded - started) / (done - started), "run_s": done - started}


def _state_bytes(db: Path, steps: int) -> float:
    """Bytes the state holds per step: every table's and index's pages, the pipeline text's
    aside (stored once per text, whatever the run's size)."""
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT name, sum(pgsize) FROM dbstat GROUP BY name").fetchall()
    total = sum(size for name, size in rows if "pipeline_texts" not in name)
    return total / steps


async def waiting_runs(runs: int, how: str, folder: Path) -> dict[str, float]:
    """In a child: the resident memory `runs` sleeping runs add, per run; `how` they start:
    "run" (`orch.run` of one loaded pipeline) or "resume" (created queued beforehand, then
    resumed by id, each from its stored text, as a worker takes them)."""
    from orchestrator.runtime import open_runtime
    from orchestrator.settings import load_settings
    from orchestrator.steps.builtin import load_pipeline
    from orchestrator.store.records import RunStatus

    (folder / "waiting.yaml").write_text(WAITING)
    pipeline = load_pipeline(folder / "waiting.yaml")
    settings = load_settings(state_url=f"sqlite:///{folder / 'state.db'}",
                             log_level="warning")
    asleep = 0
    async with open_runtime(settings) as rt:
        orch = rt.orchestrator
        queued = [(await orch.create_run(pipeline, {}, status=RunStatus.QUEUED)).id
                  for _ in range(runs if how == "resume" else 0)]
        before = _rss_kib()
        async with anyio.create_task_group() as tg:
            for n in range(runs):
                if queued:
                    tg.start_soon(orch.resume, queued[n])
                else:
                    tg.start_soon(orch.run, pipeline, {})
            deadline = time.monotonic() + 600
            while asleep < runs:  # every run inside its sleep
                await anyio.sleep(0.5)
                asleep = await _sleeping(folder / "state.db")
                assert time.monotonic() < deadline, f"only {asleep} of {runs} asleep"
            during = _rss_kib()
            tg.cancel_scope.cancel()
    return {"kib_per_waiting_run": (during - before) / runs, "asleep": float(asleep)}


async def _sleeping(db: Path) -> int:
    def count() -> int:
        with sqlite3.connect(db) as conn:
            return int(conn.execute("SELECT count(*) FROM steps WHERE step_id = 'nap' AND "
                                    "status = 'running'").fetchone()[0])

    return await anyio.to_thread.run_sync(count)


def _rss_kib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return float(line.split()[1])
    raise AssertionError


def _line(label: str, key: str, values: list[float], unit: str, scale: float = 1.0) -> float:
    median = statistics.median(values) * scale
    runs = ", ".join(f"{v * scale:.3g}" for v in values)
    print(f"  {label:<52} {median:9.3f} {unit:<5} (target <= {TARGETS[key]:g}; "
          f"runs: {runs})")
    return median


def main(argv: list[str] | None = None) -> list[tuple[str, float]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10_000)
    parser.add_argument("--waiting", type=int, default=10_000)
    parser.add_argument("--history", type=int, default=100_000)
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        kind, size, place = args.child
        report_child(chain_run if kind == "chain" else waiting_runs, int(size), place,
                     log_level="warning")
        return []
    rows: list[tuple[str, float]] = []
    print(f"scale: work that grows, median of {args.repeat}")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "chain.yaml").write_text(chain_pipeline(args.steps))
        label = f"validate of a {args.steps:,}-step chain"
        rows.append((f"{label}: s", _line(label, "validate_s", _timed(
            ["validate", "chain.yaml"], folder, args.repeat), "s")))
    with tempfile.TemporaryDirectory() as tmp:
        results = []
        for n in range(args.repeat):
            place = Path(tmp) / str(n)
            place.mkdir()
            results.append(run_child("bench.scale", "chain", str(args.steps), str(place)))
        seconds = statistics.median(r["run_s"] for r in results)
        label = f"run of it ({seconds:.1f} s): the share spent loading"
        rows.append(("run of the chain: load share", _line(
            label, "load_share", [r["load_share"] for r in results], "")))
        rows += _shown(Path(tmp) / "0", args.steps, args.repeat)
    per_step = overhead(1000, max(args.repeat, 3), "process", "on")
    rows.append(("engine overhead per step: ms", _line(
        "engine overhead per step, 1,000-step chain", "ms_per_step", per_step, "ms", 1000)))
    for how, started in (("run", "started here"), ("resume", "resumed as a worker does")):
        waits = [run_child("bench.scale", "waiting", str(args.waiting), how)
                 for _ in range(args.repeat)]
        label = f"memory per waiting run, {args.waiting:,} asleep, {started}"
        rows.append((f"{label}: KiB", _line(label, "kib_per_waiting_run",
                                            [w["kib_per_waiting_run"] for w in waits], "KiB")))
    rows += _history(args.history, args.repeat)
    return rows


def _history(runs: int, repeat: int) -> list[tuple[str, float]]:
    """The read commands over a history of `runs` finished runs against one of 1,000."""
    from bench.web import seed

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        times: dict[int, dict[str, float]] = {}
        for size in (1000, runs):
            work = Path(tmp) / str(size)
            (work / STATE).parent.mkdir(parents=True)
            seed(work / STATE, size)
            with sqlite3.connect(work / STATE) as conn:
                conn.executemany(
                    "INSERT INTO models (name, run_id, step_id, pipeline_name, hyperparameters, "
                    "metrics, tags, recorded_at) VALUES (?, ?, 'register', 'lora', '{}', '{}', "
                    "'{}', ?)", [(f"m-{i}", f"r-{i * 10:07d}", float(i))
                                 for i in range(size // 10)])
            newest = f"r-{size - 1:07d}"
            times[size] = {command[0]: statistics.median(_timed(command, work, repeat))
                           for command in (["runs"], ["show", newest], ["logs", newest],
                                           ["models"])}
        for command, small in times[1000].items():
            big = times[runs][command]
            label = f"{command}: {runs:,} runs {big:.2f} s, 1,000 {small:.2f} s"
            rows.append((f"{label}: ratio", _line(label, "history_ratio", [big / small], "x")))
    return rows


def _shown(work: Path, steps: int, repeat: int) -> list[tuple[str, float]]:
    """`show` of the chain run in `work`, `runs` beside it, and the run's state per step."""
    with sqlite3.connect(work / STATE) as conn:
        run_id = conn.execute("SELECT id FROM runs").fetchone()[0]
    runs = statistics.median(_timed(["runs"], work, repeat))
    label = f"show of the {steps:,}-step run (`runs`: {runs:.2f} s)"
    shown = _line(label, "show_s", _timed(["show", run_id], work, repeat), "s")
    per_step = _line("state per no-op step of that run", "bytes_per_step",
                     [_state_bytes(work / STATE, steps)], "B")
    return [(f"show of a {steps}-step run: s", shown), ("runs beside it: s", runs),
            ("state per no-op step: B", per_step)]


if __name__ == "__main__":
    main()
