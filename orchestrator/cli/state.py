"""`orchestrator state`: the state database itself (its schema, and moving its history)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from orchestrator.cli import EXIT_OK
from orchestrator.cli.session import out, settings_for, with_store
from orchestrator.store.urls import shown_url

if TYPE_CHECKING:
    from orchestrator.store.base import StateStore

__all__ = ["cmd_state"]


def cmd_state(args: argparse.Namespace) -> int:
    settings = settings_for(args)
    where = shown_url(settings.state_url)
    if args.action == "migrate":
        async def opened(store: StateStore) -> tuple[int, int] | None:
            return store.schema_change

        change = with_store(settings, opened)
        if change is None:
            out(f"{where}: schema already current; nothing to do")
        else:
            old, new = change
            what = "created" if old == 0 else f"migrated from schema {old}"
            out(f"{where}: {what} (schema {new})")
        return EXIT_OK
    msg = f"state {args.action}: not built yet"
    raise NotImplementedError(msg)
