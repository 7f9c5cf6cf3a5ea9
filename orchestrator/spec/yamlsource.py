"""YAML text to plain Python values, keeping where every key and value came from.

Pipeline errors must name a line and column, so the loader records the position of every node
by its path from the root (`("steps", "launch", "with", "model")`). The safe loader is used with
two changes a pipeline author would ask for: duplicate keys are reported instead of silently
keeping the last one, and scalars follow YAML 1.2's core schema, so `no`, `on` and `1:30` stay
strings rather than turning into `False`, `True` and `90`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import yaml

from orchestrator.errors import Problem

__all__ = ["NodePath", "Position", "SourceMap", "YamlDocument", "parse_yaml"]

NodePath = tuple[str | int, ...]
"""Where a value sits in the document: keys and list indexes from the root."""


@dataclass(frozen=True)
class Position:
    """A 1-based line and column."""

    line: int
    col: int


@dataclass
class SourceMap:
    """Positions of keys and values by path, so any error can point into the file."""

    keys: dict[NodePath, Position] = field(default_factory=dict)
    values: dict[NodePath, Position] = field(default_factory=dict)

    def locate(self, path: NodePath, *, prefer_key: bool = False) -> Position:
        """The best position for `path`: its own, else that of its nearest known parent."""
        for end in range(len(path), -1, -1):
            prefix = path[:end]
            first, second = (self.keys, self.values) if prefer_key else (self.values, self.keys)
            if prefix in first:
                return first[prefix]
            if prefix in second:
                return second[prefix]
        return Position(1, 1)


@dataclass
class YamlDocument:
    """A parsed document: the data, where each part came from, and non-fatal problems."""

    data: Any
    source: SourceMap
    problems: list[Problem]


class _Loader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 core-schema scalars (see module docstring)."""


# Replace YAML 1.1's bool and int resolvers (yes/no/on/off, sexagesimal 1:30) with 1.2 core ones.
_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag not in ("tag:yaml.org,2002:bool",
                                                               "tag:yaml.org,2002:int")]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:int",
    re.compile(r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$"),
    list("-+0123456789"),
)


def _pos(mark: yaml.Mark) -> Position:
    return Position(mark.line + 1, mark.column + 1)


class _Builder:
    """Turns a composed node tree into values, recording positions and duplicate keys."""

    def __init__(self, loader: _Loader) -> None:
        self._loader = loader
        self.source = SourceMap()
        self.problems: list[Problem] = []

    def build(self, node: yaml.Node, path: NodePath) -> Any:
        self.source.values[path] = _pos(node.start_mark)
        if isinstance(node, yaml.MappingNode):
            return self._mapping(node, path)
        if isinstance(node, yaml.SequenceNode):
            return [self.build(item, (*path, i)) for i, item in enumerate(node.value)]
        return self._loader.construct_object(node, deep=True)

    def _mapping(self, node: yaml.MappingNode, path: NodePath) -> dict[Any, Any]:
        self._loader.flatten_mapping(node)  # resolves `<<` merge keys
        result: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = self._loader.construct_object(key_node, deep=True)
            if not isinstance(key, str | int | float | bool) or key is None:
                at = _pos(key_node.start_mark)
                self.problems.append(Problem(at.line, at.col, "mapping keys must be plain scalars"))
                continue
            key = str(key) if not isinstance(key, str) else key
            if key in result:
                at = _pos(key_node.start_mark)
                first = self.source.keys[(*path, key)]
                self.problems.append(
                    Problem(at.line, at.col, f"duplicate key '{key}' (first defined on line "
                                             f"{first.line})")
                )
                continue
            self.source.keys[(*path, key)] = _pos(key_node.start_mark)
            result[key] = self.build(value_node, (*path, key))
        return result


_TAB_INDENT = re.compile(r"^( *)\t", re.MULTILINE)


def _tab_problems(text: str) -> list[Problem]:
    """Every line indented with a tab; YAML forbids tabs there and PyYAML's message is cryptic."""
    problems = []
    for match in _TAB_INDENT.finditer(text):
        line = text.count("\n", 0, match.start()) + 1
        col = len(match.group(1)) + 1
        problems.append(Problem(line, col, "tab character in indentation; indent with spaces"))
    return problems


def parse_yaml(text: str) -> YamlDocument:
    """Parse one YAML document. Syntax errors come back as problems, never as exceptions."""
    tabs = _tab_problems(text)
    if tabs:
        return YamlDocument(None, SourceMap(), tabs)
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return YamlDocument(None, SourceMap(), [])
        builder = _Builder(loader)
        data = builder.build(node, ())
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        at = _pos(mark) if mark is not None else Position(1, 1)
        message = exc.problem or exc.context or "invalid YAML"
        if exc.context and exc.problem:
            message = f"{exc.problem} ({exc.context})"
        return YamlDocument(None, SourceMap(), [Problem(at.line, at.col, f"YAML: {message}")])
    except yaml.YAMLError as exc:
        return YamlDocument(None, SourceMap(), [Problem(1, 1, f"YAML: {exc}")])
    finally:
        loader.dispose()
    return YamlDocument(data, builder.source, builder.problems)
