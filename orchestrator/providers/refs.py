"""Which provider a run is bound to: its kind and where it is, never a key.

Apart from the clients (`pool`): the engine, the store's readers and the Python API name
providers without loading an HTTP client.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from orchestrator.settings import Settings

__all__ = ["ProviderRef", "provider_ref"]


@dataclasses.dataclass(frozen=True)
class ProviderRef:
    """A provider a run is bound to: its kind and where it is (never a key)."""

    name: str
    """`local` (the local API in-process) or `together` (Together's HTTP API, or anything that
    speaks it, such as `orchestrator local-api`)."""
    url: str
    """Together's base URL, or the local API's data folder (absolute)."""

    def __str__(self) -> str:
        return f"{self.name} ({self.url})"


def provider_ref(settings: Settings, name: str | None = None) -> ProviderRef:
    """The provider `name` (default: the `provider` setting) as these settings place it."""
    chosen = name or settings.provider
    if chosen == "local":
        return ProviderRef("local", str(Path(settings.local_data_dir).expanduser().resolve()))
    return ProviderRef("together", settings.together_base_url.rstrip("/"))
