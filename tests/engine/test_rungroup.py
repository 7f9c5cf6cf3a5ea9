"""RunGroup: runs that an outer cancellation does not reach, stopped a few at a time."""

from __future__ import annotations

import anyio

from orchestrator.engine.rungroup import RunGroup


async def test_stop_ends_every_run_a_wave_at_a_time() -> None:
    """Twenty runs, each saving its state (a shielded wait) when stopped: never more than
    a wave of them stopping at once, and all of them ended."""
    stopping = most = ended = 0

    async def run() -> None:
        nonlocal stopping, most, ended
        try:
            await anyio.sleep_forever()
        except anyio.get_cancelled_exc_class():
            stopping += 1
            most = max(most, stopping)
            with anyio.CancelScope(shield=True):
                await anyio.sleep(0.005)  # writing its state
            stopping -= 1
            ended += 1
            raise

    async with anyio.create_task_group() as tg:
        group = RunGroup(tg, wave=4)
        for n in range(20):
            group.start(f"run {n}", run)
        await anyio.wait_all_tasks_blocked()
        assert len(group) == 20
        with anyio.CancelScope(shield=True):
            await group.stop()
    assert (ended, most, len(group)) == (20, 4, 0)


async def test_an_outer_cancellation_leaves_the_runs_to_stop() -> None:
    """Cancelling the task group the runs live in does not cancel them: they go on until
    `stop` reaches them (which the owner calls on its way out), and a run that ends by
    itself leaves the group."""
    finished: list[str] = []
    release = anyio.Event()

    async def run(name: str) -> None:
        await release.wait()
        finished.append(name)

    async with anyio.create_task_group() as tg:
        group = RunGroup(tg)
        group.start("a", lambda: run("a"))
        await anyio.wait_all_tasks_blocked()
        tg.cancel_scope.cancel()
        with anyio.CancelScope(shield=True):  # the owner's way out
            await anyio.wait_all_tasks_blocked()
            assert len(group) == 1, "the outer cancellation reached the run"
            release.set()
            await group.wait()
    assert finished == ["a"]


async def test_a_run_started_again_supersedes_its_old_execution() -> None:
    """A run claimed again by the same process (its lease ran out while the process was cut
    off) while its old execution still runs: the old one is cancelled and ends first, the
    new one then runs; one entry, no error (a worker once died of a KeyError here)."""
    order: list[str] = []

    async def old() -> None:
        try:
            await anyio.sleep_forever()
        finally:
            with anyio.CancelScope(shield=True):
                await anyio.sleep(0.01)  # its last write, refused by then
            order.append("old ended")

    async def new() -> None:
        order.append("new started")

    async with anyio.create_task_group() as tg:
        group = RunGroup(tg)
        group.start("run r-1", old)
        await anyio.wait_all_tasks_blocked()
        group.start("run r-1", new)
        assert len(group) == 1
        with anyio.fail_after(10):
            await group.wait()
    assert order == ["old ended", "new started"]
    assert len(group) == 0
