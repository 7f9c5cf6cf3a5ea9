"""Together's CLI, run as a program against the local API: the calls a fine-tuner makes, in
order, each command line a process of its own.

Run by tests/localapi/test_clis.py with the Python of the SDK generation under test (2.x from
the project's environment, 3.x from .venv/together3 on PYTHONPATH); the environment names the
server (TOGETHER_BASE_URL, TOGETHER_API_KEY, TOGETHER_PROJECT_ID). The CLI is imported once and
each command is a child forked from that interpreter, with the command line as its argv and its
own stdout, stderr and exit code: the CLI's `main()` runs exactly as `tg ...` runs it, without
paying its 1-2 s of imports per command. Prints one JSON object: the version, and per call
its exit code, its output's last lines and what the scenario read from it.

Usage: cli_program.py WORK_DIR TRAINING_FILE BASE_MODEL
"""

from __future__ import annotations

import json
import os
import re
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import together
from together.lib.cli import main as cli_main

DEADLINE_S = 90.0
calls: dict[str, dict[str, Any]] = {}


def tg(name: str, *args: str) -> tuple[int, str]:
    """Run `tg --json ARGS` in a forked child; record and return its exit code and stdout."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        pid = os.fork()
        if pid == 0:  # the child: the CLI as a program
            code = 1
            try:
                null = os.open(os.devnull, os.O_RDONLY)
                os.dup2(null, 0)
                os.dup2(out.fileno(), 1)
                os.dup2(err.fileno(), 2)
                sys.argv = ["tg", "--json", *args]
                cli_main()
                code = 0
            except SystemExit as exit_:
                code = exit_.code if isinstance(exit_.code, int) else 1
            except BaseException:  # noqa: BLE001  (reported through stderr and the exit code)
                import traceback

                traceback.print_exc()
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        deadline = time.monotonic() + DEADLINE_S
        while (done := os.waitpid(pid, os.WNOHANG))[0] == 0:
            if time.monotonic() > deadline:
                os.kill(pid, 9)
                done = os.waitpid(pid, 0)
                break
            time.sleep(0.02)
        code = os.waitstatus_to_exitcode(done[1])
        out.seek(0)
        err.seek(0)
        text, problem = out.read().decode(), err.read().decode()
    calls[name] = {"rc": code, "tail": (text + problem)[-600:]}
    return code, text


def as_json(text: str) -> Any:
    """The JSON a command printed (some print lines of text before it)."""
    start = min((i for i in (text.find("{"), text.find("[")) if i >= 0), default=-1)
    return json.loads(text[start:]) if start >= 0 else None


def seen(name: str, text: str, read: Callable[[Any], Any]) -> Any:
    """What the scenario reads from a command's JSON output (None, and the reason recorded,
    when it cannot)."""
    try:
        value = read(as_json(text))
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        calls[name]["unreadable"] = f"{type(exc).__name__}: {exc}"
        return None
    calls[name]["seen"] = value
    return value


def created(name: str, text: str) -> str | None:
    """The job id `ft create` printed (in a line of text, even with --json)."""
    ids = re.findall(r"ft-[0-9a-f-]{36}", text)
    if ids:
        calls[name]["seen"] = ids[-1]
    return ids[-1] if ids else None


def fine_tunes(data: Path, base: str, work: Path) -> None:
    tg("files check", "files", "check", str(data))
    _, text = tg("files upload", "files", "upload", str(data))
    file_id = str(seen("files upload", text, lambda out: out["id"]))
    _, text = tg("files list", "files", "list")
    seen("files list", text, lambda out: [f["id"] for f in out])
    _, text = tg("files retrieve", "files", "retrieve", file_id)
    seen("files retrieve", text, lambda out: out["processing_status"])
    _, text = tg("ft create", "fine-tuning", "create", "--model", base, "--training-file",
                 file_id, "--lora", "--suffix", "cli", "-y")
    job = str(created("ft create", text))
    deadline = time.monotonic() + DEADLINE_S
    while True:
        _, text = tg("ft retrieve", "fine-tuning", "retrieve", job)
        status = seen("ft retrieve", text, lambda out: out["status"])
        if status not in ("pending", "queued", "running", "compressing", "uploading") \
                or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    _, text = tg("ft list", "fine-tuning", "list")
    seen("ft list", text, lambda out: [j["id"] for j in out])
    _, text = tg("ft list-events", "fine-tuning", "list-events", job)
    seen("ft list-events", text, lambda out: [e["type"] for e in out][-1:])
    _, text = tg("ft list-checkpoints", "fine-tuning", "list-checkpoints", job)
    seen("ft list-checkpoints", text, lambda out: [c["checkpoint_type"] for c in out])
    _, text = tg("ft list-metrics", "fine-tuning", "list-metrics", job)
    seen("ft list-metrics", text, len)
    _, text = tg("ft download", "fine-tuning", "download", job, "--output-dir",
                 str(work / "weights"))
    seen("ft download", text, lambda out: out["size"])
    _, text = tg("ft download-tokenized-dataset", "fine-tuning", "download-tokenized-dataset",
                 job, "--output-dir", str(work / "tokenized"))
    seen("ft download-tokenized-dataset", text, lambda out: out["size"])
    _, text = tg("ft preview", "fine-tuning", "preview", "--model", base, "--training-file",
                 file_id)
    seen("ft preview", text, lambda out: len(out["rows"]))
    _, text = tg("ft model-limits", "fine-tuning", "model-limits", base)
    seen("ft model-limits", text, lambda out: out["model_name"])
    _, text = tg("ft create (to cancel)", "fine-tuning", "create", "--model", base,
                 "--training-file", file_id, "--lora", "-y")
    second = created("ft create (to cancel)", text)
    _, text = tg("ft cancel", "fine-tuning", "cancel", str(second))
    seen("ft cancel", text, lambda out: out["status"])


def models(base: str, work: Path, generation: str) -> None:
    """The v2 model API (`models` on 3.x, `beta models` on 2.x) and, on 2.x, the v0 import."""
    group = ["models"] if generation == "3" else ["beta", "models"]
    _, text = tg("models list", "models", "list")
    seen("models list", text, lambda out: len(out["data"] if generation == "3" else out))
    _, text = tg("models public", *group, "public", "--search", base)
    seen("models public", text, lambda out: [m["id"] for m in out["data"]])
    _, text = tg("models create", *group, "create", f"cli-{generation}-adapter", "--type",
                 "adapter", "--base-model", base)
    model_id = str(seen("models create", text, lambda out: out["id"]))
    if generation == "3":  # 2.x's `beta models upload` sends to api.together.ai, whatever
        # the base URL: no local server can answer it
        folder = work / "adapter"
        folder.mkdir()
        (folder / "adapter_config.json").write_text(json.dumps({
            "base_model_name_or_path": base}))
        (folder / "adapter_model.safetensors").write_bytes(os.urandom(21 << 20))  # two parts
        _, text = tg("models upload", *group, "upload", model_id, str(folder))
        seen("models upload", text, lambda out: out["revisionId"])
        _, text = tg("models ls-files", *group, "ls-files", model_id)
        seen("models ls-files", text, lambda out: {f["path"]: f["hash"] for f in out["data"]})
    else:
        _, text = tg("models upload (v0 import)", "models", "upload", "--model-name",
                     "cli-2-import", "--model-source", "https://huggingface.co/org/repo")
        seen("models upload (v0 import)", text, lambda out: out["data"]["model_source"])


def main() -> None:
    work, data, base = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
    generation = together.__version__.split(".")[0]
    fine_tunes(data, base, work)
    models(base, work, generation)
    print(json.dumps({"version": together.__version__, "calls": calls}))


if __name__ == "__main__":
    main()
