"""Random local photo edits: the half of "how photos get edited" that a global degradation cannot teach.

Small pure functions on sRGB batches ``B x 3 x H x W`` in [0, 1]. Each edit takes one parameter per
image, is the identity at 0 and goes both ways (lift or crush the shadows, add or take away local
contrast), so a model trained to undo random mixes of them learns local tone and detail operations in
general rather than one look. The global edits (exposure, white balance, contrast, saturation) are in
:func:`autohdr_cli.train_data.degrade`; :class:`LocalEditRanges` and :func:`local_edits` add tone curves,
shadows/highlights and local contrast on top of them.
"""

from __future__ import annotations

from dataclasses import dataclass

import math

import torch
import torch.nn.functional as F

_LUMA = (0.2126, 0.7152, 0.0722)


@dataclass
class LocalEditRanges:
    """How far each random local edit goes, drawn uniformly in ``[-x, x]`` per image.

    ``radius`` is the size of the neighbourhood the local edits read, as a fraction of the image's
    short side (drawn between the two values): shadows and highlights follow the smoothed brightness
    there, local contrast is detail against that smoothed picture.
    """

    curve: float = 0.6  # S-curve (> 0) or flattening (< 0) of the tones, monotone for |c| < 1
    midtones: float = 0.5  # gamma in stops: > 0 darkens the midtones, < 0 brightens them
    shadows: float = 1.0  # stops of gain in the shadows (> 0 lifts them, < 0 crushes them)
    highlights: float = 1.0  # stops of gain in the highlights (< 0 recovers them)
    local_contrast: float = 0.8  # amount of detail against the smoothed picture added (> 0) or removed
    radius: tuple[float, float] = (0.03, 0.15)


def luma(images: torch.Tensor) -> torch.Tensor:
    """Rec. 709 luma of sRGB images, ``B x 1 x H x W``."""
    weights = torch.tensor(_LUMA, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
    return (images * weights).sum(dim=1, keepdim=True)


def mirrored_indices(size: int, radius: int, device: torch.device | None = None) -> torch.Tensor:
    """Indices of ``size`` samples padded by ``radius`` on each side, mirrored about the edge samples
    (``2 1 | 0 1 2 ... | n-2 n-3``, torch's "reflect"), mirrored again as often as a pad longer than the
    samples needs: defined for any size, with no branch on it (so a traced graph keeps a free size)."""
    # The period as a one-element tensor (2 (n - 1), at least 1) rather than a Python number: ONNX
    # converts a remainder by a tensor, not by a traced size.
    period = (torch.arange(size, device=device)[-1:] * 2).clamp(min=1)
    offsets = torch.arange(-radius, size + radius, device=device).remainder(period)
    return torch.minimum(offsets, period - offsets)


def gaussian_blur(maps: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of ``B x C x H x W`` maps, ``sigma`` in pixels; the border is mirrored
    (:func:`mirrored_indices`, also where the map is smaller than the kernel's reach)."""
    if sigma < 0.3:
        return maps
    radius = max(1, math.ceil(3.0 * sigma))
    offsets = torch.arange(-radius, radius + 1, dtype=maps.dtype, device=maps.device)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = kernel / kernel.sum()
    channels = maps.shape[1]
    height, width = maps.shape[-2:]
    # Padding by gathering mirrored rows and columns rather than F.pad(mode="reflect"), which refuses a
    # pad as long as the map and would make a traced graph branch on the map's size.
    padded = maps.index_select(-1, mirrored_indices(width, radius, maps.device))
    rows = F.conv2d(padded, kernel.view(1, 1, 1, -1).expand(channels, 1, 1, -1).contiguous(), groups=channels)
    rows = rows.index_select(-2, mirrored_indices(height, radius, maps.device))
    return F.conv2d(rows, kernel.view(1, 1, -1, 1).expand(channels, 1, -1, 1).contiguous(), groups=channels)


def smooth(maps: torch.Tensor, sigma: float) -> torch.Tensor:
    """:func:`gaussian_blur` at ``sigma`` pixels, computed on a copy shrunk by a power of two so the
    kernel stays under ~25 taps (average-pooled down, bilinearly enlarged back): a wide blur is smooth,
    so this changes it by a fraction of a percent of its range at a small share of the cost. The factor
    follows ``sigma`` alone (a traced graph keeps a free map size)."""
    factor = 1
    while sigma / (factor * 2) >= 4.0:
        factor *= 2
    if factor == 1:
        return gaussian_blur(maps, sigma)
    small = F.avg_pool2d(maps, factor, ceil_mode=True)
    return F.interpolate(gaussian_blur(small, sigma / factor), size=maps.shape[-2:], mode="bilinear", align_corners=False)


def neighbourhood_luminance(images: torch.Tensor, scales: tuple[float, ...], long_side: int, photo_mean: bool) -> torch.Tensor:
    """``B x K x H x W`` blurred luma of ``images`` at each of ``scales`` x ``long_side`` pixels, and the
    mean luma of each image as a last map when ``photo_mean`` is set."""
    brightness = luma(images)
    maps = [smooth(brightness, scale * long_side) for scale in scales]
    if photo_mean:
        maps.append(brightness.mean(dim=(2, 3), keepdim=True).expand_as(brightness))
    return torch.cat(maps, dim=1)


def measuring_size(height: int, width: int, long_side: int) -> tuple[int, int]:
    """The size of the copy a photo's neighbourhoods are measured on: ``long_side`` long, the photo's
    shape (rounded half up), smaller photos enlarged. Integer arithmetic with no branch on the size, so
    a traced graph (ONNX, torch.export) computes the same copy for any photo."""
    longest = torch.sym_max(height, width)
    return (
        torch.sym_max((2 * height * long_side + longest) // (2 * longest), 1),
        torch.sym_max((2 * width * long_side + longest) // (2 * longest), 1),
    )


def whole_photo_maps(images: torch.Tensor, scales: tuple[float, ...], size: int, photo_mean: bool = False) -> torch.Tensor:
    """:func:`neighbourhood_luminance` of whole photos ``B x 3 x H x W`` measured on a copy ``size`` long
    (:func:`measuring_size`, so a radius is the same number of the copy's pixels for any photo):
    ``B x K x h x w``, to be enlarged (a window at a time) with :func:`window_of`."""
    copy = F.interpolate(
        images.float(), size=measuring_size(images.shape[-2], images.shape[-1], size),
        mode="bilinear", antialias=True, align_corners=False,
    )
    return neighbourhood_luminance(copy, scales, size, photo_mean)


def window_of(maps: torch.Tensor, height: int, width: int, top: int, left: int, rows: int, columns: int) -> torch.Tensor:
    """The window ``rows x columns`` at (``top``, ``left``) of ``maps`` (``B x K x h x w``) enlarged
    bilinearly to ``height x width`` (``align_corners=False``), without making the whole enlarged map.

    Rows and columns past the photo's edge (a tile reaching into padding) repeat the edge values, as
    the photo's own padding repeats its edge pixels.
    """
    ys = (torch.arange(top, top + rows, dtype=maps.dtype, device=maps.device) + 0.5) / height * 2.0 - 1.0
    xs = (torch.arange(left, left + columns, dtype=maps.dtype, device=maps.device) + 0.5) / width * 2.0 - 1.0
    ys, xs = ys.clamp(max=1.0 - 1.0 / height), xs.clamp(max=1.0 - 1.0 / width)
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
    grid = torch.stack([grid_x, grid_y], dim=-1).unsqueeze(0).expand(maps.shape[0], -1, -1, -1)
    return F.grid_sample(maps, grid, mode="bilinear", padding_mode="border", align_corners=False)


def tone_curve(images: torch.Tensor, curve: torch.Tensor, midtones: torch.Tensor) -> torch.Tensor:
    """A monotone tone curve per image: ``x - c sin(2 pi x) / (2 pi)`` (an S for c > 0), then a gamma of
    ``2 ** midtones``. ``curve`` and ``midtones`` hold one value per image."""
    c = curve.view(-1, 1, 1, 1).clamp(-0.95, 0.95)
    x = images.clamp(0.0, 1.0)
    shaped = x - c * torch.sin(2 * torch.pi * x) / (2 * torch.pi)
    return shaped.clamp(1e-6, 1.0) ** midtones.view(-1, 1, 1, 1).exp2()


def shadows_highlights(
    images: torch.Tensor, shadows: torch.Tensor, highlights: torch.Tensor, sigma: float
) -> torch.Tensor:
    """Gain in stops where the smoothed brightness is dark (``shadows``) or bright (``highlights``).

    The gain follows the brightness smoothed over ``sigma`` pixels, so a dark corner is lifted as a
    whole (as an editor's shadows slider or a brush does) instead of every dark pixel on its own.
    """
    base = smooth(luma(images), sigma).clamp(0.0, 1.0)
    stops = shadows.view(-1, 1, 1, 1) * (1 - base) ** 2 + highlights.view(-1, 1, 1, 1) * base**2
    linear = images.clamp(0.0, 1.0) ** 2.2 * stops.exp2()
    return linear.clamp(0.0, 1.0) ** (1 / 2.2)


def local_contrast(images: torch.Tensor, amount: torch.Tensor, sigma: float) -> torch.Tensor:
    """Detail against the picture smoothed over ``sigma`` pixels, scaled by ``1 + amount`` (clarity)."""
    base = smooth(images, sigma)
    return (base + (images - base) * (1 + amount.view(-1, 1, 1, 1))).clamp(0.0, 1.0)


def random_local_edits(
    count: int, ranges: LocalEditRanges, generator: torch.Generator | None = None
) -> torch.Tensor:
    """``count x 6`` parameters: curve, midtones, shadows, highlights, local contrast, radius fraction."""
    u = torch.rand(count, 6, generator=generator)
    span = torch.tensor([ranges.curve, ranges.midtones, ranges.shadows, ranges.highlights, ranges.local_contrast])
    parameters = (2 * u[:, :5] - 1) * span
    low, high = ranges.radius
    radius = low + (high - low) * u[:, 5:]
    return torch.cat([parameters, radius], dim=1)


def local_edits(images: torch.Tensor, parameters: torch.Tensor) -> torch.Tensor:
    """Apply :func:`random_local_edits` ``parameters`` to ``images``: the tone curve, then shadows and
    highlights, then local contrast. Images are edited one at a time where their radii differ."""
    curve, midtones, shadows, highlights, amount, radius = parameters.unbind(dim=1)
    out = tone_curve(images, curve, midtones)
    short = min(images.shape[-2:])
    edited = []
    for index in range(images.shape[0]):
        sigma = max(1.0, float(radius[index].detach()) * short)  # a size: never learned, so no gradient
        one = shadows_highlights(out[index : index + 1], shadows[index : index + 1], highlights[index : index + 1], sigma)
        edited.append(local_contrast(one, amount[index : index + 1], sigma))
    return torch.cat(edited)
