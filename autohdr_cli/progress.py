"""Progress bars and per-file messages on stderr for long runs."""

from __future__ import annotations

import sys

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


class ProgressBar:
    """A progress bar on stderr (when enabled), and lines printed above it without tearing it.

    Used as a context manager; with ``enabled=False`` only the lines are printed, plainly.
    """

    def __init__(self, label: str, enabled: bool):
        self.label = label
        self.enabled = enabled
        self._progress: Progress | None = None
        self._task = None

    def __enter__(self):
        if self.enabled:
            self._progress = Progress(
                TextColumn(f"[bold]{self.label}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                console=Console(stderr=True, highlight=False, soft_wrap=True),
                transient=True,
            )
            self._progress.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self._progress is not None:
            self._progress.__exit__(*exc)

    def print_line(self, line: str) -> None:
        """Print one line on stderr, above the bar if there is one."""
        if self._progress is not None:
            self._progress.console.print(line, markup=False)
        else:
            print(line, file=sys.stderr, flush=True)

    def update(self, done: int, total: int) -> None:
        """Show that ``done`` of ``total`` items are finished."""
        if self._progress is None:
            return
        if self._task is None:
            self._task = self._progress.add_task(self.label, total=total)
        self._progress.update(self._task, completed=done, total=total)


class ProgressReporter(ProgressBar):
    """``enhance``'s reporting: each failure as one ``path: reason`` line and, when enabled, a bar.

    In a dry run each planned photo is printed as ``input -> output`` on stdout instead.
    """

    def __init__(self, enabled: bool, dry_run: bool = False):
        super().__init__("enhance", enabled)
        self.dry_run = dry_run
        self._done = 0
        self._total = 0

    def start(self, total: int) -> None:
        """Called once the number of photos is known."""
        self._total = total
        self.update(0, total)

    def result(self, result) -> None:
        """Called once per photo with its :class:`autohdr_cli.results.FileResult`."""
        if result.status == "failed":
            self.print_line(f"{result.input}: {result.error}")
        elif result.warning:
            self.print_line(f"{result.input}: warning: {result.warning}")
        elif self.dry_run:
            note = " (exists, skipped)" if result.status == "skipped" else ""
            print(f"{result.input} -> {result.output}{note}", flush=True)
        self._done += 1
        if self._total:
            self.update(self._done, self._total)
