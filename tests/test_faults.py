"""Fault points a test arms through ORCH_FAULTS: what they do, and what is refused."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from orchestrator import faults
from orchestrator.errors import SettingsInvalid
from orchestrator.owners import _state
from tests.cli.helpers import wait_for


def test_points_arm_to_kill_or_stop_and_nothing_else(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(faults.FAULTS_ENV, "after_checkpoint:train,before_remote_create=stop")
    faults.arm_from_environment()
    try:
        assert faults._ARMED == {("after_checkpoint", "train"): signal.SIGKILL,
                                 ("before_remote_create", None): signal.SIGSTOP}
        for wrong, said in (("nowhere", "unknown fault point 'nowhere'"),
                            ("after_checkpoint=pause", "a point's action is kill or stop")):
            monkeypatch.setenv(faults.FAULTS_ENV, wrong)
            with pytest.raises(SettingsInvalid, match=said):
                faults.arm_from_environment()
    finally:
        monkeypatch.delenv(faults.FAULTS_ENV)
        faults.arm_from_environment()


def test_a_stop_point_freezes_the_process_until_it_is_continued() -> None:
    program = ("from orchestrator.faults import fault_point\n"
               "fault_point('before_remote_create', 'launch')\nprint('continued')\n")
    child = subprocess.Popen([sys.executable, "-c", program], stdout=subprocess.PIPE, text=True,
                             env={**os.environ, faults.FAULTS_ENV:
                                  "before_remote_create:launch=stop"})
    try:
        wait_for(lambda: _state(child.pid) == "T", "the child stopped itself")
        child.send_signal(signal.SIGCONT)
        out, _ = child.communicate(timeout=30)
    finally:
        child.kill()
        child.wait()
    assert out == "continued\n"
