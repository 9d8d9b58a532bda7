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


def open_regular_file(path: str | os.PathLike) -> io.BufferedReader:
    """Open ``path`` for binary reading if it is a regular file; raises :class:`InputFileError` otherwise.

    The file is opened non-blocking (so a FIFO does not wait for a writer), checked with ``fstat``, and
    handed back as an ordinary blocking file object.
    """
    path = Path(path)
    try:
        descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except FileNotFoundError:
        raise InputFileError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise InputFileError(f"{path}: is a folder, not a file") from None
    except OSError as e:
        raise InputFileError(f"{path}: cannot read: {e.strerror or e}") from None
    try:
        mode = os.fstat(descriptor).st_mode
        if stat.S_ISDIR(mode):
            raise InputFileError(f"{path}: is a folder, not a file")
        if not stat.S_ISREG(mode):
            raise InputFileError(f"{path}: not a regular file (a FIFO, socket or device), so it is not read")
        if hasattr(os, "set_blocking"):
            os.set_blocking(descriptor, True)
        return os.fdopen(descriptor, "rb")
    except BaseException:
        os.close(descriptor)
        raise
