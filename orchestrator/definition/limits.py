"""How much of a pipeline file the loader will read, nest, expand and multiply.

Pipeline files come from people and scripts we do not control. Each bound makes a hostile or
mistaken file a one-line refusal in well under a second, instead of gigabytes of memory or a
process that never returns: a 413-byte YAML alias bomb expands to billions of nodes, a value
nested thousands deep overflows the stack, and a matrix of ten axes is a bill nobody meant.

Each bound is a setting (`max_pipeline_bytes`, `max_yaml_nodes`, `max_yaml_depth`,
`max_yaml_alias_nodes`, `max_matrix_cells`); the defaults leave room for pipelines far larger
than any written by hand.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DEFAULT_LIMITS", "MAX_PIPELINE_BYTES", "PipelineLimits"]

MAX_PIPELINE_BYTES = 64 * 2**20
"""The most the setting max_pipeline_bytes may allow: a run stores its pipeline's text, and
the store bounds every row it holds (a 10,000-step chain is under 1 MiB)."""


@dataclass(frozen=True)
class PipelineLimits:
    """The bounds one load of a pipeline file observes."""

    max_bytes: int = 8 * 2**20
    """A pipeline file's size; a 10,000-step chain is about 1 MiB."""
    max_nodes: int = 200_000
    """How many nodes (keys, values, list items) a file may hold, aliases expanded; a
    10,000-step chain has about 100,000. Each costs about 1 KiB while the file is checked."""
    max_depth: int = 64
    """How deeply mappings and lists may nest; a real pipeline needs fewer than ten levels."""
    max_alias_nodes: int = 100_000
    """How many nodes YAML aliases (`*name`) may add in all, counting what they expand to."""
    max_cells: int = 10_000
    """How many runs one matrix may make."""


DEFAULT_LIMITS = PipelineLimits()
