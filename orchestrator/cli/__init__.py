"""The `orchestrator` command line.

This module imports only argparse: each command imports what it needs when it runs, so
`orchestrator --help` and `orchestrator validate` start fast (see README, "Performance").
Exit codes: 0 succeeded, 1 the run failed, 2 bad input, 130 interrupted.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

__all__ = ["EXIT_BAD_INPUT", "EXIT_FAILED", "EXIT_INTERRUPTED", "EXIT_OK", "main"]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        """Bad flags are bad input: one line and exit code 2 (argparse's own code, too)."""
        self.print_usage(sys.stderr)
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message}\n")


def _parser() -> argparse.ArgumentParser:
    state = _Parser(add_help=False)
    state.add_argument("--state-url", metavar="URL",
                       help="state database (default: setting state_url, "
                            "sqlite:///.orchestrator/state.db)")
    logging = _Parser(add_help=False)
    logging.add_argument("--log-format", choices=["auto", "console", "json"],
                         help="console on a terminal, JSON lines otherwise (default: auto)")
    logging.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    inputs = _Parser(add_help=False)
    inputs.add_argument("-i", "--input", action="append", default=[], metavar="NAME=VALUE",
                        help="set a pipeline input (repeatable)")

    parser = _Parser(prog="orchestrator",
                     description="Durable, resumable YAML pipelines for fine-tuning models.",
                     epilog="exit codes: 0 succeeded, 1 the run failed, 2 bad input, "
                            "130 interrupted. Settings: config/orchestrator.toml.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                     parser_class=_Parser)

    p = commands.add_parser("validate", help="check pipeline files; report every problem")
    p.add_argument("files", nargs="+", metavar="FILE")

    p = commands.add_parser("plan", parents=[inputs, state],
                            help="show what a pipeline, or a resume of a run, would execute")
    p.add_argument("target", metavar="FILE|RUN", help="a pipeline file or a run id")
    p.add_argument("--from", dest="from_step", metavar="STEP",
                   help="for a run: re-run STEP and everything after it")
    p.add_argument("--reload", action="store_true",
                   help="for a run: re-read its pipeline file and re-run changed steps")

    p = commands.add_parser("run", parents=[inputs, state, logging], help="run a pipeline")
    p.add_argument("file", metavar="FILE")
    p.add_argument("--provider", choices=["local", "together"],
                   help="where fine-tuning steps send requests (default: setting provider)")

    p = commands.add_parser("resume", parents=[state, logging],
                            help="continue a failed, interrupted or crashed run")
    p.add_argument("run_id", metavar="RUN")
    p.add_argument("--from", dest="from_step", metavar="STEP",
                   help="re-run STEP and everything after it")
    p.add_argument("--reload", action="store_true",
                   help="re-read the pipeline file; re-run steps whose configuration changed")
    p.add_argument("--force", action="store_true",
                   help="resume a stranded run (resets its recovery count)")

    p = commands.add_parser("runs", parents=[state], help="list recent runs")
    p.add_argument("--limit", type=int, default=20, metavar="N")

    p = commands.add_parser("show", parents=[state], help="a run's steps and their state")
    p.add_argument("run_id", metavar="RUN")
    p.add_argument("--outputs", action="store_true", help="also print each step's outputs")

    p = commands.add_parser("logs", parents=[state], help="a run's event log")
    p.add_argument("run_id", metavar="RUN")
    p.add_argument("--follow", "-f", action="store_true",
                   help="keep printing new events until the run stops")
    p.add_argument("--json", action="store_true", help="one JSON object per event")

    p = commands.add_parser("check-data", help="check fine-tuning datasets (JSONL); every "
                                               "problem with its line")
    p.add_argument("files", nargs="+", metavar="FILE")
    p.add_argument("--purpose", choices=["fine-tune", "eval"], default="fine-tune")

    p = commands.add_parser("models", parents=[state], help="the model registry")
    p.add_argument("--limit", type=int, default=50, metavar="N")

    p = commands.add_parser("local-api", help="serve the local Together-compatible API "
                                              "(simulated training) over HTTP")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (loopback only "
                                                       "unless --allow-remote)")
    p.add_argument("--port", type=int, default=8765)
    p.add_argument("--data-dir", metavar="DIR",
                   help="where it keeps files, jobs and models (default: setting "
                        "local_data_dir)")
    p.add_argument("--allow-remote", action="store_true",
                   help="listen on a non-loopback address (no real security: one shared key)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns its exit code (also used as the console script's)."""
    args = _parser().parse_args(argv)
    from orchestrator.errors import OrchestratorError  # noqa: PLC0415

    try:
        from orchestrator.cli import commands  # noqa: PLC0415

        handler = getattr(commands, f"cmd_{args.command.replace('-', '_')}")
        code: int = handler(args)
    except OrchestratorError as exc:
        for line in str(exc).splitlines() or [type(exc).__name__]:
            print(line if ":" in line.split(" ", 1)[0] else f"error: {line}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    return code


def run() -> None:
    sys.exit(main())
