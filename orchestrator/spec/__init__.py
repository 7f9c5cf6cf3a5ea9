"""Pipeline files: the model, YAML loading with file:line errors, expressions and the step graph."""

from orchestrator.spec.loader import load_pipeline, parse_pipeline
from orchestrator.spec.pipeline import Pipeline, Step

__all__ = ["Pipeline", "Step", "load_pipeline", "parse_pipeline"]
