"""`${{ ... }}` expressions: references into the run's context, and nothing else.

The grammar is deliberately tiny, so an expression can only *look a value up*, never run code:

    expression := NAME ( "." NAME | "[" INTEGER "]" | "[" QUOTED "]" )*
    NAME       := letter or "_", then letters, digits, "_" or "-"

The first name is the root: `inputs`, `steps`, `matrix`, `run` or `secrets`. A string that is
exactly one expression evaluates to the referenced value with its own type (an integer stays an
integer); expressions inside a longer string are formatted into it (mappings and lists as JSON).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from orchestrator.errors import shorten
from orchestrator.process import hold

__all__ = [
    "ROOTS",
    "ExpressionError",
    "Reference",
    "Template",
    "find_templates",
    "lookup",
    "parse_template",
    "render",
]

ROOTS = ("inputs", "steps", "matrix", "run", "secrets")

_OPEN = "${{"
_CLOSE = "}}"
_REST_IS_SPACE = re.compile(r"\s*$")
_MAX_INDEX_DIGITS = 18
_TOKEN = re.compile(
    r"""\s*(?:
        (?P<name>[A-Za-z_][A-Za-z0-9_-]*)
      | (?P<dot>\.)
      | \[\s*(?P<index>-?\d+)\s*\]
      | \[\s*(?P<key>'[^']*'|"[^"]*")\s*\]
    )""",
    re.VERBOSE,
)
_DOTTED = re.compile(r"\s*([A-Za-z_][A-Za-z0-9_-]*(?:\.[A-Za-z_][A-Za-z0-9_-]*)*)\s*")
"""Most expressions are names and dots alone (`steps.a.outputs.b`): one match reads them."""


class ExpressionError(ValueError):
    """An expression that does not parse or cannot be evaluated; `offset` points into the string."""

    def __init__(self, message: str, offset: int = 0) -> None:
        super().__init__(message)
        self.offset = offset


@dataclass(frozen=True)
class Reference:
    """A parsed `${{ root.a.b[0] }}`: the root name and the keys and indexes after it."""

    root: str
    path: tuple[str | int, ...]
    text: str
    offset: int

    def __str__(self) -> str:
        return self.text


@dataclass(frozen=True)
class Template:
    """A string split into literal text and references."""

    parts: tuple[str | Reference, ...]

    @property
    def references(self) -> tuple[Reference, ...]:
        return tuple(p for p in self.parts if isinstance(p, Reference))

    @property
    def single(self) -> Reference | None:
        """The reference when the whole string is one expression (the value keeps its type)."""
        if len(self.parts) == 1 and isinstance(self.parts[0], Reference):
            return self.parts[0]
        return None


def _parse_reference(body: str, offset: int) -> Reference:
    """One expression's body; linear in its length, whatever it holds."""
    text = body.strip()
    if not text:
        raise ExpressionError("empty expression", offset)
    if _DOTTED.fullmatch(body):
        head, *rest = text.split(".")
        if head in ROOTS:
            return Reference(head, tuple(rest), text, offset)
    shown = shorten(text)
    pos = 0
    names: list[str | int] = []
    expect_name = True
    while pos < len(body):
        if _REST_IS_SPACE.match(body, pos):
            break
        match = _TOKEN.match(body, pos)
        if match is None:
            raise ExpressionError(
                f"unexpected {body[pos:pos + 40].strip()[:20]!r} in expression '{shown}' "
                "(expressions can only reference values, like inputs.name or "
                "steps.id.outputs.key)",
                offset + pos,
            )
        if match.group("name") is not None:
            if not expect_name:
                raise ExpressionError(f"expected '.' before {shorten(match.group('name'))!r} "
                                      f"in '{shown}'", offset + pos)
            names.append(match.group("name"))
            expect_name = False
        elif match.group("dot") is not None:
            if expect_name:
                raise ExpressionError(f"unexpected '.' in '{shown}'", offset + pos)
            expect_name = True
        elif expect_name:
            raise ExpressionError(f"unexpected '[' in '{shown}'", offset + pos)
        elif match.group("index") is not None:
            if len(match.group("index").lstrip("-")) > _MAX_INDEX_DIGITS:
                raise ExpressionError(f"index [{shorten(match.group('index'), 20)}] is too "
                                      f"large in '{shown}'", offset + pos)
            names.append(int(match.group("index")))
        else:
            names.append(match.group("key")[1:-1])
        pos = match.end()
    if expect_name:
        raise ExpressionError(f"expression '{shown}' ends with '.'", offset + len(body))
    root = names[0]
    if root not in ROOTS:
        raise ExpressionError(
            f"unknown name '{shorten(str(root))}' in '{shown}' (expressions start with one of: "
            f"{', '.join(ROOTS)})",
            offset,
        )
    return Reference(str(root), tuple(names[1:]), text, offset)


@lru_cache(maxsize=4096)
def parse_template(value: str) -> Template:
    """Split `value` into literal text and references; raises ExpressionError on bad syntax."""
    parts: list[str | Reference] = []
    pos = 0
    while True:
        start = value.find(_OPEN, pos)
        if start < 0:
            if pos < len(value):
                parts.append(value[pos:])
            break
        end = value.find(_CLOSE, start + len(_OPEN))
        if end < 0:
            raise ExpressionError(f"'{_OPEN}' without a closing '{_CLOSE}'", start)
        if start > pos:
            parts.append(value[pos:start])
        body_start = start + len(_OPEN)
        parts.append(_parse_reference(value[body_start:end], body_start))
        pos = end + len(_CLOSE)
    return Template(tuple(parts))


def find_templates(value: Any, path: tuple[str | int, ...] = ()) -> Iterator[
        tuple[tuple[str | int, ...], str]]:
    """Every string holding an expression inside a nested value, with its path."""
    if isinstance(value, str):
        if _OPEN in value:
            yield path, value
    elif isinstance(value, Mapping):
        for key, item in value.items():
            yield from find_templates(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from find_templates(item, (*path, index))


Resolver = Callable[[Reference], Any]
"""Looks a reference up in the run's context; raises ExpressionError when it cannot."""


def _format(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool | None):
        return json.dumps(value)
    if isinstance(value, Mapping | list):
        return json.dumps(value, sort_keys=True)
    return str(value)


def render(value: Any, resolve: Resolver) -> Any:
    """`value` with every expression replaced by what `resolve` returns for it."""
    if isinstance(value, str):
        if _OPEN not in value:
            return value
        template = parse_template(value)
        if template.single is not None:
            return resolve(template.single)
        return "".join(p if isinstance(p, str) else _format(resolve(p)) for p in template.parts)
    if isinstance(value, Mapping):
        return {key: render(item, resolve) for key, item in value.items()}
    if isinstance(value, list):
        return [render(item, resolve) for item in value]
    return value


def lookup(root_value: Any, ref: Reference) -> Any:
    """Follow `ref.path` into `root_value`; raises ExpressionError naming the missing part."""
    current = root_value
    walked = ref.root
    for part in ref.path:
        if isinstance(part, int):
            if not isinstance(current, list) or not -len(current) <= part < len(current):
                raise ExpressionError(f"{ref.text}: {walked} has no item [{part}]", ref.offset)
            current = current[part]
            walked = f"{walked}[{part}]"
        else:
            if not isinstance(current, Mapping) or part not in current:
                known = ", ".join(sorted(map(str, current))) if isinstance(current, Mapping) else ""
                hint = f" (it has: {shorten(known, 200)})" if known else ""
                raise ExpressionError(f"{ref.text}: {walked} has no '{part}'{hint}", ref.offset)
            current = current[part]
            walked = f"{walked}.{part}"
    return current


hold(parse_template, name="parsed templates",
     why="the same ${{ }} texts are parsed for every run and attempt")
