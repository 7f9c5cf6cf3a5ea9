"""Quality gates: `require: {exact_match: ">= 0.9", lift.exact_match: "> 0"}`.

One small grammar: a key names a score (`SCORER`, the model's; `baseline.SCORER`, the
baseline's; `lift.SCORER`, the model's minus the baseline's), a value is a comparison and a
number (`>= 0.9`, `> 0`, `< 0.05`, `== 1`). Checked when the pipeline is validated; a gate
that fails names the score, its value and the bound in one line.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

__all__ = ["Gate", "GateError", "failures", "parse_gates"]

_BOUND = re.compile(r"\s*(>=|<=|==|>|<)\s*([-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?)\s*")
_KINDS = ("lift", "baseline")
_CHECKS: dict[str, Callable[[float, float], bool]] = {
    ">=": lambda a, b: a >= b, "<=": lambda a, b: a <= b, ">": lambda a, b: a > b,
    "<": lambda a, b: a < b, "==": lambda a, b: math.isclose(a, b, abs_tol=1e-9)}


class GateError(ValueError):
    """A `require:` entry that is not a gate (one line: which, and what is wrong)."""


@dataclass(frozen=True)
class Gate:
    """`key op bound`: e.g. lift.exact_match > 0."""

    key: str
    op: str
    bound: float

    @property
    def kind(self) -> str:
        """`score`, `lift` or `baseline`: whose figure the gate reads."""
        head, dot, _ = self.key.partition(".")
        return head if dot and head in _KINDS else "score"

    @property
    def scorer(self) -> str:
        return self.key.partition(".")[2] if self.kind != "score" else self.key

    def holds(self, value: float) -> bool:
        return _CHECKS[self.op](value, self.bound)

    def __str__(self) -> str:
        return f"{self.key} {self.op} {self.bound:g}"


def parse_gates(require: Mapping[str, object], scorers: Iterable[str], *,
                baseline: bool) -> list[Gate]:
    """The gates of a `require:` mapping, each checked against the scorers the step runs
    and whether it has a baseline; GateError naming the first bad entry."""
    known = list(scorers)
    gates = []
    for key, value in require.items():
        text = value if isinstance(value, str) else None
        matched = _BOUND.fullmatch(text) if text is not None else None
        if matched is None:
            msg = (f"require.{key}: {value!r} is not a bound; write a comparison and a number, "
                   f"e.g. \"{key}: '>= 0.9'\" (>=, >, <=, <, ==)")
            raise GateError(msg)
        bound = float(matched.group(2))
        if not math.isfinite(bound):
            msg = f"require.{key}: the bound must be a finite number"
            raise GateError(msg)
        gate = Gate(str(key), matched.group(1), bound)
        if gate.scorer not in known:
            msg = (f"require.{key}: no scorer {gate.scorer!r} in this step (scorers: "
                   f"{', '.join(known)}); a key is SCORER, lift.SCORER or baseline.SCORER")
            raise GateError(msg)
        if gate.kind != "score" and not baseline:
            msg = (f"require.{key}: {gate.kind} needs a baseline (set baseline: MODEL, or "
                   "job_id: the fine-tune whose base model is the baseline)")
            raise GateError(msg)
        gates.append(gate)
    return gates


def failures(gates: Iterable[Gate], scores: Mapping[str, float],
             baseline: Mapping[str, float] | None) -> list[str]:
    """Each gate that does not hold, as `exact_match is 0.45, required >= 0.9`."""
    failed = []
    for gate in gates:
        if gate.kind == "score":
            value = scores[gate.scorer]
        elif baseline is None:
            continue  # parse_gates refused this already
        elif gate.kind == "baseline":
            value = baseline[gate.scorer]
        else:
            value = scores[gate.scorer] - baseline[gate.scorer]
        if not gate.holds(value):
            failed.append(f"{gate.key} is {value:.4g}, required {gate.op} {gate.bound:g}")
    return failed
