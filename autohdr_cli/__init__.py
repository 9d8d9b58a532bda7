"""autohdr: learn a photo editor's look from before/after pairs and apply it to folders of photos."""

import os

# Idle OpenMP threads otherwise spin, and on a busy machine (other jobs, or our own decode and encode
# threads) that spinning took over 10x the wall time of scoring a few photos. Set before torch loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
