"""A 1,000-cell sweep within an account's job quota: the limit holds and costs no time.

`pipelines/sweep.yaml` widened to 4 base models x 250 learning rates, with the account's limit
raised to 100 concurrent jobs, run as one batch in one process (as `orchestrator run` does) on
the local API in-process, jobs planned at 30 s. The floor is ten waves of 30 s jobs: 300 s.
Reports wall time, CPU time and peak RSS of a fresh child process, and checks the limit twice:
from the event log (launch slot held) and from the local API (jobs unfinished at once).

    python -m bench.sweep [--cells 1000] [--limit 100] [--job 30] [--repeat 1]
"""

from __future__ import annotations

import argparse
import json
import re
import resource
import shutil
import time
from datetime import datetime
from pathlib import Path

from bench import report_child, report_medians, run_child
from orchestrator.definition.inputs import resolve_inputs
from orchestrator.engine.plan import ExecutionPlan
from orchestrator.runtime import open_runtime
from orchestrator.schedule.batch import execute_cells
from orchestrator.settings import load_settings
from orchestrator.steps.builtin import load_pipeline
from orchestrator.store.base import StateStore
from orchestrator.store.records import RunStatus

PIPELINES = Path(__file__).resolve().parent.parent / "pipelines"
MODELS = ("meta-llama/Meta-Llama-3.1-8B-Instruct-Reference", "Qwen/Qwen2.5-7B-Instruct",
          "mistralai/Mistral-7B-Instruct-v0.2", "meta-llama/Llama-3.2-3B-Instruct")
TARGETS = {"wall": 360.0}


def widened(cells: int, limit: int) -> str:
    """sweep.yaml with `cells` cells and the account limit at `limit`."""
    text = (PIPELINES / "sweep.yaml").read_text()
    rates = [round(1e-5 * (1 + i / 100), 8) for i in range(-(-cells // len(MODELS)))]
    matrix = (f"matrix:\n  base_model: {json.dumps(list(MODELS))}\n"
              f"  learning_rate: {json.dumps(rates)}\n  fail_fast: false\n")
    text = re.sub(r"^matrix:\n(?:  .*\n|    .*\n)+", matrix, text, flags=re.MULTILINE)
    return text.replace("limit: 4,", f"limit: {limit},")


def max_overlap(spans: list[tuple[float, float]]) -> int:
    edges = sorted([(a, 1) for a, _ in spans] + [(b, -1) for _, b in spans])
    most = now = 0
    for _, change in edges:
        now += change
        most = max(most, now)
    return most


async def slot_spans(store: StateStore, run_ids: list[str]) -> list[tuple[float, float]]:
    spans = []
    for run_id in run_ids:
        events = {e.kind: e.ts for e in await store.get_events(run_id)
                  if e.step_id == "launch" and e.kind in ("slot_acquired", "slot_released")}
        spans.append((events["slot_acquired"], events["slot_released"]))
    return spans


async def scenario(cells: int, limit: int, job_seconds: float, folder: Path
                   ) -> dict[str, float]:
    for name in ("train.jsonl", "validation.jsonl"):
        (folder / "data").mkdir(exist_ok=True)
        shutil.copy(PIPELINES / "data" / name, folder / "data" / name)
    (folder / "sweep.yaml").write_text(widened(cells, limit))
    pipeline = load_pipeline(folder / "sweep.yaml")
    inputs = resolve_inputs(pipeline.inputs, {}, pipeline_dir=folder, cwd=folder)
    settings = load_settings(state_url=f"sqlite:///{folder / 'state.db'}", provider="local",
                             local_data_dir=str(folder / "local-api"),
                             local_job_duration=job_seconds)
    async with open_runtime(settings) as rt:
        orch, store = rt.orchestrator, rt.store
        assert rt.providers is not None and rt.providers.default is not None
        client = await rt.providers.client(rt.providers.default)
        cpu, started = time.process_time(), time.perf_counter()
        batch, runs = await orch.create_batch(pipeline, inputs, hold=True)
        plans = [ExecutionPlan.new_run(run, pipeline) for run in runs]
        outcomes = await execute_cells(orch, plans, fail_fast=False,
                                       leases={r.id: r.lease for r in runs if r.lease})
        wall, cpu = time.perf_counter() - started, time.process_time() - cpu
        statuses = [o.status for o in outcomes]
        spans = await slot_spans(store, [r.id for r in runs])
        jobs = await client.list_fine_tunes()
    assert statuses.count(RunStatus.SUCCEEDED) == len(runs), statuses
    assert len(jobs) == len(runs), len(jobs)
    created = [datetime.fromisoformat(str(j.created_at)).timestamp() for j in jobs]
    remote = [(t, t + job_seconds) for t in created]
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"wall": wall, "cpu": cpu, "rss_mib": peak, "cells": len(runs),
            "held_at_once": max_overlap(spans), "jobs_at_once": max_overlap(remote),
            "batch_cells": batch.cells}


def main(argv: list[str] | None = None) -> list[tuple[str, float]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=1000)
    parser.add_argument("--limit", type=int, default=100)
    parser.add_argument("--job", type=float, default=30.0, help="planned job seconds")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        report_child(scenario, args.cells, args.limit, args.job, log_level="warning")
        return []
    results = [run_child("bench.sweep", "--cells", str(args.cells), "--limit",
                         str(args.limit), "--job", str(args.job)) for _ in range(args.repeat)]
    floor = -(-args.cells // args.limit) * args.job
    print(f"sweep of {args.cells} cells, at most {args.limit} jobs at once, jobs planned at "
          f"{args.job:g}s (floor {floor:g}s), local provider in-process, median of "
          f"{args.repeat}")
    rows = report_medians(f"{args.cells}-cell sweep", results,
                          (("wall", "s"), ("cpu", "s"), ("rss_mib", "MiB")), TARGETS)
    held = max(r["held_at_once"] for r in results)
    jobs = max(r["jobs_at_once"] for r in results)
    print(f"  most launch slots held at once {held:g}, most jobs unfinished at once on the "
          f"provider {jobs:g} (limit {args.limit})")
    rows.append((f"{args.cells}-cell sweep: most jobs at once", float(jobs)))
    return rows


if __name__ == "__main__":
    main()
