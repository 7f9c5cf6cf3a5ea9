"""`state export` / `state import`: a history moves between backends unchanged, all or
nothing, and a file that is not an export is one line naming its line."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import anyio
import pytest

from orchestrator.store.base import StateStore
from orchestrator.store.opening import open_store
from orchestrator.store.records import (
    MetricPoint,
    ModelEntry,
    NewBatch,
    NewEvent,
    NewRun,
    RunStatus,
    RunUpdate,
    ScheduleEntry,
    StepRecord,
    StepStatus,
)
from tests.conftest import CLI


async def fill(url: str) -> None:
    """A little of everything a history holds: runs with steps and events, a batch, a
    schedule, a model."""
    async with open_store(url) as store:
        for i in range(3):
            await store.create_run(NewRun(f"r-{i}", "p", "/p.yaml", f"name: p{i % 2}\n",
                                          {"i": i}, provider="local", provider_url="/d"))
            lease = await store.acquire_lease(f"r-{i}", "me", ttl=30, max_recoveries=3)
            await store.commit(lease, run=RunUpdate(RunStatus.SUCCEEDED, release=True),
                               steps=[StepRecord("a", StepStatus.SUCCEEDED, 1, {"x": [i]}),
                                      StepRecord("b", StepStatus.SUCCEEDED, 2, {"y": "é"})],
                               events=[NewEvent("step_succeeded", "a", 1, {"n": i})],
                               metrics=[MetricPoint("a", "ft-1", s, epoch=1.0, train_loss=2.0 / s,
                                                    tokens=10 * s) for s in (1, 2)])
        cell = NewRun("", "p", "/p.yaml", "name: m\n", {}, status=RunStatus.QUEUED)
        await store.create_batch(NewBatch("b-1", "p", "/p.yaml", "name: m\n", {},
                                          max_parallel=2, fail_fast=True),
                                 [dataclasses.replace(cell, id=f"b-1-{n}") for n in range(2)])
        await store.sync_schedule(ScheduleEntry("nightly", "p", "/p.yaml", "@daily", "UTC"))
        await store.advance_schedule("nightly", None, 123.0)
        await store.record_model(ModelEntry("m-1", "r-0", "register", "p", tags={"t": 1}))


async def history(store: StateStore) -> dict[str, object]:
    runs = await store.list_runs(limit=None)
    return {
        "runs": sorted(runs, key=lambda r: r.id),
        "steps": {r.id: await store.get_steps(r.id) for r in runs},
        "events": {r.id: [(e.ts, e.kind, e.step_id, e.attempt, e.data)
                          for e in await store.get_events(r.id)] for r in runs},
        "batches": await store.list_batches(),
        "schedules": await store.list_schedules(),
        "models": await store.list_models(),
        "metrics": {r.id: await store.get_metrics(r.id) for r in runs},
    }


@pytest.mark.parametrize("direction", ["sqlite to postgresql", "postgresql to sqlite"])
def test_a_history_moves_between_backends_unchanged(cli: CLI, tmp_path: Path,
                                                    postgres_url: str, direction: str) -> None:
    sqlite_url = f"sqlite:///{tmp_path / 'state.db'}"
    source, target = ((sqlite_url, postgres_url) if direction.startswith("sqlite")
                      else (postgres_url, sqlite_url))
    anyio.run(fill, source)
    exported = cli("state", "export", "history.jsonl", "--state-url", source, check_code=0)
    assert exported.stderr.startswith("exported 1 batches, 5 runs, 6 steps, ")
    cli("state", "import", "history.jsonl", "--state-url", target, check_code=0)

    async def compare() -> None:
        async with open_store(source) as old, open_store(target) as new:
            assert await history(new) == await history(old)
            assert (await new.get_run("r-1")).pipeline_text == "name: p1\n"
            assert len((await history(new))["metrics"]["r-2"]) == 2  # type: ignore[index]

    anyio.run(compare)


def test_an_import_meeting_an_id_already_there_imports_nothing(cli: CLI, tmp_path: Path,
                                                               postgres_url: str) -> None:
    anyio.run(fill, postgres_url)
    cli("state", "export", "history.jsonl", "--state-url", postgres_url, check_code=0)
    sqlite_url = f"sqlite:///{tmp_path / 'state.db'}"

    async def mine() -> None:
        async with open_store(sqlite_url) as store:
            await store.create_run(NewRun("r-2", "mine", "/m.yaml", "name: mine\n", {}))

    async def ids() -> list[str]:
        async with open_store(sqlite_url) as store:
            return [r.id for r in await store.list_runs()]

    anyio.run(mine)
    for url in (sqlite_url, postgres_url):
        refused = cli("state", "import", "history.jsonl", "--state-url", url, check_code=2)
        assert refused.stderr.startswith("history.jsonl:")
        assert "is already in this database; nothing was imported" in refused.stderr
        assert len(refused.stderr.splitlines()) == 1
    assert anyio.run(ids) == ["r-2"]


@pytest.mark.parametrize(("lines", "expected"), [
    ('{"hello": 1}\n', "history.jsonl:1: not a history written by `orchestrator state export`"),
    ('{"format": "orchestrator-state", "version": 9}\n', "history.jsonl:1: history format "
                                                         "version 9; this orchestrator reads "
                                                         "version 1"),
    ("HEAD\nnot json\n", "history.jsonl:2: not JSON"),
    ('HEAD\n{"table": "secrets", "row": {}}\n', "history.jsonl:2: unknown table 'secrets'"),
    ('HEAD\n{"table": "models", "row": {"name": "x"}}\n', "history.jsonl:2: a models row has "
                                                          "the columns name, run_id"),
    ('HEAD\n{"table": "pipeline_texts", "row": {"hash": "h", "text": {"a": 1}}}\n',
     "history.jsonl:2: pipeline_texts.text is a dict, not a plain value"),
])
def test_a_file_that_is_not_an_export_is_one_line(cli: CLI, tmp_path: Path, lines: str,
                                                  expected: str) -> None:
    head = '{"format": "orchestrator-state", "version": 1}'
    (tmp_path / "history.jsonl").write_text(lines.replace("HEAD", head))
    refused = cli("state", "import", "history.jsonl", check_code=2)
    assert refused.stderr.startswith(expected), refused.stderr
    assert len(refused.stderr.splitlines()) == 1
