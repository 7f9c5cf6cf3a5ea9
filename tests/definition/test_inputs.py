"""Pipeline inputs: coercion to the declared type, `-i` parsing and path resolution."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from orchestrator.definition.inputs import coerce_input, parse_assignments, resolve_inputs
from orchestrator.definition.model import InputSpec, InputType
from orchestrator.errors import InputsInvalid


@pytest.mark.parametrize(("kind", "raw", "expected"), [
    pytest.param("integer", "3", 3, id="int-from-text"),
    pytest.param("integer", 4.0, 4, id="int-from-whole-float"),
    pytest.param("number", "2.5e-4", 2.5e-4, id="number"),
    pytest.param("boolean", "yes", True, id="bool-yes"),
    pytest.param("boolean", "off", False, id="bool-off"),
    pytest.param("string", 7, "7", id="string-from-int"),
    pytest.param("list", '["a", 1]', ["a", 1], id="list-json"),
    pytest.param("object", '{"k": 1}', {"k": 1}, id="object-json"),
    pytest.param("duration", "1m30s", 90.0, id="duration"),
])
def test_coercion(kind: InputType, raw: Any, expected: Any) -> None:
    """Command-line strings become the declared type."""
    assert expected == coerce_input(kind, raw)


@pytest.mark.parametrize(("kind", "raw", "message"), [
    pytest.param("integer", "three", "expected an integer, got 'three'", id="int"),
    pytest.param("integer", True, "expected an integer, got True", id="bool-is-not-int"),
    pytest.param("boolean", "maybe", "expected true or false, got 'maybe'", id="bool"),
    pytest.param("list", '{"a": 1}', "expected a JSON list", id="list"),
])
def test_coercion_errors(kind: InputType, raw: Any, message: str) -> None:
    """A value that is not of the declared type is refused with what was expected."""
    with pytest.raises(ValueError, match=message):
        coerce_input(kind, raw)


def test_parse_assignments() -> None:
    """Only the first `=` splits; a pair without one is bad input."""
    assert parse_assignments(["a=1", "b=x=y", "c="]) == {"a": "1", "b": "x=y", "c": ""}
    with pytest.raises(InputsInvalid, match="bad input 'oops': use -i name=value"):
        parse_assignments(["oops"])


def test_resolve_inputs(tmp_path: Path) -> None:
    """Defaults fill the gaps; paths resolve against where they were written."""
    specs = {
        "epochs": InputSpec(type="integer", default=3),
        "data": InputSpec(type="path", default="data/train.jsonl"),
        "extra": InputSpec(type="path", default="x.txt"),
    }
    pipeline_dir, cwd = tmp_path / "pipelines", tmp_path / "work"
    values = resolve_inputs(specs, {"epochs": "5", "extra": "y.txt"},
                            pipeline_dir=pipeline_dir, cwd=cwd)
    assert values == {"epochs": 5, "data": str(pipeline_dir / "data/train.jsonl"),
                      "extra": str(cwd / "y.txt")}


def test_resolve_inputs_errors(tmp_path: Path) -> None:
    """Unknown, missing required and mistyped inputs are one-line errors."""
    specs = {"n": InputSpec(type="integer"), "m": InputSpec(default="x")}
    with pytest.raises(InputsInvalid, match=r"unknown input 'z' \(this pipeline's inputs: m, n\)"):
        resolve_inputs(specs, {"z": "1"}, pipeline_dir=tmp_path, cwd=tmp_path)
    with pytest.raises(InputsInvalid, match="input 'n' is required: add -i n=<integer>"):
        resolve_inputs(specs, {}, pipeline_dir=tmp_path, cwd=tmp_path)
    with pytest.raises(InputsInvalid, match="input 'n': expected an integer, got 'x'"):
        resolve_inputs(specs, {"n": "x"}, pipeline_dir=tmp_path, cwd=tmp_path)
