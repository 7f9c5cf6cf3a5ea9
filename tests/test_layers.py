"""The packages of `orchestrator/` point one way: each imports only from layers below its own.

Read from the source (module-level and function-level imports, and those under TYPE_CHECKING),
so an upward arrow hidden inside a function fails here as surely as one at the top of a file.
Cycles between modules are checked over the imports that run (type-only ones cannot loop).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "orchestrator"

LAYERS: list[set[str]] = [
    # bottom: generic helpers, knowing nothing of pipelines
    {"errors", "ids", "owners", "terminal", "sqlite_wal", "process"},
    {"durations", "cron", "inputfiles", "redact", "faults"},
    {"log"},
    # the pipeline model and the Together protocol (both sides of the wire read it)
    {"spec", "protocol"},
    {"settings"},
    # the HTTP plumbing both servers share (loopback, listening, a headers deadline)
    {"serving"},
    {"store", "providers", "localapi"},
    # what is kept, as people and scripts see it: shapes, charts, batches, schedules
    {"views"},
    {"steps"},
    {"engine"},
    {"schedule"},
    # the composition root: settings -> store -> providers -> orchestrator
    {"runtime", "web"},
    # the Python API: the command line's commands as functions
    {"api"},
    # helpers for tests of pipelines and step types (this project's and its users')
    {"testing"},
    {"cli"},
    # the public names, and `python -m orchestrator`
    {"__init__", "__main__"},
]
"""Bottom first. A unit is a top-level module or package of `orchestrator/`."""

LAZY_IMPORTS: dict[str, str] = {
    "orchestrator": "public names load on first use: `python -m orchestrator` imports the "
                    "package first, and --help must stay fast",
    "orchestrator.cli": "each command imports what it uses, so --help, validate and the "
                        "read-only commands never load the engine, providers or the local API",
    "orchestrator.runtime": "read-only commands open the store alone: the engine, the "
                            "Together client (httpx) and the local API (Starlette) load only "
                            "for a runtime with an engine, the local API only for a local run",
    "orchestrator.store.opening": "PostgreSQL's driver (an extra, maybe not installed) loads "
                                  "only for a state_url that names PostgreSQL",
    "orchestrator.steps.together": "validate checks Together steps' parameters without "
                                   "loading httpx: the client's errors load when a step runs",
}
"""Where a function-level import of our own modules may stay, and why (start-up time only).
A key covers the module and everything below it (the package itself: only its `__init__`)."""


def lazy_allowed(module: str) -> bool:
    return any(module == key or (key != "orchestrator" and module.startswith(key + "."))
               for key in LAZY_IMPORTS)


@dataclass(frozen=True)
class Import:
    source: str
    """The importing module, dotted."""
    target: str
    """The imported module (for `from m import name`, `m`; `name` may be a submodule)."""
    names: tuple[str, ...]
    line: int
    in_function: bool
    type_only: bool

    def __str__(self) -> str:
        return f"{self.source}:{self.line} imports {self.target}"


def module_name(path: Path, root: Path = PACKAGE) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imports_of(path: Path, root: Path = PACKAGE) -> Iterator[Import]:
    """Every import of an `orchestrator` module in `path`, with where it sits."""
    source = module_name(path, root)
    package = source if path.name == "__init__.py" else source.rpartition(".")[0]
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))

    def visit(node: ast.AST, in_function: bool, type_only: bool) -> Iterator[Import]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.ImportFrom):
                if child.level:
                    base = package.split(".")[: len(package.split(".")) - child.level + 1]
                    target = ".".join([*base, *([child.module] if child.module else [])])
                else:
                    target = child.module or ""
                if target.split(".")[0] == "orchestrator":
                    yield Import(source, target, tuple(a.name for a in child.names),
                                 child.lineno, in_function, type_only)
            elif isinstance(child, ast.Import):
                for alias in child.names:
                    if alias.name.split(".")[0] == "orchestrator":
                        yield Import(source, alias.name, (), child.lineno, in_function,
                                     type_only)
            elif isinstance(child, ast.If) and _is_type_checking(child):
                yield from visit(child, in_function, True)
            else:
                inside = in_function or isinstance(
                    child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
                yield from visit(child, inside, type_only)

    yield from visit(tree, False, False)


ALL_IMPORTS = [imp for path in sorted(PACKAGE.rglob("*.py")) for imp in imports_of(path)]
MODULES = {module_name(path) for path in PACKAGE.rglob("*.py")}


def unit_of(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1:
        return "__init__"
    return parts[1]


def layer_of(unit: str) -> int:
    for index, units in enumerate(LAYERS):
        if unit in units:
            return index
    pytest.fail(f"orchestrator/{unit} belongs to no layer: add it to LAYERS in {__file__}")


def resolved(imp: Import) -> list[str]:
    """The modules an import loads: `from pkg import sub` names the submodule `pkg.sub`."""
    subs = [f"{imp.target}.{name}" for name in imp.names if f"{imp.target}.{name}" in MODULES]
    return subs or [imp.target]


def test_every_package_has_a_layer() -> None:
    units = {unit_of(m) for m in MODULES}
    assert units <= set().union(*LAYERS), units - set().union(*LAYERS)


def test_imports_point_down() -> None:
    """A package imports only from layers below its own (or from itself)."""
    upward = []
    for imp in ALL_IMPORTS:
        here, there = unit_of(imp.source), unit_of(imp.target)
        if here != there and layer_of(there) >= layer_of(here):
            upward.append(f"{imp} ({here} -> {there})")
    assert not upward, "imports that do not point down:\n  " + "\n  ".join(upward)


def test_no_module_imports_itself_back() -> None:
    """No cycle between modules over the imports that run, at import or in a function."""
    graph: dict[str, set[str]] = {m: set() for m in MODULES}
    for imp in ALL_IMPORTS:
        if not imp.type_only:
            for target in resolved(imp):
                if target in graph and target != imp.source:
                    graph[imp.source].add(target)
    cycles = [c for c in _strongly_connected(graph) if len(c) > 1]
    assert not cycles, "import cycles:\n  " + "\n  ".join(" <-> ".join(sorted(c))
                                                          for c in cycles)


def test_function_level_imports_are_only_for_start_up() -> None:
    """A function-level import of our own code stays only where start-up time needs it."""
    hidden = [str(imp) for imp in ALL_IMPORTS if imp.in_function and not imp.type_only
              and not lazy_allowed(imp.source)]
    assert not hidden, "function-level imports without a start-up reason:\n  " + \
        "\n  ".join(hidden)


def test_the_reader_sees_hidden_imports(tmp_path: Path) -> None:
    """Inside a function, under TYPE_CHECKING, relative: each is found, and where it sits."""
    module = tmp_path / "orchestrator" / "spec" / "model.py"
    module.parent.mkdir(parents=True)
    module.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from "
                      "orchestrator.cli import x\ndef f():\n    from orchestrator.engine "
                      "import y\nfrom . import inputs\n")
    found = list(imports_of(module, tmp_path / "orchestrator"))
    assert [(i.source, i.target, i.in_function, i.type_only) for i in found] == [
        ("orchestrator.spec.model", "orchestrator.cli", False, True),
        ("orchestrator.spec.model", "orchestrator.engine", True, False),
        ("orchestrator.spec.model", "orchestrator.spec", False, False)]


def test_the_cycle_finder_finds_a_loop() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert sorted(map(sorted, _strongly_connected(graph)), key=len)[-1] == ["a", "b", "c"]


def _strongly_connected(graph: dict[str, set[str]]) -> list[set[str]]:
    """Tarjan's components, iteratively (the module graph is small but deep)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[set[str]] = []
    for root, edges in graph.items():
        if root in index:
            continue
        work = [(root, iter(sorted(edges)))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = set()
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.add(member)
                        if member == node:
                            break
                    found.append(component)
    return found


READ_SIDE = ("orchestrator.views", "orchestrator.web")
EXECUTION = ("orchestrator.engine", "orchestrator.localapi", "orchestrator.providers",
             "orchestrator.schedule", "orchestrator.runtime", "orchestrator.steps.core",
             "orchestrator.steps.models", "orchestrator.steps.together")
"""What runs a pipeline. The step registry is not here: parsing a stored pipeline (to draw
its graph) checks its step types' parameters, and never loads what a step does."""


def reach(start: str) -> set[str]:
    """Every module `start` can load, at import or in a function (type-only imports aside)."""
    graph: dict[str, set[str]] = {m: set() for m in MODULES}
    for imp in ALL_IMPORTS:
        if not imp.type_only:
            graph[imp.source].update(t for t in resolved(imp) if t in graph)
    for module in MODULES:  # importing a.b.c runs a and a.b first
        parts = module.split(".")
        graph[module].update(".".join(parts[:i]) for i in range(1, len(parts))
                             if ".".join(parts[:i]) in graph)
    seen, todo = {start}, [start]
    while todo:
        for target in graph[todo.pop()] - seen:
            seen.add(target)
            todo.append(target)
    return seen


def test_read_models_and_the_web_view_load_no_executor() -> None:
    """What shows a run never loads what runs one: the web view and the views read the store,
    and their server plumbing is `serving`'s, not the local API's."""
    loaded = {m: sorted(t for t in reach(m) if t.startswith(EXECUTION))
              for m in MODULES if m.startswith(READ_SIDE)}
    assert not {m: ts for m, ts in loaded.items() if ts}


def test_reach_follows_function_level_imports_and_parents() -> None:
    assert "orchestrator.engine.orchestrator" in reach("orchestrator.runtime")
    assert "orchestrator.store" in reach("orchestrator.store.records")


MOST_LINES = 600
EXPLAIN_OVER = 400


def test_modules_are_small_or_say_why() -> None:
    """No module over 600 lines; one over 400 says why at its top, in its docstring."""
    too_long, unexplained = [], []
    for path in sorted(PACKAGE.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        lines = text.count("\n")
        name = str(path.relative_to(PACKAGE.parent))
        if lines > MOST_LINES:
            too_long.append(f"{name} ({lines} lines)")
        elif lines > EXPLAIN_OVER and "(Over 400 lines:" not in (ast.get_docstring(
                ast.parse(text)) or ""):
            unexplained.append(f"{name} ({lines} lines)")
    assert not too_long, f"modules over {MOST_LINES} lines: {too_long}"
    assert not unexplained, f"modules over {EXPLAIN_OVER} lines without a reason: {unexplained}"
