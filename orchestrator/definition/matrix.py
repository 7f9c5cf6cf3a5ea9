"""`matrix:`: one pipeline file expanded into a batch of runs, one per combination (a *cell*).

```yaml
matrix:
  base_model: [llama-8b, qwen-7b, mistral-7b]    # an axis: a name and its values
  learning_rate: [1e-5, 3e-5, 1e-4, 3e-4]
  exclude: [{base_model: mistral-7b, learning_rate: 3e-4}]
  include: [{base_model: llama-8b, learning_rate: 1e-5, epochs: 5}]
  max_parallel: 4       # cells executing at once (across every worker)
  fail_fast: false      # true: the first failed cell cancels the rest of the batch
```

Expansion follows the rules users know from GitHub Actions, so nothing here surprises them:
the cells are the product of the axes in the order written; `exclude` removes every cell that
matches all the keys of one of its entries; then each `include` entry is merged into every
cell it matches without changing any of that cell's axis values (adding keys), and becomes a
cell of its own when it matches none. How many cells a batch may have is the loader's bound
(`PipelineLimits.max_cells`), checked before anything is expanded when it can be.
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Hashable, Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["RESERVED", "MatrixSpec", "combinations", "expand_matrix"]

RESERVED = frozenset({"include", "exclude", "max_parallel", "fail_fast"})
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")

Cell = dict[str, Any]


class MatrixSpec(BaseModel):
    """The `matrix:` mapping: axes are its keys other than the reserved ones."""

    model_config = ConfigDict(extra="allow", frozen=True)

    include: list[dict[str, Any]] = Field(default_factory=list)
    exclude: list[dict[str, Any]] = Field(default_factory=list)
    max_parallel: int | None = Field(default=None, ge=1)
    fail_fast: bool = False

    @property
    def axes(self) -> dict[str, list[Any]]:
        """Each axis with its values, in the order the file gives them."""
        return dict(self.model_extra or {})

    @property
    def keys(self) -> frozenset[str]:
        """Every name `matrix.<name>` may reference: the axes and the keys includes add."""
        return frozenset(self.axes) | {k for entry in self.include for k in entry}

    @staticmethod
    def axis_problems(raw: Mapping[str, Any]) -> list[tuple[str, str]]:
        """(axis, what is wrong with it) for each bad axis of a raw `matrix:` mapping."""
        problems = []
        for name, values in raw.items():
            if name in RESERVED:
                continue
            if not _NAME.match(str(name)):
                problems.append((name, f"axis name '{name}' must start with a letter or _ and "
                                       "hold only letters, digits, _ and -"))
            elif not isinstance(values, list):
                problems.append((name, f"axis '{name}' must be a list of values, e.g. "
                                       f"{name}: [a, b]"))
            elif not values:
                problems.append((name, f"axis '{name}' is empty; give it at least one value "
                                       "or remove it"))
        return problems

    @model_validator(mode="after")
    def _axes_are_lists(self) -> MatrixSpec:
        for _, message in self.axis_problems(self.axes):
            raise ValueError(message)
        if not self.axes and not self.include:
            msg = "a matrix needs at least one axis (name: [values]) or an include: entry"
            raise ValueError(msg)
        for entry in self.exclude:
            unknown = sorted(set(entry) - set(self.axes))
            if unknown:
                msg = (f"exclude entry {entry} names '{unknown[0]}', which is not an axis "
                       f"(axes: {', '.join(self.axes) or 'none'})")
                raise ValueError(msg)
        for entry in self.include:
            for key in entry:
                if not _NAME.match(str(key)) or key in RESERVED:
                    msg = f"include entry {entry}: '{key}' cannot be a matrix key"
                    raise ValueError(msg)
        return self


def _frozen(value: Any) -> Hashable:
    """A hashable stand-in for `value`, equal to another's exactly when the values are `==`:
    cells and entries are matched through sets instead of each against each."""
    if isinstance(value, dict):
        return ("map", frozenset((k, _frozen(v)) for k, v in value.items()))
    if isinstance(value, list):
        return ("list", tuple(_frozen(v) for v in value))
    scalar: Hashable = value  # YAML scalars: str, int, float, bool, None
    return scalar


def expand_matrix(spec: MatrixSpec) -> list[Cell]:
    """The batch's cells, in a stable order (see the module docstring for the rules).

    Matching costs one set lookup per cell for each distinct set of keys that `exclude` and
    `include` entries use, not one comparison per cell and entry: 10,000 cells and 5,000
    excludes expand in milliseconds.
    """
    names = list(spec.axes)
    position = {name: i for i, name in enumerate(names)}
    excluded: dict[tuple[int, ...], set[tuple[Hashable, ...]]] = {}
    for entry in spec.exclude:  # exclude keys are axes (checked by MatrixSpec)
        at = tuple(position[k] for k in sorted(entry))
        excluded.setdefault(at, set()).add(tuple(_frozen(entry[names[i]]) for i in at))
    cells: list[Cell] = []
    originals: list[tuple[Hashable, ...]] = []  # axis values as expanded, never overwritten
    if names:
        axes = [[(value, _frozen(value)) for value in values] for values in spec.axes.values()]
        for combo in itertools.product(*axes):
            frozen = tuple(f for _, f in combo)
            if any(tuple(frozen[i] for i in at) in values for at, values in excluded.items()):
                continue
            cells.append(dict(zip(names, (value for value, _ in combo), strict=True)))
            originals.append(frozen)
    by_keys: dict[tuple[int, ...], dict[tuple[Hashable, ...], list[int]]] = {}
    added: list[Cell] = []
    for entry in spec.include:
        at = tuple(position[k] for k in sorted(entry) if k in position)
        table = by_keys.get(at)
        if table is None:  # cells by their values at these axes, built once per key set
            table = by_keys[at] = {}
            for n, frozen in enumerate(originals):
                table.setdefault(tuple(frozen[i] for i in at), []).append(n)
        matched = table.get(tuple(_frozen(entry[names[i]]) for i in at), [])
        for n in matched:
            cells[n].update(entry)
        if not matched:
            added.append(dict(entry))
    seen: set[str] = set()
    unique: list[Cell] = []
    for cell in cells + added:
        key = json.dumps(cell, sort_keys=True, default=str)
        if key not in seen:
            seen.add(key)
            unique.append(cell)
    return unique


def combinations(spec: MatrixSpec) -> int:
    """How many cells the axes make before `exclude`, plus the `include` entries: a bound on
    the batch's size that costs nothing to compute, however large."""
    size = 1
    for values in spec.axes.values():
        size *= len(values)
    return (size if spec.axes else 0) + len(spec.include)
