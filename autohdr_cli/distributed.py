"""Training under torchrun: this process's place in the job, its device, and one clock for all ranks."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from .train_data import TrainError


@dataclass
class Distributed:
    """This process's place in a torchrun job (world size 1 when run directly)."""

    rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def main(self) -> bool:
        """True on the process that writes files and prints."""
        return self.rank == 0


def start_distributed(device: torch.device) -> Distributed:
    """Join the torchrun process group when started by torchrun (WORLD_SIZE > 1), else do nothing.

    nccl on CUDA and gloo on the CPU, unless the environment variable ``AUTOHDR_DIST_BACKEND`` names one.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return Distributed(device=device)
    import torch.distributed as dist

    if not dist.is_initialized():
        # AUTOHDR_DIST_BACKEND=gloo lets several ranks share one GPU (nccl refuses that), for smoke runs.
        backend = os.environ.get("AUTOHDR_DIST_BACKEND") or ("nccl" if device.type == "cuda" else "gloo")
        dist.init_process_group(backend)
    return Distributed(dist.get_rank(), dist.get_world_size(), device)


@contextlib.contextmanager
def process_group(device: torch.device) -> Iterator[Distributed]:
    """:func:`start_distributed` for the length of a ``with`` block, leaving the group at its end if the
    block joined it. A run of two trainings (``--base auto``, ``--teacher auto``) holds the group across
    both: joining again after leaving one could hang."""
    import torch.distributed as dist

    joined = int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized()
    try:
        yield start_distributed(device)
    finally:
        if joined and dist.is_initialized():
            dist.destroy_process_group()


def pick_device(name: str, local_rank: int = 0) -> torch.device:
    """``--device`` for training (see :mod:`autohdr_cli.devices`); ``cuda`` means this process's GPU."""
    from .devices import DeviceError, resolve_device

    try:
        return resolve_device(name, local_rank)
    except DeviceError as e:
        raise TrainError(str(e)) from None


def shared_elapsed(mine: float, place: Distributed) -> float:
    """The main process's elapsed time, on every process: all use the same rates and stop at the same step."""
    if place.world_size == 1:
        return mine
    import torch.distributed as dist

    seconds = torch.tensor([mine], dtype=torch.float64, device=place.device)
    dist.broadcast(seconds, src=0)
    return float(seconds.item())
