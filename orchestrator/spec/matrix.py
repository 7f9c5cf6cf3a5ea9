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
cell of its own when it matches none.
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["MAX_CELLS", "RESERVED", "MatrixSpec", "expand_matrix"]

MAX_CELLS = 10_000
"""More cells than this is almost certainly a mistake (and a large bill)."""

RESERVED = frozenset({"include", "exclude", "max_parallel", "fail_fast"})
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")

Cell = dict[str, Any]


class MatrixSpec(BaseModel):
    """The `matrix:` mapping: axes are its keys other than the reserved ones."""

    model_config = ConfigDict(extra="allow", frozen=True)

    include: list[dict[str, Any]] = Field(default_factory=list)
    exclude: list[dict[str, Any]] = Field(default_factory=list)
    max_parallel: int | None = Field(default=None, ge=1, le=MAX_CELLS)
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
        size = 1
        for values in self.axes.values():
            size *= len(values)
        if size + len(self.include) > MAX_CELLS:
            msg = f"the matrix has {size + len(self.include)} cells; at most {MAX_CELLS}"
            raise ValueError(msg)
        return self


def _matches(cell: Mapping[str, Any], entry: Mapping[str, Any]) -> bool:
    return all(key in cell and cell[key] == value for key, value in entry.items())


def expand_matrix(spec: MatrixSpec) -> list[Cell]:
    """The batch's cells, in a stable order (see the module docstring for the rules)."""
    axes = spec.axes
    cells: list[Cell] = []
    if axes:
        cells = [dict(zip(axes, combo, strict=True))
                 for combo in itertools.product(*axes.values())]
        cells = [c for c in cells if not any(_matches(c, e) for e in spec.exclude)]
    originals = [dict(c) for c in cells]  # axis values as expanded, never overwritten
    added: list[Cell] = []
    for entry in spec.include:
        merged = False
        for cell, original in zip(cells, originals, strict=True):
            if all(original.get(k, v) == v for k, v in entry.items() if k in original):
                cell.update(entry)
                merged = True
        if not merged:
            added.append(dict(entry))
    seen: set[str] = set()
    unique: list[Cell] = []
    for cell in cells + added:
        key = json.dumps(cell, sort_keys=True, default=str)
        if key not in seen:
            seen.add(key)
            unique.append(cell)
    return unique
