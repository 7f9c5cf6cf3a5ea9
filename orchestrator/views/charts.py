"""Loss curves of a fine-tune job, drawn from its stored metric points.

`loss_svg` draws them as SVG by hand (a few polylines and axis labels): no plot library, so the
core install stays small and the web view draws them server-side. `loss_png` draws a PNG with
matplotlib, an optional extra (`pip install 'orchestrator[plot]'`): it takes half a second to
import, so only the end of a fine-tune step loads it, never a command's start-up.
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from orchestrator.store.records import MetricPoint

__all__ = ["Series", "cells_svg", "learning_rates", "loss_png", "loss_series", "loss_svg",
           "plotting"]

Series = list[tuple[int, float]]
"""(training step, value), by step."""

_COLOURS = {"train loss": "#1f77b4", "eval loss": "#d62728", "learning rate": "#868e96"}


def loss_series(points: Sequence[MetricPoint]) -> dict[str, Series]:
    """The train and eval loss series of `points` (those with any values)."""
    ordered = sorted(points, key=lambda p: p.train_step)
    series = {
        "train loss": [(p.train_step, p.train_loss) for p in ordered if p.train_loss is not None],
        "eval loss": [(p.train_step, p.eval_loss) for p in ordered if p.eval_loss is not None],
    }
    return {name: values for name, values in series.items() if values}


def _ticks(low: float, high: float, count: int = 5) -> list[float]:
    if high <= low:
        return [low]
    return [low + (high - low) * i / (count - 1) for i in range(count)]


def _step_ticks(low: int, high: int, count: int = 6) -> list[int]:
    """Training steps to label the x axis with: whole, distinct, at most `count`."""
    stride = max(1, math.ceil((high - low) / (count - 1)))
    return list(range(low, high + 1, stride))


def _labels(values: Sequence[float]) -> list[str]:
    """`values` written with the fewest significant digits that tell them all apart."""
    for digits in range(2, 9):
        labels = [f"{v:.{digits}g}" for v in values]
        if len(set(labels)) == len(labels):
            return labels
    return [f"{v:.9g}" for v in values]


def learning_rates(points: Sequence[MetricPoint]) -> Series:
    """The learning rate per training step of `points`, where reported."""
    return [(p.train_step, p.learning_rate) for p in sorted(points, key=lambda p: p.train_step)
            if p.learning_rate is not None]


@dataclass(frozen=True)
class Box:
    """Where a chart's plot sits in its SVG (and the SVG's height, for the x axis' label)."""

    left: float
    top: float
    width: float
    height: float
    svg_height: float


def _frame(parts: list[str], values: Sequence[float], steps: Sequence[int], box: Box,
           y_label: str) -> tuple[Callable[[float], float], Callable[[float], float]]:
    """The plot's frame, ticks and axis labels appended to `parts`; the functions placing a
    training step (x) and a value (y) in it."""
    y_low, y_high = min(values), max(values)
    pad = (y_high - y_low) * 0.05 or abs(y_high) * 0.05 or 1.0
    y_low, y_high = y_low - pad, y_high + pad
    x_low, x_high = min(steps), max(*steps, min(steps) + 1)

    def x(step: float) -> float:
        return box.left + (step - x_low) / (x_high - x_low) * box.width

    def y(value: float) -> float:
        return box.top + (y_high - value) / (y_high - y_low) * box.height

    parts.append(f'<rect x="{box.left}" y="{box.top}" width="{box.width}" '
                 f'height="{box.height}" fill="none" stroke="#999"/>')
    ticks = _ticks(y_low, y_high)
    for tick, label in zip(ticks, _labels(ticks), strict=True):
        parts.append(f'<text class="y-tick" x="{box.left - 6}" y="{y(tick) + 4:.1f}" '
                     f'text-anchor="end">{label}</text>')
    for tick in _step_ticks(x_low, x_high):
        parts.append(f'<text class="x-tick" x="{x(tick):.1f}" '
                     f'y="{box.top + box.height + 16}" text-anchor="middle">{tick}</text>')
    middle = box.top + box.height / 2
    parts.append(f'<text x="{box.left + box.width / 2}" y="{box.svg_height - 6}" '
                 'text-anchor="middle">training step</text>')
    parts.append(f'<text x="14" y="{middle}" text-anchor="middle" '
                 f'transform="rotate(-90 14 {middle})">{y_label}</text>')
    return x, y


def loss_svg(points: Sequence[MetricPoint], *, title: str = "", width: int = 640,
             height: int = 280) -> str:
    """An SVG document of the loss curves (one polyline and one marker per point), the
    learning rate dashed against an axis of its own on the right, each axis labelled."""
    import html  # noqa: PLC0415  (start-up: the read commands draw no SVG)

    series = loss_series(points)
    rates = learning_rates(points)
    left, right, top, bottom = 64, 64 if rates else 16, 32, 40
    plot_w, plot_h = width - left - right, height - top - bottom
    values = [v for s in series.values() for _, v in s]
    steps = [x for s in [*series.values(), rates] for x, _ in s]
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
             f'width="{width}" height="{height}" font-family="sans-serif" font-size="11" '
             'role="img" class="loss-curve">',
             f'<title>{html.escape(title or "loss curves")}</title>']
    if not values:
        parts.append(f'<text x="{width / 2}" y="{height / 2}" text-anchor="middle">'
                     "no metrics yet</text></svg>")
        return "".join(parts)
    x, y = _frame(parts, values, steps, Box(left, top, plot_w, plot_h, height), "loss")
    legend = []
    for name, values_of in series.items():
        colour = _COLOURS.get(name, "#333")
        line = " ".join(f"{x(s):.1f},{y(v):.1f}" for s, v in values_of)
        slug = name.replace(" ", "-")
        parts.append(f'<polyline class="series {slug}" fill="none" stroke="{colour}" '
                     f'stroke-width="1.5" points="{line}"/>')
        parts += [f'<circle class="point {slug}" cx="{x(s):.1f}" cy="{y(v):.1f}" r="2" '
                  f'fill="{colour}"><title>step {s}: {v:.4f}</title></circle>'
                  for s, v in values_of]
        legend.append((name, colour))
    if rates:
        parts += _rate_axis(rates, x, left + plot_w, top, plot_h)
        legend.append(("learning rate", _COLOURS["learning rate"]))
    for index, (name, colour) in enumerate(legend):
        parts.append(f'<text x="{left + 8 + 100 * index}" y="{top - 12}" fill="{colour}">'
                     f"{html.escape(name)}</text>")
    if title:
        parts.append(f'<text x="{width - right}" y="{top - 12}" text-anchor="end">'
                     f"{html.escape(title)}</text>")
    parts.append("</svg>")
    return "".join(parts)


_PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
            "#7f7f7f", "#bcbd22", "#17becf")


def cells_svg(curves: Mapping[str, Sequence[MetricPoint]], *, winner: str | None = None,
              width: int = 640, height: int = 280) -> str:
    """A batch's cells' train loss curves overlaid (one polyline a cell, its id as its
    tooltip), the winner's drawn thick, on one pair of labelled axes."""
    import html  # noqa: PLC0415  (start-up: the read commands draw no SVG)

    series = {cell: loss_series(points).get("train loss", []) for cell, points in
              curves.items()}
    series = {cell: values for cell, values in series.items() if values}
    left, right, top, bottom = 64, 16, 32, 40
    plot_w, plot_h = width - left - right, height - top - bottom
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
             f'width="{width}" height="{height}" font-family="sans-serif" font-size="11" '
             'role="img" class="cells-curves"><title>train loss of each cell</title>']
    values = [v for s in series.values() for _, v in s]
    if not values:
        return "".join([*parts, "</svg>"])
    steps = [x for s in series.values() for x, _ in s]
    x, y = _frame(parts, values, steps, Box(left, top, plot_w, plot_h, height), "train loss")
    for index, (cell, values_of) in enumerate(series.items()):
        colour = _PALETTE[index % len(_PALETTE)]
        best = cell == winner
        line = " ".join(f"{x(s):.1f},{y(v):.1f}" for s, v in values_of)
        parts.append(f'<polyline class="cell-curve{" winner" if best else ""}" '
                     f'data-run="{html.escape(cell)}" fill="none" stroke="{colour}" '
                     f'stroke-width="{3 if best else 1.2}" points="{line}">'
                     f"<title>{html.escape(cell)}{' (best)' if best else ''}</title>"
                     "</polyline>")
    if winner in series:
        parts.append(f'<text x="{width - right}" y="{top - 12}" text-anchor="end">thick: '
                     f"the best cell, {html.escape(winner or '')}</text>")
    parts.append("</svg>")
    return "".join(parts)


def _rate_axis(rates: Series, x: Callable[[float], float], at: float, top: float,
               plot_h: float) -> list[str]:
    """The learning rate as a dashed line against its own axis on the right."""
    low, high = 0.0, max(v for _, v in rates) or 1.0

    def y(value: float) -> float:
        return top + (high - value) / (high - low) * plot_h

    colour = _COLOURS["learning rate"]
    line = " ".join(f"{x(s):.1f},{y(v):.1f}" for s, v in rates)
    parts = [f'<polyline class="series learning-rate" fill="none" stroke="{colour}" '
             f'stroke-width="1.2" stroke-dasharray="4 3" points="{line}"/>']
    ticks = _ticks(low, high, 3)
    for tick, label in zip(ticks, _labels(ticks), strict=True):
        parts.append(f'<text class="lr-tick" x="{at + 6}" y="{y(tick) + 4:.1f}" '
                     f'fill="{colour}">{label}</text>')
    middle = top + plot_h / 2
    parts.append(f'<text x="{at + 52}" y="{middle}" text-anchor="middle" fill="{colour}" '
                 f'transform="rotate(90 {at + 52} {middle})">learning rate</text>')
    return parts


def plotting() -> bool:
    """Whether matplotlib (the plot extra) is installed, without importing it."""
    return importlib.util.find_spec("matplotlib") is not None


def loss_png(points: Sequence[MetricPoint], path: Path, title: str = "") -> bool:
    """Draw the loss curves into a PNG at `path`; False (nothing written) without matplotlib
    or without any loss to draw."""
    series = loss_series(points)
    if not series:
        return False
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: PLC0415
        from matplotlib.figure import Figure  # noqa: PLC0415
    except ImportError:
        return False
    figure = Figure(figsize=(6.4, 3.2), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    for name, values in series.items():
        axes.plot([s for s, _ in values], [v for _, v in values], marker=".", label=name,
                  color=_COLOURS.get(name))
    axes.set_xlabel("training step")
    axes.set_ylabel("loss")
    axes.grid(alpha=0.3)
    axes.legend(loc="upper right")  # "best" searches every spot
    if title:
        axes.set_title(title, fontsize=9)
    figure.subplots_adjust(left=0.1, right=0.97, top=0.9, bottom=0.15)  # tight_layout: +40%
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    return True
