"""A batch's cells as a grid: the matrix's first axis down, the others across.

A sweep of 3 base models x 4 learning rates is 3 rows of 4 cells, each coloured by its run's
status and showing its final eval loss, so the best learning rate per model shows at a glance.
The axes come in the order the pipeline's matrix names them. A matrix of one axis is one row;
`include:` cells with keys of their own land where their values put them, as any other cell.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Grid", "batch_grid"]


@dataclass(frozen=True)
class Grid:
    row_axis: str | None
    column_axes: tuple[str, ...]
    rows: list[str] = field(default_factory=list)
    columns: list[str] = field(default_factory=list)
    cells: dict[tuple[str, str], Mapping[str, Any]] = field(default_factory=dict)
    """(row label, column label) -> the cell (a run's shape with its losses)."""
    best: set[str] = field(default_factory=set)
    """Run ids of the lowest eval loss in each row."""


def _shown(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def batch_grid(cells: Sequence[Mapping[str, Any]], axes: Sequence[str] = ()) -> Grid:
    """The grid of `cells` (each with its `matrix` values): `axes` in the order the matrix
    names them (then any key an `include:` adds), rows and columns in first-seen order."""
    axes = list(axes)
    for cell in cells:
        for key in cell.get("matrix") or {}:
            if key not in axes:
                axes.append(key)
    grid = Grid(axes[0] if axes else None, tuple(axes[1:]))
    for cell in cells:
        matrix = cell.get("matrix") or {}
        row = _shown(matrix.get(grid.row_axis, "-")) if grid.row_axis else "cells"
        column = " ".join(f"{k}={_shown(matrix[k])}" for k in grid.column_axes
                          if k in matrix) or str(cell.get("cell"))
        if row not in grid.rows:
            grid.rows.append(row)
        if column not in grid.columns:
            grid.columns.append(column)
        grid.cells[(row, column)] = cell
    for row in grid.rows:
        scored = [c for (r, _), c in grid.cells.items()
                  if r == row and isinstance(c.get("eval_loss"), int | float)]
        if scored:
            grid.best.add(min(scored, key=lambda c: c["eval_loss"])["id"])
    return grid
