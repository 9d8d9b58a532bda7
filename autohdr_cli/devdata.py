"""Where the development photos and pairs are, for the benchmarks and training scripts.

One environment variable, ``AUTOHDR_DATA``, names a folder laid out as ``make_pairs.sh DEST`` builds it
(``photos/`` and ``pairs/source``, ``pairs/target``). Without it, the scripts' data options are required.
"""

from __future__ import annotations

import os
from pathlib import Path

ENVIRONMENT_VARIABLE = "AUTOHDR_DATA"


def dev_data(name: str) -> Path | None:
    """``$AUTOHDR_DATA/name`` (for example ``photos`` or ``pairs``), or None when the variable is unset."""
    root = os.environ.get(ENVIRONMENT_VARIABLE)
    return Path(root) / name if root else None


def data_option(name: str) -> dict:
    """argparse keywords for a ``--photos``/``--pairs`` option: defaults to ``$AUTOHDR_DATA/name``, else required."""
    default = dev_data(name)
    return {"type": Path, "default": default, "required": default is None,
            "help": f"{name} folder (default: ${ENVIRONMENT_VARIABLE}/{name})"}
