"""Loss curves of a fine-tune job, drawn from its stored metric points.

`loss_svg` draws them as SVG by hand (a few polylines and axis labels): no plot library, so the
core install stays small and the web view draws them server-side. `loss_png` draws a PNG with
matplotlib, an optional extra (`pip install 'orchestrator[plot]'`): it takes half a second to
import, so only the end of a fine-tune step loads it, never a command's start-up.
"""

from __future__ import annotations

import html
import importlib.util
from collections.abc import Sequence
from pathlib import Path

from orchestrator.store.records import MetricPoint

__all__ = ["Series", "loss_png", "loss_series", "loss_svg", "plotting"]

Series = list[tuple[int, float]]
"""(training step, value), by step."""

_COLOURS = {"train loss": "#1f77b4", "eval loss": "#d62728"}


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


def loss_svg(points: Sequence[MetricPoint], *, title: str = "", width: int = 640,
             height: int = 260) -> str:
    """An SVG document of the loss curves (one polyline and one marker per point)."""
    series = loss_series(points)
    left, right, top, bottom = 56, 16, 28, 36
    plot_w, plot_h = width - left - right, height - top - bottom
    values = [v for s in series.values() for _, v in s]
    steps = [x for s in series.values() for x, _ in s]
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
             f'width="{width}" height="{height}" font-family="sans-serif" font-size="11" '
             'role="img" class="loss-curve">',
             f'<title>{html.escape(title or "loss curves")}</title>']
    if not values:
        parts.append(f'<text x="{width / 2}" y="{height / 2}" text-anchor="middle">'
                     "no metrics yet</text></svg>")
        return "".join(parts)
    y_low, y_high = min(values), max(values)
    pad = (y_high - y_low) * 0.05 or abs(y_high) * 0.05 or 1.0
    y_low, y_high = y_low - pad, y_high + pad
    x_low, x_high = min(steps), max(*steps, min(steps) + 1)

    def x(step: float) -> float:
        return left + (step - x_low) / (x_high - x_low) * plot_w

    def y(value: float) -> float:
        return top + (y_high - value) / (y_high - y_low) * plot_h

    parts.append(f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" '
                 'fill="none" stroke="#999"/>')
    for tick in _ticks(y_low, y_high):
        parts.append(f'<text x="{left - 6}" y="{y(tick) + 4:.1f}" text-anchor="end">'
                     f"{tick:.3g}</text>")
    for tick in _ticks(x_low, x_high):
        parts.append(f'<text x="{x(tick):.1f}" y="{top + plot_h + 16}" '
                     f'text-anchor="middle">{tick:.0f}</text>')
    parts.append(f'<text x="{left + plot_w / 2}" y="{height - 4}" text-anchor="middle">'
                 "training step</text>")
    for index, (name, values_of) in enumerate(series.items()):
        colour = _COLOURS.get(name, "#333")
        line = " ".join(f"{x(s):.1f},{y(v):.1f}" for s, v in values_of)
        slug = name.replace(" ", "-")
        parts.append(f'<polyline class="series {slug}" fill="none" stroke="{colour}" '
                     f'stroke-width="1.5" points="{line}"/>')
        parts += [f'<circle class="point {slug}" cx="{x(s):.1f}" cy="{y(v):.1f}" r="2" '
                  f'fill="{colour}"><title>step {s}: {v:.4f}</title></circle>'
                  for s, v in values_of]
        parts.append(f'<text x="{left + 8 + 90 * index}" y="{top - 10}" fill="{colour}">'
                     f"{html.escape(name)}</text>")
    if title:
        parts.append(f'<text x="{width - right}" y="{top - 10}" text-anchor="end">'
                     f"{html.escape(title)}</text>")
    parts.append("</svg>")
    return "".join(parts)


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
