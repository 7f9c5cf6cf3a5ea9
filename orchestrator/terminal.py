"""Text from runs, providers and files, made safe to show on a terminal.

A step's output, a job's status from the provider or an error message can carry control
characters: ESC starts sequences that recolour, clear or retitle a terminal (OSC), or hide
what follows; NUL and the C1 controls confuse terminals and pagers; bidirectional overrides
make text read differently from what it is. Everything the command line prints from such a
source passes `printable`, which writes each of them as an escape (`\\x1b`, `\\u202e`) instead,
the way a JSON log line would. This module imports nothing heavy.
"""

from __future__ import annotations

import re

__all__ = ["printable"]

_CONTROLS = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069"
                       "\u2028\u2029]")
_CONTROLS_AND_LINES = re.compile("[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e"
                                 "\u2066-\u2069\u2028\u2029]")


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    if char == "\n":
        return "\\n"
    if char == "\t":
        return "\\t"
    return f"\\x{ord(char):02x}" if ord(char) < 0x100 else f"\\u{ord(char):04x}"


def printable(text: str, *, lines: bool = False) -> str:
    """`text` with control characters escaped; with `lines`, newlines (and tabs) are kept,
    for text meant to span lines (a traceback)."""
    pattern = _CONTROLS if lines else _CONTROLS_AND_LINES
    return pattern.sub(_escape, text) if pattern.search(text) else text
