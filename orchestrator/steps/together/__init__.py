"""The fine-tuning steps: `together/*`, against Together's API or the local one.

Every step that creates something remote and paid makes it happen once, even if the process
dies between the remote call and the local commit:

- upload-file names the upload by the file's content hash and sends its SHA-256: identical
  bytes already there (found by name and size, or answered 409 by the server) are reused;
- launch-fine-tune puts a run-scoped token in the job's `suffix`, checkpoints before and after
  the create call, and on re-entry adopts the job that carries its token;
- register-adapter puts the token in the model's description; "Model name already exists" is
  success when that model's import job carries the token, a clear error otherwise.

The crash window each of these closes is marked by the fault point `after_remote_create`.

One module per step type; importing the package registers them all in `TYPES` (the family
`steps.builtin` loads on first use).
"""

from orchestrator.steps.together import evaluate, launch, register, smoke, upload, wait
from orchestrator.steps.together.common import TYPES, run_token
from orchestrator.steps.together.launch import LaunchParams
from orchestrator.steps.together.wait import PollClock

__all__ = ["TYPES", "LaunchParams", "PollClock", "evaluate", "launch", "register", "run_token",
           "smoke", "upload", "wait"]
