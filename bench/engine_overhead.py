"""Engine overhead per step: a chain of no-op `core/echo` steps, each one's state committed.

Every step waits for the one before it (its `with:` references the previous step's output), so
nothing overlaps and the figure is the full cost of one step: resolving its parameters,
validating them, two commits (started, succeeded) with their events, and the log lines.

    python -m bench.engine_overhead [--steps 1000] [--repeat 5] [--postgres URL]

On SQLite and on PostgreSQL (the machine's server; target there: <= 1 ms per step).
"""

from __future__ import annotations

import argparse
import io
import statistics
import tempfile
import time
from pathlib import Path

import anyio

from orchestrator.definition.pipeline import Pipeline
from orchestrator.engine.plan import ExecutionPlan
from orchestrator.log import configure_logging
from orchestrator.runtime import open_runtime
from orchestrator.settings import Settings, load_settings
from orchestrator.steps.builtin import load_pipeline
from orchestrator.store.records import RunStatus


def chain_pipeline(steps: int) -> str:
    lines = ["name: chain", "steps:", "  s0: {uses: core/echo, with: {v: 0}}"]
    lines += [f'  s{i}: {{uses: core/echo, with: {{v: "${{{{ steps.s{i - 1}.outputs.v }}}}"}}}}'
              for i in range(1, steps)]
    return "\n".join(lines) + "\n"


async def one_run(folder: Path, steps: int, durability: str, postgres: str | None) -> float:
    """Seconds per step for one run of the chain (fresh state database: a new SQLite file,
    or a new schema of `postgres`)."""
    path = folder / "chain.yaml"
    path.write_text(chain_pipeline(steps))
    pipeline = load_pipeline(path)
    name = f"bench_{time.monotonic_ns()}"
    url = (f"sqlite:///{folder / f'{name}.db'}" if postgres is None
           else f"{postgres}?schema={name}")
    try:
        return await _timed(pipeline, load_settings(state_url=url, durability=durability,
                                                    max_parallel_steps=8), steps)
    finally:
        if postgres is not None:
            import psycopg

            async with await psycopg.AsyncConnection.connect(postgres, autocommit=True) as conn:
                await conn.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")  # type: ignore[arg-type]


async def _timed(pipeline: Pipeline, settings: Settings, steps: int) -> float:
    async with open_runtime(settings) as rt:
        orch = rt.orchestrator
        record = await orch.create_run(pipeline, {})
        plan = ExecutionPlan.new_run(record, pipeline)
        started = time.perf_counter()
        outcome = await orch.execute(plan)
        elapsed = time.perf_counter() - started
    assert outcome.status is RunStatus.SUCCEEDED, outcome
    return elapsed / steps


def measure(steps: int, repeat: int, durability: str, logs: str,
            postgres: str | None = None) -> list[float]:
    sink = io.StringIO()
    configure_logging(fmt="json", level="info" if logs == "on" else "warning", stream=sink)
    with tempfile.TemporaryDirectory() as tmp:
        return [anyio.run(one_run, Path(tmp), steps, durability, postgres)
                for _ in range(repeat)]


def main(argv: list[str] | None = None) -> list[tuple[str, float]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/test",
                        help="a PostgreSQL server to measure too ('' to skip)")
    args = parser.parse_args(argv)
    rows = []
    print(f"engine overhead, chain of {args.steps} core/echo steps, median of {args.repeat} runs")
    cases: list[tuple[str, str, str | None]] = [
        ("process", "on", None), ("process", "off", None), ("machine", "on", None)]
    if args.postgres:
        cases += [("process", "on", args.postgres), ("machine", "on", args.postgres)]
    for durability, logs, postgres in cases:
        per_step = measure(args.steps, args.repeat, durability, logs, postgres)
        median_ms = statistics.median(per_step) * 1000
        store = "sqlite" if postgres is None else "postgresql"
        label = f"{store}, durability={durability}, info logs {logs}"
        spread = ", ".join(f"{s * 1000:.3f}" for s in per_step)
        print(f"  {label:<38} {median_ms:.3f} ms/step   (runs: {spread})")
        rows.append((label, median_ms))
    return rows


if __name__ == "__main__":
    main()
