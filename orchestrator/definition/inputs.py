"""Pipeline input values: coerced to their declared type, from YAML defaults or `-i key=value`."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson

from orchestrator.definition.model import InputSpec, InputType
from orchestrator.durations import parse_duration
from orchestrator.errors import InputsInvalid, shorten

__all__ = ["coerce_input", "parse_assignments", "resolve_inputs"]

_MAX_DIGITS = 100
"""A longer `-i` integer is a mistake (and Python refuses to parse 4,300 digits or more)."""
_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}


def coerce_input(kind: InputType, value: Any) -> Any:
    """`value` as `kind`; strings (from the command line) are parsed. Raises ValueError."""
    if kind in ("string", "path"):
        if isinstance(value, str):
            return value
        if isinstance(value, bool | int | float):
            return str(value).lower() if isinstance(value, bool) else str(value)
    elif kind == "integer":
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str) and len(value) <= _MAX_DIGITS:
            try:
                return int(value.strip().replace("_", ""))
            except ValueError:
                pass
    elif kind == "number":
        if isinstance(value, int | float) and not isinstance(value, bool):
            return value
        if isinstance(value, str):
            try:
                number = float(value)
            except ValueError:
                pass
            else:
                if math.isfinite(number):
                    return number
    elif kind == "duration":
        return parse_duration(value)
    elif kind == "boolean":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
            return value.strip().lower() in _TRUE
    elif kind in ("list", "object"):
        wanted = list if kind == "list" else dict
        if isinstance(value, str):
            with contextlib.suppress(orjson.JSONDecodeError):  # also: nested over 1,024 deep
                value = orjson.loads(value)
        if isinstance(value, wanted):
            return value
    expected = {"list": "a JSON list", "object": "a JSON object", "boolean": "true or false",
                "integer": "an integer", "number": "a number"}.get(kind, "a string")
    msg = f"expected {expected}, got {shorten(repr(value))}"
    raise ValueError(msg)


def parse_assignments(pairs: list[str]) -> dict[str, str]:
    """`["a=1", "b=x=y"]` to `{"a": "1", "b": "x=y"}`; a pair without `=` is an error."""
    values: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name.strip():
            msg = f"bad input '{shorten(pair)}': use -i name=value"
            raise InputsInvalid(msg)
        values[name.strip()] = value
    return values


def resolve_inputs(
    specs: Mapping[str, InputSpec],
    given: Mapping[str, Any],
    *,
    pipeline_dir: Path,
    cwd: Path,
) -> dict[str, Any]:
    """Every input's value: given ones coerced, the rest defaulted; paths made absolute.

    A path given on the command line is relative to the current directory, a default one to
    the pipeline file's folder: each is relative to where the person wrote it.
    """
    unknown = sorted(set(given) - set(specs))
    if unknown:
        known = ", ".join(sorted(specs)) or "none"
        msg = f"unknown input '{shorten(unknown[0])}' (this pipeline's inputs: {known})"
        raise InputsInvalid(msg)
    values: dict[str, Any] = {}
    for name, spec in specs.items():
        if name in given:
            raw, base = given[name], cwd
        elif spec.required:
            msg = f"input '{name}' is required: add -i {name}=<{spec.type}>"
            raise InputsInvalid(msg)
        else:
            raw, base = spec.default, pipeline_dir
        if raw is None and name not in given:
            values[name] = None
            continue
        try:
            value = coerce_input(spec.type, raw)
        except ValueError as exc:
            msg = f"input '{name}': {exc}"
            raise InputsInvalid(msg) from None
        if spec.type == "path":
            value = str((base / Path(value).expanduser()).resolve())
        values[name] = value
    return values
