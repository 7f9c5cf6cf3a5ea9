"""A user's program on Together's SDK 3.x, run by tests/localapi/test_sdk3.py against the local
API: upload, fine-tune with LoRA, register the result as a v2 model, import its files by a
remote upload, then ask it a question. Prints what it saw as one JSON document.

Run with .venv/together3 first on PYTHONPATH (the 3.x SDK beside the pinned 2.x one), and
TOGETHER_BASE_URL, TOGETHER_API_KEY, TOGETHER_PROJECT_ID set.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import together
from together import Together

DEADLINE = 60.0


def until(what: str, probe: Any) -> Any:
    """Poll `probe` until it returns something truthy, for at most DEADLINE seconds."""
    end = time.monotonic() + DEADLINE
    while time.monotonic() < end:
        found = probe()
        if found:
            return found
        time.sleep(0.1)
    sys.exit(f"timed out waiting for {what}")


def main(data: Path, base_model: str) -> None:
    client = Together(max_retries=0)
    seen: dict[str, Any] = {"sdk": together.__version__}
    uploaded = client.files.upload(file=data, purpose="fine-tune", check=True)
    seen["file_again"] = client.files.upload(file=data, purpose="fine-tune").id == uploaded.id
    job = client.fine_tuning.create(training_file=uploaded.id, model=base_model, lora=True,
                                    n_epochs=1, suffix="sdk3")
    done = until("the fine-tune", lambda: (j := client.fine_tuning.retrieve(job.id)).status
                 == "completed" and j)
    seen["job"] = {"status": done.status, "model_output_name": done.model_output_name}

    model = client.models.create(name="sdk3-adapter", base_model_id=base_model, type="adapter",
                                 description="imported by SDK 3")
    seen["model"] = model.to_dict()
    upload = client.models.remote_uploads.create(
        model_id=model.id, remote_url=f"https://huggingface.co/{done.model_output_name}",
        token="hf_secret_never_kept")
    statuses = [upload.status]

    def succeeded() -> Any:
        current = client.models.remote_uploads.retrieve(upload.id)
        if current.status != statuses[-1]:
            statuses.append(current.status)
        return current.status == "REMOTE_UPLOAD_STATUS_SUCCEEDED" and current

    final = until("the remote upload", succeeded)
    seen["upload"] = {"statuses": statuses, "model_id": final.api_model_id,
                      "remote_url": final.remote_url, "dump": final.to_json()}
    seen["events"] = [e.type for e in client.models.remote_uploads.events(upload.id).data]
    seen["uploads_listed"] = [u.id for u in client.models.remote_uploads.list()]
    seen["retrieved"] = client.models.retrieve(model.id).name
    seen["listed"] = [m.name for m in client.models.list()]
    seen["revisions"] = [r.validation_status for r in client.models.list_revisions(model.id).data]
    seen["files"] = [f.path for f in client.models.list_files(model.id).data]
    answer = client.completions.create(model=model.name, max_tokens=5,
                                       prompt="Q: The capital of France is?\nA:")
    seen["answer"] = answer.choices[0].text
    print(json.dumps(seen))


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2])
