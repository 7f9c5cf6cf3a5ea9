"""`orchestrator promote BATCH`: the model of a batch's best cell becomes what an alias serves.

The cells are ranked by the batch's objective (its pipeline's `select:`, or `--by`); the
winner's model gets the alias (`production` unless `--alias`) in one write that records
who, when and why, and that adds nothing when the alias points there already: promoting
twice, or again after a crash, moves it once.
"""

from __future__ import annotations

import argparse
import getpass
import socket
from typing import TYPE_CHECKING, Any

from orchestrator.cli.parser import EXIT_FAILED, EXIT_OK
from orchestrator.cli.session import (
    err,
    out,
    print_json,
    store_settings_for,
    with_store,
)
from orchestrator.errors import ConfigError

if TYPE_CHECKING:
    from orchestrator.store.base import StateStore
    from orchestrator.store.records import BatchRecord
    from orchestrator.views.batches import CellSummary, Objective, Selection

__all__ = ["batch_objective", "cmd_promote", "who"]


def who() -> str:
    """Who a promotion from this terminal is recorded as: `user@host`."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def batch_objective(batch: BatchRecord, cells: list[CellSummary], by: str | None,
                    maximize: bool | None) -> Objective | None:
    """`--by` (and `--max`/`--min`), else the `select:` of the pipeline the cells ran; None
    when neither names one. ConfigError for an objective that is not one."""
    from orchestrator.views.batches import Objective, declared_objective  # noqa: PLC0415

    if by is not None:
        try:
            return Objective.of(by, maximize)
        except ValueError as exc:
            raise ConfigError(f"--by: {exc}") from None
    declared = declared_objective(batch, cells)
    if declared is None or maximize is None:
        return declared
    return Objective(declared.by, maximize)


def cmd_promote(args: argparse.Namespace) -> int:
    from orchestrator.store.records import AliasMove  # noqa: PLC0415
    from orchestrator.views.batches import load_batch, select  # noqa: PLC0415

    settings = store_settings_for(args)

    async def promote(store: StateStore) -> tuple[Selection, AliasMove | None, str | None]:
        batch, cells = await load_batch(store, args.batch_id)
        objective = batch_objective(batch, cells, args.by, args.maximize)
        if objective is None:
            msg = (f"batch {batch.id}'s pipeline names no objective (select: {{by: "
                   f"eval.exact_match}}): give one with --by")
            raise ConfigError(msg)
        selection = select(cells, objective)
        winner = selection.winner
        current = next((a.model for a in await store.aliases() if a.alias == args.alias),
                       None)
        if winner is None or winner.model_name is None or args.dry_run:
            return selection, None, current
        value = selection.ranked[0][1]
        reason = args.why or (f"best of batch {batch.id} by {objective}: {value:.4g} "
                              f"({winner.run.id})")
        moved = await store.move_alias(AliasMove(args.alias, winner.model_name, who(),
                                                 reason, source=batch.id))
        return selection, moved, current

    selection, moved, current = with_store(settings, promote)
    winner = selection.winner
    if args.output == "json":
        document: dict[str, Any] = {"batch": args.batch_id, "alias": args.alias,
                                    "selection": selection.to_json(),
                                    "moved": moved is not None, "dry_run": args.dry_run,
                                    "model": winner.model_name if winner else None,
                                    "previous": current}
        print_json(document)
    else:
        from orchestrator.cli.render import selection_lines  # noqa: PLC0415

        out(f"batch {args.batch_id} ranked by {selection.objective}:")
        for line in selection_lines(selection):
            out(line)
    if winner is None:
        err(f"no cell of batch {args.batch_id} can be promoted: none succeeded with a model "
            f"and a {selection.objective.by}")
        return EXIT_FAILED
    if args.output != "json":
        if args.dry_run:
            out(f"{args.alias} would point at {winner.model_name} (now: {current or 'none'}); "
                "nothing moved (--dry-run)")
        elif moved is None:
            out(f"{args.alias} already points at {winner.model_name}; nothing moved")
        else:
            out(f"{args.alias} -> {winner.model_name} (was {current or 'none'})")
    return EXIT_OK
