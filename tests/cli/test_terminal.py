"""What reaches a terminal: control characters in stored values are shown escaped, rich markup
in them is text, and a reader that goes away (`| head`) ends the command quietly."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.log import escape_controls
from orchestrator.terminal import printable
from tests.cli.helpers import run_id_from
from tests.conftest import CLI, write

EVIL = "a\\e]0;pwned\\ab\\e[31mred\\0nul[/][red]markup[/red]\\u202eevil"
"""In YAML double quotes: OSC (retitle), BEL, SGR (colour), NUL, unbalanced and balanced
rich markup, and a right-to-left override."""
PIPELINE = f"""
    name: controls
    inputs:
      evil: {{type: string, default: "{EVIL}"}}
    steps:
      echo: {{uses: core/echo, with: {{x: "${{{{ inputs.evil }}}}"}}}}
      fail:
        uses: core/fail
        with: {{times: 9, message: "boom \\e[2J cleared"}}
        retry: null
"""
RAW = ("\x1b", "\x07", "\x00", "\u202e")


def test_printable_escapes_controls_and_keeps_what_is_asked() -> None:
    assert printable("a\x1b[2Jb\x00\x9b\u202e\n\tc") == "a\\x1b[2Jb\\x00\\x9b\\u202e\\n\\tc"
    assert printable("line one\n\tline two\x1b", lines=True) == "line one\n\tline two\\x1b"
    assert printable("plain text, ünïcode ✓") == "plain text, ünïcode ✓"


def test_run_show_logs_and_runs_show_control_characters_escaped(cli: CLI,
                                                                 tmp_path: Path) -> None:
    """Not one raw control character from the values reaches the output of any command,
    and markup in a value is printed as it is (it crashed rich before: `[/]`)."""
    write(tmp_path / "controls.yaml", PIPELINE)
    run = cli("run", "controls.yaml", check_code=1)
    run_id = run_id_from(run.stderr)
    shown = [run.stdout, run.stderr]
    for args in (("show", run_id, "--outputs"), ("logs", run_id), ("runs",),
                 ("plan", "controls.yaml")):
        result = cli(*args, check_code=0)
        shown += [result.stdout, result.stderr]
    everything = "".join(shown)
    assert not [c for c in RAW if c in everything], [c for c in RAW if c in everything]
    show = shown[2]
    assert "x: a\\x1b]0;pwned\\x07b\\x1b[31mred\\x00nul[/][red]markup[/red]\\u202eevil" in show
    assert "TransientError: boom \\x1b[2J cleared" in run.stdout


def test_console_log_lines_escape_values() -> None:
    """On a terminal, log lines are drawn by structlog's console renderer: values first pass
    escape_controls (JSON lines escape them by themselves)."""
    event = escape_controls(None, "info", {"event": "got \x1b[2J", "status": "ok\x07",
                                           "exception": "Traceback\n  x\x1b"})
    assert event == {"event": "got \\x1b[2J", "status": "ok\\x07",
                     "exception": "Traceback\n  x\\x1b"}


@pytest.mark.parametrize("command", [["logs", "RUN"], ["show", "RUN", "--outputs"], ["runs"]])
def test_a_reader_that_goes_away_ends_the_command_quietly(cli: CLI, tmp_path: Path,
                                                          command: list[str]) -> None:
    """`orchestrator logs RUN | head` printed a BrokenPipeError traceback; now it ends with
    no output on stderr and exit code 141 (a shell's for SIGPIPE)."""
    write(tmp_path / "p.yaml", "name: p\nsteps:\n  s: {uses: core/echo, with: {x: 1}}\n")
    run_id = run_id_from(cli("run", "p.yaml", check_code=0).stderr)
    args = [run_id if part == "RUN" else part for part in command]
    process = subprocess.Popen([sys.executable, "-m", "orchestrator", *args], cwd=tmp_path,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert process.stdout is not None and process.stderr is not None
    process.stdout.close()  # the reader leaves before the command has written (like head -0)
    stderr = process.stderr.read()
    process.stderr.close()
    assert process.wait(timeout=30) == 141
    assert stderr == ""
