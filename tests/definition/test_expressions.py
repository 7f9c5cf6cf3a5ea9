"""`${{ }}` expressions: parsing, native types, formatting, and what they refuse."""

from __future__ import annotations

from typing import Any

import pytest

from orchestrator.definition.expressions import (
    ExpressionError,
    Reference,
    lookup,
    parse_template,
    render,
)

CONTEXT: dict[str, Any] = {
    "inputs": {"epochs": 3, "model": "llama", "tags": ["a", "b"], "cfg": {"lr": 0.1}},
    "run": {"id": "r-1", "name": "p"},
}


def resolve(ref: Reference) -> Any:
    return lookup(CONTEXT[ref.root], ref)


@pytest.mark.parametrize(("value", "expected"), [
    pytest.param("${{ inputs.epochs }}", 3, id="single-keeps-int"),
    pytest.param("${{inputs.cfg}}", {"lr": 0.1}, id="single-keeps-mapping"),
    pytest.param("${{ inputs.tags[1] }}", "b", id="index"),
    pytest.param("${{ inputs['model'] }}", "llama", id="quoted-key"),
    pytest.param("n=${{ inputs.epochs }}", "n=3", id="formatted-int"),
    pytest.param("${{ inputs.model }}-${{ run.id }}", "llama-r-1", id="two"),
    pytest.param("cfg ${{ inputs.cfg }}", 'cfg {"lr": 0.1}', id="formatted-json"),
    pytest.param("no expression", "no expression", id="plain"),
])
def test_render(value: str, expected: Any) -> None:
    """A lone expression keeps its type; inside text it is formatted (JSON for containers)."""
    assert expected == render(value, resolve)


def test_render_walks_nested_values() -> None:
    """Mappings and lists are rendered item by item; other values pass through."""
    value = {"a": ["${{ inputs.epochs }}", 2], "b": {"c": "${{ run.name }}"}, "d": None}
    assert render(value, resolve) == {"a": [3, 2], "b": {"c": "p"}, "d": None}


@pytest.mark.parametrize(("text", "fragment"), [
    pytest.param("${{ }}", "empty expression", id="empty"),
    pytest.param("${{ inputs.a", "without a closing", id="unclosed"),
    pytest.param("${{ inputs. }}", "ends with '.'", id="trailing-dot"),
    pytest.param("${{ os.system }}", "unknown name 'os'", id="unknown-root"),
    pytest.param("${{ inputs.a + 1 }}", "unexpected '+ 1'", id="operator"),
    pytest.param("${{ inputs.a() }}", "unexpected '()'", id="call"),
    pytest.param("${{ inputs a }}", "expected '.'", id="missing-dot"),
])
def test_parse_errors(text: str, fragment: str) -> None:
    """Only references parse; the message says what was unexpected."""
    with pytest.raises(ExpressionError, match=fragment.replace("(", r"\(").replace(")", r"\)")
                       .replace("+", r"\+").replace(".", r"\.")):
        parse_template(text)


def test_lookup_names_the_missing_part() -> None:
    """A missing key says where the walk stopped and what was there."""
    with pytest.raises(ExpressionError, match=r"inputs has no 'lr' \(it has: cfg, epochs"):
        render("${{ inputs.lr }}", resolve)
    with pytest.raises(ExpressionError, match=r"inputs\.tags has no item \[5\]"):
        render("${{ inputs.tags[5] }}", resolve)


def test_hyphenated_step_ids_parse() -> None:
    """Step ids may hold hyphens, as in steps.my-step.outputs.x."""
    template = parse_template("${{ steps.my-step.outputs.x }}")
    assert template.single is not None
    assert template.single.path == ("my-step", "outputs", "x")
