"""The web view over a big history: how long its pages take with 100,000 runs in the store.

Seeds a SQLite state database with N finished runs (three pipelines, one in ten failed, some
in batches; written directly: seeding through the store would take longer than the
measurement), then asks the app in process (httpx's ASGI transport: the page's own work,
without a network) for the runs page, filtered and paged, the JSON API and a run's page, and
prints the median of several requests beside the target (< 200 ms for the runs page).

    python -m bench.web [--runs 100000] [--repeat 9]
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path

import anyio
import httpx

from orchestrator.runtime import open_runtime
from orchestrator.settings import load_settings
from orchestrator.store.opening import open_store
from orchestrator.store.records import text_hash
from orchestrator.web.app import create_app

TARGET = 0.2
TEXT = "name: hello\nsteps:\n  a: {uses: core/echo}\n  b: {uses: core/echo, needs: [a]}\n"


def seed(state: Path, runs: int) -> None:
    async def create() -> None:
        async with open_runtime(load_settings(state_url=f"sqlite:///{state}"), engine=False):
            pass

    anyio.run(create)
    conn = sqlite3.connect(state)
    key = text_hash(TEXT)
    with conn:
        conn.execute("INSERT INTO pipeline_texts (hash, text) VALUES (?, ?)", (key, TEXT))
        conn.executemany(
            "INSERT INTO runs (id, pipeline_name, pipeline_path, pipeline_text, pipeline_hash, "
            "inputs, status, created_at, started_at, finished_at, lease_generation, batch_id, "
            "cell) VALUES (?, ?, '/hello.yaml', '', ?, '{}', ?, ?, ?, ?, 1, ?, ?)",
            [(f"r-{i:07d}", ("hello", "lora", "sweep")[i % 3], key,
              "failed" if i % 10 == 0 else "succeeded", float(i), float(i), i + 60.0,
              f"b-{i // 100}" if i % 3 == 2 else None, i % 100 if i % 3 == 2 else None)
             for i in range(runs)])
        conn.executemany(
            "INSERT INTO steps (run_id, step_id, status, attempt, outputs, checkpoint) "
            "VALUES (?, ?, 'succeeded', 1, '{}', '{}')",
            [(f"r-{runs - 1:07d}", s) for s in ("a", "b")])
        _big_run(conn, BIG_STEPS)
    conn.close()


BIG_STEPS = 10_000
BIG_TARGET = 1.0
"""A 10,000-step run's page, the first of its steps and its newest events (target <= 1 s)."""


def _big_run(conn: sqlite3.Connection, steps: int) -> None:
    """A finished run of a `steps`-step chain with three events a step: `r-big`."""
    ids = [f"s{i:05d}" for i in range(steps)]
    text = "name: chain\nsteps:\n" + "".join(f"  {sid}: {{uses: core/echo}}\n" for sid in ids)
    key = text_hash(text)
    conn.execute("INSERT INTO pipeline_texts (hash, text, steps) VALUES (?, ?, ?)",
                 (key, text, json.dumps(ids)))
    conn.execute("INSERT INTO runs (id, pipeline_name, pipeline_path, pipeline_text, "
                 "pipeline_hash, inputs, status, created_at, started_at, finished_at, "
                 "lease_generation) VALUES ('r-big', 'chain', '/chain.yaml', '', ?, '{}', "
                 "'succeeded', 0, 0, 60, 1)", (key,))
    conn.executemany("INSERT INTO steps (run_id, step_id, status, attempt, outputs, "
                     "started_at, finished_at) VALUES ('r-big', ?, 'succeeded', 1, ?, 1, 2)",
                     [(sid, json.dumps({"i": i})) for i, sid in enumerate(ids)])
    start = conn.execute("SELECT last FROM event_seq").fetchone()[0]
    conn.executemany("INSERT INTO events (run_id, seq, ts, kind, step_id, attempt, data) "
                     "VALUES ('r-big', ?, 1, ?, ?, 1, NULL)",
                     [(start + 3 * i + k + 1, kind, sid) for i, sid in enumerate(ids)
                      for k, kind in enumerate(("step_started", "log", "step_succeeded"))])
    conn.execute("UPDATE event_seq SET last = ?", (start + 3 * steps,))


async def measure(state: Path, runs: int, repeat: int) -> list[tuple[str, float]]:
    middle = runs / 2
    paths = [("runs page, newest 50", "/"),
             ("runs page, status failed", "/?status=failed"),
             ("runs page, pipeline lora", "/?pipeline=lora"),
             ("runs page, a page halfway back", f"/?before={middle}"),
             ("runs page, 500 at once", "/?limit=500"),
             ("GET /api/runs", "/api/runs"),
             ("a run's page", f"/runs/r-{runs - 1:07d}"),
             (f"a {BIG_STEPS:,}-step run's page", "/runs/r-big")]
    figures = []
    async with open_store(f"sqlite:///{state}") as store:
        transport = httpx.ASGITransport(app=create_app(store))
        async with httpx.AsyncClient(transport=transport, base_url="http://ui") as client:
            for label, path in paths:
                times = []
                for _ in range(repeat):
                    started = time.perf_counter()
                    response = await client.get(path)
                    times.append(time.perf_counter() - started)
                    assert response.status_code == 200, (path, response.text[:200])
                figures.append((label, statistics.median(times)))
    return figures


def main(argv: list[str] | None = None) -> list[tuple[str, float]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=9)
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        state = Path(tmp) / "state.db"
        started = time.perf_counter()
        seed(state, args.runs)
        print(f"web view, {args.runs:,} runs in the store (seeded in "
              f"{time.perf_counter() - started:.1f} s), median of {args.repeat} requests "
              f"(target <= {TARGET * 1000:.0f} ms for the runs pages)")
        for label, seconds in anyio.run(measure, state, args.runs, args.repeat):
            print(f"  {label:<34} {seconds * 1000:7.1f} ms")
            rows.append((f"web view, {label} (ms)", seconds * 1000))
    return rows


if __name__ == "__main__":
    main()
