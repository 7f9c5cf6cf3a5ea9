"""The built-in step types (`core/*`, `together/*`, `registry/*`), and pipelines loaded with
them: what a pipeline file may `uses:` out of the box.

Each family loads when a pipeline first names one of its types (see `StepRegistry`), so
`validate` of a `core/*` pipeline never imports the Together client.
"""

from __future__ import annotations

from pathlib import Path

from orchestrator.definition.limits import DEFAULT_LIMITS, PipelineLimits
from orchestrator.definition.loader import load_file, load_text
from orchestrator.definition.pipeline import Pipeline
from orchestrator.steps.registry import StepRegistry

__all__ = ["BUILTIN", "builtin_registry", "load_pipeline", "parse_pipeline", "stored_pipeline"]

BUILTIN = StepRegistry()
BUILTIN.add_family("core", "orchestrator.steps.core")
BUILTIN.add_family("together", "orchestrator.steps.together")
BUILTIN.add_family("registry", "orchestrator.steps.model_registry")


def builtin_registry() -> StepRegistry:
    """The registry of the built-in types (extend a `.copy()` of it, never it)."""
    return BUILTIN


def load_pipeline(path: str | Path, *, registry: StepRegistry | None = None,
                  limits: PipelineLimits = DEFAULT_LIMITS) -> Pipeline:
    """Read and validate a pipeline file whose steps use `registry`'s types (by default the
    built-ins); raises PipelineInvalid listing every problem."""
    return load_file(path, registry=registry or BUILTIN, limits=limits)


def parse_pipeline(text: str, path: Path, *, registry: StepRegistry | None = None,
                   limits: PipelineLimits = DEFAULT_LIMITS) -> Pipeline:
    """Validate pipeline `text` as if read from `path` (a resumed run's stored text)."""
    return load_text(text, path, registry=registry or BUILTIN, limits=limits)


def stored_pipeline(text: str, path: str) -> Pipeline | None:
    """A run's (or batch's) stored pipeline, parsed; None if the text no longer loads (a step
    type since removed, say): its readers then show what is stored."""
    try:
        return parse_pipeline(text, Path(path))
    except Exception:  # noqa: BLE001  (any reason at all: a reader must still show the run)
        return None
