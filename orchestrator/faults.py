"""Named fault points, for tests that kill the process at an exact moment.

A test arms points through the environment, `ORCH_FAULTS=after_checkpoint:train,before_step_commit`
(a point, optionally `:step`), and the process SIGKILLs itself when it reaches one. Unarmed,
`fault_point` is a dictionary lookup on an empty set.
"""

from __future__ import annotations

import os
import signal

from orchestrator.errors import SettingsInvalid
from orchestrator.process import hold

__all__ = ["FAULTS_ENV", "POINTS", "fault_point"]

FAULTS_ENV = "ORCH_FAULTS"

POINTS = (
    "after_step_started",   # an attempt began (its start may not be committed yet); body not run
    "after_checkpoint",     # a checkpoint the step saved is committed
    "before_step_commit",   # the step body returned; its outputs are not committed yet
    "after_step_commit",    # the step's outputs are committed; no later step has started
    "after_remote_create",  # a step's create reached the provider; nothing is committed yet
    "after_upload_announced",  # a file upload was announced (and checkpointed); no bytes sent
    "after_upload_part",    # a part of a multipart upload was sent and checkpointed
)


_ARMED: set[tuple[str, str | None]] = set()


def arm_from_environment() -> None:
    """Arm the points ORCH_FAULTS names (and only those)."""
    armed = set()
    for item in os.environ.get(FAULTS_ENV, "").split(","):
        point, _, step = item.strip().partition(":")
        if point:
            if point not in POINTS:
                msg = f"{FAULTS_ENV}: unknown fault point {point!r} (known: {', '.join(POINTS)})"
                raise SettingsInvalid(msg)
            armed.add((point, step or None))
    _ARMED.clear()
    _ARMED.update(armed)


arm_from_environment()
hold(_ARMED, name="armed fault points", why="read from ORCH_FAULTS once, looked up at every "
     "point", reset=arm_from_environment)


def fault_point(point: str, step: str | None = None) -> None:
    """SIGKILL this process if `point` (for `step`, or for any step) is armed."""
    if _ARMED and ((point, step) in _ARMED or (point, None) in _ARMED):
        os.kill(os.getpid(), signal.SIGKILL)
