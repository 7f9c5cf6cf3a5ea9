"""What only the PostgreSQL store has to prove: a schema of its own, migrated once by a fleet
starting together, refusals in one line, and its guarantees while many stores (each as a
worker would hold it) race on one database at once."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import anyio
import psycopg
import pytest

from bench.pgserver import private_postgres
from orchestrator.errors import LeaseLost, RunBusy, StateStoreInvalid, StoreUnavailable
from orchestrator.redact import REDACTOR
from orchestrator.store.opening import open_store
from orchestrator.store.postgres.dbclock import RECALIBRATE_EVERY, DatabaseClock
from orchestrator.store.postgres.schema import SCHEMA_VERSION
from orchestrator.store.records import (
    NewEvent,
    NewRun,
    RunStatus,
    RunUpdate,
    StepRecord,
    StepStatus,
)
from orchestrator.testing import wait_until
from tests.cli.helpers import if_the_machine_allows
from tests.conftest import POSTGRES, pg_rows

TTL = 30.0


def queued(run_id: str) -> NewRun:
    return NewRun(run_id, "p", "/x/p.yaml", "name: p\n", {}, status=RunStatus.QUEUED)


def schema_of(url: str) -> str:
    return url.rpartition("schema=")[2]


sql = pg_rows


async def test_a_fleet_starting_at_once_migrates_the_schema_once(postgres_url: str) -> None:
    """Eight processes' stores opening a new schema together: one migrates, from 0 to the
    current version, under the advisory lock; the others find it done."""
    changes = await open_eight(postgres_url)
    assert sorted(changes, key=str) == [(0, SCHEMA_VERSION)] + [None] * 7
    assert sql(postgres_url, "SELECT application, version FROM orchestrator_schema") == [
        ("orchestrator", SCHEMA_VERSION)]


async def open_eight(url: str) -> list[tuple[int, int] | None]:
    """What each of eight stores opened at once on `url` migrated."""
    changes: list[tuple[int, int] | None] = []

    async def open_one() -> None:
        async with open_store(url) as store:
            changes.append(store.schema_change)

    async with anyio.create_task_group() as tg:
        for _ in range(8):
            tg.start_soon(open_one)
    return changes


async def test_a_fleet_starting_at_once_on_a_new_database_without_a_schema() -> None:
    """The same in a database's own `public` schema (no ?schema=, as most deployments name
    it): the seven that waited found the tables made, where they had tried to make them
    again (their transactions began before the lock, with the catalog as it was then)."""
    with if_the_machine_allows(), private_postgres() as server:
        changes = await open_eight(server.url)
    assert sorted(changes, key=str) == [(0, SCHEMA_VERSION)] + [None] * 7


async def test_a_schema_from_a_newer_version_is_refused_and_left_alone(postgres_url: str
                                                                        ) -> None:
    async with open_store(postgres_url):
        pass
    sql(postgres_url, "UPDATE orchestrator_schema SET version = 99")
    with pytest.raises(StateStoreInvalid, match=r"written by a newer orchestrator \(schema 99; "
                                                 rf"this version reads up to {SCHEMA_VERSION}"):
        async with open_store(postgres_url):
            pass
    assert sql(postgres_url, "SELECT version FROM orchestrator_schema") == [(99,)]


async def test_a_version_3_schemas_empty_mappings_read_back_and_new_ones_are_null(
        postgres_url: str) -> None:
    """Migration 4 lets events' data and steps' checkpoints be NULL; the `{}`s stored before
    stay and read back as empty, what is written after stores NULL for empty."""
    async with open_store(postgres_url) as store:
        await store.create_run(queued("r-1"))
    sql(postgres_url, "ALTER TABLE events ALTER COLUMN data SET NOT NULL")
    sql(postgres_url, "ALTER TABLE steps ALTER COLUMN checkpoint SET NOT NULL")
    sql(postgres_url, "ALTER TABLE schedules DROP COLUMN paused_at")  # added by migration 5
    sql(postgres_url, "DROP TABLE alias_moves")  # added by migration 6
    sql(postgres_url, "UPDATE orchestrator_schema SET version = 3")
    sql(postgres_url, "INSERT INTO steps (run_id, step_id, status, attempt, checkpoint) "
                      "VALUES ('r-1', 'old', 'succeeded', 1, '{}')")
    sql(postgres_url, "INSERT INTO events (run_id, ts, kind, data) VALUES ('r-1', 1, 'note', "
                      "'{}')")
    async with open_store(postgres_url) as store:
        assert store.schema_change == (3, SCHEMA_VERSION)
        lease = await store.acquire_lease("r-1", "me", ttl=TTL, max_recoveries=3)
        await store.commit(lease, steps=[StepRecord("new", StepStatus.RUNNING)],
                           events=[NewEvent("note")])
        steps = await store.get_steps("r-1")
        assert (steps["old"].checkpoint, steps["new"].checkpoint) == ({}, {})
        assert [e.data for e in await store.get_events("r-1") if e.kind == "note"] == [{}, {}]
    assert sql(postgres_url, "SELECT step_id, checkpoint FROM steps ORDER BY step_id") == [
        ("new", None), ("old", "{}")]
    assert sql(postgres_url, "SELECT data FROM events WHERE kind = 'note' ORDER BY seq") == [
        ("{}",), (None,)]


async def test_someone_elses_runs_table_is_refused_and_left_alone(postgres_url: str) -> None:
    schema = schema_of(postgres_url)
    with psycopg.connect(POSTGRES, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
        conn.execute(f"CREATE TABLE {schema}.runs (x int)")
    with pytest.raises(StateStoreInvalid, match="already has a table 'runs' that is not an "
                                                "orchestrator's; it was left untouched"):
        async with open_store(postgres_url):
            pass
    assert sql(postgres_url, "SELECT count(*) FROM pg_tables WHERE schemaname = "
                             f"'{schema}'") == [(1,)]


async def test_a_server_that_is_not_there_is_unavailable_not_invalid() -> None:
    """Refused (down, restarting): try again later (exit 75), unlike a wrong role or database
    (exit 2), which trying again never mends."""
    with pytest.raises(StoreUnavailable) as caught:
        async with open_store("postgresql://postgres@127.0.0.1:1/test", busy_timeout=2.0):
            pass
    message = str(caught.value)
    assert 'cannot connect: connection to server at "127.0.0.1", port 1 failed: Connection ' \
           "refused" in message and "try again" in message and "\n" not in message
    assert caught.value.exit_code == 75


@pytest.mark.parametrize(("url", "expected"), [
    ("postgresql://nobody@127.0.0.1:5432/test", 'role "nobody" does not exist'),
    ("postgresql://postgres@127.0.0.1:5432/no_such_db", 'database "no_such_db" does not exist'),
    ("postgresql://postgres@127.0.0.1:5432/test?schema=Bad-Name", "schema 'Bad-Name' is not a "
                                                                  "plain lowercase name"),
    *((f"postgresql://postgres@127.0.0.1:5432/test?schema={name}",
       f"schema '{name}' is PostgreSQL's own; name a schema of your own")
      for name in ("information_schema", "pg_catalog", "pg_toast", "pg_temp_1")),
    ("postgresql://u@[::1", "state_url 'postgresql://...' is not a valid URL (Invalid IPv6 "
                            "URL)"),
    ("postgresql://u:secret@[::1", "state_url 'postgresql://...' is not a valid URL"),
    ("postgresql://u@h:99999/db", "is not a valid URL (Port out of range 0-65535)"),
])
async def test_unusable_servers_are_one_line_errors(url: str, expected: str) -> None:
    with pytest.raises(StateStoreInvalid) as caught:
        async with open_store(url, busy_timeout=2.0):
            pass
    message = str(caught.value)
    assert expected in message and "\n" not in message and "secret" not in message


async def test_a_password_in_the_url_is_never_shown() -> None:
    url = "postgresql://postgres:hunter2-secret@127.0.0.1:1/test"
    with pytest.raises(StoreUnavailable) as caught:
        async with open_store(url, busy_timeout=1.0):
            pass
    assert "hunter2-secret" not in str(caught.value)
    assert "postgres:***@127.0.0.1:1/test" in str(caught.value)
    assert REDACTOR.text("the url had hunter2-secret in it") == "the url had *** in it"


async def test_workers_racing_to_claim_never_take_a_run_twice(postgres_url: str) -> None:
    """Four stores (four workers' connections) claiming 200 queued runs at once, in small
    bites: every run is claimed exactly once (SKIP LOCKED), none is left."""
    async with open_store(postgres_url) as setup:
        for i in range(200):
            await setup.create_run(queued(f"r-{i:03d}"))
    claimed: dict[str, list[str]] = {}

    async def worker(name: str) -> None:
        async with open_store(postgres_url) as store:
            while leases := await store.claim_runs(name, limit=7, ttl=TTL, max_recoveries=3):
                claimed.setdefault(name, []).extend(lease.run_id for lease in leases)

    async with anyio.create_task_group() as tg:
        for n in range(4):
            tg.start_soon(worker, f"w{n}")
    every = [run_id for ids in claimed.values() for run_id in ids]
    assert sorted(every) == [f"r-{i:03d}" for i in range(200)]
    assert len(claimed) > 1  # they really raced


async def test_concurrency_limits_hold_across_stores_granting_at_once(postgres_url: str
                                                                       ) -> None:
    """Ten stores asking for a key of limit 3 at the same moment: exactly 3 slots exist."""
    granted: list[str] = []

    async def ask(n: int) -> None:
        async with open_store(postgres_url) as store:
            granted.extend(await store.acquire_slots("gpu", 3, [(f"h{n}", f"r{n}")],
                                                     owner=f"p{n}", ttl=TTL))

    async with anyio.create_task_group() as tg:
        for n in range(10):
            tg.start_soon(ask, n)
    assert len(granted) == 3
    assert sql(postgres_url, "SELECT count(*) FROM slots WHERE key = 'gpu'") == [(3,)]


async def test_a_stalled_executor_cannot_write_once_another_took_the_run(postgres_url: str
                                                                          ) -> None:
    """The old holder's commit waits on nothing and writes nothing once the lease moved."""
    async with open_store(postgres_url) as old, open_store(postgres_url) as new:
        await old.create_run(queued("r-1"))
        stale = await old.acquire_lease("r-1", "old", ttl=TTL, max_recoveries=3)
        await new.acquire_lease("r-1", "new", ttl=TTL, max_recoveries=3,
                                dead_owners=["old"])
        with pytest.raises(LeaseLost):
            await old.commit(stale, run=RunUpdate(RunStatus.FAILED),
                             steps=[StepRecord("a", StepStatus.FAILED)])
        with pytest.raises(LeaseLost):
            await old.commit(stale, steps=[StepRecord("a", StepStatus.FAILED)])
        assert await new.get_steps("r-1") == {}
        assert (await new.get_run("r-1")).lease_owner == "new"


async def test_event_numbers_follow_commit_order_for_a_follower(postgres_url: str) -> None:
    """Three tasks of the executor committing at once (three pooled connections) while
    another process asks to cancel the same run: a reader paging by `seq`, as `logs --follow`
    does, sees every event, none skipped (an event numbered before another but committed
    after it would be)."""
    async with open_store(postgres_url) as executor, open_store(postgres_url) as other, \
            open_store(postgres_url) as reader:
        await executor.create_run(queued("r-1"))
        lease = await executor.acquire_lease("r-1", "me", ttl=TTL, max_recoveries=3)
        seen: list[int] = []
        writing = 4

        async def commits(n: int) -> None:
            nonlocal writing
            for i in range(60):
                await executor.commit(lease, events=[NewEvent("progress", data={"n": n, "i": i})])
            writing -= 1

        async def cancels() -> None:
            nonlocal writing
            for _ in range(60):
                await other.request_cancel(["r-1"])
            writing -= 1

        async def follow() -> None:
            after = 0
            while writing or await reader.get_events("r-1", after=after):
                for event in await reader.get_events("r-1", after=after):
                    seen.append(event.seq)
                    after = event.seq

        async with anyio.create_task_group() as tg:
            tg.start_soon(follow)
            for n in range(3):
                tg.start_soon(commits, n)
            tg.start_soon(cancels)
        stored = [event.seq for event in await reader.get_events("r-1")]
        assert len(stored) > 240
        assert seen == stored


async def test_a_queued_run_wakes_a_watching_worker(postgres_url: str) -> None:
    """NOTIFY at commit reaches a LISTENing store in another connection, for its topic."""
    async with open_store(postgres_url) as worker, open_store(postgres_url) as client:
        woken: list[str] = []
        async with anyio.create_task_group() as tg:
            tg.start_soon(worker.watch, "work", lambda: woken.append("work"))
            tg.start_soon(worker.watch, "slots", lambda: woken.append("slots"))
            async def counted(work: int, slots: int) -> bool:
                return (woken.count("work"), woken.count("slots")) == (work, slots)

            # Each watcher wakes once on connecting (what it may have missed before).
            await wait_until(lambda: counted(1, 1), what="both watchers listening")
            assert await _listeners(postgres_url) == 1, "the watchers share one connection"
            await client.create_run(queued("r-1"))
            await wait_until(lambda: counted(2, 1), what="the queued run announced")
            await client.acquire_slots("k", 1, [("h", "r")], owner="c", ttl=TTL)
            await client.release_slot("k", "h", owner="c")
            await wait_until(lambda: counted(2, 2), what="the free slot announced")
            assert woken.count("work") == 2
            tg.cancel_scope.cancel()


async def test_a_slot_given_back_elsewhere_reaches_a_waiter_without_polling(
        postgres_url: str) -> None:
    """A process waiting for a key's slot (polling only every minute) gets it as soon as
    another process gives it back: the pool listens while it has waiters, and only then."""
    from orchestrator.engine.slots import SlotPool

    async with open_store(postgres_url) as here, open_store(postgres_url) as there:
        pool = SlotPool(here, "here", ttl=TTL, poll_interval=60.0)
        assert await there.acquire_slots("gpu", 1, [("theirs", "r-0")], owner="there",
                                         ttl=TTL) == ["theirs"]
        async with anyio.create_task_group() as tg:
            await tg.start(pool.grant_forever)
            assert not await _listening(postgres_url), "no waiter, yet a connection listens"
            got = anyio.Event()

            async def wait_for_slot() -> None:
                await pool.acquire("gpu", 1, holder="mine", run_id="r-1")
                got.set()

            tg.start_soon(wait_for_slot)
            # Given back once the waiter is queued and the pool listens (the pool's first
            # attempt failed, so it waits; the listener wakes it once on connecting).
            await wait_until(lambda: _listening(postgres_url), what="the pool listens")
            await there.release_slot("gpu", "theirs", owner="there")
            with anyio.fail_after(5):
                await got.wait()
            tg.cancel_scope.cancel()


async def _listening(url: str) -> bool:
    channel = f"orchestrator.{url.rpartition('schema=')[2]}"
    return bool(sql(url, "SELECT 1 FROM pg_stat_activity WHERE query = "
                         f"'LISTEN \"{channel}\"'"))


async def test_connections_the_server_dropped_are_replaced_before_use(postgres_url: str
                                                                      ) -> None:
    """Every connection of the store's pool terminated by the server (a restart, an admin):
    the next writes and reads work, on new connections, and nothing is lost."""
    schema = schema_of(postgres_url)
    async with open_store(postgres_url) as store:
        await store.create_run(queued("r-1"))
        lease = await store.acquire_lease("r-1", "me", ttl=TTL, max_recoveries=3)
        before = sql(postgres_url, "SELECT pid FROM pg_stat_activity WHERE application_name = "
                                   f"'orchestrator {schema}'")
        assert before
        sql(postgres_url, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE "
                          f"application_name = 'orchestrator {schema}'")
        await wait_until(lambda: _gone(postgres_url, before), what="the backends ended")
        await store.commit(lease, events=[NewEvent("after_the_drop")])
        assert [e.kind for e in await store.get_events("r-1")][-1] == "after_the_drop"
        after = sql(postgres_url, "SELECT pid FROM pg_stat_activity WHERE application_name = "
                                  f"'orchestrator {schema}'")
        assert after and not set(after) & set(before)


async def _gone(url: str, pids: list[tuple[object, ...]]) -> bool:
    wanted = ",".join(str(pid) for (pid,) in pids)
    return not sql(url, f"SELECT 1 FROM pg_stat_activity WHERE pid IN ({wanted})")


async def test_a_burst_of_work_queues_for_its_turn_instead_of_failing(postgres_url: str
                                                                      ) -> None:
    """A worker starting thousands of runs at once: 1,500 transactions at the same moment on
    a store whose busy_timeout is half a second all succeed, in turn (the wait for a
    connection of one's own process is progress, not a lock someone else holds), and the
    lease heartbeat is not stuck behind them."""
    async with open_store(postgres_url, busy_timeout=0.5) as store:
        created: list[str] = []
        renewed: list[float] = []

        async def create(n: int) -> None:
            created.append((await store.create_run(queued(f"r-{n:04d}"))).id)

        async def heartbeat(started: float) -> None:
            await store.renew_leases("me", ttl=TTL)
            renewed.append(anyio.current_time() - started)

        async with anyio.create_task_group() as tg:
            for n in range(1500):
                tg.start_soon(create, n)
            tg.start_soon(heartbeat, anyio.current_time())
        assert len(created) == 1500
        assert renewed[0] < 0.5, "the heartbeat waited behind the burst"


async def test_a_cancel_request_reaches_the_executing_process_without_polling(
        postgres_url: str, tmp_path: Path) -> None:
    """Asked to cancel from another process, a run executing here (which would poll for
    cancel requests only every ten minutes) ends cancelled at once: the request is
    announced, on the one LISTEN connection the process shares between its watchers."""
    from orchestrator.engine.orchestrator import EngineConfig, Orchestrator
    from orchestrator.steps.builtin import load_pipeline
    from tests.conftest import write

    pipeline = load_pipeline(write(tmp_path / "p.yaml", """
        name: p
        steps:
          nap: {uses: core/sleep, with: {duration: 1h}}
    """))
    config = EngineConfig(cancel_poll_interval=60.0)
    async with open_store(postgres_url) as store, open_store(postgres_url) as other, \
            Orchestrator(store, config=config) as orch:
        run = await orch.create_run(pipeline, {}, hold=True)
        assert run.lease is not None
        outcome: list[RunStatus] = []
        ended = anyio.Event()

        async def execute() -> None:
            plan = await orch.plan_resume(run.id)
            outcome.append((await orch.execute(plan, lease=run.lease)).status)
            ended.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(execute)

            async def napping() -> bool:
                return "nap" in await store.get_steps(run.id)

            await wait_until(napping, what="the run naps")
            await wait_until(lambda: _listening(postgres_url), what="the process listens")
            await other.request_cancel([run.id])
            with anyio.fail_after(5):
                await ended.wait()
        assert outcome == [RunStatus.CANCELLED]


async def _listeners(url: str) -> int:
    rows = sql(url, "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'LISTEN %' AND "
                    f"application_name = 'orchestrator {schema_of(url)}'")
    return int(str(rows[0][0]))


@pytest.mark.parametrize("skew", [-300.0, 300.0], ids=["behind", "ahead"])
async def test_leases_go_by_the_servers_clock_never_a_workers(postgres_url: str,
                                                               skew: float) -> None:
    """A worker whose clocks (wall and monotonic, injected) are five minutes off neither takes
    a live lease (ahead, it would see every lease as expired) nor writes one that others see
    as expired (behind, its expiries would lie in their past)."""
    def off(source: Callable[[], float]) -> Callable[[], float]:
        return lambda: source() + skew

    skewed = DatabaseClock(monotonic=off(time.monotonic), wall=off(time.time))
    async with open_store(postgres_url) as honest, \
            open_store(postgres_url, clock=skewed) as other:
        assert skewed.skew is not None and abs(skewed.skew - skew) < 1
        await honest.create_run(queued("r-honest"))
        await honest.acquire_lease("r-honest", "honest", ttl=TTL, max_recoveries=3)
        assert await other.claim_runs("other", limit=5, ttl=TTL, max_recoveries=3) == []
        with pytest.raises(RunBusy):
            await other.acquire_lease("r-honest", "other", ttl=TTL, max_recoveries=3)
        await other.create_run(queued("r-other"))
        lease = await other.acquire_lease("r-other", "other", ttl=TTL, max_recoveries=3)
        assert abs(lease.expires_at - (honest.clock() + TTL)) < 1
        assert await honest.claim_runs("honest", limit=5, ttl=TTL, max_recoveries=3) == []


async def test_the_servers_clock_is_read_again_every_minute(postgres_url: str) -> None:
    """Between readings the store counts on this machine's monotonic clock; a minute on, the
    next transaction reads the server's again (here the fake monotonic clock ran a minute
    ahead of the server, and the reading corrects it)."""
    ticks = [1000.0]
    clock = DatabaseClock(monotonic=lambda: ticks[0])
    async with open_store(postgres_url, clock=clock) as store:
        assert abs(clock() - time.time()) < 1 and not clock.due
        ticks[0] += RECALIBRATE_EVERY + 1
        assert clock.due and abs(clock() - time.time() - RECALIBRATE_EVERY) < 2
        await store.create_run(queued("r-1"))
        assert not clock.due and abs(clock() - time.time()) < 1
