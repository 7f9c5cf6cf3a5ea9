"""A provider outage is no news, not a failure: the local API killed and restarted mid-wait."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from tests.cli.helpers import popen, wait_for, wait_for_state
from tests.conftest import CLI, REPO, write
from tests.localapi.test_server import KEY, free_port, start_server

FOLLOW = """
name: follow
inputs:
  max_outage: {type: duration, default: 1h}
steps:
  upload: {uses: together/upload-file, with: {path: DATA/train.jsonl}}
  launch:
    uses: together/launch-fine-tune
    with: {training_file: "${{ steps.upload.outputs.file_id }}", model: BASE}
  wait:
    uses: together/wait-fine-tune
    with: {job_id: "${{ steps.launch.outputs.job_id }}", poll_interval: 100ms,
           max_poll_interval: 300ms, max_outage: "${{ inputs.max_outage }}"}
"""


def pipeline(tmp_path: Path) -> Path:
    from tests.localapi.conftest import BASE

    return write(tmp_path / "follow.yaml", FOLLOW.replace("DATA", str(REPO / "pipelines" / "data"))
                 .replace("BASE", BASE))


@pytest.mark.slow
def test_a_wait_rides_out_the_provider_going_away_and_coming_back(cli: CLI,
                                                                 tmp_path: Path) -> None:
    """The server dies while its job is followed: the wait step says since when the provider
    is unreachable (in `show`), keeps polling without using up attempts, and completes once
    a new server serves the same data."""
    pipeline(tmp_path)
    port = free_port()
    base = f"http://127.0.0.1:{port}/v1"
    env = {"TOGETHER_API_KEY": KEY, "TOGETHER_BASE_URL": base}
    server = start_server(tmp_path, port, local_job_duration="4s")
    run = popen(tmp_path, "run", "follow.yaml", "--provider", "together", env=env)
    try:
        run_id = str(wait_for_state(tmp_path, "SELECT run_id FROM steps WHERE step_id = "
                                              "'wait'", "the wait started")[0][0])
        server.send_signal(signal.SIGKILL)
        server.communicate()
        wait_for(lambda: "provider unreachable since" in cli("show", run_id).stdout,
                 "show says the provider is unreachable")
        server = start_server(tmp_path, port, local_job_duration="4s")
        out, err = run.communicate(timeout=60)
    finally:
        run.kill()
        server.terminate()
        server.communicate(timeout=10)
    assert run.returncode == 0, err
    assert f"run {run_id} succeeded" in out
    assert "provider reachable again" in err
    shown = cli("show", run_id).stdout
    assert "unreachable" not in shown
    assert [line.split()[:3] for line in shown.splitlines() if line.startswith("wait ")] == \
        [["wait", "succeeded", "1"]]


@pytest.mark.slow
def test_an_outage_longer_than_max_outage_fails_the_wait(cli: CLI, tmp_path: Path) -> None:
    """With the provider gone for longer than `max_outage`, the step fails saying so."""
    pipeline(tmp_path)
    port = free_port()
    env = {"TOGETHER_API_KEY": KEY, "TOGETHER_BASE_URL": f"http://127.0.0.1:{port}/v1"}
    server = start_server(tmp_path, port, local_job_duration="60s")
    run = popen(tmp_path, "run", "follow.yaml", "--provider", "together", "-i",
                "max_outage=1s", env=env)
    try:
        wait_for_state(tmp_path, "SELECT 1 FROM steps WHERE step_id = 'wait'", "the wait began")
    finally:
        server.kill()
        server.communicate()
    out, _ = run.communicate(timeout=60)
    assert run.returncode == 1
    assert "step wait failed: ProviderUnavailableTooLong: provider unreachable since" in out
    assert "more than max_outage 1.0s): cannot connect to http://127.0.0.1" in out
