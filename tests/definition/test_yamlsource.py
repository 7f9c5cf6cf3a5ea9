"""The YAML reader built from libyaml's events: the values and positions PyYAML's own composer
gives, YAML's merge keys as YAML defines them, and the bounds held through aliases."""

from __future__ import annotations

import gc
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.definition.limits import PipelineLimits
from orchestrator.definition.yamlsource import NodePath, Position, parse_yaml
from orchestrator.steps.builtin import parse_pipeline

_KEYS = st.text(st.sampled_from("abcxyz_- é"), min_size=1, max_size=4)
"""(No digits in text: PyYAML writes `08` unquoted, a string in YAML 1.1, a number in 1.2.)"""
_SCALARS = (st.none() | st.booleans() | st.integers(-10**6, 10**6)
            | st.floats(allow_nan=False, allow_infinity=False, width=32)
            | st.text(st.sampled_from("ab: #\n'\"-é"), max_size=6))
_DATA = st.recursive(_SCALARS, lambda inner: st.lists(inner, max_size=4)
                     | st.dictionaries(_KEYS, inner, max_size=4), max_leaves=25)


def _node_marks(node: yaml.Node, path: NodePath, out: dict[NodePath, tuple[Position,
                                                                            Position | None]],
                key: yaml.Node | None = None) -> None:
    """Every path of a document PyYAML composed, with its value's and its key's position."""
    def at(n: yaml.Node) -> Position:
        return Position(n.start_mark.line + 1, n.start_mark.column + 1)

    out[path] = (at(node), at(key) if key is not None else None)
    if isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _node_marks(item, (*path, i), out)
    elif isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            _node_marks(v, (*path, str(yaml.safe_load(yaml.serialize(k)))), out, k)


@given(_DATA, st.booleans())
@settings(max_examples=300, deadline=None)
def test_values_and_positions_are_those_pyyaml_composes(data: Any, flow: bool) -> None:
    """Any data, written in block or flow style: the same values back, and every key and value
    located where PyYAML's own composer puts it."""
    text = yaml.safe_dump({"root": data}, default_flow_style=flow, allow_unicode=True)
    doc = parse_yaml(text)
    assert not doc.problems
    assert doc.data == yaml.safe_load(text)
    marks: dict[NodePath, tuple[Position, Position | None]] = {}
    composed = yaml.compose(text, Loader=yaml.SafeLoader)
    assert composed is not None
    _node_marks(composed, (), marks)
    for path, (value_at, key_at) in marks.items():
        assert doc.source.locate(path) == value_at, path
        assert doc.source.locate(path, prefer_key=True) == (key_at or value_at), path
        assert doc.source.locate((*path, "missing")) == value_at  # the nearest known parent


def test_keys_written_beside_a_merge_win_and_the_first_merged_mapping_wins() -> None:
    """YAML's merge key: a key written in the mapping overrides a merged one (no duplicate),
    among merged mappings the first to give a key wins, and each key is located where it is
    written."""
    doc = parse_yaml(
        "base: &base {lr: 1, epochs: 2}\n"   # line 1
        "more: &more {lr: 3, batch: 4}\n"    # line 2
        "job:\n"
        "  <<: [*base, *more]\n"             # line 4
        "  epochs: 5\n")                     # line 5
    assert doc.problems == []
    assert doc.data["job"] == {"lr": 1, "epochs": 5, "batch": 4}
    assert doc.source.locate(("job", "epochs"), prefer_key=True) == Position(5, 3)
    assert doc.source.locate(("job", "lr")) == Position(1, 18)
    assert doc.source.locate(("job", "batch"), prefer_key=True) == Position(2, 21)


def test_a_merge_of_something_not_a_mapping_is_refused_where_it_is() -> None:
    doc = parse_yaml("a: &a [1]\nx:\n  <<: [*a]\n")
    assert [(p.line, p.col, p.message) for p in doc.problems] == [
        (1, 4, "YAML: expected a mapping for merging, but found sequence (while constructing "
               "a mapping)")]


def test_each_alias_is_a_copy_located_at_its_anchor() -> None:
    """Two steps sharing parameters through an alias get two values: changing one (as a
    step's rendering might) leaves the other alone."""
    doc = parse_yaml("one: &p {x: [1]}\ntwo: *p\n")
    assert doc.data["one"] == doc.data["two"]
    doc.data["two"]["x"].append(2)
    assert doc.data["one"] == {"x": [1]}
    assert doc.source.locate(("two", "x", 0)) == Position(1, 14)


def test_an_alias_cannot_nest_a_value_deeper_than_the_bound() -> None:
    """Nesting is bounded where the value is used, not only where it is written: an alias of
    a 4-deep list inside 3 levels makes 7, refused at the alias with a 6-level bound."""
    text = "a: &deep [[[[1]]]]\nb: [[*deep]]\n"
    assert not parse_yaml(text, PipelineLimits(max_depth=7)).problems
    doc = parse_yaml(text, PipelineLimits(max_depth=6))
    assert [(p.line, p.col, p.message) for p in doc.problems] == [
        (2, 6, "nested more than 6 levels deep (setting max_yaml_depth)")]


def test_an_anchor_defined_twice_names_both_lines() -> None:
    doc = parse_yaml("a: &x 1\nb: &x 2\n")
    assert [(p.line, p.col, p.message) for p in doc.problems] == [
        (2, 4, "YAML: anchor &x is defined twice (first on line 1)")]


@pytest.mark.parametrize("enabled", [True, False])
def test_loading_leaves_the_garbage_collector_as_it_found_it(enabled: bool) -> None:
    """The collector is paused while a file is checked (half the time of a big load), then
    left as it was: on, or off if the program had turned it off."""
    was = gc.isenabled()
    (gc.enable if enabled else gc.disable)()
    try:
        parse_pipeline("name: p\nsteps:\n  a: {uses: core/echo}\n", Path("p.yaml"))
        with pytest.raises(Exception, match="unknown step type"):
            parse_pipeline("name: p\nsteps:\n  a: {uses: core/nope}\n", Path("p.yaml"))
        assert gc.isenabled() is enabled
    finally:
        (gc.enable if was else gc.disable)()
