"""The live progress view, rendered into a string with a fake clock."""

from __future__ import annotations

import io

from rich.console import Console

from orchestrator.cli.progress import ConsoleWriter, LiveProgress, describe


def test_describe() -> None:
    assert describe({"status": "running", "step": 12, "total_steps": 30, "loss": 1.23456}) == \
        "running  step 12/30  loss 1.2346"
    assert describe({"status": "Queued"}) == "Queued"


def test_lines_per_step_and_removal_when_finished() -> None:
    out = io.StringIO()
    console = Console(file=out, width=100, force_terminal=False, color_system=None)
    now = [100.0]
    view = LiveProgress(console, get_time=lambda: now[0], auto_refresh=False)
    view("r-1", "wait", {"status": "running", "step": 2, "total_steps": 4, "loss": 0.5})
    view("r-1", "register", {"status": "Running"})
    now[0] += 65
    console.print(view.progress)
    text = out.getvalue()
    assert "wait" in text and "running  step 2/4  loss 0.5000" in text
    assert "register" in text and "0:01:05" in text
    view("r-1", "wait", {"status": "completed"})
    assert [task.description for task in view.progress.tasks] == ["r-1 register"]


def test_two_runs_lines_under_a_worker_say_whose_they_are() -> None:
    """A worker's live lines carry their run (a batch's, their cell); the run a command's
    header named goes without."""
    from orchestrator.ids import RunNames

    names = RunNames()
    view = LiveProgress(Console(file=io.StringIO(), width=100), auto_refresh=False,
                        names=names)
    view("r-1", "wait", {"status": "running"})
    view("r-2", "wait", {"status": "running"})
    names.header = "b-9"
    view("b-9.3", "wait", {"status": "running"})
    names.header = "r-4"
    view("r-4", "wait", {"status": "running"})
    assert [task.description for task in view.progress.tasks] == [
        "r-1 wait", "r-2 wait", "#3 wait", "wait"]


def test_log_lines_go_through_the_console() -> None:
    out = io.StringIO()
    writer = ConsoleWriter(Console(file=out, width=100, color_system=None))
    writer.write("first line\nsecond ")
    writer.write("half\n")
    assert out.getvalue().splitlines() == ["first line", "second half"]
