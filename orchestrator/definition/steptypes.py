"""What the loader needs of a step type, and of the catalogue that names them.

The pipeline model checks a step's `uses:` and literal `with:` against its type, but the types
themselves (and the context they run with) live above it, in `orchestrator.steps`. These
protocols are the seam: `steps` implements them, the loader takes a catalogue as an argument.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

from pydantic import BaseModel

__all__ = ["StepCatalogue", "StepKind", "UnknownStepType"]


class StepKind(Protocol):
    """A step type as a pipeline sees it: a name, a parameter model, declared outputs, and
    the functions that run it and undo its remote work (called by the engine)."""

    @property
    def name(self) -> str: ...

    @property
    def params(self) -> type[BaseModel]: ...

    @property
    def outputs(self) -> Callable[[Mapping[str, Any]], frozenset[str] | None]: ...

    @property
    def run(self) -> Callable[[Any, Any], Awaitable[Any]]: ...

    @property
    def cancel(self) -> Callable[[Any], Awaitable[None]] | None: ...

    @property
    def provider(self) -> bool:
        """Whether its steps may ask for the run's provider's client."""
        ...


class StepCatalogue(Protocol):
    """Step types by the name a pipeline's `uses:` gives."""

    def resolve(self, uses: str, base_dir: Path) -> StepKind:
        """The type `uses` names (`python:` ones relative to `base_dir`); raises
        UnknownStepType, saying why and what exists."""
        ...


class UnknownStepType(LookupError):
    """`uses:` names nothing that can be run; the message says why and what exists."""
