"""The command line's parser: every command, its flags and their bounds, and the exit codes.

Imports only argparse: `orchestrator --help` starts fast, and each command's module imports
what it needs when it runs.

(Over 400 lines: every command's flags in one place, so their names, bounds and help read
alike and a test can walk them all.)
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["EXIT_BAD_INPUT", "EXIT_BROKEN_PIPE", "EXIT_FAILED", "EXIT_INTERRUPTED", "EXIT_OK",
           "build_parser"]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141



class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        """Bad flags are bad input: one line (the usage is a --help away) and exit code 2
        (argparse's own code, too)."""
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _duration(text: str) -> float:
    """A flag's duration: seconds, or a number with a unit (`90`, `2m`, `1h30m`), at most
    ten years."""
    from orchestrator.durations import parse_duration  # noqa: PLC0415  (pydantic: start-up)

    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _whole(low: int, high: int) -> Callable[[str], int]:
    """A flag's whole number, from `low` to `high`: every number a command takes is
    bounded (a `--limit` of 10^30 would reach the database as an overflow)."""
    def whole(text: str) -> int:
        try:
            value = int(text) if len(text.strip()) <= 20 else high + 1
        except ValueError:
            value = low - 1
        if not low <= value <= high:
            msg = f"{text[:40]!r} is not a whole number from {low} to {high:,}"
            raise argparse.ArgumentTypeError(msg)
        return value
    return whole


def _alias(text: str) -> str:
    """A registry alias's name (`production`)."""
    import re  # noqa: PLC0415

    from orchestrator.store.records import ALIAS_PATTERN  # noqa: PLC0415

    if not re.fullmatch(ALIAS_PATTERN, text):
        msg = (f"{text[:40]!r} is not an alias name: letters, digits, '.', '_' or '-', "
               "at most 100")
        raise argparse.ArgumentTypeError(msg)
    return text


MAX_LISTED = 1_000_000
"""The most rows a listing command (`runs`, `batches`, `models`) is asked for at once."""
_count, _port = _whole(1, MAX_LISTED), _whole(0, 65535)


def _flag_groups() -> dict[str, _Parser]:
    """Flags several commands share, as argparse parent parsers."""
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
    provider = _Parser(add_help=False)
    provider.add_argument("--provider", choices=["local", "together"],
                          help="where new runs' fine-tuning steps send requests (default: "
                               "setting provider); a run keeps its provider for good")
    interrupt = _Parser(add_help=False)
    interrupt.add_argument("--on-interrupt", choices=["ask", "cancel", "leave"], default="ask",
                           help="after Ctrl-C, leave remote jobs running (resumable) or cancel "
                                "them; ask (the default) asks on a terminal, else leaves")
    workers = _Parser(add_help=False)
    workers.add_argument("--max-runs", type=_whole(1, 100_000), metavar="N",
                         help="runs executed at once (default: setting worker_max_runs)")
    output = _Parser(add_help=False)
    output.add_argument("-o", "--output", choices=["table", "json"], default="table",
                        help="table for people (the default), or JSON for scripts (a stable "
                             "shape: see the README's Scripting section)")
    paths = _Parser(add_help=False)
    paths.add_argument("paths", nargs="*", metavar="PATH",
                       help="pipeline files or folders with schedules (default: setting "
                            "schedule_paths)")
    return {"state": state, "logging": logging, "inputs": inputs, "provider": provider,
            "interrupt": interrupt, "workers": workers, "paths": paths, "output": output}


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version  # noqa: PLC0415

    try:
        return f"orchestrator {version('orchestrator')}"
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "orchestrator (not installed)"


class _Version(argparse.Action):
    """`--version`: the installed package's version (read only when asked: start-up)."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: object) -> None:
        super().__init__(option_strings, dest, nargs=0, help="print the version and exit")

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: object, option_string: str | None = None) -> None:
        print(_version())
        parser.exit(EXIT_OK)


COMMANDS = ("validate", "plan", "run", "resume", "cancel", "runs", "batches", "show", "logs",
            "metrics", "wait", "models", "promote", "check-data", "local-api", "ui", "worker",
            "scheduler", "serve", "schedules", "state", "completion", "schema", "init")
"""Every command, in the order --help lists them (a test holds it to the parser's)."""


class _Unbuilt(_Parser):
    """A command's parser left unbuilt (see `build_parser(only=...)`): it takes every flag
    and subcommand and keeps nothing. Never initialised: that is the cost it saves."""

    def add_argument(self, *args: Any, **kwargs: Any) -> Any:
        return None

    def add_subparsers(self, **kwargs: Any) -> Any:
        return _OnlyCommand(None)

    def add_mutually_exclusive_group(self, **kwargs: Any) -> Any:
        return self

    def add_parser(self, *args: Any, **kwargs: Any) -> _Parser:
        return _UNBUILT


_UNBUILT = _Unbuilt.__new__(_Unbuilt)


class _OnlyCommand:
    """The subparsers of a command line built for one command: its parser is made, every
    other one is `_UNBUILT`."""

    def __init__(self, real: Any, only: str | None = None) -> None:
        self._real = real
        self._only = only

    def add_parser(self, name: str, **kwargs: Any) -> _Parser:
        if self._real is not None and name == self._only:
            parser: _Parser = self._real.add_parser(name, **kwargs)
            return parser
        return _UNBUILT


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The whole command line (also what `completion` generates scripts from), or, with
    `only`, the parser of that command alone: argparse looks translations up for every help
    string it is given, and building every command's parser was 10 of the 20 ms a read
    command's own work took (measured)."""
    parser = _Parser(prog="orchestrator",
                     description="Durable, resumable YAML pipelines for fine-tuning models.",
                     epilog="exit codes: 0 succeeded, 1 the run failed, 2 bad input, "
                            "130 interrupted. Settings: config/orchestrator.toml.")
    parser.add_argument("--version", action=_Version)
    real = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                 parser_class=_Parser)
    commands: Any = real if only is None else _OnlyCommand(real, only)
    flags = _flag_groups()
    _running_commands(commands, flags)
    _looking_commands(commands, flags)
    _registry_commands(commands, flags)
    _service_commands(commands, flags)
    _helper_commands(commands)
    return parser


def _running_commands(commands: argparse._SubParsersAction[_Parser],
                      g: dict[str, _Parser]) -> None:
    state, logging, inputs, provider, interrupt = (g["state"], g["logging"], g["inputs"],
                                                   g["provider"], g["interrupt"])
    p = commands.add_parser("validate", help="check pipeline files; report every problem")
    p.add_argument("files", nargs="+", metavar="FILE")

    p = commands.add_parser("plan", parents=[inputs, state, provider],
                            help="show what a pipeline, or a resume of a run, would execute")
    p.add_argument("target", metavar="FILE|RUN", help="a pipeline file or a run id")
    p.add_argument("--no-estimate", action="store_true",
                   help="for a pipeline: skip the price estimate of its fine-tunes (which "
                        "uploads their datasets, as the run would, to have them priced)")
    p.add_argument("--from", dest="from_step", metavar="STEP",
                   help="for a run: re-run STEP and everything after it")
    p.add_argument("--reload", action="store_true",
                   help="for a run: re-read its pipeline file and re-run changed steps")

    p = commands.add_parser("run", parents=[inputs, state, logging, provider, interrupt],
                            help="run a pipeline (a matrix: a batch of runs)")
    p.add_argument("file", metavar="FILE")
    p.add_argument("--detach", action="store_true",
                   help="queue the run for a worker and print its id at once")
    p.add_argument("--yes", action="store_true",
                   help="launch even if the fine-tunes' estimated price exceeds the "
                        "pipeline's budget.max_usd (or cannot be estimated)")

    p = commands.add_parser("resume", parents=[state, logging, interrupt, provider],
                            help="continue a failed, interrupted or crashed run, or every "
                                 "cell of a batch that did not succeed")
    p.add_argument("run_id", metavar="RUN|BATCH")
    p.add_argument("--from", dest="from_step", metavar="STEP",
                   help="re-run STEP and everything after it")
    p.add_argument("--reload", action="store_true",
                   help="re-read the pipeline file; re-run steps whose configuration changed")
    p.add_argument("--force", action="store_true",
                   help="resume a stranded run (resets its recovery count)")
    p.add_argument("--move-provider", action="store_true",
                   help="with --provider: bind the run to that provider from now on (it "
                        "keeps the one it was created with otherwise)")
    p.add_argument("--detach", action="store_true",
                   help="queue the run (a batch: each cell that did not succeed) for a "
                        "worker, and print its id at once")

    p = commands.add_parser("cancel", parents=[state, logging],
                            help="cancel runs or batches, and the remote jobs they started")
    p.add_argument("targets", nargs="+", metavar="RUN|BATCH")
    p.add_argument("--wait", type=_duration, default=30.0, metavar="DURATION",
                   help="how long to wait for the process executing a run to cancel it")


def _looking_commands(commands: argparse._SubParsersAction[_Parser],
                      g: dict[str, _Parser]) -> None:
    state, output = g["state"], g["output"]
    p = commands.add_parser("runs", parents=[state, output], help="list recent runs")
    p.add_argument("--limit", type=_count, default=20, metavar="N")
    p.add_argument("--status", action="append", metavar="STATUS",
                   help="only runs in this status (repeatable, or comma-separated: "
                        "running,failed)")
    p.add_argument("--pipeline", metavar="NAME", help="only runs of this pipeline")
    p.add_argument("--since", metavar="WHEN",
                   help="only runs created since WHEN: a duration ago (2h, 3d) or a date "
                        "(2026-12-01, 2026-12-01T08:00)")
    p.add_argument("--until", metavar="WHEN", help="only runs created before WHEN")

    p = commands.add_parser("batches", parents=[state, output], help="list recent batches")
    p.add_argument("--limit", type=_count, default=20, metavar="N")

    p = commands.add_parser("show", parents=[state, output],
                            help="a run's steps and their state, or a batch's cells")
    p.add_argument("run_id", metavar="RUN|BATCH")
    p.add_argument("--outputs", action="store_true", help="also print each step's outputs")

    p = commands.add_parser("logs", parents=[state],
                            help="a run's event log, with what its steps logged (a batch's: "
                                 "every cell's)")
    p.add_argument("run_id", metavar="RUN|BATCH")
    p.add_argument("--follow", "-f", action="store_true",
                   help="keep printing new events until the run stops; the exit code is "
                        "then the run's (0 succeeded, 1 failed or cancelled)")
    p.add_argument("--step", metavar="STEP", help="only this step's events")
    p.add_argument("--attempt", type=_count, metavar="N", help="only this attempt's events")
    p.add_argument("-o", "--output", choices=["table", "json"], default="table",
                   help="lines for people (the default), or one JSON object per event")
    p.add_argument("--json", dest="output", action="store_const", const="json",
                   help="the same as -o json")
    p.add_argument("--all", action="store_true",
                   help="also the events that only record a checkpoint a step stored")

    p = commands.add_parser("metrics", parents=[state],
                            help="the training metrics (losses, learning rate) of a run's "
                                 "fine-tune jobs; of a batch: each cell's final figures")
    p.add_argument("run_id", metavar="RUN|BATCH")
    p.add_argument("-o", "--output", choices=["table", "json", "csv"], default="table",
                   help="table (the default), JSON or CSV")
    p.add_argument("--json", dest="output", action="store_const", const="json",
                   help="the same as -o json")
    p.add_argument("--csv", dest="output", action="store_const", const="csv",
                   help="the same as -o csv")

    p = commands.add_parser("wait", parents=[state],
                            help="wait for a run or batch to end; exit 0 succeeded, 1 failed "
                                 "or cancelled, 2 unknown, 75 timed out")
    p.add_argument("run_id", metavar="RUN|BATCH")
    p.add_argument("--timeout", type=_duration, metavar="DURATION",
                   help="give up after this long (exit code 75; the run goes on)")

    p = commands.add_parser("check-data", help="check fine-tuning datasets (JSONL); every "
                                               "problem with its line")
    p.add_argument("files", nargs="+", metavar="FILE")
    p.add_argument("--purpose", choices=["fine-tune", "eval"], default="fine-tune")

    p = commands.add_parser("ui", parents=[state],
                            help="serve the web view (runs, a run's graph and losses, "
                                 "batches, models) on loopback")
    _listen_flags(p, port=8766, remote="listen off loopback; every request must then carry "
                                       "the token in ORCH_UI_TOKEN")
    p.add_argument("--allow-actions", action="store_true",
                   help="let the page cancel runs (POST, with a CSRF check)")
    p.add_argument("--allow-host", action="append", metavar="HOST",
                   help="a name browsers reach the web view by (repeatable; with "
                        "--allow-remote): requests naming any other host are refused")

    p = commands.add_parser("local-api", help="serve the local Together-compatible API over "
                                              "HTTP (training simulated, or real with "
                                              "--trainer peft)")
    _listen_flags(p, port=8765, remote="listen on a non-loopback address (no real security: "
                                       "one shared key)")
    p.add_argument("--data-dir", metavar="DIR",
                   help="where it keeps files, jobs and models (default: setting "
                        "local_data_dir)")
    p.add_argument("--trainer", choices=["simulated", "peft"],
                   help="who trains fine-tuning jobs: simulated (by the clock) or peft (real "
                        "LoRA, the train extra; default: setting local_trainer)")


def _listen_flags(p: _Parser, *, port: int, remote: str) -> None:
    """Where a server command listens: loopback unless --allow-remote (whose help says what
    that exposes)."""
    p.add_argument("--host", default="127.0.0.1",
                   help="where to listen (default 127.0.0.1; another address needs "
                        "--allow-remote)")
    p.add_argument("--port", type=_port, default=port)
    p.add_argument("--allow-remote", action="store_true", help=remote)


def _registry_commands(commands: argparse._SubParsersAction[_Parser],
                       g: dict[str, _Parser]) -> None:
    state, output = g["state"], g["output"]
    p = commands.add_parser("models", parents=[state, output], help="the model registry")
    p.add_argument("--limit", type=_count, default=50, metavar="N")
    p.add_argument("--alias", type=_alias, metavar="NAME",
                   help="which model an alias (production, staging) points at, and how it "
                        "got there")

    p = commands.add_parser("promote", parents=[state, output],
                            help="point a registry alias at the model of a batch's best cell")
    p.add_argument("batch_id", metavar="BATCH")
    p.add_argument("--alias", type=_alias, default="production", metavar="NAME",
                   help="the alias to move (default: production)")
    p.add_argument("--by", metavar="OBJECTIVE",
                   help="eval.SCORER, lift.SCORER, baseline.SCORER, eval_loss or train_loss "
                        "(default: the pipeline's select:)")
    best = p.add_mutually_exclusive_group()
    best.add_argument("--max", dest="maximize", action="store_const", const=True,
                      help="higher is better (the default for scores)")
    best.add_argument("--min", dest="maximize", action="store_const", const=False,
                      help="lower is better (the default for losses)")
    p.add_argument("--why", default="", metavar="TEXT", help="kept in the alias's history")
    p.add_argument("--dry-run", action="store_true",
                   help="rank the cells and say what would move, moving nothing")


def _service_commands(commands: argparse._SubParsersAction[_Parser],
                      g: dict[str, _Parser]) -> None:
    state, logging, provider, workers, paths = (g["state"], g["logging"], g["provider"],
                                                g["workers"], g["paths"])
    commands.add_parser("worker", parents=[state, logging, workers],
                        help="execute queued runs (run --detach, schedules) until stopped; "
                             "each on the provider it was created with")
    commands.add_parser("scheduler", parents=[paths, state, logging, provider],
                        help="fire due schedules into the queue until stopped")
    p = commands.add_parser("serve", parents=[paths, state, logging, provider, workers],
                            help="scheduler, worker and the web view in one process")
    p.add_argument("--ui-host", default="127.0.0.1",
                   help="where the web view listens (another address than loopback needs "
                        "--allow-remote)")
    p.add_argument("--ui-port", type=_port, default=8766, help="the web view's port")
    p.add_argument("--no-ui", action="store_true", help="no web view")
    p.add_argument("--allow-remote", action="store_true",
                   help="the web view off loopback; every request must carry ORCH_UI_TOKEN")
    p.add_argument("--allow-actions", action="store_true",
                   help="let the web view cancel runs (POST, with a CSRF check)")
    p.add_argument("--allow-host", action="append", metavar="HOST",
                   help="a name browsers reach the web view by (repeatable; with "
                        "--allow-remote): requests naming any other host are refused")
    commands.add_parser("schedules", parents=[paths, state, g["output"]],
                        help="each schedule with its next fire time and last run")
    p = commands.add_parser("state", help="the state database: migrate it, or copy its "
                                          "history to a file and from a file into another")
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION",
                               parser_class=_Parser)
    actions.add_parser("migrate", parents=[state],
                       help="bring the database's schema to this version; say what was done")
    a = actions.add_parser("export", parents=[state],
                           help="write every run, batch, schedule and model to FILE (JSON "
                                "lines), from one consistent snapshot")
    a.add_argument("file", metavar="FILE", help="where to write (- for stdout)")
    a = actions.add_parser("import", parents=[state],
                           help="copy an exported history into this database (all or "
                                "nothing; ids it already holds are refused)")
    a.add_argument("file", metavar="FILE", help="a file written by `state export`")


def _helper_commands(commands: argparse._SubParsersAction[_Parser]) -> None:
    p = commands.add_parser("completion", help="print a shell completion script: "
                                               "eval \"$(orchestrator completion bash)\"")
    p.add_argument("shell", choices=["bash", "zsh", "fish"])
    commands.add_parser("schema", help="print the JSON Schema of pipeline files (for editors: "
                                       "orchestrator schema > pipeline.schema.json)")
    p = commands.add_parser("init", help="write a starter pipeline, its data and a settings "
                                         "file into DIR")
    p.add_argument("dir", nargs="?", default=".", metavar="DIR",
                   help="where to write (default: the current folder)")
    p.add_argument("--force", action="store_true", help="overwrite files already there")
