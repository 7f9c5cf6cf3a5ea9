"""Step types: the registry, the context a step receives, and the built-in steps."""
