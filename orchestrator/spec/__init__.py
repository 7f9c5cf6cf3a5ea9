"""Pipeline files: the model, YAML loading with file:line errors, expressions and the step graph."""

from orchestrator.spec.loader import Pipeline, Step, load_pipeline, parse_pipeline

__all__ = ["Pipeline", "Step", "load_pipeline", "parse_pipeline"]
