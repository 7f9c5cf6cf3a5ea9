"""Running pipelines in-process against a real SQLite store, with step types defined by tests
(the harness itself is public: `orchestrator.testing`), and reading their event logs."""

from __future__ import annotations

from collections.abc import Iterable

from orchestrator.store.records import EventRecord
from orchestrator.testing import Harness, wait_until

__all__ = ["Harness", "held_spans", "intervals", "max_overlap", "wait_until"]


def max_overlap(intervals: list[tuple[float, float]]) -> int:
    """The most intervals that cover one instant (an end at t comes before a start at t)."""
    edges = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals],
                   key=lambda edge: (edge[0], edge[1]))
    most = current = 0
    for _, change in edges:
        current += change
        most = max(most, current)
    return most


def held_spans(rows: Iterable[tuple[object, object, object]]) -> list[tuple[float, float]]:
    """When each run held a slot, from (run id, kind, ts) rows of `slot_acquired` and
    `slot_released` events in time order: from its first acquisition to its release (a run
    taken over re-acquires its own slot, which is not a second holder)."""
    spans: list[tuple[float, float]] = []
    opened: dict[object, float] = {}
    for run_id, kind, ts in rows:
        if kind == "slot_acquired":
            opened.setdefault(run_id, float(str(ts)))
        elif run_id in opened:
            spans.append((opened.pop(run_id), float(str(ts))))
    return spans


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
