"""Run a command and measure its peak memory (max RSS) without counting the benchmark's own.

On Linux a child's ``ru_maxrss`` keeps the high-water mark of the process it was forked from (exec does
not reset it), so a benchmark that already holds gigabytes would report them for every command it
starts. The command is therefore started from a small launcher process, whose memory is negligible.
"""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass

_LAUNCHER = (
    "import resource, subprocess, sys; code = subprocess.run(sys.argv[1:]).returncode; "
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr); sys.exit(code)"
)


@dataclass
class Measured:
    """How a command ended: exit code, wall seconds, peak RSS in MB, and its standard error."""

    returncode: int
    seconds: float
    peak_mb: float
    stderr: str


def run_measured(command: list[str]) -> Measured:
    """Run ``command`` (stdout discarded) and return its exit code, wall time, peak RSS and stderr."""
    started = time.perf_counter()
    finished = subprocess.run([sys.executable, "-c", _LAUNCHER, *command], stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
    seconds = time.perf_counter() - started
    lines = finished.stderr.rstrip().splitlines()
    peak_kb = int(lines[-1]) if lines and lines[-1].isdigit() else 0
    return Measured(finished.returncode, seconds, peak_kb / 1024, "\n".join(lines[:-1]))
