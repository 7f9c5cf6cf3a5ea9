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
    {"definition", "protocol"},
    # judging answers: scorers, evaluation files, quality gates (pure)
    {"evaluation"},
    # settings without pydantic (read-only commands), then every setting (pydantic-settings)
    {"settings_read"},
    {"settings"},
    # the HTTP plumbing both servers share (loopback, listening, a headers deadline)
    {"serving", "trainer"},
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
    "orchestrator.api": "the Python API loads the settings reader, the loader and the engine "
                        "when a function is first called: `import orchestrator` in a "
                        "notebook costs nothing until a run",
    "orchestrator.cli": "each command imports what it uses, so --help, validate and the "
                        "read-only commands never load the engine, providers or the local API",
    "orchestrator.providers.pool": "httpx and the Together client load when a run first needs "
                                   "a provider, not with the engine (a pipeline of core "
                                   "steps never loads them)",
    "orchestrator.runtime": "read-only commands open the store alone: the engine, the "
                            "Together client (httpx) and the local API (Starlette) load only "
                            "for a runtime with an engine, the local API only for a local run",
    "orchestrator.store.opening": "PostgreSQL's driver (an extra, maybe not installed) loads "
                                  "only for a state_url that names PostgreSQL",
    "orchestrator.store": "the package's names load on first use: importing one store module "
                          "(the records) loads neither the dialects nor the others",
    "orchestrator.views.batches": "`batches`, a read-only command, loads no pydantic or YAML "
                                  "reader: only a batch whose pipeline has a select: reads it",
    "orchestrator.steps.together": "validate checks Together steps' parameters without "
                                   "loading httpx: the client's errors load when a step runs",
}
"""Where a function-level import of our own modules may stay, and why (start-up time only).
A key covers the module and everything below it (the package itself: only its `__init__`)."""


PACKAGE_ONLY = {"orchestrator", "orchestrator.store"}
"""Keys that cover the package's `__init__` alone, not the modules below it."""


def lazy_allowed(module: str) -> bool:
    return any(module == key or (key not in PACKAGE_ONLY and module.startswith(key + "."))
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
    """Every import of an `orchestrator` module in `path`, with where it sits: statements,
    and imports by string (`importlib.import_module`, `__import__`, a step family added by
    module name) wherever the string can be read."""
    source = module_name(path, root)
    package = source if path.name == "__init__.py" else source.rpartition(".")[0]
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    tables = _string_tables(tree)

    def visit(node: ast.AST, in_function: bool, type_only: bool,
              scope: ast.AST) -> Iterator[Import]:
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
                for part in child.body:  # only for the type checker
                    yield from visit(ast.Module([part], []), in_function, True, scope)
                for part in child.orelse:  # what runs instead
                    yield from visit(ast.Module([part], []), in_function, type_only, scope)
            else:
                if isinstance(child, ast.Call):
                    for target in _called_imports(child, scope, tables, source):
                        yield Import(source, target, (), child.lineno, in_function,
                                     type_only)
                function = isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef
                                      | ast.Lambda)
                yield from visit(child, in_function or function, type_only,
                                 child if function else scope)

    yield from visit(tree, False, False, tree)


OPAQUE_IMPORTS: dict[str, str] = {
    "orchestrator.steps.registry": "a step family's module, named where the family is added "
                                   "(`add_family`, read here as that module's import), and a "
                                   "user's `python:` module, which is not ours",
}
"""Modules that import by a string the reader cannot follow, and where the names are."""


def _string_tables(tree: ast.Module) -> dict[str, list[str]]:
    """Module-level dicts of strings, by name: a string import may look its module up there."""
    tables = {}
    for node in tree.body:
        target = node.targets[0] if isinstance(node, ast.Assign) and len(node.targets) == 1 \
            else node.target if isinstance(node, ast.AnnAssign) else None
        value = node.value if isinstance(node, ast.Assign | ast.AnnAssign) else None
        if isinstance(target, ast.Name) and isinstance(value, ast.Dict):
            tables[target.id] = [v.value for v in value.values
                                 if isinstance(v, ast.Constant) and isinstance(v.value, str)]
    return tables


def _is_import_call(call: ast.Call) -> bool:
    func = call.func
    name = func.attr if isinstance(func, ast.Attribute) else func.id \
        if isinstance(func, ast.Name) else ""
    return name in ("import_module", "__import__")


def _choices(part: ast.expr, tables: dict[str, list[str]], source: str) -> list[str] | None:
    """What one part of an f-string can be: a literal, `__name__`, a table's value looked up
    with `.get(key, default)`; None when it cannot be read."""
    if isinstance(part, ast.Constant):
        return [str(part.value)]
    value = part.value if isinstance(part, ast.FormattedValue) else None
    if isinstance(value, ast.Name) and value.id == "__name__":
        return [source]
    if (isinstance(value, ast.Call) and isinstance(value.func, ast.Attribute)
            and value.func.attr == "get" and isinstance(value.func.value, ast.Name)
            and value.func.value.id in tables):
        defaults = [a.value for a in value.args[1:] if isinstance(a, ast.Constant)]
        return [*tables[value.func.value.id], *map(str, defaults)]
    return None


def _called_imports(call: ast.Call, scope: ast.AST, tables: dict[str, list[str]],
                    source: str) -> list[str]:
    """The modules a call imports by string: `import_module(...)`/`__import__(...)` of a
    literal, of an f-string (every module its literal start names), or of a name looked up
    in a module-level table; `add_family(prefix, "module")`. An import the reader cannot
    follow is `?` (see OPAQUE_IMPORTS)."""
    func = call.func
    if isinstance(func, ast.Attribute) and func.attr == "add_family" and len(call.args) == 2:
        arg = call.args[1]
        return [arg.value] if isinstance(arg, ast.Constant) and isinstance(arg.value, str) \
            else ["?"]
    if not _is_import_call(call) or not call.args:
        return []
    arg = call.args[0]
    if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
        return [arg.value]
    if isinstance(arg, ast.JoinedStr):
        names = [""]  # every text the f-string can be, as far as it can be read
        for part in arg.values:
            choices = _choices(part, tables, source)
            if choices is None:  # the rest is unknown: every module starting so
                return [m for m in sorted(MODULES) if m != source
                        and any(m.startswith(name) for name in names)] or ["?"]
            names = [name + choice for name in names for choice in choices]
        return [name for name in names if name in MODULES] or ["?"]
    if isinstance(arg, ast.Name):
        for node in ast.walk(scope):  # `home = _HOME.get(name)`: the table's values
            if (isinstance(node, ast.Assign) and any(
                    isinstance(t, ast.Name) and t.id == arg.id for t in node.targets)):
                looked = node.value
                base = looked.func.value if isinstance(looked, ast.Call) and isinstance(
                    looked.func, ast.Attribute) else looked.value if isinstance(
                    looked, ast.Subscript) else None
                if isinstance(base, ast.Name) and base.id in tables:
                    return [m for m in tables[base.id] if m.startswith("orchestrator")]
    return ["?"]


MODULES = {module_name(path) for path in PACKAGE.rglob("*.py")}
READ = [imp for path in sorted(PACKAGE.rglob("*.py")) for imp in imports_of(path)]
ALL_IMPORTS = [imp for imp in READ if imp.target != "?"]


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
    module = tmp_path / "orchestrator" / "definition" / "model.py"
    module.parent.mkdir(parents=True)
    module.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from "
                      "orchestrator.cli import x\ndef f():\n    from orchestrator.engine "
                      "import y\nfrom . import inputs\n")
    found = list(imports_of(module, tmp_path / "orchestrator"))
    assert [(i.source, i.target, i.in_function, i.type_only) for i in found] == [
        ("orchestrator.definition.model", "orchestrator.cli", False, True),
        ("orchestrator.definition.model", "orchestrator.engine", True, False),
        ("orchestrator.definition.model", "orchestrator.definition", False, False)]


def test_every_string_import_is_read_or_explained() -> None:
    opaque = sorted({imp.source for imp in READ if imp.target == "?"})
    assert opaque == sorted(OPAQUE_IMPORTS), (
        "an import by a string the reader cannot follow: name the module in a literal, an "
        f"f-string's start or a module-level table, or explain it in OPAQUE_IMPORTS: {opaque}")


def test_the_reader_sees_imports_by_string(tmp_path: Path) -> None:
    """import_module of a literal, of an f-string's start, of a name looked up in a table;
    __import__; a family added by module name; an import under TYPE_CHECKING's else."""
    module = tmp_path / "orchestrator" / "definition" / "model.py"
    module.parent.mkdir(parents=True)
    module.write_text(
        "import importlib\nfrom typing import TYPE_CHECKING\n"
        "_HOME = {'a': 'orchestrator.engine.plan', 'b': 'orchestrator.cli'}\n"
        "if TYPE_CHECKING:\n    from orchestrator.web import x\n"
        "else:\n    from orchestrator.store import y\n"
        "def f(name):\n    importlib.import_module('orchestrator.runtime')\n"
        "    __import__('orchestrator.api')\n"
        "    home = _HOME.get(name)\n    importlib.import_module(home)\n"
        "    importlib.import_module(f'orchestrator.views.{name}')\n"
        "    importlib.import_module(name + '.x')\n"
        "REGISTRY.add_family('t', 'orchestrator.steps.core')\n")
    found = [(i.target, i.in_function, i.type_only)
             for i in imports_of(module, tmp_path / "orchestrator")]
    views = [m for m in sorted(MODULES) if m.startswith("orchestrator.views.")]
    assert found == [
        ("orchestrator.web", False, True), ("orchestrator.store", False, False),
        ("orchestrator.runtime", True, False), ("orchestrator.api", True, False),
        ("orchestrator.engine.plan", True, False), ("orchestrator.cli", True, False),
        *((m, True, False) for m in views), ("?", True, False),
        ("orchestrator.steps.core", False, False)]


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
EXECUTION = ("orchestrator.engine", "orchestrator.localapi", "orchestrator.runtime",
             "orchestrator.schedule")
"""What runs a pipeline: the engine, the local API, the composition root, workers and the
scheduler. Step types are not here: parsing a stored pipeline (to draw its graph) loads its
step types, whose modules declare their parameters (the code in them that calls a provider
loads only when a step runs, which the read side never does)."""


def reach(start: str) -> set[str]:
    """Every module `start` can load, at import or in a function (type-only imports aside).
    Importing a module runs its parent packages too, but only their import-time imports: a
    package's lazy names load when they are asked for, not when a module below it loads."""
    at_import: dict[str, set[str]] = {m: set() for m in MODULES}
    in_function: dict[str, set[str]] = {m: set() for m in MODULES}
    for imp in ALL_IMPORTS:
        if not imp.type_only:
            edges = in_function if imp.in_function else at_import
            edges[imp.source].update(t for t in resolved(imp) if t in MODULES)
    seen: dict[str, bool] = {}  # module -> loaded by an import of its own (not as a parent)
    todo = [(start, True)]
    while todo:
        module, own = todo.pop()
        if seen.get(module, False) or (module in seen and not own):
            continue
        seen[module] = own or seen.get(module, False)
        parts = module.split(".")
        todo += [(".".join(parts[:i]), False) for i in range(1, len(parts))
                 if ".".join(parts[:i]) in MODULES]
        targets = at_import[module] | (in_function[module] if own else set())
        todo += [(target, True) for target in targets]
    return set(seen)


def test_read_models_and_the_web_view_load_no_executor() -> None:
    """What shows a run never loads what runs one: the web view and the views read the store,
    and their server plumbing is `serving`'s, not the local API's."""
    loaded = {m: sorted(t for t in reach(m) if t.startswith(EXECUTION))
              for m in MODULES if m.startswith(READ_SIDE)}
    assert not {m: ts for m, ts in loaded.items() if ts}


def test_reach_follows_function_level_imports_and_parents() -> None:
    assert "orchestrator.engine.orchestrator" in reach("orchestrator.runtime")
    assert "orchestrator.store" in reach("orchestrator.store.records")
    # the package's lazy names (a function-level import by string) are not loaded with it
    assert "orchestrator.store.postgres.store" not in reach("orchestrator.store.records")
    assert "orchestrator.store.opening" in reach("orchestrator.store")


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
