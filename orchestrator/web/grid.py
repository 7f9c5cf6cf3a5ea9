"""A batch's cells laid out by the shape of its matrix (`batch_layout`).

One axis is a list, one cell a line. With an objective (the pipeline's `select:`), each cell
shows that figure on a heat scale and the best cell is marked; without one, each shows its
final eval loss and the lowest is outlined (of each row, in a grid).

One axis is a list, one cell a line. Two axes are a grid: the first axis down, the second
across (a sweep of 3 base models x 4 learning rates is 3 rows of 4 cells, each coloured by its
run's status and showing its final eval loss, so the best learning rate per model shows at a
glance). More axes are a table with a column per axis. The axes come in the order the
pipeline's matrix names them; `include:` cells with keys of their own land where their values
put them, as any other cell.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from orchestrator.web.display import heat

__all__ = ["Grid", "Layout", "batch_grid", "batch_layout"]


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
    axes = _axes(cells, axes)
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


@dataclass(frozen=True)
class Layout:
    """How a batch page draws its cells: `list`, `grid` or `table`."""

    kind: str
    axes: tuple[str, ...]
    rows: list[dict[str, Any]] = field(default_factory=list)
    """For a list or a table: each cell with `values` (its axis values, shown) in order."""
    grid: Grid | None = None
    best: set[str] = field(default_factory=set)
    """Run ids of the best cells: the objective's winner, else the lowest eval loss (of the
    batch; of each row, in a grid)."""
    figures: dict[str, str] = field(default_factory=dict)
    """Each cell's figure as shown (the objective's, else its final eval loss)."""
    heat: dict[str, int] = field(default_factory=dict)
    """Each cell's place on the heat scale (0-4, 4 best), with an objective."""
    by: str = "eval loss"
    """What the figures are."""


def _axes(cells: Sequence[Mapping[str, Any]], axes: Sequence[str]) -> list[str]:
    found = list(axes)
    for cell in cells:
        for key in cell.get("matrix") or {}:
            if key not in found:
                found.append(key)
    return found


def batch_layout(cells: Sequence[Mapping[str, Any]], axes: Sequence[str] = (),
                 objective: Mapping[str, Any] | None = None) -> Layout:
    """The layout of `cells` by how many axes the matrix has (see the module docstring);
    `objective` is the batch's ranking (`batch_document`'s `selection`), if it has one."""
    names = _axes(cells, axes)
    grid = batch_grid(cells, names) if len(names) == 2 else None
    rows = [] if grid else [
        {**cell, "values": [_shown((cell.get("matrix") or {}).get(k, "-")) for k in names]}
        for cell in cells]
    kind = "grid" if grid else "list" if len(names) <= 1 else "table"
    if objective is not None:
        by = str(objective["by"])
        values = {str(c["id"]): float(c["figures"][by]) for c in cells
                  if isinstance((c.get("figures") or {}).get(by), int | float)}
        return Layout(kind, tuple(names), rows=rows, grid=grid,
                      best={objective["winner"]} if objective.get("winner") else set(),
                      figures={k: f"{v:.4f}" for k, v in values.items()},
                      heat=heat(values, maximize=bool(objective["max"])), by=by)
    scored = [c for c in cells if isinstance(c.get("eval_loss"), int | float)]
    best = grid.best if grid else \
        ({min(scored, key=lambda c: c["eval_loss"])["id"]} if scored else set())
    return Layout(kind, tuple(names), rows=rows, grid=grid, best=best,
                  figures={str(c["id"]): f"{c['eval_loss']:.4f}" for c in scored})
