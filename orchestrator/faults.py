"""Named fault points, for tests that kill the process at an exact moment.

A test arms points through the environment, `ORCH_FAULTS=after_checkpoint:train,before_step_commit`
(a point, optionally `:step`), and the process SIGKILLs itself when it reaches one; a point
armed with `=stop` (`before_remote_create:launch=stop`) SIGSTOPs it instead, for a test to
cut its network while it is frozen there and SIGCONT it after. Unarmed, `fault_point` is a
dictionary lookup on an empty set.
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
    "before_remote_create",  # a step recorded that it is creating; the create is not sent
    "after_remote_create",  # a step's create reached the provider; nothing is committed yet
    "after_upload_announced",  # a file upload was announced (and checkpointed); no bytes sent
    "after_upload_part",    # a part of a multipart upload was sent and checkpointed
)


_ARMED: dict[tuple[str, str | None], signal.Signals] = {}


def arm_from_environment() -> None:
    """Arm the points ORCH_FAULTS names (and only those)."""
    armed = {}
    for item in os.environ.get(FAULTS_ENV, "").split(","):
        where, _, action = item.strip().partition("=")
        point, _, step = where.partition(":")
        if point:
            if point not in POINTS:
                msg = f"{FAULTS_ENV}: unknown fault point {point!r} (known: {', '.join(POINTS)})"
                raise SettingsInvalid(msg)
            if action not in ("", "kill", "stop"):
                msg = f"{FAULTS_ENV}: {item.strip()!r}: a point's action is kill or stop"
                raise SettingsInvalid(msg)
            armed[point, step or None] = signal.SIGSTOP if action == "stop" else signal.SIGKILL
    _ARMED.clear()
    _ARMED.update(armed)


arm_from_environment()
hold(_ARMED, name="armed fault points", why="read from ORCH_FAULTS once, looked up at every "
     "point", reset=arm_from_environment)


def fault_point(point: str, step: str | None = None) -> None:
    """SIGKILL (or SIGSTOP) this process if `point` (for `step`, or any step) is armed."""
    if _ARMED:
        action = _ARMED.get((point, step)) or _ARMED.get((point, None))
        if action is not None:
            os.kill(os.getpid(), action)
