"""`orchestrator ui`: the web view of the state database."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import TYPE_CHECKING

from orchestrator.cli.parser import EXIT_OK
from orchestrator.cli.session import err, settings_for

if TYPE_CHECKING:
    from orchestrator.settings import Settings
    from orchestrator.views.schedules import Scheduled
    from orchestrator.web.server import WebOptions

__all__ = ["cmd_ui", "web_options", "web_token"]


def web_token(settings: Settings) -> str | None:
    """The token remote requests must carry: ORCH_UI_TOKEN (environment or .env), else the
    contents of the file the setting ui_token_file names; never the config file (see
    `Settings.ui_secret`)."""
    secret = settings.ui_secret()
    return secret.get_secret_value() if secret else None


def web_options(settings: Settings, *, host: str, port: int, allow_remote: bool,
                actions: bool, allow_hosts: Sequence[str] | None,
                scheduled: Sequence[Scheduled] | str) -> WebOptions:
    """Where and how the web view of `ui` or `serve` serves, checked (ConfigError); with
    `actions`, its buttons do what the commands do (made by `runtime.web_actions`)."""
    from pathlib import Path  # noqa: PLC0415

    from orchestrator.runtime import web_actions  # noqa: PLC0415
    from orchestrator.web.server import WebOptions  # noqa: PLC0415  (Starlette, Jinja2)

    served = [] if isinstance(scheduled, str) else list(scheduled)
    return WebOptions(host=host, port=port, allow_remote=allow_remote,
                      token=web_token(settings) if allow_remote else None,
                      actions=web_actions(settings, served) if actions else None,
                      scheduled=scheduled, allow_hosts=allow_hosts or (),
                      artifacts=Path(settings.artifacts_dir).resolve())


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
    from orchestrator.runtime import store_opener  # noqa: PLC0415
    from orchestrator.web.server import serve  # noqa: PLC0415  (Starlette, Jinja2)

    settings = settings_for(args)
    options = web_options(settings, host=args.host, port=args.port,
                          allow_remote=args.allow_remote, actions=args.allow_actions,
                          allow_hosts=args.allow_host, scheduled=_schedules(settings))
    try:
        serve(store_opener(settings, read_only=not args.allow_actions), options, ready=err)
    except KeyboardInterrupt:
        return EXIT_OK
    return EXIT_OK
