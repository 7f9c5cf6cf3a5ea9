"""The step graph: order, cycles and what lies downstream, over `{step: its dependencies}`."""

from __future__ import annotations

import graphlib
from collections.abc import Collection, Iterable, Mapping

__all__ = ["ancestors", "descendants", "order_or_cycle"]

Deps = Mapping[str, Collection[str]]


def order_or_cycle(deps: Deps) -> tuple[list[str], None] | tuple[None, list[str]]:
    """Every step after its dependencies (among ready steps, the order of `deps`: file
    order), or, when the graph has one, a dependency cycle as `[a, b, ..., a]`. One pass of
    graphlib's either way (checking for a cycle first, then ordering, took two)."""
    sorter = graphlib.TopologicalSorter(deps)
    try:
        sorter.prepare()
    except graphlib.CycleError as exc:
        cycle: list[str] = exc.args[1]
        # graphlib lists a cycle against the edges (dependency first); show it as "a needs b".
        return None, list(reversed(cycle))
    rank = {step: i for i, step in enumerate(deps)}
    order: list[str] = []
    while sorter.is_active():
        ready = sorted(sorter.get_ready(), key=lambda s: rank.get(s, len(rank)))
        order.extend(ready)
        sorter.done(*ready)
    return [s for s in order if s in rank], None


def descendants(deps: Deps, roots: Iterable[str]) -> set[str]:
    """`roots` and every step that depends on one of them, directly or not."""
    dependents: dict[str, list[str]] = {step: [] for step in deps}
    for step, needs in deps.items():
        for need in needs:
            dependents.setdefault(need, []).append(step)
    return _reach(dependents, roots)


def ancestors(deps: Deps, roots: Iterable[str]) -> set[str]:
    """`roots` and every step one of them depends on, directly or not."""
    return _reach(deps, roots)


def _reach(edges: Deps, roots: Iterable[str]) -> set[str]:
    """Every step reachable from `roots` along `edges` (the roots included)."""
    seen: set[str] = set()
    stack = list(roots)
    while stack:
        step = stack.pop()
        if step not in seen:
            seen.add(step)
            stack.extend(edges.get(step, ()))
    return seen
