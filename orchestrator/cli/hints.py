"""What to type next, after a run or batch stopped short: the command that will succeed.

A hint that names a command which then fails the same way teaches people to stop reading
hints. So each one looks at what happened: a job that ended (start again from the step that
made it), a cancellation that cancelled the run's job (the same), a pipeline file changed on
disk since the run started (resume with `--reload`, or the fix is not seen), anything else
(fix it, then resume; with `--reload` when the fix is in the file).
"""

from __future__ import annotations

from pathlib import Path

from orchestrator.inputfiles import UnreadableFile, read_regular

__all__ = ["file_changed", "resume_hint"]

MAX_READ = 64 * 2**20
"""The most of a pipeline file read to compare it with a run's text (the largest allowed)."""


def file_changed(text: str, path: str) -> bool:
    """The pipeline file at `path` now differs from `text`, the one the run keeps: a resume
    without `--reload` would not see the change. A file gone or unreadable is no change."""
    try:
        return read_regular(Path(path), max_bytes=MAX_READ) != text.encode()
    except (UnreadableFile, OSError):
        return False


def resume_hint(target: str, status: str, *, resume_from: str | None = None,
                text: str | None = None, path: str | None = None) -> str | None:
    """The line that says how to go on with run (or batch) `target`, which ended `status`;
    None for one that succeeded. `resume_from`: the step to start again from (its job
    ended, or was cancelled); `text` and `path`: the pipeline the run keeps, and its file."""
    if status == "succeeded":
        return None
    again = f"orchestrator resume {target}"
    if resume_from is not None:
        why = ("its job was cancelled with it" if status == "cancelled"
               else "the job it followed has ended")
        return f"{why}; to start it again: {again} --from {resume_from}"
    if status == "cancelled":
        return f"to continue it: {again}"
    if text is not None and path is not None and file_changed(text, path):
        return (f"its pipeline file {path} changed since it started; to resume with the "
                f"change: {again} --reload")
    return f"fix the cause, then: {again} (with --reload if the fix is in the pipeline file)"
