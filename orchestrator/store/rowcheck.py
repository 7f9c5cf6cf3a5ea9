"""A row of an exported history, checked as the store itself would read it back.

`state import` used to check that each value was plain (text, number, null): a run with
`status: "pwned"`, a `created_at` of 10^30 or of "yesterday", outputs that are not JSON, or a
pipeline text that is not in the file were imported, and then broke `runs` and `show` for
good. Here every column has the kind the store gives it (`COLUMNS`), a row is then built
into its record through the very functions the store reads rows with (`rows`), and a row
that refers to another (a step to its run, a run to its pipeline text) must find it earlier
in the file. The first problem is one line naming the table, the column and what is wrong;
`transfer.read_history` adds the file and line.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from orchestrator.errors import shorten
from orchestrator.store.records import RunStatus, StepStatus, text_hash
from orchestrator.store.rows import (
    StoredText,
    alias_record,
    batch_record,
    event_record,
    metric_record,
    model_record,
    run_record,
    schedule_record,
    step_record,
)

__all__ = ["COLUMNS", "LAST_TIME", "RowChecker"]

LAST_TIME = 32_503_680_000.0
"""1 January 3000, in seconds since the epoch: a stored time is a number from 0 to this."""

Check = Callable[[Any], str | None]
"""What is wrong with a column's value, or None."""


def _text(value: Any) -> str | None:
    return None if isinstance(value, str) else f"is {_kind(value)}, not text"


def _name(value: Any) -> str | None:
    if not isinstance(value, str):
        return f"is {_kind(value)}, not text"
    return None if value.strip() else "is empty"


def _time(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return f"is {_kind(value)}, not a time in seconds since the epoch"
    if not 0 <= value <= LAST_TIME:
        return f"is {shorten(repr(value), 40)}, not a time between 1970 and the year 3000"
    return None


def _whole(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int):
        return f"is {_kind(value)}, not a whole number"
    return None if 0 <= value < 2**63 else f"is {shorten(repr(value), 40)}, out of range"


def _number(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return f"is {_kind(value)}, not a number"
    return None if math.isfinite(value) and abs(value) < 1e300 else "is not a finite number"


def _flag(value: Any) -> str | None:
    return None if value in (True, False, 0, 1) else f"is {_kind(value)}, not true or false"


def _json_object(value: Any) -> str | None:
    """A column holding a JSON object as text (inputs, outputs, a step's error...)."""
    if not isinstance(value, str):
        return f"is {_kind(value)}, not JSON text"
    try:
        decoded = json.loads(value)
    except (ValueError, RecursionError):
        return "is not JSON"
    return None if isinstance(decoded, dict) else f"holds {_kind(decoded)}, not a JSON object"


def _one_of(values: type[RunStatus] | type[StepStatus]) -> Check:
    known = ", ".join(v.value for v in values)

    def check(value: Any) -> str | None:
        if isinstance(value, str) and value in {v.value for v in values}:
            return None
        return f"is {shorten(repr(value), 40)}, not one of {known}"
    return check


def _or_null(check: Check) -> Check:
    def either(value: Any) -> str | None:
        return None if value is None else check(value)
    return either


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, str):
        return f"the text {shorten(repr(value), 40)}"
    if isinstance(value, int | float):
        return f"the number {shorten(repr(value), 40)}"
    return {"list": "a list", "dict": "an object"}.get(type(value).__name__, "another value")


_TEXT, _TIME, _JSON = _or_null(_text), _or_null(_time), _or_null(_json_object)

COLUMNS: dict[str, dict[str, Check]] = {
    "pipeline_texts": {"hash": _name, "text": _name},
    "batches": {
        "id": _name, "pipeline_name": _name, "pipeline_path": _text, "pipeline_text": _text,
        "inputs": _json_object, "max_parallel": _or_null(_whole), "fail_fast": _flag,
        "cells": _whole, "created_at": _time, "schedule_id": _TEXT, "scheduled_for": _TIME,
        "pipeline_hash": _TEXT},
    "runs": {
        "id": _name, "pipeline_name": _name, "pipeline_path": _text, "pipeline_text": _text,
        "inputs": _json_object, "status": _one_of(RunStatus), "created_at": _time,
        "started_at": _TIME, "finished_at": _TIME, "error": _TEXT, "lease_owner": _TEXT,
        "lease_generation": _whole, "lease_expires_at": _TIME, "recoveries": _whole,
        "batch_id": _TEXT, "cell": _or_null(_whole), "matrix": _JSON, "waiting_for": _TEXT,
        "cancel_requested_at": _TIME, "schedule_id": _TEXT, "scheduled_for": _TIME,
        "provider": _TEXT, "provider_url": _TEXT, "pipeline_hash": _TEXT},
    "steps": {
        "run_id": _name, "step_id": _name, "status": _one_of(StepStatus), "attempt": _whole,
        "outputs": _JSON, "checkpoint": _JSON, "error": _JSON, "started_at": _TIME,
        "finished_at": _TIME, "retry_at": _TIME, "config_hash": _TEXT, "waiting_for": _TEXT},
    "events": {
        "seq": _whole, "run_id": _name, "ts": _time, "kind": _name, "step_id": _TEXT,
        "attempt": _or_null(_whole), "data": _JSON},
    "metric_points": {
        "run_id": _name, "step_id": _name, "job_id": _text, "train_step": _whole,
        "epoch": _or_null(_number), "train_loss": _or_null(_number),
        "eval_loss": _or_null(_number), "learning_rate": _or_null(_number),
        "tokens": _or_null(_whole), "ts": _time},
    "schedules": {
        "id": _name, "pipeline_name": _name, "pipeline_path": _text, "cron": _name,
        "timezone": _name, "last_fire": _TIME, "updated_at": _time, "paused_at": _TIME},
    "models": {
        "name": _name, "run_id": _text, "step_id": _text, "pipeline_name": _text,
        "provider": _TEXT, "base_model": _TEXT, "job_id": _TEXT, "training_file": _TEXT,
        "validation_file": _TEXT, "hyperparameters": _json_object, "metrics": _json_object,
        "tags": _json_object, "recorded_at": _time},
    "alias_moves": {
        "seq": _whole, "alias": _name, "model": _name, "moved_at": _time, "moved_by": _text,
        "reason": _text, "source": _TEXT},
}
"""Each table's columns, with what each may hold (as `transfer.HISTORY` lists them)."""


class _AnyText(Mapping[str, StoredText]):
    """Any pipeline text: a record is built to check its row, whose text was checked apart."""

    def __getitem__(self, key: str) -> StoredText:
        return StoredText("", None)

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0


_READERS: dict[str, Callable[[Any], object]] = {
    "batches": lambda row: batch_record(row, _AnyText()),
    "runs": lambda row: run_record(row, _AnyText()),
    "steps": step_record,
    "events": event_record,
    "metric_points": metric_record,
    "schedules": schedule_record,
    "models": model_record,
    "alias_moves": alias_record,
}
"""How the store reads a row of each table into its record (pipeline texts are text)."""


class RowChecker:
    """Checks the rows of one history in the order it holds them; remembers what a later
    row may refer to (the pipeline texts and runs seen so far)."""

    def __init__(self) -> None:
        self._texts: set[str] = set()
        self._runs: set[str] = set()

    def problem(self, table: str, row: Mapping[str, Any]) -> str | None:
        """What is wrong with `row` of `table` as `table.column: ...`, or None."""
        for column, check in COLUMNS[table].items():
            wrong = check(row[column])
            if wrong is not None:
                return f"{table}.{column} {wrong}"
        wrong = self._references(table, row)
        if wrong is not None:
            return wrong
        reader = _READERS.get(table)
        if reader is not None:
            try:
                reader(row)
            except (KeyError, TypeError, ValueError) as exc:
                return f"a {table} row the store could not read back: {shorten(str(exc), 80)}"
        if table == "pipeline_texts":
            self._texts.add(row["hash"])
        elif table == "runs":
            self._runs.add(row["id"])
        return None

    def _references(self, table: str, row: Mapping[str, Any]) -> str | None:
        if table == "pipeline_texts" and text_hash(row["text"]) != row["hash"]:
            return "pipeline_texts.hash is not the SHA-256 of its text"
        if table in ("runs", "batches"):
            key = row["pipeline_hash"]
            if key is None and not row["pipeline_text"]:
                return f"{table}.pipeline_text is missing (empty, and no pipeline_hash)"
            if key is not None and key not in self._texts:
                return (f"{table}.pipeline_hash names no pipeline text of this file (its "
                        "text must come before it)")
        if table in ("steps", "events", "metric_points") and row["run_id"] not in self._runs:
            return (f"{table}.run_id {shorten(repr(row['run_id']), 60)} is no run of this file "
                    "(its run must come before it)")
        return None
