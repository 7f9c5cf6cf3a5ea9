"""What the read commands print, laid out here: lines of styled text and tables whose cells fold
onto the next lines when the terminal is too narrow, never cut (a run id or model name copied
from a table must be whole).

Not rich, on a measurement: importing rich's console took 140 of the 400 ms `orchestrator runs`
took, and its table measured every cell through its renderables (3.5 s for a 10,000-step run).
A table here is sized once and written in one go. Live progress during a run (`progress`) is
still rich's. Every string passes `printable` (stored text may hold control characters), and
colours are written only to a terminal (`NO_COLOR` turns them off, `FORCE_COLOR` on).
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TextIO

from orchestrator.terminal import printable

__all__ = ["Cell", "Screen", "Styled", "cell_width"]

_CODES = {"bold": "1", "dim": "2", "red": "31", "green": "32", "yellow": "33",
          "magenta": "35", "cyan": "36"}
PIPED_WIDTH = 1000
"""Output read by a script or a pager is not wrapped at 80 columns: people and grep alike read
it, a line a row."""


@dataclass(frozen=True, slots=True)
class Styled:
    """Text with a style (one of `_CODES`, or "" for none)."""

    text: str
    style: str = ""


Cell = str | Styled | tuple[str | Styled, ...]
"""A table cell: text, styled text, or parts of both side by side."""


def _parts(cell: Cell) -> tuple[Styled, ...]:
    if isinstance(cell, str):
        return (Styled(printable(cell)),)
    if isinstance(cell, Styled):
        return (Styled(printable(cell.text), cell.style),)
    return tuple(p for part in cell for p in _parts(part))


def cell_width(text: str) -> int:
    """Columns `text` takes on a terminal: East Asian wide characters take two, combining
    marks none."""
    if text.isascii():
        return len(text)
    import unicodedata  # noqa: PLC0415  (start-up: most tables are ASCII)

    return sum(0 if unicodedata.combining(c) else
               2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def _fold(text: str, width: int) -> list[str]:
    """`text` in pieces at most `width` columns wide (at least one piece)."""
    if text.isascii():
        return [text[i:i + width] for i in range(0, len(text), width)] or [""]
    pieces, current, used = [], "", 0
    for char in text:
        size = cell_width(char)
        if used + size > width and current:
            pieces.append(current)
            current, used = "", 0
        current += char
        used += size
    return [*pieces, current]


def _color_wanted(stream: TextIO) -> bool:
    if os.environ.get("FORCE_COLOR"):
        return True
    if os.environ.get("NO_COLOR") or os.environ.get("TERM") == "dumb":
        return False
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


class Screen:
    """Where a command's output goes: stdout, by default, as wide as the terminal it is."""

    def __init__(self, stream: TextIO | None = None, *, width: int | None = None,
                 color: bool | None = None) -> None:
        self.stream = stream or sys.stdout
        self.color = _color_wanted(self.stream) if color is None else color
        if width is None:
            try:
                tty = self.stream.isatty()
            except (AttributeError, ValueError):
                tty = False
            width = shutil.get_terminal_size().columns if tty else PIPED_WIDTH
        self.width = max(20, width)

    def paint(self, text: str, style: str) -> str:
        code = _CODES.get(style) if self.color else None
        return f"\x1b[{code}m{text}\x1b[0m" if code and text else text

    def line(self, *parts: str | Styled) -> None:
        """One line of output, from parts side by side (each made printable)."""
        self.stream.write("".join(self.paint(p.text, p.style) for p in _parts(parts)) + "\n")
        self.stream.flush()

    def table(self, columns: Sequence[str], rows: Sequence[Sequence[Cell]]) -> None:
        """`rows` under `columns` (in bold), two spaces between columns. Columns are as wide
        as their widest value; when the lines would be wider than the screen, the widest
        column shrinks (to 8 at least) and a value wider than its column folds onto the next
        lines, the row as tall as its tallest cell."""
        cells = [[_parts(cell) for cell in row] for row in rows]
        texts = [["".join(p.text for p in cell) for cell in row] for row in cells]
        widths = [max([cell_width(name)] + [cell_width(row[i]) for row in texts])
                  for i, name in enumerate(columns)]
        room = self.width - 2 * (len(columns) - 1)
        while sum(widths) > room and max(widths) > 8:  # shrink the widest until lines fit
            widest = widths.index(max(widths))
            widths[widest] = max(8, widths[widest] - (sum(widths) - room))
        lines = self._row([(Styled(name, "bold"),) for name in columns],
                          list(columns), widths)
        for row, values in zip(cells, texts, strict=True):
            lines.extend(self._row(row, values, widths))
        self.stream.write("\n".join(lines) + "\n")
        self.stream.flush()

    def _row(self, cells: Sequence[tuple[Styled, ...]], values: Sequence[str],
             widths: Sequence[int]) -> list[str]:
        if all(cell_width(v) <= w for v, w in zip(values, widths, strict=True)):  # most rows
            out = []
            for cell, value, width in zip(cells, values, widths, strict=True):
                pad = " " * (width - cell_width(value))
                out.append("".join(self.paint(p.text, p.style) for p in cell) + pad)
            return ["  ".join(out).rstrip()]
        # Too wide: each cell folds into pieces of its column's width (one style a cell: the
        # style of its first styled part).
        styles = [next((p.style for p in cell if p.style), "") for cell in cells]
        pieces = [_fold(v, w) for v, w in zip(values, widths, strict=True)]
        lines = []
        for n in range(max(len(p) for p in pieces)):
            out = []
            for piece, width, style in zip(pieces, widths, styles, strict=True):
                text = piece[n] if n < len(piece) else ""
                out.append(self.paint(text, style) + " " * (width - cell_width(text)))
            lines.append("  ".join(out).rstrip())
        return lines
