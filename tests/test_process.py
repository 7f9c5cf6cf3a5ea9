"""The process's state is all in `orchestrator.process`: every module-level cache, container
that functions fill, and object that can be cleared is held there, and `reset` empties each."""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path
from types import ModuleType

import pytest

from orchestrator import process

PACKAGE = Path(__file__).resolve().parent.parent / "orchestrator"
MUTATORS = {"append", "add", "update", "setdefault", "pop", "popitem", "clear", "extend",
            "insert", "remove", "discard", "move_to_end"}
CONTAINERS = (dict, set, list)


def modules() -> list[ModuleType]:
    names = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] in ("__init__", "__main__"):
            parts.pop()
        names.append(".".join(parts))
    return [importlib.import_module(name) for name in names if name]


def mutated_names(source: str) -> set[str]:
    """Module-level names a function body changes in place (`NAME[k] = v`, `NAME.add(x)`...)
    or rebinds (`global NAME`)."""
    found: set[str] = set()
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            for inner in ast.walk(node):
                if isinstance(inner, ast.Global):
                    found.update(inner.names)
                elif (isinstance(inner, ast.Call) and isinstance(inner.func, ast.Attribute)
                      and inner.func.attr in MUTATORS
                      and isinstance(inner.func.value, ast.Name)):
                    found.add(inner.func.value.id)
                elif isinstance(inner, ast.Assign | ast.AugAssign | ast.Delete):
                    targets = inner.targets if isinstance(inner, ast.Assign | ast.Delete) \
                        else [inner.target]
                    for target in targets:
                        if isinstance(target, ast.Subscript) and isinstance(target.value,
                                                                            ast.Name):
                            found.add(target.value.id)
    return found


def state_of(module: ModuleType) -> dict[str, object]:
    """The module-level objects of `module` that are process state."""
    source = Path(module.__file__ or "").read_text(encoding="utf-8")
    changed = mutated_names(source)
    state = {}
    for name, value in vars(module).items():
        if isinstance(value, ModuleType) or name.startswith("__"):
            continue
        wrapped = getattr(value, "__wrapped__", value)
        cache = hasattr(value, "cache_clear") and getattr(  # an lru_cache of ours
            wrapped, "__module__", "").startswith("orchestrator.")
        filled = isinstance(value, CONTAINERS) and name in changed
        clearable = (type(value).__module__.startswith("orchestrator.")
                     and not isinstance(value, type)
                     and callable(getattr(value, "clear", None)))
        if cache or filled or clearable:
            state[name] = value
    return state


def test_every_piece_of_module_state_is_held() -> None:
    loaded = [module for module in modules() if module is not process]
    held = {id(piece.thing) for piece in process.held()}  # after every module registered
    loose = [f"{module.__name__}.{name}" for module in loaded
             for name, value in state_of(module).items() if id(value) not in held]
    assert not loose, ("module-level state not held by orchestrator.process (hold it, with "
                       f"why): {loose}")


def test_the_finder_sees_containers_that_functions_change() -> None:
    source = ("CACHE = {}\nTABLE = {'a': 1}\ndef f(k):\n    CACHE[k] = 1\n"
              "def g():\n    global COUNT\n    COUNT = 1\n"
              "SEEN = set()\ndef h(x):\n    SEEN.add(x)\n")
    assert mutated_names(source) == {"CACHE", "COUNT", "SEEN"}


def test_reset_empties_every_piece() -> None:
    from orchestrator.definition.expressions import parse_template
    from orchestrator.redact import REDACTOR
    from orchestrator.steps.context import _LOCAL_LOCKS

    REDACTOR.add(["a-secret-value"])
    parse_template("${{ inputs.x }}")
    _LOCAL_LOCKS["x"] = object()  # type: ignore[assignment]
    process.reset()
    assert not REDACTOR.active
    assert parse_template.cache_info().currsize == 0
    assert not _LOCAL_LOCKS


def test_a_piece_must_say_how_it_resets() -> None:
    with pytest.raises(TypeError, match="say how it resets"):
        process.hold(object(), name="nothing", why="a test")


def test_the_error_tree_names_every_error_class() -> None:
    """`orchestrator.errors`' docstring draws every exception class the package defines."""
    import inspect

    from orchestrator import errors

    drawn = errors.__doc__ or ""
    classes = {obj.__name__ for module in modules() for obj in vars(module).values()
               if inspect.isclass(obj) and issubclass(obj, BaseException)
               and obj.__module__.startswith("orchestrator")}
    missing = sorted(name for name in classes
                     if not re.search(rf"(?<![\w]){re.escape(name)}(?![\w])", drawn))
    assert not missing, f"error classes missing from errors.py's tree: {missing}"
