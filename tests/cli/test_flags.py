"""Every flag of every command, checked by walking the parser: a number out of bounds is one
line and exit code 2, never a traceback or an overflow in the database."""

from __future__ import annotations

import argparse
from collections.abc import Iterator

import pytest

from orchestrator.cli import build_parser, main
from tests.conftest import CLI

TEXT_FLAGS = {"--alias"}
"""Flags whose value is checked text, not a number (an alias may well be `2026`)."""
BAD_NUMBERS = ["-1", "1" + "0" * 30, "nan", "inf", "1e999", "9" * 19, "", "0x10"]


def _flags_with_types(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
                      ) -> Iterator[tuple[tuple[str, ...], str, argparse.Action]]:
    """(command words, flag, action) for every flag that converts its value, in every
    command and sub-command."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _flags_with_types(sub, (*path, name))
        elif action.option_strings and action.type is not None and \
                action.option_strings[-1] not in TEXT_FLAGS:
            yield path, action.option_strings[-1], action


FLAGS = list(_flags_with_types(build_parser()))


def test_the_walk_finds_the_numeric_flags() -> None:
    """The walk sees the flags this test is about (a walk finding none proves nothing)."""
    found = {(" ".join(path), flag) for path, flag, _ in FLAGS}
    assert {("runs", "--limit"), ("batches", "--limit"), ("models", "--limit"),
            ("logs", "--attempt"), ("worker", "--max-runs"), ("ui", "--port"),
            ("serve", "--ui-port"), ("wait", "--timeout"), ("cancel", "--wait"),
            ("local-api", "--port")} <= found


@pytest.mark.parametrize(("path", "flag"), [pytest.param(path, flag, id=f"{' '.join(path)} "
                                                         f"{flag}") for path, flag, _ in FLAGS])
def test_every_number_a_flag_takes_is_bounded(path: tuple[str, ...], flag: str,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    """`runs --limit 10**30` reached the database as an overflow traceback; now every typed
    flag refuses what is out of its bounds in one line naming it."""
    for value in BAD_NUMBERS:
        with pytest.raises(SystemExit) as exited:
            main([*path, f"{flag}={value}"])
        assert exited.value.code == 2, (path, flag, value)
        err = capsys.readouterr().err
        assert len(err.splitlines()) == 1 and f"argument {flag}" in err, (value, err)
        assert "Traceback" not in err


def test_durations_take_units(capsys: pytest.CaptureFixture[str]) -> None:
    """`wait --timeout 2m` (durations with units, as everywhere else)."""
    parser = build_parser()
    assert parser.parse_args(["wait", "r-1", "--timeout", "2m"]).timeout == 120.0
    assert parser.parse_args(["cancel", "r-1", "--wait", "1h30m"]).wait == 5400.0
    assert parser.parse_args(["runs", "--limit", "1000000"]).limit == 1_000_000


@pytest.mark.parametrize(("url", "expected"), [
    ("postgresql://u@[::1", "error: state_url 'postgresql://...' is not a valid URL (Invalid "
                            "IPv6 URL)"),
    ("postgresql://u@127.0.0.1/test?schema=information_schema",
     "error: state_url 'postgresql://u@127.0.0.1/test?schema=information_schema': schema "
     "'information_schema' is PostgreSQL's own; name a schema of your own "
     "(?schema=orchestrator)"),
])
def test_a_state_url_that_cannot_be_used_is_one_line(cli: CLI, url: str, expected: str) -> None:
    refused = cli("runs", "--state-url", url, check_code=2)
    assert refused.stderr == expected + "\n"
