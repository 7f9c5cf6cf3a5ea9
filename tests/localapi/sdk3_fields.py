"""Together's SDK 3.x with strict response validation (`_strict_response_validation=True`)
against the local API, run by tests/localapi/test_sdk3.py: every call a fine-tuner makes is
parsed into the SDK's own types (a missing required field, a wrong type, raises), and for each
answer the SDK type's fields the local API left out (the fields pydantic was not given) are
listed, walking nested types and lists field by field. Prints {"errors": {call: error},
"missing": {call: [field path, ...]}}.
Run with .venv/together3 first on PYTHONPATH, TOGETHER_BASE_URL, TOGETHER_API_KEY and
TOGETHER_PROJECT_ID set.
"""

from __future__ import annotations

import functools
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from together import Together


def missing(parsed: Any, path: str = "") -> list[str]:
    """The SDK type's fields that the answer left out (not in what pydantic was given), as
    dotted paths, nested types and lists walked field by field."""
    if isinstance(parsed, list):
        return missing(parsed[0], f"{path}[]") if parsed else []
    if not isinstance(parsed, BaseModel):
        return []
    found = []
    for name, field in type(parsed).model_fields.items():
        where = f"{path}.{field.alias or name}" if path else (field.alias or name)
        if name not in parsed.model_fields_set:
            found.append(where)
        else:
            found += missing(getattr(parsed, name), where)
    return found


def main(data: Path, base_model: str) -> None:
    client = Together(max_retries=0, _strict_response_validation=True)
    errors: dict[str, str] = {}
    gaps: dict[str, list[str]] = {}

    def call(name: str, make: Callable[[], Any]) -> Any:
        try:
            parsed = make()
        except Exception as exc:  # noqa: BLE001  (each call's failure is reported)
            errors[name] = f"{type(exc).__name__}: {exc}"[:500]
            return None
        gaps[name] = missing(parsed)
        return parsed

    uploaded = client.files.upload(file=data, purpose="fine-tune", check=True)
    call("files.list", client.files.list)
    call("files.retrieve", lambda: client.files.retrieve(uploaded.id))
    call("fine_tuning.preview", lambda: client.fine_tuning.preview(
        model=base_model, training_file=uploaded.id, top_k=2))
    job = call("fine_tuning.create", lambda: client.fine_tuning.create(
        training_file=uploaded.id, model=base_model, lora=True, n_epochs=1, suffix="strict"))
    if job is not None:
        end = time.monotonic() + 60
        while time.monotonic() < end and client.fine_tuning.retrieve(job.id).status != \
                "completed":
            time.sleep(0.2)
        call("fine_tuning.retrieve",
             lambda: client.fine_tuning.retrieve(job.id))
        call("fine_tuning.list", client.fine_tuning.list)
        call("fine_tuning.list_events",
             lambda: client.fine_tuning.list_events(job.id))
        call("fine_tuning.retrieve_tokenized_dataset",
             lambda: client.fine_tuning.retrieve_tokenized_dataset(job.id))
        call("fine_tuning.list_checkpoints",
             lambda: client.fine_tuning.list_checkpoints(job.id))
        def resume_from(ref: str) -> Any:
            return client.fine_tuning.create(training_file=uploaded.id, from_checkpoint=ref,
                                             lora=True, n_epochs=1)

        refs = (job.id, f"{job.id}:1", job.output_name, f"{job.output_name}:1")
        for ref in refs:  # the SDK asks the limits of each first
            call(f"fine_tuning.create from_checkpoint {ref.replace(job.id, 'JOB')}",
                 functools.partial(resume_from, ref))
        second = client.fine_tuning.create(training_file=uploaded.id, model=base_model,
                                           lora=True, n_epochs=1, suffix="cancelled")
        call("fine_tuning.cancel",
             lambda: client.fine_tuning.cancel(second.id))
    call("models.list", client.models.list)
    supported = call("models.list_supported", lambda: list(client.models.list_supported()))
    if supported:
        call("models.retrieve_supported",
             functools.partial(client.models.retrieve_supported, supported[0].id))
    call("models.list_supported search", lambda: list(client.models.list_supported(
        search="qwen")))
    print(json.dumps({"errors": errors, "missing": gaps}))


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2])
