"""Step types by name: the built-ins and `python:module:function` for a user's own function.

A step type is an async function plus a pydantic model of its parameters. Literal parameters are
checked against the model when a pipeline is validated; parameters holding expressions are
checked when the step runs, once their values are known.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import sys
import typing
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, create_model

from orchestrator.definition.steptypes import UnknownStepType
from orchestrator.process import hold
from orchestrator.steps.context import StepContext

__all__ = [
    "PYTHON_PREFIX",
    "CancelFn",
    "OutputsOf",
    "StepFn",
    "StepRegistry",
    "StepType",
    "UnknownStepType",
]

StepFn = Callable[[StepContext, Any], Awaitable[Mapping[str, Any] | BaseModel | None]]
"""A step's body: gets the context and its validated parameter model, returns its outputs."""

CancelFn = Callable[[StepContext], Awaitable[None]]
"""Undoes what a step started remotely (cancels its job) when its run is cancelled; gets the
step's context with the step's last checkpoint. Must be safe to call more than once."""

OutputsOf = Callable[[Mapping[str, Any]], frozenset[str] | None]
"""The output names a step will produce, given its raw `with:`; None when not known in advance."""

PYTHON_PREFIX = "python:"


def _dynamic(_: Mapping[str, Any]) -> frozenset[str] | None:
    return None


@dataclass(frozen=True)
class StepType:
    """A named step implementation with its parameter model and declared outputs."""

    name: str
    run: StepFn
    params: type[BaseModel]
    outputs: OutputsOf = _dynamic
    summary: str = ""
    cancel: CancelFn | None = None
    provider: bool = True
    """Whether its steps may ask for the run's provider's client: a run none of whose steps
    may opens no client (no HTTP client, no local API loaded)."""


class StepRegistry:
    """Built-in step types by name; rejects a second registration under the same name.

    A *family* of types (`together/...`) can be registered lazily: its module, which holds
    them in a registry of its own called `TYPES`, is imported the first time a pipeline asks
    for one of its types, so `validate` of a pipeline made of `core/*` steps never pays for
    the Together steps' imports. (The module is named by a string: the family knows nothing
    of the registry that gathers it.)
    """

    def __init__(self) -> None:
        self._types: dict[str, StepType] = {}
        self._families: dict[str, str] = {}

    def add_family(self, prefix: str, module: str) -> None:
        """Types named `prefix/...` are registered by importing `module` when first needed."""
        self._families[prefix] = module

    def _load(self, prefix: str) -> None:
        module = self._families.pop(prefix, None)
        if module is not None:
            family: StepRegistry = importlib.import_module(module).TYPES
            for step_type in family.types():
                self.register(step_type)

    def _load_all(self) -> None:
        for prefix in list(self._families):
            self._load(prefix)

    def register(self, step_type: StepType) -> StepType:
        if step_type.name in self._types:
            msg = f"step type {step_type.name!r} is already registered"
            raise ValueError(msg)
        self._types[step_type.name] = step_type
        return step_type

    def step(
        self,
        name: str,
        *,
        params: type[BaseModel],
        outputs: OutputsOf | frozenset[str] | None = None,
        cancel: CancelFn | None = None,
        provider: bool = True,
    ) -> Callable[[StepFn], StepFn]:
        """Register the decorated async function as step type `name`."""

        def decorate(fn: StepFn) -> StepFn:
            declared: OutputsOf
            if isinstance(outputs, frozenset):
                fixed = outputs
                declared = lambda _with: fixed  # noqa: E731
            else:
                declared = outputs or _dynamic
            summary = (inspect.getdoc(fn) or "").split("\n", 1)[0]
            self.register(StepType(name, fn, params, declared, summary, cancel, provider))
            return fn

        return decorate

    def copy(self) -> StepRegistry:
        """A new registry holding the same types, to extend without touching this one."""
        self._load_all()
        clone = StepRegistry()
        clone._types.update(self._types)
        return clone

    def types(self) -> list[StepType]:
        """Every type registered, families loaded."""
        self._load_all()
        return list(self._types.values())

    def names(self) -> list[str]:
        self._load_all()
        return sorted(self._types)

    def resolve(self, uses: str, base_dir: Path) -> StepType:
        """The step type `uses` names; `python:` ones are imported relative to `base_dir`."""
        if uses.startswith(PYTHON_PREFIX):
            return python_step_type(uses[len(PYTHON_PREFIX):].strip(), base_dir)
        if uses not in self._types:
            self._load(uses.partition("/")[0])
        try:
            return self._types[uses]
        except KeyError:
            close = difflib.get_close_matches(uses, self.names(), n=1)
            hint = f"did you mean '{close[0]}'? " if close else ""
            msg = (f"unknown step type '{uses}' ({hint}built-in types: {', '.join(self.names())};"
                   " or python:module:function)")
            raise UnknownStepType(msg) from None


# --- python:module:function -----------------------------------------------------------------

_PYTHON_TYPES: dict[tuple[str, Path], StepType] = hold(
    {}, name="python: step types", why="a user's module is imported and wrapped once")


def _import_function(target: str, base_dir: Path) -> Callable[..., Any]:
    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        msg = f"'python:{target}' must name module:function, e.g. python:mysteps:train"
        raise UnknownStepType(msg)
    folder = str(base_dir)
    if folder not in sys.path:
        # User step modules live beside the pipeline file, as pytest finds conftest beside tests.
        sys.path.insert(0, folder)
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        msg = f"cannot import '{module_name}' for python:{target}: {exc}"
        raise UnknownStepType(msg) from None
    except Exception as exc:  # noqa: BLE001  (a user module that fails at import is bad input)
        msg = f"importing '{module_name}' failed: {type(exc).__name__}: {exc}"
        raise UnknownStepType(msg) from None
    fn = module
    for part in attr.split("."):
        try:
            fn = getattr(fn, part)
        except AttributeError:
            msg = f"module '{module_name}' has no function '{attr}'"
            raise UnknownStepType(msg) from None
    if not callable(fn):
        msg = f"python:{target} is not a function"
        raise UnknownStepType(msg)
    if not inspect.iscoroutinefunction(fn):
        msg = (f"python:{target} must be an async function (async def); "
               "wrap blocking code in anyio.to_thread.run_sync")
        raise UnknownStepType(msg)
    return fn


def _is_context_param(param: inspect.Parameter, hints: Mapping[str, Any]) -> bool:
    return hints.get(param.name) is StepContext or param.name in ("ctx", "context")


def python_step_type(target: str, base_dir: Path) -> StepType:
    """Wrap a user's async function as a step type whose parameters come from its signature.

    `async def train(ctx: StepContext, rows: int, lr: float = 1e-4) -> dict` takes `rows` and
    `lr` from `with:`, validated against their annotations; `ctx` is optional. A single
    parameter annotated with a pydantic model takes the whole `with:` as that model instead.
    """
    key = (target, base_dir)
    if key in _PYTHON_TYPES:
        return _PYTHON_TYPES[key]
    fn = _import_function(target, base_dir)
    try:
        hints = typing.get_type_hints(fn)
    except Exception as exc:  # noqa: BLE001  (unresolvable annotations are the user's to fix)
        msg = f"cannot read the annotations of python:{target}: {exc}"
        raise UnknownStepType(msg) from None
    params = list(inspect.signature(fn).parameters.values())
    wants_context = bool(params) and _is_context_param(params[0], hints)
    if wants_context:
        params = params[1:]
    model_param = None
    if len(params) == 1:
        annotation = hints.get(params[0].name)
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            model_param = annotation
    if model_param is not None:
        model: type[BaseModel] = model_param
    else:
        fields: dict[str, Any] = {}
        for p in params:
            if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD, p.POSITIONAL_ONLY):
                msg = f"python:{target}: parameter '{p.name}' must be a plain named parameter"
                raise UnknownStepType(msg)
            default = ... if p.default is inspect.Parameter.empty else p.default
            fields[p.name] = (hints.get(p.name, Any), default)
        model = create_model(
            f"{fn.__name__}_params", __config__=ConfigDict(extra="forbid"), **fields
        )

    async def run(ctx: StepContext, values: BaseModel) -> Any:
        args: list[Any] = [ctx] if wants_context else []
        if model_param is not None:
            return await fn(*args, values)
        return await fn(*args, **{name: getattr(values, name) for name in model.model_fields})

    step_type = StepType(f"{PYTHON_PREFIX}{target}", run, model, _declared_outputs(hints),
                         (inspect.getdoc(fn) or "").split("\n", 1)[0])
    _PYTHON_TYPES[key] = step_type
    return step_type


def _declared_outputs(hints: Mapping[str, Any]) -> OutputsOf:
    """Output names from a TypedDict or pydantic return annotation; unknown otherwise."""
    returned = hints.get("return")
    names: frozenset[str] | None = None
    if isinstance(returned, type) and issubclass(returned, BaseModel):
        names = frozenset(returned.model_fields)
    elif typing.is_typeddict(returned):
        names = frozenset(typing.get_type_hints(returned))
    if names is None:
        return _dynamic
    fixed = names
    return lambda _with: fixed
