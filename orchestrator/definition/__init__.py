"""Pipeline files: the model, YAML loading with file:line errors, expressions and the step graph.

Import from the modules (`definition.pipeline`, `definition.loader`, ...): this package
re-exports nothing, so that a command needing one small part (the inputs of `-i`) does not load
the whole loader.
"""
