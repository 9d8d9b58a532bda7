"""Where ``enhance`` writes: outputs that never leave their folder, and the manifest of how each was made.

Every write goes through :class:`OutputFolder`. Paths are checked lexically (no ``..``, no absolute
part, no separator in a name) and then walked one folder at a time with ``O_NOFOLLOW`` from the
output folder's own descriptor: a sub-folder that is a symlink (into the input, say) is refused, and
the temporary file and the rename that puts it in place both happen inside the folder that was
checked, so no write can land outside the output folder, whatever names, options or a concurrent
change of the tree say. A pre-existing output that is a symlink is replaced by the new file, never
written through.

The manifest (:class:`Manifest`) records, per output, the recipe that made it: the model file's hash
and every option that changes pixels. It lives in ``OUTPUT/.autohdr-manifest/``, one JSON-lines file
per shard, each record appended with one ``O_APPEND`` write, so concurrent ``--shard`` runs on one
output folder never write the same file, and a record torn by a crash is skipped when read.
"""

from __future__ import annotations

import errno
import json
import os
import re
import socket
import threading
import time
from pathlib import Path, PurePosixPath

from .enhancer import UsageError
from .imageio import TEMP_MARKER, temp_name

MANIFEST_FOLDER = ".autohdr-manifest"
_TEMP_PATTERN = re.compile(re.escape(TEMP_MARKER) + r"(\d+)-[0-9a-f]+@([^@/]*)@")
_DIRECTORY_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)


class OutputError(Exception):
    """One output cannot be written safely; the message says why."""


def display(path: str | os.PathLike) -> str:
    """A path as text that can always be printed or stored: bytes that are not UTF-8 become ``\\xNN``."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def check_suffix(suffix: str) -> None:
    """Refuse a ``--suffix`` that could name another folder: separators, ``..``, control characters."""
    bad = [c for c in suffix if c in "/\\" or ord(c) < 32 or c == "\x7f"]
    if bad or ".." in suffix:
        raise UsageError(
            f"--suffix {display(suffix)!r}: must not contain a path separator, '..' or control characters"
        )


def safe_relative(relative: str | os.PathLike) -> PurePosixPath:
    """``relative`` as a normalised path below a folder; raises :class:`OutputError` if it could leave it."""
    text = os.fspath(relative)
    if "\x00" in text:
        raise OutputError("output name contains a NUL byte")
    parts = PurePosixPath(text.replace(os.sep, "/")).parts
    if not parts or text.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise OutputError(f"output path {display(text)!r} would leave the output folder")
    return PurePosixPath(*parts)


def _process_gone(pid: int) -> bool:
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # EPERM: alive, someone else's
        return False
    return False


def remove_stale_temps(directory_fd: int) -> list[str]:
    """Remove our temporary files in a folder whose writing process is gone (same host, pid dead).

    Temporary files of live processes, of other hosts and of older autohdr versions (no pid in the
    name) are left alone. Returns the names removed.
    """
    removed = []
    host = socket.gethostname()
    for name in os.listdir(directory_fd):
        match = _TEMP_PATTERN.match(name)
        if match is None or match.group(2) != host or not _process_gone(int(match.group(1))):
            continue
        try:
            os.unlink(name, dir_fd=directory_fd)
            removed.append(name)
        except FileNotFoundError:
            pass  # another run removed it first
    return removed


class OutputFolder:
    """The output folder, written only from inside (see the module docstring)."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self._cleaned: set[PurePosixPath] = set()
        self._lock = threading.Lock()
        self.stale_removed: list[str] = []

    def _open_root(self, create: bool) -> int | None:
        if create:
            self.root.mkdir(parents=True, exist_ok=True)
        try:
            return os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | getattr(os, "O_CLOEXEC", 0))
        except FileNotFoundError:
            return None

    def _open_folder(self, folder: PurePosixPath, create: bool) -> int | None:
        """A descriptor of ``root/folder`` reached without following any symlink, or None if missing."""
        fd = self._open_root(create)
        if fd is None:
            return None
        try:
            for part in folder.parts:
                try:
                    child = os.open(part, _DIRECTORY_FLAGS, dir_fd=fd)
                except FileNotFoundError:
                    if not create:
                        os.close(fd)
                        return None
                    try:
                        os.mkdir(part, dir_fd=fd)
                    except FileExistsError:
                        pass  # made by a concurrent run: open it below like any other
                    child = os.open(part, _DIRECTORY_FLAGS, dir_fd=fd)
                os.close(fd)
                fd = child
        except OSError as e:
            os.close(fd)
            if e.errno in (errno.ELOOP, errno.ENOTDIR):
                raise OutputError(
                    f"{display(self.root / folder)}: a part of it is a symlink or not a folder; "
                    "outputs are never written through symlinks"
                ) from None
            raise
        if create:
            with self._lock:
                first = folder not in self._cleaned
                self._cleaned.add(folder)
            if first:
                removed = [display(self.root / folder / n) for n in remove_stale_temps(fd)]
                with self._lock:
                    self.stale_removed += removed
        return fd

    def lstat(self, relative: PurePosixPath) -> os.stat_result | None:
        """The entry at ``relative`` (of any kind, symlinks not followed), or None if there is none."""
        relative = safe_relative(relative)
        fd = self._open_folder(relative.parent, create=False)
        if fd is None:
            return None
        try:
            return os.stat(relative.name, dir_fd=fd, follow_symlinks=False)
        except FileNotFoundError:
            return None
        finally:
            os.close(fd)

    def exists(self, relative: PurePosixPath) -> bool:
        """Whether an entry (of any kind, symlinks not followed) is at ``relative``."""
        return self.lstat(relative) is not None

    def write(self, relative: PurePosixPath, data: bytes) -> os.stat_result:
        """Write ``data`` at ``relative`` atomically (a temporary file beside it, then a rename); returns
        the written file's ``stat``."""
        relative = safe_relative(relative)
        fd = self._open_folder(relative.parent, create=True)
        temporary = temp_name(relative.name)
        try:
            out = os.open(
                temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0),
                0o666, dir_fd=fd,
            )
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(out, view):]
            finally:
                os.close(out)
            os.replace(temporary, relative.name, src_dir_fd=fd, dst_dir_fd=fd)
            return os.stat(relative.name, dir_fd=fd, follow_symlinks=False)
        except BaseException:
            try:
                os.unlink(temporary, dir_fd=fd)
            except OSError:
                pass
            raise
        finally:
            os.close(fd)

    def append(self, relative: PurePosixPath, line: str) -> None:
        """Append one line to a file at ``relative`` in one ``O_APPEND`` write (symlinks refused)."""
        relative = safe_relative(relative)
        fd = self._open_folder(relative.parent, create=True)
        try:
            out = os.open(
                relative.name,
                os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0),
                0o666, dir_fd=fd,
            )
        finally:
            os.close(fd)
        try:
            os.write(out, line.encode("utf-8"))
        finally:
            os.close(out)


def recipe_id(recipe: dict) -> str:
    """A short stable name for a recipe (the hash of its canonical JSON)."""
    import hashlib

    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]


class Manifest:
    """Which recipe made each output in a folder, read from every shard's file, appended to one."""

    def __init__(self, folder: OutputFolder, shard: tuple[int, int] | None):
        self.folder = folder
        self.name = PurePosixPath(MANIFEST_FOLDER, f"shard-{shard[0]}-of-{shard[1]}.jsonl" if shard else "all.jsonl")
        self.made_by: dict[str, tuple[int, str, list]] = {}  # output -> (time, recipe id, [size, mtime_ns])
        self.recipes: dict[str, dict] = {}
        self._announced: set[str] = set()
        self._read()

    def _read(self) -> None:
        fd = self.folder._open_folder(PurePosixPath(MANIFEST_FOLDER), create=False)
        if fd is None:
            return
        try:
            names = sorted(n for n in os.listdir(fd) if n.endswith(".jsonl"))
            for name in names:
                try:
                    handle = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=fd)
                except OSError:
                    continue  # a symlink or something else planted there: not ours
                with os.fdopen(handle, "rb") as f:
                    for line in f:
                        self._take(line)
        finally:
            os.close(fd)

    def _take(self, line: bytes) -> None:
        try:
            record = json.loads(line)
        except ValueError:
            return  # torn by a crash mid-write
        if not isinstance(record, dict):
            return
        if isinstance(record.get("made_with"), dict) and isinstance(record.get("recipe"), str):
            self.recipes[record["recipe"]] = record["made_with"]
        elif isinstance(record.get("output"), str) and isinstance(record.get("recipe"), str):
            stamp = record.get("time") if isinstance(record.get("time"), int) else 0
            previous = self.made_by.get(record["output"])
            if previous is None or stamp >= previous[0]:
                self.made_by[record["output"]] = (stamp, record["recipe"], record.get("file"))

    def recipe_of(self, relative: PurePosixPath, found: os.stat_result) -> str | None:
        """The recipe id recorded for an output, or None when it has no record or the file there is
        not the one recorded (another size or modification time: replaced by hand or another tool)."""
        entry = self.made_by.get(relative.as_posix())
        if entry is None or entry[2] != _identity(found):
            return None
        return entry[1]

    def record(self, relative: PurePosixPath, recipe: dict, written: os.stat_result) -> None:
        """Record that ``recipe`` made the file ``written`` at ``relative`` (after it was written)."""
        identifier = recipe_id(recipe)
        if identifier not in self._announced:
            self._announced.add(identifier)
            self.folder.append(self.name, json.dumps({"recipe": identifier, "made_with": recipe}) + "\n")
        stamp = time.time_ns()
        file = _identity(written)
        record = {"output": relative.as_posix(), "recipe": identifier, "time": stamp, "file": file}
        self.folder.append(self.name, json.dumps(record) + "\n")
        self.made_by[relative.as_posix()] = (stamp, identifier, file)
        self.recipes[identifier] = recipe


def _identity(found: os.stat_result) -> list:
    return [found.st_size, found.st_mtime_ns]


def differences(old: dict | None, new: dict) -> str:
    """What differs between two recipes, in a few words (``strength 0.5 -> 1.0, model ...``)."""
    if old is None:
        return "made with settings this run cannot read"
    changed = [f"{key} {old.get(key)!r} -> {new.get(key)!r}" for key in sorted(new) if old.get(key) != new.get(key)]
    return ", ".join(changed) or "made differently"
