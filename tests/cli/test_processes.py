"""Several real `orchestrator` processes on one state database: a second process changes nothing."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from tests.cli.helpers import state, wait_for

OPEN_AT_ONCE = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    import anyio
    from orchestrator.store.base import open_store

    ready, go = Path(sys.argv[1]), Path(sys.argv[2])
    ready.touch()
    while not go.exists():
        time.sleep(0.001)

    async def main() -> None:
        async with open_store("sqlite:///.orchestrator/state.db") as store:
            await store.list_runs()

    anyio.run(main)
""")


def test_processes_opening_a_new_state_database_at_once_all_succeed(tmp_path: Path) -> None:
    """Six processes, imports done, open a database none of them finds at the same instant:
    the first to take the write lock creates the schema, the others find it there."""
    go = tmp_path / "go"
    processes = [subprocess.Popen([sys.executable, "-c", OPEN_AT_ONCE, str(tmp_path / f"r{i}"),
                                   str(go)], cwd=tmp_path, env=dict(os.environ),
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for i in range(6)]
    wait_for(lambda: all((tmp_path / f"r{i}").exists() for i in range(6)),
             "every process is ready")
    go.touch()
    results = [p.communicate(timeout=60) for p in processes]
    assert [p.returncode for p in processes] == [0] * 6, [err for _, err in results]
    assert state(tmp_path, "PRAGMA user_version") != [(0,)]
