"""Masking secrets: the values a run resolved from `secrets.*` (and provider keys) become `***`.

`REDACTOR` knows the secret values in use in this process and masks them in every log line,
event, checkpoint and stored error (the engine and the log processors call it), so a secret
that leaks into a message is still never written anywhere. The command line also wraps stdout
and stderr in a `RedactingStream`, the last line of defence for text that reaches the terminal
by another path (a failure summary, a table, a live progress line, a traceback). This module
imports nothing heavy: every command, even `validate`, installs the stream.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, MutableMapping
from typing import Any, TextIO

from orchestrator.process import hold

__all__ = ["MASK", "REDACTOR", "RedactingStream", "Redactor"]

MASK = "***"


class Redactor:
    """Knows the secret values in use in this process and masks them wherever they appear."""

    def __init__(self) -> None:
        self._secrets: set[str] = set()
        self._ordered: tuple[str, ...] = ()
        """The secrets longest first, so a secret containing another is masked whole."""

    def add(self, values: Iterable[str]) -> None:
        # Very short values would mask innocent text everywhere and are not worth hiding.
        for value in values:
            if len(value) >= 4:
                self._secrets.add(value)
                # As it appears inside JSON text (quotes, backslashes, non-ASCII escaped).
                self._secrets.add(json.dumps(value)[1:-1])
        self._ordered = tuple(sorted(self._secrets, key=len, reverse=True))

    @property
    def active(self) -> bool:
        """Whether any secret is known (masking costs nothing until one is)."""
        return bool(self._secrets)

    def clear(self) -> None:
        self._secrets.clear()
        self._ordered = ()

    def text(self, value: str) -> str:
        for secret in self._ordered:
            if secret in value:
                value = value.replace(secret, MASK)
        return value

    def value(self, value: Any) -> Any:
        """`value` with secrets masked in every string inside it (mappings and lists too)."""
        if not self._secrets:
            return value
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, Mapping):
            return {k: self.value(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.value(v) for v in value]
        return value

    def __call__(self, _: Any, __: str, event_dict: MutableMapping[str, Any]
                 ) -> MutableMapping[str, Any]:
        """A structlog processor."""
        if not self._secrets:
            return event_dict
        return {k: self.value(v) for k, v in event_dict.items()}


REDACTOR = hold(Redactor(), name="secrets to mask",
                why="every line and stored value this process writes is masked")
"""The process's one redactor: the engine adds each run's secrets to it."""


class RedactingStream:
    """A text stream that masks the process's known secrets in everything written to it.

    Writes are masked one call at a time: print, rich and structlog each write a whole line or
    render per call, so a secret is not split between two writes.
    """

    def __init__(self, stream: TextIO, redactor: Redactor = REDACTOR) -> None:
        self._stream = stream
        self._redactor = redactor

    def write(self, text: str) -> int:
        self._stream.write(self._redactor.text(text) if self._redactor.active else text)
        return len(text)

    def __getattr__(self, name: str) -> Any:  # flush, isatty, fileno, encoding...
        return getattr(self._stream, name)
