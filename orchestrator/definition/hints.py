"""What a mistake in a pipeline file suggests: the closest key of the place it is in, where a
known key in the wrong place goes, what another tool's key (GitHub Actions') is here, the
closest choice of a value that is not one.
"""

from __future__ import annotations

import difflib
import functools
import re
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel

from orchestrator.definition.matrix import MatrixSpec
from orchestrator.definition.model import (
    Defaults,
    InputSpec,
    PipelineHeader,
    RetrySpec,
    ScheduleSpec,
    StepConcurrencySpec,
    StepSpec,
)
from orchestrator.process import hold

__all__ = ["choice_hint", "keys_at", "unknown_key_hint"]

_KEY_HOMES: dict[str, str] = {}
"""Every key a pipeline file may hold, and where (the first place, for a hint)."""
for _model, _home in ((PipelineHeader, "the top level"), (StepSpec, "a step"),
                      (InputSpec, "an input"), (RetrySpec, "retry"), (Defaults, "defaults"),
                      (StepConcurrencySpec, "concurrency"), (ScheduleSpec, "schedule"),
                      (MatrixSpec, "matrix")):
    for _name, _field in _model.model_fields.items():
        _KEY_HOMES.setdefault(_field.alias or _name, _home)


_FOREIGN_KEYS = {
    "on": "a pipeline runs when you run it, a worker takes it, or its schedule: fires",
    "jobs": "a pipeline's work is its steps:",
    "runs-on": "where a run executes is its provider (--provider, setting provider)",
    "run": "a step does its work through uses: (a step type, or python:module:function)",
}
"""Keys of other tools' files (GitHub Actions'), with what this file says instead."""


def unknown_key_hint(key: str, here: Sequence[str]) -> str:
    """A key of another tool says what this file says instead; a misspelt one, the closest
    key of the place it is in (`here`); a known key in the wrong place, where it goes."""
    if key in _FOREIGN_KEYS and key not in here:
        return f" ({_FOREIGN_KEYS[key]})"
    close = difflib.get_close_matches(key, list(here), n=1)
    if close:
        return f" (did you mean '{close[0]}'?)"
    if key in _KEY_HOMES:
        return f" ('{key}' belongs in {_KEY_HOMES[key]})"
    return ""


def choice_hint(given: Any, expected: str) -> str:
    """For a value that is not one of a choice (`type: int`), the closest choice."""
    if not isinstance(given, str):
        return ""
    close = difflib.get_close_matches(given, re.findall(r"'([^']*)'", expected), n=1,
                                      cutoff=0.5)
    return f" (did you mean '{close[0]}'?)" if close else ""


@functools.lru_cache(maxsize=256)
def _schema_of(model: type[BaseModel]) -> dict[str, Any]:
    return model.model_json_schema(by_alias=True)


hold(_schema_of, name="JSON Schemas of pipeline parts",
     why="a hint for a misspelt key reads the schema of its place")


def keys_at(model: type[BaseModel] | None, loc: Sequence[Any]) -> list[str]:
    """The keys a mapping at `loc` of `model`'s data may hold (from its JSON Schema), for the
    closest-key hint; none when the place is not an object the schema names keys of."""
    if model is None:
        return []
    schema = _schema_of(model)
    defs = schema.get("$defs", {})

    def branches(node: Any) -> list[dict[str, Any]]:
        if not isinstance(node, dict):
            return []
        if "$ref" in node:
            return branches(defs.get(str(node["$ref"]).rsplit("/", 1)[-1]))
        found = [node]
        for key in ("anyOf", "oneOf", "allOf"):
            for branch in node.get(key, ()):
                found += branches(branch)
        return found

    nodes = branches(schema)
    for part in loc:
        children: list[dict[str, Any]] = []
        for node in nodes:
            if isinstance(part, int):
                children += branches(node.get("items"))
            elif part in node.get("properties", {}):
                children += branches(node["properties"][part])
            elif isinstance(node.get("additionalProperties"), dict):
                children += branches(node["additionalProperties"])
        nodes = children
    return sorted({key for node in nodes for key in node.get("properties", {})})
