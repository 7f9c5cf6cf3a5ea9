"""`orchestrator state`: the state database itself (its schema, and moving its history)."""

from __future__ import annotations

import argparse
import contextlib
import os
import stat
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING

from orchestrator.cli.parser import EXIT_OK
from orchestrator.cli.session import err, out, settings_for, with_store
from orchestrator.errors import StateStoreInvalid
from orchestrator.store.urls import shown_url

if TYPE_CHECKING:
    from orchestrator.settings import Settings
    from orchestrator.store.base import StateStore
    from orchestrator.store.transfer import HistoryRow

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
    if args.action == "export":
        return _export(settings, args.file, where)
    return _import(settings, args.file, where)


def _export(settings: Settings, target: str, where: str) -> int:
    if target == "-":
        counts = with_store(settings, lambda store: _export_to(store, sys.stdout.buffer))
    else:
        with _replacing(Path(target)) as stream:
            counts = with_store(settings, lambda store: _export_to(store, stream))
    err(f"exported {_counted(counts)} from {where}")
    return EXIT_OK


@contextlib.contextmanager
def _replacing(path: Path) -> Iterator[IO[bytes]]:
    """A stream whose bytes become `path` once the block ends well, and never before: they
    go to a new file created beside it under a name no one had (exclusively: a link planted
    at a guessable name is never followed), then renamed over `path`. `path` must be absent
    or a regular file: a link, a FIFO or a device (/dev/full) is refused, never replaced."""
    try:
        kind = _kind(path.lstat().st_mode)
    except FileNotFoundError:
        kind = None
    except OSError as exc:
        msg = f"{path}: cannot write: {exc.strerror or exc}"
        raise StateStoreInvalid(msg) from None
    if kind is not None:
        msg = f"{path}: is {kind}, not a regular file; it is left as it is (choose another name)"
        raise StateStoreInvalid(msg)
    try:
        fd, partial = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial",
                                       dir=path.parent)
    except OSError as exc:
        msg = f"{path}: cannot write: {exc.strerror or exc}"
        raise StateStoreInvalid(msg) from None
    try:
        with os.fdopen(fd, "wb") as stream:
            yield stream
        Path(partial).replace(path)
    except OSError as exc:
        Path(partial).unlink(missing_ok=True)
        msg = f"{path}: cannot write: {exc.strerror or exc}"
        raise StateStoreInvalid(msg) from None
    except BaseException:
        Path(partial).unlink(missing_ok=True)
        raise


def _kind(mode: int) -> str | None:
    """What a path is when it is not a regular file (None when it is)."""
    kinds = ((stat.S_ISLNK, "a symbolic link"), (stat.S_ISDIR, "a directory"),
             (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
             (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))
    if stat.S_ISREG(mode):
        return None
    return next((kind for test, kind in kinds if test(mode)), "not a regular file")


async def _export_to(store: StateStore, stream: IO[bytes]) -> dict[str, int]:
    from orchestrator.store.transfer import Exporter  # noqa: PLC0415

    exporter = Exporter(stream)
    await store.export_history(exporter)
    return exporter.counts


def _import(settings: Settings, source: str, where: str) -> int:
    from orchestrator.store.transfer import HISTORY, read_history  # noqa: PLC0415

    path = Path(source)
    try:
        stream = path.open("rb")
    except OSError as exc:
        msg = f"{source}: cannot read: {exc.strerror or exc}"
        raise StateStoreInvalid(msg) from None
    counts = dict.fromkeys(HISTORY, 0)

    def counted() -> Iterator[HistoryRow]:
        for item in read_history(path, stream):
            counts[item[1]] += 1
            yield item

    with stream:
        with_store(settings, lambda store: store.import_history(counted(), source=source))
    err(f"imported {_counted(counts)} into {where}")
    return EXIT_OK


def _counted(counts: dict[str, int]) -> str:
    """The rows of each table as a person counts them (texts are part of runs)."""
    return ", ".join(f"{n} {table}" for table, n in counts.items() if table != "pipeline_texts")
