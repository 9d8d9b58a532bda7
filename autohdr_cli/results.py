"""What an ``enhance`` run tells: one :class:`FileResult` per photo, the :class:`Summary`, and the
``--report`` file (:class:`ReportWriter`) that streams the results as JSON lines or CSV."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path

from .enhancer import UsageError
from .outputs import display


@dataclass
class FileResult:
    """What happened to one photo; one row of ``--report``."""

    input: str
    output: str
    status: str  # done | skipped | failed | planned
    seconds: float = 0.0
    megapixels: float = 0.0
    error: str = ""
    warning: str = ""


@dataclass
class Listing:
    """What a walk of the input found besides the jobs: photo files seen (any shard), what was not read."""

    photos: int = 0
    unread: list[str] = field(default_factory=list)  # RAW, HEIC... by name
    symlinked_folders: list[str] = field(default_factory=list)


@dataclass
class Summary:
    """Counts and timing of a whole run."""

    done: int = 0
    skipped: int = 0
    failed: int = 0
    planned: int = 0
    seconds: float = 0.0
    megapixels: float = 0.0
    interrupted: bool = False
    results: list[FileResult] = field(default_factory=list)
    listing: Listing = field(default_factory=Listing)
    unrecorded: int = 0  # existing outputs kept that the manifest does not know
    report_error: str = ""
    stale_temps_removed: list[str] = field(default_factory=list)

    @property
    def mp_per_second(self) -> float:
        """Megapixels enhanced per second of wall time."""
        return self.megapixels / self.seconds if self.seconds > 0 else 0.0

    @property
    def no_photos(self) -> bool:
        """The input holds no photo we read at all (not: this shard of it is empty)."""
        return self.listing.photos == 0

    def line(self) -> str:
        """The one-line summary printed at the end of a run."""
        head = "interrupted: " if self.interrupted else ""
        if self.planned:
            return f"{head}planned {self.planned}, skipped {self.skipped}, failed {self.failed}"
        return (
            f"{head}done {self.done}, skipped {self.skipped}, failed {self.failed} "
            f"in {self.seconds:.1f} s ({self.mp_per_second:.1f} MP/s)"
        )

    def notes(self) -> list[str]:
        """Lines after the summary: files and folders not read, outputs kept without a record."""
        lines = []
        if self.listing.unread:
            lines.append(f"not read: {_some(self.listing.unread)} (RAW, HEIC and other formats autohdr does not read)")
        if self.listing.symlinked_folders:
            lines.append(f"not followed: {_some(self.listing.symlinked_folders)} (symlinked folders)")
        if self.unrecorded:
            lines.append(
                f"kept {self.unrecorded} existing output(s) with no record of how they were made "
                "(older autohdr or another tool); --overwrite redoes them"
            )
        return lines


def _some(names: list[str], shown: int = 10) -> str:
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return f"{len(names)}: " + ", ".join(names[:shown]) + more


class ReportWriter:
    """Streams one record per file to ``--report`` (JSON lines or CSV), flushed as it goes.

    A report that cannot be created is a usage error (nothing has been done yet); one that fails later
    (a full disk) stops being written, keeps the reason in :attr:`error`, and the batch goes on.
    """

    FIELDS = ["input", "output", "status", "seconds", "megapixels", "error", "warning"]

    def __init__(self, path: Path | None):
        self.path = path
        self._file = None
        self._csv = None
        self.error = ""
        if path is None:
            return
        suffix = path.suffix.lower()
        if suffix not in (".jsonl", ".csv"):
            raise UsageError(f"--report {display(path)}: the file name must end in .jsonl or .csv")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(path, "w", newline="", encoding="utf-8")
        except OSError as e:
            raise UsageError(f"--report {display(path)}: cannot write: {e.strerror or e}") from None
        if suffix == ".csv":
            self._csv = csv.DictWriter(self._file, fieldnames=self.FIELDS)
        self._guard(self._csv.writeheader if self._csv else None)

    def _guard(self, action) -> None:
        if self._file is None or action is None:
            return
        try:
            action()
            self._file.flush()
        except OSError as e:
            self.error = f"--report {display(self.path)}: cannot write: {e.strerror or e}"
            try:
                self._file.close()
            except OSError:
                pass
            self._file = None

    def write(self, result: FileResult) -> None:
        """Append one record."""
        if self._file is None:
            return
        record = {
            "input": result.input,
            "output": result.output,
            "status": result.status,
            "seconds": round(result.seconds, 4),
            "megapixels": round(result.megapixels, 6),  # exact: pixels / 1e6
            "error": result.error,
            "warning": result.warning,
        }
        if self._csv is not None:
            self._guard(lambda: self._csv.writerow(record))
        else:
            self._guard(lambda: self._file.write(json.dumps(record) + "\n"))

    def close(self) -> None:
        """Close the file (a failure to flush the last records is kept in :attr:`error`)."""
        if self._file is None:
            return
        try:
            self._file.close()
        except OSError as e:
            self.error = f"--report {display(self.path)}: cannot write: {e.strerror or e}"
        self._file = None
