"""``--device``: one set of values and one wording for every command (enhance, train, evaluate).

``auto`` (the GPU when there is one, else the CPU), ``cpu``, ``cuda`` (under torchrun: this process's
GPU) or ``cuda:N``. The name is checked without torch, so a ``.cube`` run can check it without loading torch.
"""

from __future__ import annotations

import re

#: What ``--device`` accepts, for help texts and errors.
DEVICE_CHOICES = "auto, cpu, cuda or cuda:N"

_NAME = re.compile(r"auto|cpu|cuda(:[0-9]{1,4})?")


class DeviceError(ValueError):
    """A ``--device`` value that is not a device name, or names a device this machine does not have."""


def check_device_name(name: str) -> None:
    """Raise :class:`DeviceError` unless ``name`` is one of :data:`DEVICE_CHOICES` (no torch needed)."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise DeviceError(f"--device {name!r}: expected {DEVICE_CHOICES}")


def resolve_device(name: str, local_rank: int = 0):
    """The ``torch.device`` that ``--device name`` means here; :class:`DeviceError` if there is none.

    ``auto`` is the GPU when there is one, else the CPU; a bare ``cuda`` is GPU ``local_rank`` (the
    process's own under torchrun, else the first).
    """
    check_device_name(name)
    import torch

    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise DeviceError(f"--device {name}: no CUDA GPU is available on this machine")
    index = int(name.partition(":")[2] or local_rank)
    count = torch.cuda.device_count()
    if index >= count:
        raise DeviceError(f"--device {name}: this machine has {count} CUDA GPU(s)")
    return torch.device("cuda", index)
