"""The server's side of its trainer process: starting it, asking it, stopping it (no torch).

The process starts when the local API starts (so jobs a killed server left running continue at
once) and is started again if it died. Requests go as JSON lines on its stdin; a thread reads
its answers from stdout and hands each to whoever waits for it. Closing stdin is how it is
stopped: it exits when stdin ends, so it never outlives a server killed with -9 either.
"""

from __future__ import annotations

import contextlib
import importlib.util
import itertools
import json
import subprocess
import sys
import threading
from concurrent.futures import Future
from pathlib import Path
from typing import Any

__all__ = ["TrainerError", "TrainerProcess", "missing_extra"]

PING_TIMEOUT = 120.0
"""Seconds a first answer may take: torch's import, cold, on a busy machine."""


class TrainerError(Exception):
    """The trainer could not do what it was asked (its message says why)."""


def missing_extra() -> str | None:
    """Why this Python cannot train (the `train` extra is not installed), or None."""
    missing = [name for name in ("torch", "transformers", "peft", "safetensors")
               if importlib.util.find_spec(name) is None]
    if not missing:
        return None
    return (f"the local trainer needs {', '.join(missing)}: pip install 'orchestrator[train]' "
            "(install torch first where a CPU or CUDA build of it is wanted: see the README)")


class TrainerProcess:
    """One trainer process for a data folder."""

    def __init__(self, data_dir: Path, *, threads: int = 0, save_every: float = 5.0) -> None:
        self.data_dir = data_dir
        self._args = [sys.executable, "-m", "orchestrator.trainer", "--data-dir",
                      str(data_dir), "--threads", str(threads), "--save-every",
                      str(save_every)]
        self._lock = threading.Lock()
        self._process: subprocess.Popen[str] | None = None
        self._waiting: dict[int, Future[dict[str, Any]]] = {}
        self._ids = itertools.count(1)

    def start(self) -> None:
        """Start the process (if it is not running): it begins on queued jobs at once."""
        with self._lock:
            if self._process is not None and self._process.poll() is None:
                return
            self.data_dir.mkdir(parents=True, exist_ok=True)
            log = (self.data_dir / "trainer.log").open("a", encoding="utf-8")
            try:
                self._process = subprocess.Popen(
                    self._args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log,
                    text=True, bufsize=1, start_new_session=False)
            finally:
                log.close()
            process = self._process
        threading.Thread(target=self._read, args=(process,), name="trainer-answers",
                         daemon=True).start()

    def _read(self, process: subprocess.Popen[str]) -> None:
        assert process.stdout is not None
        for line in process.stdout:
            try:
                answer = json.loads(line)
            except json.JSONDecodeError:
                continue
            future = self._waiting.pop(answer.get("id"), None)
            if future is None:
                continue
            if "error" in answer:
                future.set_exception(TrainerError(str(answer["error"])))
            else:
                future.set_result(answer.get("ok") or {})
        for ident, future in list(self._waiting.items()):  # the process ended
            if not future.done():
                self._waiting.pop(ident, None)
                future.set_exception(TrainerError("the trainer process exited (see "
                                                  f"{self.data_dir / 'trainer.log'})"))

    def _send(self, message: dict[str, Any]) -> None:
        self.start()
        with self._lock:
            process = self._process
            assert process is not None and process.stdin is not None
            try:
                process.stdin.write(json.dumps(message) + "\n")
                process.stdin.flush()
            except (BrokenPipeError, OSError):
                msg = f"the trainer process exited (see {self.data_dir / 'trainer.log'})"
                raise TrainerError(msg) from None

    def wake(self) -> None:
        """Tell it a job was queued or cancelled (it looks every second anyway)."""
        with contextlib.suppress(TrainerError):
            self._send({"op": "wake"})

    def ask(self, op: str, payload: dict[str, Any], *, timeout: float) -> dict[str, Any]:
        """Its answer to one request (blocking: call it from a worker thread)."""
        ident = next(self._ids)
        future: Future[dict[str, Any]] = Future()
        self._waiting[ident] = future
        try:
            self._send({"id": ident, "op": op, **payload})
            return future.result(timeout=timeout)
        except TimeoutError:
            msg = f"the trainer did not answer {op} within {timeout:g}s"
            raise TrainerError(msg) from None
        finally:
            self._waiting.pop(ident, None)

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    def close(self) -> None:
        """Stop the process (its stdin closed: it exits); kill it if it lingers."""
        with self._lock:
            process, self._process = self._process, None
        if process is None:
            return
        try:
            if process.stdin is not None:
                process.stdin.close()
            process.wait(timeout=5)
        except (OSError, subprocess.TimeoutExpired):
            process.kill()
            process.wait()
