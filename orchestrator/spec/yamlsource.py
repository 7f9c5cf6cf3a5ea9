"""YAML text to plain Python values, keeping where every key and value came from.

Pipeline errors must name a line and column, so the loader records the position of every node
by its path from the root (`("steps", "launch", "with", "model")`). The safe loader is used with
changes a pipeline author would ask for: duplicate keys are reported instead of silently keeping
the last one; scalars follow YAML 1.2's core schema, so `no`, `on` and `1:30` stay strings
rather than turning into `False`, `True` and `90`, `1e-4` is a number and `2024-01-01` a string;
and a document beyond `PipelineLimits` (nodes, nesting, alias expansion) is refused where it
crossed the bound, before it costs more memory than the bound allows.
"""

from __future__ import annotations

import math
import re
import sys
from dataclasses import dataclass, field
from typing import Any

import yaml
from yaml.composer import Composer
from yaml.constructor import SafeConstructor
from yaml.parser import Parser
from yaml.reader import Reader
from yaml.resolver import Resolver
from yaml.scanner import Scanner

from orchestrator.errors import Problem
from orchestrator.spec.limits import DEFAULT_LIMITS, PipelineLimits

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


_CORE = "tag:yaml.org,2002:"
_INT = r"[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+"
_FLOAT = (r"[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
          r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN)")
_PLAIN = re.compile(
    r"(?P<null>~|null|Null|NULL|)|(?P<bool>true|True|TRUE|false|False|FALSE)"
    rf"|(?P<int>{_INT})|(?P<float>{_FLOAT})|(?P<merge><<)")
"""The tags a plain (unquoted, untagged) scalar resolves to: YAML 1.2's core schema and the
merge key, nothing else: no yes/no/on/off booleans, no sexagesimal 1:30, no implicit dates
(JSON cannot hold them). Anything else is a string."""
_TAGS = {name: f"{_CORE}{name}" for name in ("null", "bool", "int", "float", "merge", "str")}
_TYPED_FIRST = frozenset("~nNtTfF-+.0123456789<")
"""What a plain scalar that is not a string can start with; most are strings at a glance."""


class _Refused(yaml.MarkedYAMLError):
    """A document beyond one of the loader's bounds; its message needs no "YAML:" prefix."""


def _refused(message: str, mark: Any) -> _Refused:
    return _Refused(None, None, message, mark)


class _PythonEvents(Reader, Scanner, Parser):
    """PyYAML's own scanner and parser, for a PyYAML built without libyaml."""

    def __init__(self, text: str) -> None:
        Reader.__init__(self, text)
        Scanner.__init__(self)
        Parser.__init__(self)


try:  # libyaml scans and parses ~20x faster than Python, with the same events and marks
    from yaml._yaml import CParser as _Events
except ImportError:  # pragma: no cover
    _Events = _PythonEvents  # type: ignore[misc, assignment]


class _Loader(Composer, _Events, SafeConstructor, Resolver):
    """YAML events (libyaml's when it is there) composed here, with YAML 1.2 core-schema
    scalars, within the bounds of `PipelineLimits`.

    The bounds are checked while the document is composed, before anything is built from it:
    the nodes in all, nesting at each collection's start, and at each alias the size of what
    it expands to (counted over the node graph, each node once), so a bomb is refused having
    cost no more than its own text. A `*ref` inside the collection it names would make a
    cycle: refused too.
    """

    def __init__(self, text: str, limits: PipelineLimits) -> None:
        _Events.__init__(self, text)
        Composer.__init__(self)
        SafeConstructor.__init__(self)
        Resolver.__init__(self)
        self._limits = limits
        self._depth = 0
        self._nodes = 0
        self._aliased = 0
        self._sizes: dict[int, int] = {}

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        event: Any = self.peek_event()
        if isinstance(event, yaml.AliasEvent):
            node = super().compose_node(parent, index)
            if node is None or node.end_mark is None:  # still being composed: a cycle
                raise _refused(f"alias *{event.anchor} is inside the node it names (a cycle)",
                               event.start_mark)
            size = self._size(node)
            self._aliased += size
            if self._aliased > self._limits.max_alias_nodes:
                raise _refused(f"alias expands to more than {self._limits.max_alias_nodes:,} "
                               "nodes (setting max_yaml_alias_nodes)", event.start_mark)
            self._count(size, event)
            return node
        self._count(1, event)
        if type(event) is yaml.ScalarEvent and event.anchor is None:
            return self._scalar(event)  # most nodes: composed without the general path
        if not isinstance(event, yaml.SequenceStartEvent | yaml.MappingStartEvent):
            return super().compose_node(parent, index)
        self._depth += 1
        if self._depth > self._limits.max_depth:
            raise _refused(f"nested more than {self._limits.max_depth} levels deep "
                           "(setting max_yaml_depth)", event.start_mark)
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def _scalar(self, event: Any) -> yaml.ScalarNode:
        self.get_event()
        tag = event.tag
        if tag is None or tag == "!":
            tag = self.resolve(yaml.ScalarNode, event.value, event.implicit)
        return yaml.ScalarNode(tag, event.value, event.start_mark, event.end_mark,
                               style=event.style)

    def resolve(self, kind: type[yaml.Node], value: str | None,
                implicit: tuple[bool, bool]) -> str:
        """The tag of an untagged node (see `_PLAIN`); one regular expression per scalar."""
        if kind is yaml.ScalarNode and implicit[0]:
            text = value or ""
            match = _PLAIN.fullmatch(text) if not text or text[0] in _TYPED_FIRST else None
            return _TAGS[match.lastgroup or "str"] if match else _TAGS["str"]
        return str(super().resolve(kind, value, implicit))  # type: ignore[no-untyped-call]

    def _count(self, nodes: int, event: Any) -> None:
        self._nodes += nodes
        if self._nodes > self._limits.max_nodes:
            raise _refused(f"more than {self._limits.max_nodes:,} nodes (setting "
                           "max_yaml_nodes)", event.start_mark)

    def _size(self, node: yaml.Node) -> int:
        """How many nodes `node` stands for once every alias inside it is expanded."""
        known = self._sizes.get(id(node))
        if known is not None:
            return known
        size = 1
        if isinstance(node, yaml.SequenceNode):
            size += sum(self._size(item) for item in node.value)
        elif isinstance(node, yaml.MappingNode):
            size += sum(self._size(k) + self._size(v) for k, v in node.value)
        self._sizes[id(node)] = size
        return size

    def construct_core_int(self, node: yaml.ScalarNode) -> int:
        """YAML 1.2 integers: decimal (`012` is twelve), `0o` octal, `0x` hex."""
        text = str(self.construct_scalar(node))
        if not re.fullmatch(_INT, text):
            raise _refused(f"{text!r} is not an integer", node.start_mark)
        if len(text) > sys.get_int_max_str_digits():
            raise _refused(f"an integer of {len(text):,} digits; at most "
                           f"{sys.get_int_max_str_digits():,}", node.start_mark)
        if text.startswith(("0o", "0x")):
            return int(text[2:], 8 if text[1] == "o" else 16)
        return int(text)

    def construct_core_float(self, node: yaml.ScalarNode) -> float:
        """YAML 1.2 floats (`1e-4` too); only finite ones, since values end up in JSON."""
        text = str(self.construct_scalar(node))
        if not re.fullmatch(_FLOAT, text):
            raise _refused(f"{text!r} is not a number", node.start_mark)
        special = text.lstrip("+-").lower() in (".inf", ".nan")  # float() reads neither
        value = math.inf if special else float(text)
        if not math.isfinite(value):
            raise _refused(f"{text} is not a finite number (JSON cannot hold it); "
                           "quote it to mean the text", node.start_mark)
        return value

    def construct_unsupported(self, node: yaml.Node) -> Any:
        raise _refused(f"the tag {node.tag.replace(_CORE, '!!')} is not supported "
                       "(only !!str, !!int, !!float, !!bool, !!null, !!seq and !!map)",
                       node.start_mark)


# Constructors for the core schema only: no binary, sets, ordered maps or dates.
_Loader.yaml_constructors = {
    **{tag: fn for tag, fn in SafeConstructor.yaml_constructors.items()
       if tag in {f"{_CORE}{name}" for name in ("null", "bool", "str", "seq", "map")}},
    f"{_CORE}int": _Loader.construct_core_int,
    f"{_CORE}float": _Loader.construct_core_float,
    None: _Loader.construct_unsupported,
}


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
            if node.tag != f"{_CORE}map":  # !!set, !!omap and other collections
                self._loader.construct_unsupported(node)
            return self._mapping(node, path)
        if isinstance(node, yaml.SequenceNode):
            if node.tag != f"{_CORE}seq":
                self._loader.construct_unsupported(node)
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


def parse_yaml(text: str, limits: PipelineLimits = DEFAULT_LIMITS) -> YamlDocument:
    """Parse one YAML document. Syntax errors, and a document beyond `limits`, come back as
    problems, never as exceptions."""
    tabs = _tab_problems(text)
    if tabs:
        return YamlDocument(None, SourceMap(), tabs)
    loader = _Loader(text, limits)
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
            message = (f"{exc.context}, {exc.problem}" if exc.problem.startswith("but ")
                       else f"{exc.problem} ({exc.context})")
        if not isinstance(exc, _Refused):
            message = f"YAML: {message}"
        return YamlDocument(None, SourceMap(), [Problem(at.line, at.col, message)])
    except yaml.YAMLError as exc:
        return YamlDocument(None, SourceMap(), [Problem(1, 1, f"YAML: {exc}")])
    finally:
        loader.dispose()
    return YamlDocument(data, builder.source, builder.problems)
