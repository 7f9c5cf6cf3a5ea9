"""`state export` / `state import`: a history moves between backends unchanged, all or
nothing, and a file that is not an export is one line naming its line."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import anyio
import pytest

from orchestrator.store.base import StateStore
from orchestrator.store.opening import open_store
from orchestrator.store.records import (
    AliasMove,
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
        await store.move_alias(AliasMove("production", "m-1", "ann", "best", "b-1"))
        await store.move_alias(AliasMove("production", "m-0", "bob"))


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
        "aliases": [(a.alias, a.model, a.moved_by, a.reason, a.source, a.moved_at)
                    for a in await store.alias_history()],
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
                                                         "versions 1 to 3"),
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


def _export(cli: CLI, tmp_path: Path) -> list[dict[str, Any]]:
    """A real history (`fill`) exported, as the lines of its file, parsed."""
    source = f"sqlite:///{tmp_path / 'source.db'}"
    anyio.run(fill, source)
    cli("state", "export", "history.jsonl", "--state-url", source, check_code=0)
    return [json.loads(line) for line in (tmp_path / "history.jsonl").read_text().splitlines()]


def _first(lines: list[dict[str, Any]], table: str) -> dict[str, Any]:
    return next(line["row"] for line in lines if line.get("table") == table)


@pytest.mark.parametrize(("table", "change", "expected"), [
    pytest.param("runs", {"status": "pwned"}, "runs.status is 'pwned', not one of pending, "
                 "queued, running", id="status"),
    pytest.param("runs", {"created_at": 1e30}, "runs.created_at is 1e+30, not a time between "
                 "1970 and the year 3000", id="created-far-future"),
    pytest.param("runs", {"created_at": "yesterday"}, "runs.created_at is the text "
                 "'yesterday', not a time in seconds", id="created-text"),
    pytest.param("runs", {"inputs": "{not json"}, "runs.inputs is not JSON", id="inputs"),
    pytest.param("runs", {"pipeline_hash": "0" * 64}, "runs.pipeline_hash names no pipeline "
                 "text of this file", id="text-missing"),
    pytest.param("runs", {"pipeline_hash": None, "pipeline_text": ""}, "runs.pipeline_text "
                 "is missing", id="text-empty"),
    pytest.param("runs", {"lease_generation": -1}, "runs.lease_generation is -1, out of "
                 "range", id="negative"),
    pytest.param("steps", {"outputs": "[1, 2]"}, "steps.outputs holds a list, not a JSON "
                 "object", id="outputs-list"),
    pytest.param("steps", {"error": '{"x": 1}'}, "a steps row the store could not read "
                 "back", id="error-shape"),
    pytest.param("steps", {"run_id": "r-elsewhere"}, "steps.run_id 'r-elsewhere' is no run "
                 "of this file", id="orphan-step"),
    pytest.param("events", {"ts": None}, "events.ts is null, not a time", id="event-time"),
    pytest.param("metric_points", {"train_loss": "low"}, "metric_points.train_loss is the "
                 "text 'low', not a number", id="loss-text"),
    pytest.param("pipeline_texts", {"text": "name: forged\n"}, "pipeline_texts.hash is not "
                 "the SHA-256 of its text", id="text-hash"),
    pytest.param("batches", {"fail_fast": "yes"}, "batches.fail_fast is the text 'yes', "
                 "not true or false", id="flag"),
    pytest.param("models", {"tags": "null"}, "models.tags holds null, not a JSON object",
                 id="tags"),
])
def test_an_import_checks_every_value_as_the_store_reads_it(
        cli: CLI, tmp_path: Path, table: str, change: dict[str, Any], expected: str) -> None:
    """A row with a value the store cannot read back was imported and broke `runs`/`show`
    for good: now the whole import is refused in one line naming the line and the field,
    and the database is as it was."""
    lines = _export(cli, tmp_path)
    whole = (tmp_path / "history.jsonl").read_text()
    row = _first(lines, table)
    row.update(change)
    (tmp_path / "history.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    number = next(n for n, line in enumerate(lines, 1) if line.get("row") is row)
    refused = cli("state", "import", "history.jsonl", check_code=2)
    assert refused.stderr.startswith(f"history.jsonl:{number}: {expected}"), refused.stderr
    assert refused.stderr.rstrip().endswith("nothing was imported")
    assert len(refused.stderr.splitlines()) == 1
    assert cli("runs", check_code=0).stdout.startswith("no runs yet")
    (tmp_path / "history.jsonl").write_text(whole)
    cli("state", "import", "history.jsonl", check_code=0)
    for run in json.loads(cli("runs", "-o", "json", check_code=0).stdout):
        cli("show", run["id"], check_code=0)


def test_a_line_longer_than_any_row_is_refused_before_it_is_read_whole(
        cli: CLI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from orchestrator.store import transfer

    assert transfer.MAX_LINE >= 2 * 64 * 2**20  # the real bound: a 64 MiB text, escaped
    monkeypatch.setattr(transfer, "MAX_LINE", 4096)
    head = '{"format": "orchestrator-state", "version": 1}\n'
    (tmp_path / "history.jsonl").write_text(head + "x" * 10_000 + "\n")
    refused = cli("state", "import", "history.jsonl", check_code=2)
    assert refused.stderr.startswith("history.jsonl:2: line longer than 4 KiB, the largest "
                                     "row a state database holds")


def test_export_writes_a_new_file_and_touches_nothing_else(cli: CLI, tmp_path: Path) -> None:
    """`state export PATH` wrote through a link planted at its temporary name, and replaced
    FIFOs and devices with regular files (as root, /dev/full). It writes a file created
    beside the target under a name no one had, then renames it; a target that is there and
    is not a regular file is refused, left as it was."""
    import os
    import stat

    victim = tmp_path / "victim"
    victim.write_text("keep me")
    (tmp_path / ".history.jsonl.partial").symlink_to(victim)
    cli("state", "export", "history.jsonl", check_code=0)
    assert victim.read_text() == "keep me"
    assert (tmp_path / "history.jsonl").read_text().startswith('{"format":')
    assert cli("state", "export", "history.jsonl", check_code=0).stderr.startswith("exported")
    (tmp_path / "link.jsonl").symlink_to(victim)
    os.mkfifo(tmp_path / "fifo.jsonl")
    (tmp_path / "dir.jsonl").mkdir()
    targets = {"link.jsonl": "a symbolic link", "fifo.jsonl": "a FIFO",
               "dir.jsonl": "a directory"}
    if os.geteuid() == 0:  # a character device of our own, made as /dev/full is
        os.mknod(tmp_path / "full.jsonl", stat.S_IFCHR | 0o600, os.makedev(1, 7))
        targets["full.jsonl"] = "a character device"
    for name, kind in targets.items():
        refused = cli("state", "export", name, check_code=2)
        assert refused.stderr == (f"{name}: is {kind}, not a regular file; it is left as it "
                                  "is (choose another name)\n")
    assert (tmp_path / "link.jsonl").is_symlink() and victim.read_text() == "keep me"
    assert stat.S_ISFIFO((tmp_path / "fifo.jsonl").lstat().st_mode)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.endswith(".partial")) == [
        ".history.jsonl.partial"]  # the planted link alone: no partial file left behind
