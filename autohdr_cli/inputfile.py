"""Opening a file the user names (a look, a checkpoint) without trusting what it is.

Only regular files are read: a FIFO named ``look.cube`` would block a plain ``open`` forever, and a
device could be read without end. The check and the read use the same open file (no race between them).
No torch or numpy here: a ``.cube`` run uses it too.
"""

from __future__ import annotations

import io
import os
import stat
from pathlib import Path


class InputFileError(Exception):
    """A named input file is missing, unreadable or not a regular file; the message is ``FILE: reason``."""


class SpecialFile(Exception):
    """The path is not a regular file; ``kind`` says what it is (see :func:`special_kind`)."""

    def __init__(self, kind: str):
        super().__init__(kind)
        self.kind = kind


def special_kind(mode: int) -> str | None:
    """'FIFO', 'socket', 'device' or 'folder' for a ``st_mode`` that is not a regular file, else None."""
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISFIFO(mode):
        return "FIFO"
    if stat.S_ISSOCK(mode):
        return "socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "device"
    if stat.S_ISDIR(mode):
        return "folder"
    return "special file"


def open_if_regular(path: str | os.PathLike) -> io.BufferedReader:
    """Open ``path`` for binary reading if it is a regular file; :class:`SpecialFile` if it is not, and
    the ``OSError`` of a missing or unreadable file as it comes.

    The kind is checked with ``stat`` first (a FIFO is never opened), then again on the open file,
    opened non-blocking, so a file swapped for a FIFO in between cannot hang the reader either.
    """
    kind = special_kind(os.stat(path).st_mode)
    if kind is not None:
        raise SpecialFile(kind)
    descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
                         | getattr(os, "O_CLOEXEC", 0))
    try:
        kind = special_kind(os.fstat(descriptor).st_mode)
        if kind is not None:
            raise SpecialFile(kind)
        if hasattr(os, "set_blocking"):
            os.set_blocking(descriptor, True)
        return os.fdopen(descriptor, "rb")
    except BaseException:
        os.close(descriptor)
        raise


def open_regular_file(path: str | os.PathLike) -> io.BufferedReader:
    """Open ``path`` for binary reading if it is a regular file; raises :class:`InputFileError` otherwise."""
    path = Path(path)
    try:
        return open_if_regular(path)
    except SpecialFile as e:
        if e.kind == "folder":
            raise InputFileError(f"{path}: is a folder, not a file") from None
        raise InputFileError(f"{path}: not a regular file (a FIFO, socket or device), so it is not read") from None
    except FileNotFoundError:
        raise InputFileError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise InputFileError(f"{path}: is a folder, not a file") from None
    except OSError as e:
        raise InputFileError(f"{path}: cannot read: {e.strerror or e}") from None
