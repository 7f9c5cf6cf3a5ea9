"""A user's program on Together's SDK 3.x, run by tests/trainer/test_trainer.py against
`orchestrator local-api --trainer peft`: upload, fine-tune the tiny base for real, follow the
job, list its events and checkpoints, download its adapter. Prints what it saw as one JSON
document. Run with .venv/together3 first on PYTHONPATH, TOGETHER_BASE_URL and TOGETHER_API_KEY
set.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from together import Together

DEADLINE = 60.0


def main(data: Path, out: Path) -> None:
    client = Together(max_retries=0)
    seen: dict[str, Any] = {}
    uploaded = client.files.upload(file=data, purpose="fine-tune", check=True)
    job = client.fine_tuning.create(
        training_file=uploaded.id, model="local/tiny-llama", lora=True, n_epochs=100,
        batch_size=8, learning_rate=0.005, warmup_ratio=0.1, n_checkpoints=2, random_seed=7,
        suffix="sdk3")
    statuses = [job.status]
    end = time.monotonic() + DEADLINE
    while time.monotonic() < end:
        current = client.fine_tuning.retrieve(job.id)
        if current.status != statuses[-1]:
            statuses.append(current.status)
        if current.status in ("completed", "error", "cancelled"):
            break
        time.sleep(0.2)
    seen["statuses"] = statuses
    seen["model_output_name"] = current.x_model_output_name
    seen["events"] = [e.type for e in client.fine_tuning.list_events(job.id).data]
    seen["checkpoints"] = [c.checkpoint_type for c in
                           client.fine_tuning.list_checkpoints(job.id).data]
    out.write_bytes(client.fine_tuning.content(ft_id=job.id, checkpoint="adapter").read())
    print(json.dumps(seen))


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
