"""A fleet whose workers are separate hosts (network namespaces, tests/netns.py) and one of
them loses the network while alive: another takes its runs within the lease's time, and the
cut-off one, when its link comes back, is refused by fencing and never makes a second job,
upload or model. The database is a PostgreSQL server of the test's own (tests/
private_postgres.py), the provider the local API; both listen on each host's link.
"""

from __future__ import annotations

import json
import shutil
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from bench.netns import Host, Hosts, hosts
from bench.pgserver import PrivatePostgres, private_postgres
from orchestrator.owners import _state
from tests.cli.helpers import Service, if_the_machine_allows, start_service, wait_for
from tests.cli.test_finetune_pipelines import LORA
from tests.cli.test_fleet import api_rows, ended, rows_of, said
from tests.conftest import CLI, REPO, write
from tests.localapi.test_server import KEY, free_port, serving

TTL = 3.0
"""The fleet's lease_ttl: a takeover comes within it (and a poll) of a worker's last renewal."""


def fleet_env(url: str, api: str) -> dict[str, str]:
    return {"ORCH_STATE_URL": url, "TOGETHER_API_KEY": KEY, "TOGETHER_BASE_URL": api,
            "ORCH_WORKER_POLL_INTERVAL": "200ms", "ORCH_LEASE_TTL": f"{TTL:g}s",
            "ORCH_BUSY_TIMEOUT": "2"}


def owner_pids(url: str) -> list[int]:
    """The process behind each run's lease (0 for a run without one), in run order."""
    rows = rows_of(url, "SELECT lease_owner FROM runs ORDER BY id")
    return [int(str(owner).split(":")[1]) if owner else 0 for (owner,) in rows]


def lease_moves(url: str) -> dict[str, list[int]]:
    """Each run's lease owners' pids, in the order they took it."""
    moves: dict[str, list[int]] = {}
    for run_id, data in rows_of(url, "SELECT run_id, data FROM events WHERE kind = "
                                     "'lease_acquired' ORDER BY run_id, seq"):
        owner = str(json.loads(str(data))["owner"])
        moves.setdefault(str(run_id), []).append(int(owner.split(":")[1]))
    return moves


def worker_on(tmp_path: Path, host: Host, env: dict[str, str]) -> Service:
    return start_service(tmp_path, "worker", env=env, prefix=host.command([]))


@contextmanager
def two_hosts(tmp_path: Path, *, job: str
              ) -> Iterator[tuple[Hosts, Host, Host, PrivatePostgres, dict[str, str]]]:
    """Two hosts of their own, a private PostgreSQL and the local API (jobs of `job`) that
    both reach at one address, and the fleet's environment naming them."""
    with if_the_machine_allows(), hosts() as net:
        one, two = net.add(), net.add()
        with private_postgres(net.service) as db, \
                serving(tmp_path, free_port(), everywhere=True, local_job_duration=job,
                        local_upload_duration="200ms") as base:
            yield net, one, two, db, fleet_env(db.url_at(net.service),
                                               base.replace("127.0.0.1", net.service))


def pipeline(tmp_path: Path) -> Path:
    folder = tmp_path / "pipelines"
    shutil.copytree(REPO / "pipelines" / "data", folder / "data")
    return write(folder / "lora.yaml", Path(LORA).read_text())


@pytest.mark.slow
def test_a_worker_cut_off_loses_its_runs_and_never_acts_twice(cli: CLI, tmp_path: Path) -> None:
    """Worker 1 holds four runs waiting on their jobs; its link is cut. Worker 2 (another
    host) takes every one within the lease's time; worker 1 stops executing them, and when
    its link is back its writes are refused: one job, one model per run, the data uploaded
    once."""
    lora = pipeline(tmp_path)
    runs = 4
    with two_hosts(tmp_path, job="4s") as (net, one, two, db, here):
        for _ in range(runs):
            cli("run", "--detach", str(lora), "--provider", "together", "-i",
                "poll_interval=200ms", env=here, check_code=0)
        first = worker_on(tmp_path, one, here)
        workers = [first]
        try:
            wait_for(lambda: len(api_rows(tmp_path, "SELECT id FROM finetunes")) == runs,
                     "worker 1 launched every job\n" + "".join(first.lines[-15:]), timeout=60)
            assert set(owner_pids(db.url)) == {first.proc.pid}
            second = worker_on(tmp_path, two, here)
            workers.append(second)
            cut = time.monotonic()
            net.cut(one)
            wait_for(lambda: set(owner_pids(db.url)) <= {second.proc.pid, 0},
                     "worker 2 took every run", timeout=60)
            took = time.monotonic() - cut
            wait_for(lambda: said(first, "lost the lease on a run"),
                     "worker 1 stopped executing them", timeout=60)
            net.heal(one)
            wait_for(lambda: ended(db.url) == runs, "every run ended", timeout=120)
            statuses = rows_of(db.url, "SELECT status, count(*) FROM runs GROUP BY status")
            moves = lease_moves(db.url)
        finally:
            for worker in workers:
                worker.stop()
        models = cli("models", "--limit", "100", env=here, check_code=0).stdout
        jobs = api_rows(tmp_path, "SELECT id FROM finetunes")
        files = api_rows(tmp_path, "SELECT id FROM files")
    assert statuses == [("succeeded", runs)]
    assert took <= TTL + 3, f"the takeover took {took:.1f}s"
    assert all(pids == [first.proc.pid, second.proc.pid] for pids in moves.values()), moves
    assert len(jobs) == runs, "a fine-tune was launched twice (or one was lost)"
    assert len(files) == 2, files
    assert len(models.splitlines()) == runs + 1  # a header and each run's model


@pytest.mark.slow
@pytest.mark.parametrize("point", ["before_remote_create", "after_remote_create"])
def test_a_cut_at_each_commit_point_of_the_launch_still_makes_one_job(
        cli: CLI, tmp_path: Path, point: str) -> None:
    """Worker 1 is frozen at a commit point of the launch (it recorded that it is creating,
    and the create is not sent / the create reached the API and is not recorded), its link
    is cut, and it goes on; worker 2 takes the run and creates or adopts the job. When the
    link is back, worker 1's create or record is refused: one job."""
    lora = pipeline(tmp_path)
    with two_hosts(tmp_path, job="1s") as (net, one, two, db, here):
        cli("run", "--detach", str(lora), "--provider", "together", "-i",
            "poll_interval=200ms", env=here, check_code=0)
        first = worker_on(tmp_path, one, {**here, "ORCH_FAULTS": f"{point}:launch=stop"})
        workers = [first]
        try:
            wait_for(lambda: _state(first.proc.pid) == "T", f"worker 1 frozen at {point}",
                     timeout=60)
            net.cut(one)
            first.proc.send_signal(signal.SIGCONT)
            second = worker_on(tmp_path, two, here)
            workers.append(second)
            wait_for(lambda: rows_of(db.url, "SELECT count(*) FROM steps WHERE step_id = "
                                             "'launch' AND status = 'succeeded'") == [(1,)],
                     "worker 2 launched (or adopted) the job", timeout=60)
            net.heal(one)
            wait_for(lambda: said(first, "lost the lease on a run")
                     or said(first, "run left to another executor"),
                     "worker 1 refused", timeout=60)
            wait_for(lambda: rows_of(db.url, "SELECT status FROM runs") in (
                [("succeeded",)], [("failed",)]), "the run ended", timeout=120)
            status = rows_of(db.url, "SELECT status FROM runs")
        finally:
            for worker in workers:
                worker.stop()
        jobs = api_rows(tmp_path, "SELECT id FROM finetunes")
    assert status == [("succeeded",)]
    assert len(jobs) == 1, "a fine-tune was launched twice"
