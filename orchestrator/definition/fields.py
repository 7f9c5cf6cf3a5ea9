"""Field types the pydantic models of pipeline files, settings and step parameters share."""

from __future__ import annotations

from typing import Annotated

from pydantic import BeforeValidator, WithJsonSchema

from orchestrator.durations import DURATION_SCHEMA, parse_duration

__all__ = ["Duration"]

Duration = Annotated[float, BeforeValidator(parse_duration), WithJsonSchema(DURATION_SCHEMA)]
"""Accepts what `parse_duration` accepts (seconds, or `500ms`, `30s`, `1h30m`...), holds
seconds; in a JSON Schema, either form."""
