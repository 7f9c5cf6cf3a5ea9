"""Scorers: each a pure function of a model's answer and the reference answer, true when the
answer passes. A pipeline names them (`scorers: [exact_match, contains]`) with options
(`exact_match: {ignore_case: false}`); their options are checked when the pipeline is
validated, so a typo fails `validate`, not the run.

A judge model is not a scorer here (it needs a provider): the step asks it, and
`parse_verdict` reads its answer strictly (one of two words, nothing else).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["SCORERS", "Scorer", "ScorerError", "contains", "exact_match", "json_valid", "number",
           "parse_verdict", "regex", "scorer"]

MAX_PATTERN = 1000
"""The longest regular expression a `regex` scorer takes."""


class ScorerError(ValueError):
    """A scorer named or configured wrongly (one line: which, and what is wrong)."""


def _normal(text: str, *, ignore_case: bool, normalize_whitespace: bool) -> str:
    if normalize_whitespace:
        text = " ".join(text.split())
    return text.casefold() if ignore_case else text


def exact_match(answer: str, reference: str, *, ignore_case: bool = False,
                normalize_whitespace: bool = True) -> bool:
    """The answer is the reference (around whitespace, and as the options say)."""
    return _normal(answer, ignore_case=ignore_case, normalize_whitespace=normalize_whitespace) \
        == _normal(reference, ignore_case=ignore_case, normalize_whitespace=normalize_whitespace)


def contains(answer: str, reference: str, *, ignore_case: bool = True) -> bool:
    """The reference appears in the answer (an empty reference does not count as found)."""
    wanted = _normal(reference, ignore_case=ignore_case, normalize_whitespace=True)
    return bool(wanted) and wanted in _normal(answer, ignore_case=ignore_case,
                                              normalize_whitespace=True)


def regex(answer: str, reference: str, *, pattern: str) -> bool:
    """The answer matches `pattern` (searched, not anchored); `{reference}` in the pattern
    stands for the reference, escaped."""
    del reference  # the pattern is what is checked; see _regex for {reference}
    return re.search(pattern, answer) is not None


def json_valid(answer: str, reference: str) -> bool:
    """The answer is one JSON value (whitespace around it allowed)."""
    del reference
    try:
        json.loads(answer)
    except ValueError:
        return False
    return True


_NUMBER = re.compile(r"[-+]?(?:\d+(?:[.,]\d+)*(?:\.\d+)?|\.\d+)(?:[eE][-+]?\d+)?")


def _first_number(text: str) -> float | None:
    found = _NUMBER.search(text)
    if found is None:
        return None
    try:
        value = float(found.group().replace(",", ""))
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def number(answer: str, reference: str, *, tolerance: float = 0.0,
           relative: bool = False) -> bool:
    """The first number in the answer is within `tolerance` of the reference's first number
    (absolute, or a fraction of the reference with `relative`)."""
    got, wanted = _first_number(answer), _first_number(reference)
    if got is None or wanted is None:
        return False
    bound = tolerance * abs(wanted) if relative else tolerance
    return abs(got - wanted) <= bound


Scorer = Callable[[str, str], bool]


@dataclass(frozen=True)
class _Kind:
    function: Callable[..., bool]
    options: Mapping[str, type]
    required: frozenset[str] = frozenset()


SCORERS: dict[str, _Kind] = {
    "exact_match": _Kind(exact_match, {"ignore_case": bool, "normalize_whitespace": bool}),
    "contains": _Kind(contains, {"ignore_case": bool}),
    "regex": _Kind(regex, {"pattern": str}, frozenset({"pattern"})),
    "json_valid": _Kind(json_valid, {}),
    "number": _Kind(number, {"tolerance": float, "relative": bool}),
}
"""Every scorer by the name a pipeline gives it, with the options it takes."""


def _checked_option(name: str, key: str, value: Any, kind: type) -> Any:
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
        msg = f"scorer {name}: option {key} must be {kind.__name__ if kind is not str else 'text'}"
        raise ScorerError(msg)
    if isinstance(value, float) and (not math.isfinite(value) or value < 0):
        msg = f"scorer {name}: option {key} must be a number from 0"
        raise ScorerError(msg)
    return value


def scorer(name: str, options: Mapping[str, Any] | None = None) -> Scorer:
    """The scorer `name` with `options` bound; ScorerError naming what is wrong."""
    import difflib  # noqa: PLC0415

    kind = SCORERS.get(name)
    if kind is None:
        close = difflib.get_close_matches(name, list(SCORERS), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        msg = f"unknown scorer {name!r}{hint}; scorers: {', '.join(SCORERS)}"
        raise ScorerError(msg)
    given = dict(options or {})
    for key in given:
        if key not in kind.options:
            known = ", ".join(kind.options) or "none"
            msg = f"scorer {name}: unknown option {key!r} (options: {known})"
            raise ScorerError(msg)
    missing = sorted(kind.required - set(given))
    if missing:
        msg = f"scorer {name}: option {missing[0]} is required"
        raise ScorerError(msg)
    bound = {key: _checked_option(name, key, value, kind.options[key])
             for key, value in given.items()}
    if name == "regex":
        return _regex(bound["pattern"])
    function = kind.function
    return lambda answer, reference: bool(function(answer, reference, **bound))


def _regex(pattern: str) -> Scorer:
    if len(pattern) > MAX_PATTERN:
        msg = f"scorer regex: pattern is longer than {MAX_PATTERN} characters"
        raise ScorerError(msg)
    try:
        compiled = re.compile(pattern.replace("{reference}", "")) \
            if "{reference}" not in pattern else None
    except re.error as exc:
        msg = f"scorer regex: pattern {pattern!r} is not a regular expression: {exc}"
        raise ScorerError(msg) from None

    def check(answer: str, reference: str) -> bool:
        if compiled is not None:
            return compiled.search(answer) is not None
        try:
            return re.search(pattern.replace("{reference}", re.escape(reference)),
                             answer) is not None
        except re.error:
            return False

    return check


def parse_verdict(text: str, *, passed: str = "PASS", failed: str = "FAIL") -> bool | None:
    """A judge's verdict, strictly: the whole answer (trimmed, any case, one trailing full
    stop allowed) is the pass word or the fail word; None for anything else."""
    word = text.strip()
    word = word.removesuffix(".").strip().casefold()
    if word == passed.casefold():
        return True
    if word == failed.casefold():
        return False
    return None
