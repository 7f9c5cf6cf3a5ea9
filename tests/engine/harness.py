"""Running pipelines in-process against a real SQLite store, with step types defined by tests
(the harness itself is public: `orchestrator.testing`), and reading their event logs."""

from __future__ import annotations

from orchestrator.store.records import EventRecord
from orchestrator.testing import Harness, wait_until

__all__ = ["Harness", "intervals", "max_overlap", "wait_until"]


def max_overlap(intervals: list[tuple[float, float]]) -> int:
    """The most intervals that cover one instant (an end at t comes before a start at t)."""
    edges = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals],
                   key=lambda edge: (edge[0], edge[1]))
    most = current = 0
    for _, change in edges:
        current += change
        most = max(most, current)
    return most


def intervals(events: list[EventRecord], start: str, end: str,
              step: str | None = None) -> list[tuple[float, float]]:
    """[start, end] of each pair of `start`/`end` events (of `step`, if given), in order."""
    found, opened = [], None
    for event in events:
        if step is not None and event.step_id != step:
            continue
        if event.kind == start and opened is None:
            opened = event.ts
        elif event.kind == end and opened is not None:
            found.append((opened, event.ts))
            opened = None
    return found
