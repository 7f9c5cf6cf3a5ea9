"""Log processors, tested as plain functions, and the configured JSON output."""

from __future__ import annotations

import io
import json

import structlog

from orchestrator.ids import RunNames
from orchestrator.log import (
    ConsoleRunFields,
    add_run_fields,
    configure_logging,
    get_logger,
)
from orchestrator.redact import REDACTOR, Redactor


def test_add_run_fields_makes_them_present() -> None:
    """Lines outside a step still carry run_id, step and attempt (as null)."""
    assert add_run_fields(None, "info", {"event": "x", "step": "a"}) == {
        "event": "x", "step": "a", "run_id": None, "attempt": None}


def test_redactor_masks_nested_values_but_not_short_ones() -> None:
    redactor = Redactor()
    redactor.add(["hunter2-secret", "ab"])
    assert redactor.active
    value = {"a": ["x hunter2-secret y", {"b": "hunter2-secret"}], "c": 3, "d": "ab"}
    assert redactor.value(value) == {"a": ["x *** y", {"b": "***"}], "c": 3, "d": "ab"}
    assert redactor(None, "info", {"event": "key=hunter2-secret"}) == {"event": "key=***"}


def test_compact_run_fields_for_the_console() -> None:
    """Where a line comes from goes before it: the run as the header did not name it (a
    worker's runs by id, a batch's cells as #N, the command's own run not at all), then
    step#attempt; no run_id= trails every line."""
    names = RunNames()
    compact = ConsoleRunFields(names)
    line = {"event": "step started", "step": "train", "attempt": 2, "run_id": "r-1"}
    assert compact(None, "info", dict(line)) == {"event": "r-1 train#2    step started"}
    names.header = "r-1"
    assert compact(None, "info", dict(line)) == {"event": "train#2        step started"}
    names.header = "b-1"
    assert compact(None, "info", {**line, "run_id": "b-1.3"}) == {
        "event": "#3 train#2     step started"}
    assert compact(None, "info", {"event": "hi", "step": None, "attempt": None,
                                  "run_id": None}) == {"event": "hi"}


def test_json_lines_carry_bound_context_and_are_redacted() -> None:
    stream = io.StringIO()
    configure_logging(fmt="json", level="info", stream=stream)
    REDACTOR.add(["sk-abcdef"])
    log = get_logger()
    with structlog.contextvars.bound_contextvars(run_id="r-1", step="s", attempt=3):
        log.info("calling", key="sk-abcdef")
    log.debug("hidden below the level")
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert len(lines) == 1
    assert {k: lines[0][k] for k in ("run_id", "step", "attempt", "key", "level")} == {
        "run_id": "r-1", "step": "s", "attempt": 3, "key": "***", "level": "info"}


def test_redacting_stream_masks_raw_and_json_escaped_secrets() -> None:
    """Text written through the stream loses every known secret, also as JSON writes it
    (escaped quotes and non-ASCII); the longer of two overlapping secrets is masked whole."""
    from orchestrator.redact import RedactingStream

    redactor = Redactor()
    redactor.add(['pa"ss-ü-word', "pa\"ss"])
    target = io.StringIO()
    stream = RedactingStream(target, redactor)
    stream.write('raw pa"ss-ü-word, json ' + json.dumps({"k": 'pa"ss-ü-word'}) + "\n")
    assert target.getvalue() == 'raw ***, json {"k": "***"}\n'
    assert stream.getvalue() == target.getvalue()  # everything else is the wrapped stream's
