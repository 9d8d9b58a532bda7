"""Progress and per-file messages on stderr for long runs."""

from __future__ import annotations

import sys

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


class ProgressReporter:
    """Prints each failure as one ``path: reason`` line and, when enabled, a progress bar (stderr).

    In a dry run each planned photo is printed as ``input -> output`` on stdout instead.
    """

    def __init__(self, enabled: bool, dry_run: bool = False):
        self.enabled = enabled
        self.dry_run = dry_run
        self.console = Console(stderr=True, highlight=False, soft_wrap=True)
        self._progress: Progress | None = None
        self._task = None

    def __enter__(self) -> "ProgressReporter":
        if self.enabled:
            self._progress = Progress(
                TextColumn("[bold]enhance"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                console=self.console,
                transient=True,
            )
            self._progress.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self._progress is not None:
            self._progress.__exit__(*exc)

    def start(self, total: int) -> None:
        """Called once the number of photos is known."""
        if self._progress is not None:
            self._task = self._progress.add_task("enhance", total=total)

    def result(self, result) -> None:
        """Called once per photo with its :class:`autohdr_cli.pipeline.FileResult`."""
        if result.status == "failed":
            line = f"{result.input}: {result.error}"
            if self._progress is not None:
                self._progress.console.print(line, markup=False)
            else:
                print(line, file=sys.stderr, flush=True)
        elif self.dry_run:
            note = " (exists, skipped)" if result.status == "skipped" else ""
            print(f"{result.input} -> {result.output}{note}", flush=True)
        if self._progress is not None and self._task is not None:
            self._progress.advance(self._task)
