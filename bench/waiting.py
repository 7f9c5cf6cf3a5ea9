"""Waiting is free: many concurrent runs whose middle step sleeps, in one process.

Each run is `echo -> sleep -> echo`, created and executed concurrently with the others; wall
time is from the first run's creation to the last run's end, so a figure near the sleep means
the waiting costs nothing. Each scenario runs in a fresh process, which reports its peak RSS.

    python -m bench.waiting [--repeat 3]
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time
from pathlib import Path

import anyio

from bench import report_child, run_child
from orchestrator.runtime import open_runtime
from orchestrator.settings import load_settings
from orchestrator.steps.builtin import load_pipeline
from orchestrator.store.records import RunStatus

PIPELINE = """
name: waiting
inputs:
  nap: {type: duration}
steps:
  first: {uses: core/echo, with: {x: 1}}
  nap: {uses: core/sleep, with: {duration: "${{ inputs.nap }}"}, needs: [first]}
  last: {uses: core/echo, with: {slept: "${{ steps.nap.outputs.slept }}"}}
"""

SCENARIOS = ((200, 0.5, 1.0), (2000, 2.0, 10.0))  # runs, sleep seconds, target wall seconds


async def scenario(runs: int, nap: float, folder: Path) -> dict[str, float]:
    (folder / "waiting.yaml").write_text(PIPELINE)
    pipeline = load_pipeline(folder / "waiting.yaml")
    statuses: list[RunStatus] = []
    settings = load_settings(state_url=f"sqlite:///{folder / 'state.db'}")
    async with open_runtime(settings) as rt:
        orch = rt.orchestrator

        async def one() -> None:
            outcome = await orch.run(pipeline, {"nap": nap})
            statuses.append(outcome.status)

        cpu, started = time.process_time(), time.perf_counter()
        async with anyio.create_task_group() as tg:
            for _ in range(runs):
                tg.start_soon(one)
        wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    assert statuses.count(RunStatus.SUCCEEDED) == runs, statuses
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"wall": wall, "cpu": cpu, "rss_mib": peak_kib / 1024}


def main(argv: list[str] | None = None) -> list[tuple[str, float]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--child", nargs=2, type=float, metavar=("RUNS", "SLEEP"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        report_child(scenario, int(args.child[0]), args.child[1])
        return []
    rows = []
    print(f"waiting: concurrent echo -> sleep -> echo runs in one process, median of "
          f"{args.repeat}")
    for runs, nap, target in SCENARIOS:
        results = [run_child("bench.waiting", str(runs), str(nap)) for _ in range(args.repeat)]
        wall = statistics.median(r["wall"] for r in results)
        cpu = statistics.median(r["cpu"] for r in results)
        rss = max(r["rss_mib"] for r in results)
        walls = ", ".join(f"{r['wall']:.2f}" for r in results)
        print(f"  {runs:>5} runs, sleep {nap}s: wall {wall:.2f}s (target <= {target}s; runs: "
              f"{walls}), cpu {cpu:.2f}s, peak RSS {rss:.0f} MiB")
        rows.append((f"{runs} runs sleeping {nap}s: wall s", wall))
        rows.append((f"{runs} runs sleeping {nap}s: peak RSS MiB", rss))
    return rows


if __name__ == "__main__":
    main()
