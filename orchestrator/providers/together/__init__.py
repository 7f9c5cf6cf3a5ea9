"""The Together AI provider: its training-data rules (and, next, its HTTP client)."""
