"""`orchestrator ui`: the web view of the state database."""

from __future__ import annotations

import argparse
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING

from orchestrator.cli import EXIT_OK
from orchestrator.cli.session import err, settings_for

if TYPE_CHECKING:
    from orchestrator.store.base import StateStore

__all__ = ["cmd_ui"]


def cmd_ui(args: argparse.Namespace) -> int:
    from orchestrator.store.opening import open_store  # noqa: PLC0415
    from orchestrator.web.server import serve  # noqa: PLC0415  (Starlette, Jinja2, uvicorn)

    settings = settings_for(args)

    def opened() -> AbstractAsyncContextManager[StateStore]:
        return open_store(settings.state_url, durability=settings.durability,
                          busy_timeout=settings.busy_timeout)

    token = settings.ui_token.get_secret_value() if settings.ui_token else None
    try:
        serve(opened, host=args.host, port=args.port, ready=err,
              allow_remote=args.allow_remote, token=token, actions=args.allow_actions)
    except KeyboardInterrupt:
        return EXIT_OK
    return EXIT_OK
