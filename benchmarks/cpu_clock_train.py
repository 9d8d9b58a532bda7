"""Run ``autohdr`` with its clock counting this process's CPU seconds instead of wall time.

For before/after training comparisons on a shared machine: ``--time-limit 3m`` then means three minutes
of CPU for each run, however many other jobs compete for the cores. Works with any version of the CLI
(it replaces ``time.monotonic`` before the package is imported)::

    OMP_NUM_THREADS=1 PYTHONPATH=CHECKOUT python benchmarks/cpu_clock_train.py train PAIRS --time-limit 3m ...
"""

import time

time.monotonic = time.process_time  # one thread (OMP_NUM_THREADS=1): CPU seconds are this run's own time

from autohdr_cli.cli import app  # noqa: E402 - after the clock is replaced

if __name__ == "__main__":
    app(prog_name="autohdr")
