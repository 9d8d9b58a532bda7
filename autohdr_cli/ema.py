"""A running average of a model's weights (EMA), the weights a training run validates and ships."""

from __future__ import annotations

import copy

import torch
from torch import nn


class WeightAverage:
    """An exponential moving average of ``model``'s parameters, held in a frozen copy of the model.

    The decay warms up as ``min(decay, (1 + step) / (10 + step))``, so that the average of a short run
    is not dominated by its first, untrained weights. Buffers (e.g. running statistics) are copied.
    """

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.model = copy.deepcopy(model).requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        """Fold ``model``'s weights after optimizer step ``step`` (counted from 0) into the average."""
        decay = min(self.decay, (1.0 + step) / (10.0 + step))
        for averaged, current in zip(self.model.parameters(), model.parameters()):
            averaged.lerp_(current.detach(), 1.0 - decay)
        for averaged, current in zip(self.model.buffers(), model.buffers()):
            averaged.copy_(current)
