"""The provider a process's steps talk to, built from settings: the local API or Together."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from orchestrator.errors import SettingsInvalid
from orchestrator.log import REDACTOR
from orchestrator.providers.together.client import TogetherClient

if TYPE_CHECKING:
    from orchestrator.settings import Settings

__all__ = ["open_provider"]


@asynccontextmanager
async def open_provider(settings: Settings) -> AsyncIterator[TogetherClient]:
    """A client for `settings.provider`: `local` runs the local API in this process (no port),
    `together` talks to `together_base_url` with TOGETHER_API_KEY."""
    timeout = settings.request_timeout
    if settings.provider == "local":
        from orchestrator.localapi import LocalAPI, LocalAPIConfig, LocalTransport  # noqa: PLC0415
        from orchestrator.localapi.transport import BASE_URL  # noqa: PLC0415

        config = LocalAPIConfig.from_settings(settings)
        REDACTOR.add([config.api_key])
        client = TogetherClient(api_key=config.api_key, base_url=BASE_URL,
                                transport=LocalTransport(LocalAPI(config)), timeout=timeout)
    else:
        key = settings.together_api_key
        if key is None or not key.get_secret_value():
            msg = ("provider 'together' needs an API key: export TOGETHER_API_KEY=... (or put "
                   "it in .env), or use --provider local")
            raise SettingsInvalid(msg)
        REDACTOR.add([key.get_secret_value()])
        client = TogetherClient(api_key=key.get_secret_value(),
                                base_url=settings.together_base_url, timeout=timeout)
    async with client:
        yield client
