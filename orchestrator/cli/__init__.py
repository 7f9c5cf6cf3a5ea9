"""The `orchestrator` command line: `main` finds the command's handler and runs it.

The parser (`parser`) imports only argparse; each command imports what it needs when it runs, so
`orchestrator --help` and `orchestrator validate` start fast (see README, "Performance").
Exit codes: 0 succeeded, 1 the run failed, 2 bad input, 130 interrupted, 141 the reader of
the output went away (`| head`).
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

from orchestrator.cli.parser import (
    COMMANDS,
    EXIT_BAD_INPUT,
    EXIT_BROKEN_PIPE,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    build_parser,
)

__all__ = ["EXIT_BAD_INPUT", "EXIT_BROKEN_PIPE", "EXIT_FAILED", "EXIT_INTERRUPTED", "EXIT_OK",
           "build_parser", "main"]

_MODULES = {"batches": "batches", "cancel": "service", "worker": "service",
            "scheduler": "service", "serve": "service", "schedules": "service",
            "runs": "reading", "show": "reading", "logs": "reading", "models": "reading",
            "metrics": "reading", "wait": "reading", "state": "state",
            "completion": "scaffold", "schema": "scaffold", "init": "scaffold",
            "ui": "web", "promote": "promotion"}
"""Where a command's handler lives when not in `commands`."""


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns its exit code (also used as the console script's)."""
    given = sys.argv[1:] if argv is None else list(argv)
    only = given[0] if given and given[0] in COMMANDS else None  # else: --help, a typo
    args = build_parser(only).parse_args(given)
    from orchestrator.errors import OrchestratorError  # noqa: PLC0415
    from orchestrator.redact import RedactingStream  # noqa: PLC0415

    # Whatever path text takes to the terminal, a secret this process knows is masked on it.
    if not isinstance(sys.stdout, RedactingStream):
        sys.stdout = RedactingStream(sys.stdout)
        sys.stderr = RedactingStream(sys.stderr)

    try:
        module = importlib.import_module(
            f"orchestrator.cli.{_MODULES.get(args.command, 'commands')}")
        handler = getattr(module, f"cmd_{args.command.replace('-', '_')}")
        code: int = handler(args)
    except OrchestratorError as exc:
        from orchestrator.terminal import printable  # noqa: PLC0415

        for raw in str(exc).splitlines() or [type(exc).__name__]:
            line = printable(raw)
            print(line if ":" in line.split(" ", 1)[0] else f"error: {line}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BaseException as exc:
        if not _reader_gone(exc):
            raise
        return _quietly_after_broken_pipe()
    return code


def _reader_gone(exc: BaseException) -> bool:
    """The command's output was piped into something that stopped reading (`| head`)."""
    if isinstance(exc, BaseExceptionGroup):
        return all(_reader_gone(inner) for inner in exc.exceptions)
    return isinstance(exc, BrokenPipeError)


def _quietly_after_broken_pipe() -> int:
    """End without a traceback, and without Python's own complaint when it flushes stdout at
    exit: stdout goes to /dev/null. The exit code is a shell's for SIGPIPE (128 + 13)."""
    import os  # noqa: PLC0415

    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return EXIT_BROKEN_PIPE


def run() -> None:
    sys.exit(main())
