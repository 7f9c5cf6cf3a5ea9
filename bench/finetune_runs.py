"""Polling costs almost nothing: many concurrent LoRA fine-tune runs against the local API.

Runs `pipelines/lora-finetune.yaml` N times at once in one process (the local API in-process,
jobs planned to take 60 s): upload (deduplicated), launch, wait with backoff, record, smoke
test. Reports wall time, CPU time and peak RSS of a fresh child process.

    python -m bench.finetune_runs [--runs 500] [--job 60] [--repeat 1]
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time
from datetime import datetime
from pathlib import Path

import anyio

from bench import report_child, report_medians, run_child
from orchestrator.definition.inputs import resolve_inputs
from orchestrator.runtime import open_runtime
from orchestrator.settings import load_settings
from orchestrator.steps.builtin import load_pipeline
from orchestrator.store.records import RunStatus

PIPELINE = Path(__file__).resolve().parent.parent / "pipelines" / "lora-finetune.yaml"
TARGETS = {"wall": 90.0, "cpu": 60.0, "rss_mib": 1024.0}


async def scenario(runs: int, job_seconds: float, folder: Path) -> dict[str, float]:
    pipeline = load_pipeline(PIPELINE)
    inputs = resolve_inputs(pipeline.inputs, {}, pipeline_dir=pipeline.base_dir, cwd=folder)
    settings = load_settings(state_url=f"sqlite:///{folder / 'state.db'}", provider="local",
                             local_data_dir=str(folder / "local-api"),
                             local_job_duration=job_seconds)
    statuses: list[RunStatus] = []
    async with open_runtime(settings) as rt:
        orch = rt.orchestrator
        assert rt.providers is not None and rt.providers.default is not None
        client = await rt.providers.client(rt.providers.default)

        async def one() -> None:
            statuses.append((await orch.run(pipeline, inputs)).status)

        cpu, started = time.process_time(), time.perf_counter()
        async with anyio.create_task_group() as tg:
            for _ in range(runs):
                tg.start_soon(one)
        wall, cpu = time.perf_counter() - started, time.process_time() - cpu
        jobs = await client.list_fine_tunes()
        files = await client.list_files()
    assert statuses.count(RunStatus.SUCCEEDED) == runs, statuses
    assert len(jobs) == runs and len(files) == 2, (len(jobs), len(files))
    created = sorted(datetime.fromisoformat(str(j.created_at)).timestamp() for j in jobs)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"wall": wall, "cpu": cpu, "rss_mib": peak, "launch_spread": created[-1] - created[0]}


def main(argv: list[str] | None = None) -> list[tuple[str, float]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=500)
    parser.add_argument("--job", type=float, default=60.0, help="planned job seconds")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        report_child(scenario, args.runs, args.job)
        return []
    results = [run_child("bench.finetune_runs", "--runs", str(args.runs), "--job",
                         str(args.job)) for _ in range(args.repeat)]
    print(f"{args.runs} concurrent lora-finetune runs, jobs planned at {args.job:g}s, local "
          f"provider in-process, median of {args.repeat}")
    rows = report_medians(f"{args.runs} fine-tune runs", results,
                          (("wall", "s"), ("cpu", "s"), ("rss_mib", "MiB")), TARGETS)
    spread = statistics.median(r["launch_spread"] for r in results)
    print(f"  (all {args.runs} jobs were created within {spread:.1f}s of the first; "
          "2 files uploaded in all)")
    return rows


if __name__ == "__main__":
    main()
