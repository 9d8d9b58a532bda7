"""Training losses: image reconstruction (Charbonnier, SSIM, colour difference) and LUT regularisers.

Every image loss takes ``B x 3 x H x W`` tensors in [0, 1] and returns a scalar. SSIM comes from kornia;
CIEDE2000 from :mod:`autohdr_cli.metrics` (itself on kornia's Lab), so training optimises exactly what
evaluation scores. Charbonnier is written here because kornia's ``charbonnier_loss`` is
``sqrt(d^2 + 1) - 1``, which on [0, 1] images behaves like half an L2 loss, not like L1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import kornia
import torch

from . import metrics
from .lpips import lpips


def charbonnier_loss(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    """Mean of ``sqrt((pred - target)^2 + eps^2)``: L1 with a smooth minimum (robust, finite gradient)."""
    return torch.sqrt((pred - target).square() + eps * eps).mean()


def ssim_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``1 - SSIM`` averaged over the batch (kornia's Gaussian 11 x 11 SSIM)."""
    return 1.0 - metrics.ssim(pred, target).mean()


def regular_subsample(images: torch.Tensor, max_pixels: int) -> torch.Tensor:
    """Every k-th pixel along both axes (the smallest k leaving at most ``max_pixels`` per image)."""
    height, width = images.shape[-2:]
    stride = max(1, math.ceil(math.sqrt(height * width / max_pixels)))
    return images[..., ::stride, ::stride] if stride > 1 else images


def delta_e_loss(pred: torch.Tensor, target: torch.Tensor, max_pixels: int | None = None) -> torch.Tensor:
    """Mean CIEDE2000 colour difference, in ΔE units (about 1 = just noticeable).

    CIEDE2000 costs some sixty tensor operations a pixel; with ``max_pixels`` it is averaged over a
    regular subsample of each image, an unbiased estimate of the same mean at a fraction of the cost.
    """
    if max_pixels:
        pred, target = regular_subsample(pred, max_pixels), regular_subsample(target, max_pixels)
    return metrics.delta_e2000(pred, target).mean()


def lab_l1_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean absolute CIELAB difference over L, a and b (kornia's Lab), in Lab units."""
    return (kornia.color.rgb_to_lab(pred) - kornia.color.rgb_to_lab(target)).abs().mean()


def perceptual_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean LPIPS (AlexNet, v0.1) over the batch, on the images as given (no reduction).

    The LPIPS network is shared and frozen (:func:`autohdr_cli.lpips.network_on`): gradients flow to
    ``pred`` only, and the network is never part of the model being trained.
    """
    return lpips(pred, target, long_side=None).mean()


@dataclass
class ReconstructionLoss:
    """Weighted sum of the image losses; a weight of 0 skips that loss (and its cost).

    The default weights put the terms on a comparable scale on typical errors: a Charbonnier of 0.03
    (about 8 levels of 255), a ΔE00 of 3 and an SSIM loss of 0.05 each contribute roughly 0.03.
    ΔE00 is averaged over at most ``delta_e_pixels`` pixels per image (see :func:`delta_e_loss`).
    ``perceptual`` weighs LPIPS (:func:`perceptual_loss`; 0, the default, skips it).
    """

    charbonnier: float = 1.0
    ssim: float = 0.1
    delta_e: float = 0.01
    lab_l1: float = 0.0
    delta_e_pixels: int = 4096
    perceptual: float = 0.0

    def __call__(self, pred: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The total loss and its unweighted parts (by name), for logging."""
        parts: dict[str, torch.Tensor] = {}
        total = pred.new_zeros(())
        for name, weight, function in (
            ("charbonnier", self.charbonnier, charbonnier_loss),
            ("ssim", self.ssim, ssim_loss),
            ("delta_e", self.delta_e, lambda p, t: delta_e_loss(p, t, self.delta_e_pixels)),
            ("lab_l1", self.lab_l1, lab_l1_loss),
            ("lpips", self.perceptual, perceptual_loss),
        ):
            if weight:
                value = function(pred, target)
                parts[name] = value
                total = total + weight * value
        return total, parts


def lut_smoothness(luts: torch.Tensor) -> torch.Tensor:
    """Total variation of LUTs ``... x 3 x S x S x S``: mean squared step between neighbouring entries.

    As in Zeng et al. (2020), the first and last steps of each axis count double: the outer cells are
    the least populated by real colours, so they are the ones that need the prior most.
    """
    total = luts.new_zeros(())
    for axis in (-1, -2, -3):
        difference = luts.diff(dim=axis)
        steps = difference.shape[axis]
        weight = torch.ones(steps, dtype=luts.dtype, device=luts.device)
        weight[[0, steps - 1]] = 2.0
        total = total + (difference.square() * weight.view(-1, *([1] * (-axis - 1)))).mean()
    return total


def lut_monotonicity(luts: torch.Tensor) -> torch.Tensor:
    """Penalty on tone reversals: each output channel must not fall as its own input channel rises.

    Zeng et al. (2020) ask every output channel to rise along every input axis; that also forbids a
    saturation boost (raising red lowers green's output when saturation grows), which photo looks need,
    so only the channel's own axis is constrained here: red along r, green along g, blue along b.
    """
    red = luts[..., 0, :, :, :].diff(dim=-1)
    green = luts[..., 1, :, :, :].diff(dim=-2)
    blue = luts[..., 2, :, :, :].diff(dim=-3)
    return sum(torch.relu(-step).mean() for step in (red, green, blue))


def curve_monotonicity(curves: torch.Tensor) -> torch.Tensor:
    """Penalty on falling steps of 1D curves ``... x P`` (values at evenly spaced inputs)."""
    return torch.relu(-curves.diff(dim=-1)).mean()


def regularised_lut_loss(
    prediction: torch.Tensor,
    target: torch.Tensor,
    luts: torch.Tensor,
    smoothness_weight: float,
    monotonicity_weight: float,
    extra_monotonicity: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The training loss of a LUT model: reconstruction plus weighted LUT smoothness and monotonicity.

    ``extra_monotonicity`` adds another monotonicity term (e.g. of 1D curves) under the same weight.
    Returns the total and every part as a float, for the training log.
    """
    reconstruction, parts = ReconstructionLoss()(prediction, target)
    smoothness = lut_smoothness(luts)
    monotonicity = lut_monotonicity(luts)
    if extra_monotonicity is not None:
        monotonicity = monotonicity + extra_monotonicity
    total = reconstruction + smoothness_weight * smoothness + monotonicity_weight * monotonicity
    report = {name: float(value.detach()) for name, value in parts.items()}
    report.update(smoothness=float(smoothness.detach()), monotonicity=float(monotonicity.detach()))
    return total, report
