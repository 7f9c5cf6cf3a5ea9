"""YAML text to plain Python values, keeping where every key and value came from.

Pipeline errors must name a line and column, so the loader keeps the position of every key and
value, in a tree shaped like the data (`SourceMap.locate(("steps", "launch", "with", "model"))`).
The YAML is read as a pipeline author would ask: duplicate keys are reported instead of
silently keeping the last one; scalars follow YAML 1.2's core schema, so `no`, `on` and `1:30`
stay strings rather than turning into `False`, `True` and `90`, `1e-4` is a number and
`2024-01-01` a string; and a document beyond `PipelineLimits` (nodes, nesting, alias expansion)
is refused where it crossed the bound, before it costs more memory than the bound allows.

Values are built straight from libyaml's events in one pass, with an explicit stack: no node
graph is composed first and nothing recurses, so a 10,000-step file loads in a fifth of the
time PyYAML's composer and constructor take, and no nesting can reach Python's recursion limit.

(Over 400 lines: the one pass over the events keeps its stack, anchors, counters and positions
together; the YAML 1.2 scalar rules and the position tree are the rest.)
"""

from __future__ import annotations

import math
import re
import sys
from dataclasses import dataclass
from typing import Any, NamedTuple

import yaml
from yaml.composer import ComposerError
from yaml.constructor import ConstructorError, SafeConstructor

from orchestrator.definition.limits import DEFAULT_LIMITS, PipelineLimits
from orchestrator.errors import Problem

__all__ = ["NodePath", "Position", "SourceMap", "YamlDocument", "parse_yaml"]

NodePath = tuple[str | int, ...]
"""Where a value sits in the document: keys and list indexes from the root."""


class Position(NamedTuple):
    """A 1-based line and column."""

    line: int
    col: int


class _Where:
    """Where a collection and each thing in it came from: a tree shaped like its value.

    A scalar's place is its libyaml mark alone; marks become positions only when an error is
    reported, so a file that loads cleanly never converts one.
    """

    __slots__ = ("items", "keys", "mark")

    def __init__(self, mark: Any, items: Any, keys: dict[str, Any] | None) -> None:
        self.mark = mark
        self.items = items
        """Each value's place: a `_Where` for a collection, a mark for a scalar."""
        self.keys: dict[Any, Any] | None = keys
        """A mapping's keys' marks; None for a sequence."""


def _mark_of(where: Any) -> Any:
    return where.mark if type(where) is _Where else where


def _position(mark: Any) -> Position:
    return Position(mark.line + 1, mark.column + 1)


class SourceMap:
    """Positions of keys and values by path, so any error can point into the file."""

    def __init__(self, root: Any = None) -> None:
        self._root = root

    def locate(self, path: NodePath, *, prefer_key: bool = False) -> Position:
        """The best position for `path`: its own, else that of its nearest known parent; with
        `prefer_key`, the key's position rather than the value's where it has one."""
        if self._root is None:
            return Position(1, 1)
        where: Any = self._root
        key_mark: Any = None
        for part in path:
            if type(where) is not _Where:
                break
            if where.keys is not None:
                if part not in where.items:
                    break
                key_mark, where = where.keys[part], where.items[part]
            elif type(part) is int and 0 <= part < len(where.items):
                key_mark, where = None, where.items[part]
            else:
                break
        return _position(key_mark if prefer_key and key_mark is not None else _mark_of(where))


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
"""The kinds a plain (unquoted, untagged) scalar resolves to: YAML 1.2's core schema and the
merge key, nothing else: no yes/no/on/off booleans, no sexagesimal 1:30, no implicit dates
(JSON cannot hold them). Anything else is a string."""
_INT_RE, _FLOAT_RE = re.compile(_INT), re.compile(_FLOAT)
_TYPED_FIRST = frozenset("~nNtTfF-+.0123456789<")
"""What a plain scalar that is not a string can start with; most are strings at a glance."""
_SCALAR_TAGS = {f"{_CORE}{kind}": kind for kind in ("null", "bool", "int", "float", "str")}
_MAPPING_TAGS = frozenset({None, "!", f"{_CORE}map"})
_SEQUENCE_TAGS = frozenset({None, "!", f"{_CORE}seq"})
_SUPPORTED = "(only !!str, !!int, !!float, !!bool, !!null, !!seq and !!map)"


class _Merge:
    """The plain key `<<`: the mapping (or list of mappings) under it is merged in."""

    def __repr__(self) -> str:
        return "<<"


_MERGE = _Merge()
_NO_KEY = object()
"""A mapping's frame is waiting for a key."""
_DROP = object()
"""The value under this key is read and thrown away (a duplicate key, a key that is a list)."""


class _Refused(yaml.MarkedYAMLError):
    """A document beyond one of the loader's bounds; its message needs no "YAML:" prefix."""


def _refused(message: str, mark: Any) -> _Refused:
    return _Refused(None, None, message, mark)


try:  # libyaml scans and parses ~20x faster than Python, with the same events and marks
    from yaml._yaml import CParser as _Events
except ImportError:  # pragma: no cover
    from yaml.parser import Parser
    from yaml.reader import Reader
    from yaml.scanner import Scanner

    class _Events(Reader, Scanner, Parser):  # type: ignore[no-redef]
        """PyYAML's own scanner and parser, for a PyYAML built without libyaml."""

        def __init__(self, text: str) -> None:
            Reader.__init__(self, text)
            Scanner.__init__(self)
            Parser.__init__(self)


@dataclass(frozen=True)
class _Anchor:
    """What `*name` stands for: the value (copied at each alias), where it came from, the
    nodes it counts for and how deeply it nests."""

    value: Any
    where: Any
    size: int
    depth: int


class _Frame:
    """A collection being read: its value so far, and where each part of it came from."""

    __slots__ = ("anchor", "deepest", "event", "key", "keys", "merges", "nodes_before",
                 "value", "where")

    def __init__(self, event: Any, mapping: bool, nodes_before: int) -> None:
        self.event = event
        self.value: Any = {} if mapping else []
        """A dict or a list: the collection's value so far."""
        self.keys: dict[str, Any] | None = {} if mapping else None
        self.where: Any = {} if mapping else []
        """Shaped like `value`: where each item of it came from."""
        self.key: Any = _NO_KEY
        self.merges: list[tuple[Any, Any]] = []
        self.anchor: str | None = event.anchor
        self.nodes_before = nodes_before
        self.deepest = 0
        """How deeply the deepest collection in it so far nests."""


class _Builder:
    """Reads one document's events into values and their `_Where` tree, within `limits`.

    The bounds are checked as events arrive, before anything is built from them: the nodes in
    all, nesting at each collection's start, and at each alias the size and depth of what it
    expands to, so a bomb is refused having cost no more than its own text. A `*ref` inside the
    collection it names would make a cycle: refused too.
    """

    def __init__(self, text: str, limits: PipelineLimits) -> None:
        self._events: Any = _Events(text)
        self._limits = limits
        self._nodes = 0
        self._aliased = 0
        self._defined: dict[str, Any] = {}
        """Where each anchor so far was defined."""
        self._anchors: dict[str, _Anchor] = {}
        """What each anchor whose node is read to its end stands for (one defined but not
        here is still being read: an alias of it is a cycle)."""
        self.problems: list[Problem] = []

    def document(self) -> tuple[Any, SourceMap]:
        """The stream's one document (None for an empty stream) and where its parts are."""
        events = self._events
        events.get_event()  # the stream's start
        if isinstance(events.peek_event(), yaml.StreamEndEvent):
            return None, SourceMap()
        start = events.get_event()
        value, where = self._node()
        events.get_event()  # the document's end
        event = events.get_event()
        if not isinstance(event, yaml.StreamEndEvent):
            raise ComposerError("expected a single document in the stream", start.start_mark,
                                "but found another document", event.start_mark)
        return value, SourceMap(where)

    def _node(self) -> tuple[Any, Any]:
        """One node, however deep, read with a stack of the collections open around it."""
        get_event = self._events.get_event
        stack: list[_Frame] = []
        while True:
            event = get_event()
            kind = type(event)
            if kind is yaml.ScalarEvent:
                self._count(1, event)
                value: Any = self._scalar(event)
                where: Any = event.start_mark
                depth = 0
                if event.anchor is not None:
                    self._define(event)
                    self._anchors[event.anchor] = _Anchor(value, where, 1, 0)
            elif kind is yaml.MappingStartEvent or kind is yaml.SequenceStartEvent:
                self._count(1, event)
                self._nest(len(stack) + 1, event)
                mapping = kind is yaml.MappingStartEvent
                if event.tag not in (_MAPPING_TAGS if mapping else _SEQUENCE_TAGS):
                    raise _unsupported(event.tag, event.start_mark)
                if event.anchor is not None:
                    self._define(event)
                stack.append(_Frame(event, mapping, self._nodes - 1))
                continue
            elif kind is yaml.MappingEndEvent or kind is yaml.SequenceEndEvent:
                frame = stack.pop()
                value, where = _finished(frame)
                depth = frame.deepest + 1
                if frame.anchor is not None:
                    self._anchors[frame.anchor] = _Anchor(
                        value, where, self._nodes - frame.nodes_before, depth)
            else:  # an alias: the only other event inside a document
                value, where, depth = self._alias(event, len(stack))
            if not stack:
                return (value if value is not _MERGE else "<<"), where
            self._add(stack[-1], value, where, depth)

    def _add(self, frame: _Frame, value: Any, where: Any, depth: int) -> None:
        """A finished node goes into the collection around it, as an item, a key or a value."""
        frame.deepest = max(frame.deepest, depth)
        if frame.keys is None:
            frame.value.append(value if value is not _MERGE else "<<")
            frame.where.append(where)
        elif frame.key is _NO_KEY:
            frame.key = self._key(frame, value, _mark_of(where))
        else:
            key, frame.key = frame.key, _NO_KEY
            if key is _MERGE:
                frame.merges.append((value, where))
            elif key is not _DROP:
                frame.value[key] = value if value is not _MERGE else "<<"
                frame.where[key] = where

    def _key(self, frame: _Frame, key: Any, mark: Any) -> Any:
        """The key to file the next value under, or `_DROP` (reported) or `_MERGE`."""
        if key is _MERGE:
            return _MERGE
        if key is None or not isinstance(key, str | int | float | bool):
            self.problems.append(Problem(*_position(mark), "mapping keys must be plain scalars"))
            return _DROP
        key = key if type(key) is str else str(key)
        assert frame.keys is not None
        first = frame.keys.get(key)
        if first is not None:
            self.problems.append(Problem(*_position(mark), f"duplicate key '{key}' (first "
                                                           f"defined on line {first.line + 1})"))
            return _DROP
        frame.keys[key] = mark
        return key

    def _scalar(self, event: Any) -> Any:
        text: str = event.value
        tag = event.tag
        if tag is None or tag == "!":
            if not event.implicit[0] or (text and text[0] not in _TYPED_FIRST):
                return text  # quoted, or a string at a glance
            match = _PLAIN.fullmatch(text)
            kind = match.lastgroup if match else "str"
            if kind == "merge":
                return _MERGE
            if kind == "int" and len(text) < 19 and text[1:2] not in ("o", "x"):
                return int(text)  # decimal, matched already, far below the digits limit
        else:
            kind = _SCALAR_TAGS.get(tag)
            if kind is None:
                raise _unsupported(tag, event.start_mark)
        if kind == "str":
            return text
        if kind == "int":
            return _integer(text, event.start_mark)
        if kind == "float":
            return _number(text, event.start_mark)
        if kind == "bool":
            if text.lower() not in SafeConstructor.bool_values:
                raise _refused(f"{text!r} is not a boolean", event.start_mark)
            return SafeConstructor.bool_values[text.lower()]
        return None

    def _define(self, event: Any) -> None:
        name = event.anchor
        first = self._defined.get(name)
        if first is not None:
            raise _refused(f"YAML: anchor &{name} is defined twice (first on line "
                           f"{first.line + 1})", event.start_mark)
        self._defined[name] = event.start_mark

    def _alias(self, event: Any, level: int) -> tuple[Any, Any, int]:
        name = event.anchor
        if name not in self._defined:
            raise ComposerError(None, None, f"found undefined alias {name!r}", event.start_mark)
        anchor = self._anchors.get(name)
        if anchor is None:
            raise _refused(f"alias *{name} is inside the node it names (a cycle)",
                           event.start_mark)
        self._aliased += anchor.size
        if self._aliased > self._limits.max_alias_nodes:
            raise _refused(f"alias expands to more than {self._limits.max_alias_nodes:,} nodes "
                           "(setting max_yaml_alias_nodes)", event.start_mark)
        self._count(anchor.size, event)
        self._nest(level + anchor.depth, event)
        return _copy(anchor.value), anchor.where, anchor.depth

    def _count(self, nodes: int, event: Any) -> None:
        self._nodes += nodes
        if self._nodes > self._limits.max_nodes:
            raise _refused(f"more than {self._limits.max_nodes:,} nodes (setting "
                           "max_yaml_nodes)", event.start_mark)

    def _nest(self, depth: int, event: Any) -> None:
        """A collection (or what an alias stands for) reaching `depth` levels at `event`."""
        if depth > self._limits.max_depth:
            raise _refused(f"nested more than {self._limits.max_depth} levels deep (setting "
                           "max_yaml_depth)", event.start_mark)


def _finished(frame: _Frame) -> tuple[Any, _Where]:
    """A collection's value and place once its end is read: a mapping's `<<` merged in."""
    if frame.keys is None or not frame.merges:
        return frame.value, _Where(frame.event.start_mark, frame.where, frame.keys)
    merged: dict[str, tuple[Any, Any, Any]] = {}
    for value, where in frame.merges:  # the first to give a key wins, as YAML's merge says
        sources = value if isinstance(value, list) else [value]
        places = where.items if isinstance(value, list) else [where]
        if not isinstance(value, dict | list):
            raise ConstructorError("while constructing a mapping", frame.event.start_mark,
                                   "expected a mapping or list of mappings for merging, but "
                                   "found scalar", _mark_of(where))
        for source, place in zip(sources, places, strict=True):
            if not isinstance(source, dict):
                kind = "sequence" if isinstance(source, list) else "scalar"
                raise ConstructorError("while constructing a mapping", frame.event.start_mark,
                                       f"expected a mapping for merging, but found {kind}",
                                       _mark_of(place))
            for key, item in source.items():
                merged.setdefault(key, (item, place.keys[key], place.items[key]))
    own: dict[str, Any] = frame.value
    own_keys, own_where = frame.keys, frame.where
    value_out: dict[str, Any] = {}
    keys_out: dict[str, Any] = {}
    where_out: dict[str, Any] = {}
    for key, (item, key_mark, item_where) in merged.items():  # keys written here win
        mine = key in own
        value_out[key] = own[key] if mine else item
        keys_out[key] = own_keys[key] if mine else key_mark
        where_out[key] = own_where[key] if mine else item_where
    for key, item in own.items():
        if key not in value_out:
            value_out[key], keys_out[key] = item, own_keys[key]
            where_out[key] = own_where[key]
    return value_out, _Where(frame.event.start_mark, where_out, keys_out)


def _copy(value: Any) -> Any:
    """A fresh copy of an anchored value for each alias (its nesting is bounded already)."""
    if type(value) is dict:
        return {key: _copy(item) for key, item in value.items()}
    if type(value) is list:
        return [_copy(item) for item in value]
    return value


def _unsupported(tag: str, mark: Any) -> _Refused:
    return _refused(f"the tag {tag.replace(_CORE, '!!')} is not supported {_SUPPORTED}", mark)


def _integer(text: str, mark: Any) -> int:
    """YAML 1.2 integers: decimal (`012` is twelve), `0o` octal, `0x` hex."""
    if not _INT_RE.fullmatch(text):
        raise _refused(f"{text!r} is not an integer", mark)
    if len(text) > sys.get_int_max_str_digits():
        raise _refused(f"an integer of {len(text):,} digits; at most "
                       f"{sys.get_int_max_str_digits():,}", mark)
    if text.startswith(("0o", "0x")):
        return int(text[2:], 8 if text[1] == "o" else 16)
    return int(text)


def _number(text: str, mark: Any) -> float:
    """YAML 1.2 floats (`1e-4` too); only finite ones, since values end up in JSON."""
    if not _FLOAT_RE.fullmatch(text):
        raise _refused(f"{text!r} is not a number", mark)
    special = text.lstrip("+-").lower() in (".inf", ".nan")  # float() reads neither
    value = math.inf if special else float(text)
    if not math.isfinite(value):
        raise _refused(f"{text} is not a finite number (JSON cannot hold it); quote it to mean "
                       "the text", mark)
    return value


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
    builder = _Builder(text, limits)
    try:
        data, source = builder.document()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        at = _position(mark) if mark is not None else Position(1, 1)
        message = exc.problem or exc.context or "invalid YAML"
        if exc.context and exc.problem:
            message = (f"{exc.context}, {exc.problem}" if exc.problem.startswith("but ")
                       else f"{exc.problem} ({exc.context})")
        if not isinstance(exc, _Refused):
            message = f"YAML: {message}"
        return YamlDocument(None, SourceMap(), [Problem(at.line, at.col, message)])
    except yaml.YAMLError as exc:
        return YamlDocument(None, SourceMap(), [Problem(1, 1, f"YAML: {exc}")])
    return YamlDocument(data, source, builder.problems)
