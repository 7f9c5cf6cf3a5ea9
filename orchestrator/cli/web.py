"""`orchestrator ui`: the web view of the state database."""

from __future__ import annotations

import argparse
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING

from orchestrator.cli import EXIT_OK
from orchestrator.cli.session import err, settings_for

if TYPE_CHECKING:
    from orchestrator.schedule.scheduler import Scheduled
    from orchestrator.settings import Settings
    from orchestrator.store.base import StateStore

__all__ = ["cmd_ui", "web_token"]


def web_token(settings: Settings) -> str | None:
    """The token remote requests must carry (the setting ui_token), if set."""
    return settings.ui_token.get_secret_value() if settings.ui_token else None


def _schedules(settings: Settings) -> list[Scheduled] | str:
    """The schedules the page shows (setting schedule_paths), or why they cannot be read:
    the page serves either way."""
    from orchestrator.errors import OrchestratorError  # noqa: PLC0415
    from orchestrator.schedule.scheduler import load_scheduled  # noqa: PLC0415

    try:
        return load_scheduled(settings.schedule_paths, limits=settings.pipeline_limits)
    except OrchestratorError as exc:
        return str(exc)


def cmd_ui(args: argparse.Namespace) -> int:
    from orchestrator.store.opening import open_store  # noqa: PLC0415
    from orchestrator.web.server import WebOptions, serve  # noqa: PLC0415  (Starlette, Jinja2)

    settings = settings_for(args)

    def opened() -> AbstractAsyncContextManager[StateStore]:
        # Without actions the page can only read: its connections refuse every write.
        return open_store(settings.state_url, durability=settings.durability,
                          busy_timeout=settings.busy_timeout, read_only=not args.allow_actions)

    options = WebOptions(host=args.host, port=args.port, allow_remote=args.allow_remote,
                         token=web_token(settings), actions=args.allow_actions,
                         scheduled=_schedules(settings))
    try:
        serve(opened, options, ready=err)
    except KeyboardInterrupt:
        return EXIT_OK
    return EXIT_OK
