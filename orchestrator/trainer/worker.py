"""The trainer process: `python -m orchestrator.trainer --data-dir DIR`, started by a local API.

torch, transformers and peft are imported here, once (4-5 s), never in the server. Two jobs
run side by side in it:

- training, in a thread: the data folder's queued jobs, one at a time, oldest first; one a
  dead trainer left running first (it continues from its saved state). One trainer per data
  folder trains (a lock file); another (a second server on the folder) only answers.
- answering the server, on the main thread: one JSON request a line on stdin (`generate`,
  `merge`, `preview`, `wake`, `ping`), one JSON answer a line on stdout, matched by `id`.

When stdin ends (the server exited, or was killed), the process exits at once: a trainer never
outlives its server, and the next server's trainer continues the job where this one saved it.
Anything else it prints goes to stderr (the server sends that to `trainer.log`).
"""

from __future__ import annotations

import argparse
import fcntl
import itertools
import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any, TextIO

from orchestrator.trainer.bases import load_base, load_tokenizer
from orchestrator.trainer.data import preview_rows, read_examples
from orchestrator.trainer.generate import Models
from orchestrator.trainer.loop import atomic_folder, train_job
from orchestrator.trainer.spec import TrainSpec
from orchestrator.trainer.store import TrainingStore

__all__ = ["main"]


def _quiet() -> None:
    import warnings  # noqa: PLC0415

    import transformers  # noqa: PLC0415

    transformers.utils.logging.set_verbosity_error()  # type: ignore[no-untyped-call]
    transformers.utils.logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    warnings.filterwarnings("ignore")


def _train_forever(data_dir: Path, wake: threading.Event, *, device: str,
                   save_every: float) -> None:
    store = TrainingStore(data_dir)
    with (data_dir / "trainer.lock").open("a") as lock:
        while True:  # one trainer per data folder: wait for the lock
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                wake.wait(1.0)
                wake.clear()
        while True:
            job = store.next_job()
            if job is None:
                wake.wait(1.0)
                wake.clear()
                continue
            job_id, spec, starts = job
            train_job(job_id, TrainSpec.from_json(spec), store, starts=starts,
                      cache=data_dir / "bases", device=device, save_every=save_every)


def _merge(request: dict[str, Any], data_dir: Path, device: str) -> dict[str, Any]:
    """Base and adapter merged into one model folder (what `download?checkpoint=merged`
    serves), written then renamed."""
    from peft import PeftModel  # noqa: PLC0415

    target = Path(request["target"])
    if not (target / "config.json").exists():
        model, tokenizer = load_base(request["base"], data_dir / "bases", device)
        merged = PeftModel.from_pretrained(model, request["adapter"]).merge_and_unload()

        def write(folder: Path) -> None:
            merged.save_pretrained(folder, safe_serialization=True)
            tokenizer.save_pretrained(folder)

        atomic_folder(target, write)
    return {"folder": str(target)}


def _preview(request: dict[str, Any], data_dir: Path) -> dict[str, Any]:
    """The first `top_k` records of a training file, tokenized as training would."""
    tokenizer = load_tokenizer(request["base"], data_dir / "bases")
    records = list(itertools.islice(read_examples(Path(request["file"])), request["top_k"]))
    return {"rows": preview_rows(records, tokenizer, train_on_inputs=request["train_on_inputs"],
                                 max_seq_length=request["max_seq_length"])}


def _answer(out: TextIO, lock: threading.Lock, message: dict[str, Any]) -> None:
    with lock:
        out.write(json.dumps(message) + "\n")
        out.flush()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m orchestrator.trainer")
    parser.add_argument("--data-dir", required=True, type=Path)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--save-every", type=float, default=5.0)
    args = parser.parse_args(argv)
    out = os.fdopen(os.dup(1), "w", buffering=1)  # the answers' channel: stdout as it was
    os.dup2(2, 1)  # whatever a library prints goes to stderr, never into the answers
    started = time.monotonic()
    import torch  # noqa: PLC0415

    _quiet()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    wake = threading.Event()
    threading.Thread(target=_train_forever, args=(args.data_dir, wake),
                     kwargs={"device": device, "save_every": args.save_every},
                     name="training", daemon=True).start()
    models = Models(args.data_dir / "bases", device)
    lock = threading.Lock()
    ready = {"device": device, "threads": torch.get_num_threads(),
             "import_s": round(time.monotonic() - started, 3)}
    for line in sys.stdin:
        try:
            request = json.loads(line)
        except json.JSONDecodeError:
            continue
        op, ident = request.get("op"), request.get("id")
        if op == "wake":
            wake.set()
            continue
        try:
            if op == "ping":
                result: dict[str, Any] = ready
            elif op == "generate":
                result = models.generate(
                    base=request["base"], adapter=request.get("adapter"),
                    prompt=request.get("prompt"), messages=request.get("messages"),
                    max_tokens=int(request["max_tokens"]),
                    temperature=float(request.get("temperature") or 0.0),
                    top_p=float(request.get("top_p") or 1.0),
                    top_k=int(request.get("top_k") or 50), stop=request.get("stop") or [],
                    seed=request.get("seed"))
            elif op == "merge":
                result = _merge(request, args.data_dir, device)
            elif op == "preview":
                result = _preview(request, args.data_dir)
            else:
                _answer(out, lock, {"id": ident, "error": f"unknown request {op!r}"})
                continue
            _answer(out, lock, {"id": ident, "ok": result})
        except Exception as exc:  # noqa: BLE001  (each request's failure is its answer)
            _answer(out, lock, {"id": ident, "error": f"{type(exc).__name__}: {exc}"})
    os._exit(0)  # the server is gone: so is its trainer, training thread and all
