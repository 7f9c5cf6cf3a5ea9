"""What this process keeps from one call to the next: every piece listed here, with one reset.

The package's functions hold no state between calls, with these exceptions, each kept for a
reason and registered by its module when it loads (`hold`):

- the secrets to mask in every line and stored value (`redact.REDACTOR`);
- caches that save a parse, a read or a copy (stored pipeline texts, parsed templates, time
  zones, records and provider references shared by many runs, `python:` step types, the local
  API's job timelines);
- the fault points armed from the environment (`faults`);
- locks that make a step exclusive within the process (`steps.context.process_lock`);
- the logging configuration (`log.configure_logging`).

`reset()` puts all of it back as a fresh process has it: tests call it around every test
(`tests/conftest.py`), so nothing one test leaves behind reaches the next. A test reads every
module and fails on a module-level cache, registry or container that is not held here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["Held", "held", "hold", "reset"]

T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class Held:
    """One piece of the process's state: what it is, why it is kept, how it starts again."""

    name: str
    why: str
    thing: Any
    reset: Callable[[], None]


_HELD: dict[str, Held] = {}


def hold(thing: T, *, name: str, why: str, reset: Callable[[], None] | None = None) -> T:
    """Register `thing` (a cache, a container, an object with `clear`) as process state and
    return it. `reset` defaults to its `cache_clear` (an lru_cache) or its `clear`."""
    if reset is None:
        reset = getattr(thing, "cache_clear", None) or getattr(thing, "clear", None)
        if reset is None:
            msg = f"{name}: say how it resets (it has no clear or cache_clear)"
            raise TypeError(msg)
    _HELD[name] = Held(name, why, thing, reset)
    return thing


def held() -> list[Held]:
    """Every piece of process state registered so far (modules register as they load)."""
    return list(_HELD.values())


def reset() -> None:
    """Every piece back to how a fresh process has it."""
    for piece in _HELD.values():
        piece.reset()
