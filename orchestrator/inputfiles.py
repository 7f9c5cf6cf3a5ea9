"""Opening files people hand us (pipelines, datasets, settings): regular files only, bounded.

A path on the command line can name anything: `/dev/zero` reads forever, a FIFO blocks the
open until someone writes to it, a directory fails deep inside a parser. Everything read on a
user's word goes through here and is refused in one line instead, before a byte is read: the
open never blocks (`O_NONBLOCK`, which a regular file ignores), and the kind is checked on the
open descriptor, so nothing can be swapped in between the check and the read.
"""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path
from typing import BinaryIO

__all__ = [
    "NotUTF8",
    "UnreadableFile",
    "file_sha256",
    "format_size",
    "open_regular",
    "read_regular",
    "utf8_text",
]

_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"),
          (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
          (stat.S_ISSOCK, "a socket"))


class UnreadableFile(Exception):
    """A path that cannot be read as a file; the message is one line, without the path."""


def format_size(size: int) -> str:
    """`8388608` as `8 MiB`: sizes in messages, the way people set them."""
    if size < 1024:
        return f"{size} bytes"
    value, unit = size / 1024, "KiB"
    for larger in ("MiB", "GiB"):
        if value < 1024:
            break
        value, unit = value / 1024, larger
    return f"{value:.0f} {unit}" if value.is_integer() else f"{value:.1f} {unit}"


def open_regular(path: str | Path) -> BinaryIO:
    """`path` opened for reading in binary; raises UnreadableFile for anything but a regular
    file (missing, a directory, a FIFO, a device, not permitted)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise UnreadableFile("no such file") from None
    except IsADirectoryError:
        raise UnreadableFile("is a directory, not a regular file") from None
    except OSError as exc:
        raise UnreadableFile(f"cannot read: {exc.strerror or exc}") from None
    mode = os.fstat(fd).st_mode
    kind = next((kind for test, kind in _KINDS if test(mode)), None)
    if kind is not None:
        os.close(fd)
        raise UnreadableFile(f"is {kind}, not a regular file")
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


def read_regular(path: str | Path, *, max_bytes: int, setting: str | None = None) -> bytes:
    """The bytes of the regular file `path`, refused (UnreadableFile) above `max_bytes`,
    naming the `setting` that raises the bound, if one does."""
    with open_regular(path) as file:
        size = os.fstat(file.fileno()).st_size
        data = file.read(max_bytes + 1) if size <= max_bytes else b""
        if size > max_bytes or len(data) > max_bytes:
            bound = f"; setting {setting}" if setting else ""
            msg = (f"is larger than {format_size(max_bytes)} ({format_size(max(size, len(data)))}"
                   f"{bound})")
            raise UnreadableFile(msg)
        return data


class NotUTF8(UnreadableFile):
    """A file's bytes are not UTF-8 text: where the first bad byte is (1-based)."""

    def __init__(self, line: int, col: int, byte: int) -> None:
        super().__init__(f"not UTF-8 text: byte 0x{byte:02x} at line {line}, column {col}")
        self.line, self.col, self.byte = line, col, byte


def utf8_text(data: bytes) -> str:
    """`data` as text; NotUTF8 naming the line and column of the first bad byte."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        start = data.rfind(b"\n", 0, exc.start) + 1
        col = len(data[start:exc.start].decode("utf-8", errors="replace")) + 1
        raise NotUTF8(line, col, data[exc.start]) from None


def file_sha256(path: Path) -> str:
    """The SHA-256 of a file's bytes, read in 1 MiB blocks (memory stays flat)."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
