"""What the folder pipeline and the per-photo enhancers share, below both of them.

The pipeline (:mod:`autohdr_cli.pipeline`) orchestrates a batch; an :class:`Enhancer` does one photo's
work in two calls: ``decode`` on a decode thread, then ``infer``, whose returned callable runs on an
encode thread. :class:`autohdr_cli.table_enhancer.TableEnhancer` (a ``.cube``, numpy only) and
:class:`autohdr_cli.inference.ModelEnhancer` (torch models) implement it. This module imports neither
torch nor either enhancer, so the photo's way through the code only goes downwards.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol

from .imageio import Photo

#: Convolutional models run on tiles of this many pixels, overlapping by at least this many.
DEFAULT_TILE = 512
DEFAULT_OVERLAP = 32
#: ``enhance --precision``: how a model's network computes on CUDA (the CPU always computes fp32).
#: fp32 is true float32 (TF32 off), tf32 lets convolutions and matmuls use TF32 tensor cores, bf16
#: and fp16 run them under autocast. fp32 stays the default until ``benchmarks/gpu_check.py`` has
#: measured the others against the CPU on a GPU (DESIGN.md, "GPU defaults").
PRECISIONS = ("fp32", "tf32", "bf16", "fp16")
DEFAULT_PRECISION = "fp32"


class UsageError(Exception):
    """The command cannot start (bad folders, bad options): exit code 2."""


@dataclass
class Decoded:
    """A photo read by a decode worker, with the model's thumbnail when it wants one (a torch tensor)."""

    photo: Photo
    thumbnail: object | None
    started: float


class Enhancer(Protocol):
    """One photo's work, split so that decoding, the model and encoding overlap across photos."""

    def decode(self, path: Path) -> Decoded:
        """Read a photo (called on a decode thread)."""
        ...

    def infer(self, decoded: Decoded) -> Callable[[], Photo]:
        """Start the photo's enhancement; the returned callable finishes it on an encode thread."""
        ...
