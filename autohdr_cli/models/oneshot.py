"""One-shot looks: an editor's look learned from a single before/after pair, carried to other photos.

A fixed colour-to-colour table learned from one photo hurts the next one: the exposure and tone parts
of an edit depend on the photo (a dark photo got lifted more than a bright one would be). This model
keeps what the editor did *relative to the photo*:

1. a white-balance shift (linear-light gains), plus part of the difference between the photo's
   grey-world cast and the example's;
2. an exposure shift by part of the difference between the photo's key (median log luminance) and
   the example's, so that the tone curve meets each photo where it met the example;
3. a tone curve on log2 luminance (offsets at knots every stop), applied partly as a luminance
   ratio (hue kept) and partly per channel (as raw converters' "standard" curves do);
4. a saturation factor around the grey of the same luminance (in sRGB values);
5. a smooth colour residual (a small LUT), each node shrunk towards zero by how few of the example's
   pixels lie near it, so colours the example does not show stay as steps 1-4 make them.

Steps 1-4 are a few dozen numbers fitted in closed form and by a few hundred Adam steps on a downscaled
copy of the pair (:func:`fit_oneshot`); step 5 is a density-weighted average of what is left. Every
photo's statistics come from the same thumbnail the pipeline gives the adaptive LUT, and the model
returns one 3D LUT per photo (``predict_lut``), so the fast 8-bit table path, ``--strength`` and
``export --format cube --image`` work as for the adaptive LUT.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ..resize import resize_long_side
from .lut import identity_lut, lookup_batched, make_thumbnail, trilinear_corners

#: Linear-light offset of the log luminance: log2(Y + EPS), about 1/4 of an 8-bit level in sRGB near black.
EPS = 2.0**-12
#: Rec. 709 luminance weights of linear RGB.
LUMA = (0.2126, 0.7152, 0.0722)
#: Statistics per photo, in this order (see :func:`photo_statistics`).
STATISTICS = ("key", "spread", "cast_r", "cast_g", "cast_b", "chroma")


@dataclass
class OneShotConfig:
    """Settings of a one-shot look.

    ``exposure_follow``, ``cast_follow``, ``contrast_follow`` and ``saturation_follow`` say how much of
    the difference between a photo's statistics and the example's the look makes up for (0: the same
    edit for every photo; 1: every photo is brought to where the example's edit brought the example).
    A single example cannot tell the two apart, so these are priors (DESIGN.md explains the values).
    Each relative part is scaled down when the example's edit hardly changed its statistic
    (``engaged_at``: the change of key in stops, of cast in natural log, of spread as a fraction, of log
    chroma, from which the part is fully on), so a look learned from an untouched pair does nothing.
    ``max_shift_ev`` bounds the exposure shift and ``max_cast`` the cast correction (natural log).
    ``residual_size`` is the colour residual's grid, ``residual_prior`` the number of pixels per node (in
    units of an evenly spread example) at which a node keeps half of its residual, ``residual_limit``
    the largest residual in sRGB units.
    """

    thumbnail_size: int = 128
    curve_min: float = -12.0
    curve_max: float = 2.0
    curve_step: float = 1.0
    exposure_follow: float = 0.3
    cast_follow: float = 0.0
    contrast_follow: float = 0.0
    saturation_follow: float = 0.0
    engaged_at: tuple[float, float, float, float] = (0.3, 0.1, 0.1, 0.1)
    max_shift_ev: float = 2.0
    max_cast: float = 0.4
    residual_size: int = 9
    residual_prior: float = 4.0
    residual_limit: float = 0.08
    fit_size: int = 384
    fit_steps: int = 150
    fit_pixels: int = 8192
    curve_smoothness: float = 0.1

    #: Bounds checked when a checkpoint or ``--config`` is read (see ``models.make_config``): the
    #: curve's knots lie in stops of log2 luminance, below and above the photo's key.
    LIMITS: ClassVar[dict[str, tuple[float, float]]] = {
        "thumbnail_size": (8, 1024), "curve_min": (-24, 0), "curve_max": (0, 8), "curve_step": (0.05, 4),
        "residual_size": (2, 65), "fit_size": (16, 4096), "fit_steps": (0, 100_000), "fit_pixels": (1, 1 << 20),
    }


# ------------------------------------------------------------------------------------- colour helpers


def srgb_to_linear(values: torch.Tensor) -> torch.Tensor:
    """The sRGB transfer function, decoded (values in [0, 1])."""
    values = values.clamp(0.0, 1.0)
    return torch.where(values <= 0.04045, values / 12.92, ((values + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(values: torch.Tensor) -> torch.Tensor:
    """The sRGB transfer function, encoded (values clipped to [0, 1])."""
    values = values.clamp(0.0, 1.0)
    return torch.where(values <= 0.0031308, values * 12.92, 1.055 * values.clamp(min=1e-12) ** (1 / 2.4) - 0.055)


def luminance(linear: torch.Tensor) -> torch.Tensor:
    """Luminance of ``B x 3 x N`` linear RGB, ``B x 1 x N``."""
    weights = torch.tensor(LUMA, dtype=linear.dtype, device=linear.device).view(1, 3, 1)
    return (linear * weights).sum(dim=1, keepdim=True)


def fit_into_gamut(linear: torch.Tensor) -> torch.Tensor:
    """Bring colours with a channel above 1 back inside by moving them towards their own luminance
    (hue and luminance kept as far as possible), instead of clipping each channel (which shifts hue)."""
    brightness = luminance(linear).clamp(max=1.0)
    peak = linear.max(dim=1, keepdim=True).values
    over = peak > 1.0
    scale = ((1.0 - brightness) / (peak - brightness).clamp(min=1e-6)).clamp(0.0, 1.0)
    fitted = brightness + (linear - brightness) * scale
    return torch.where(over, fitted, linear).clamp(0.0, 1.0)


def photo_statistics(thumbnails: torch.Tensor) -> torch.Tensor:
    """``B x 3 x H x W`` sRGB thumbnails -> ``B x 6`` statistics (:data:`STATISTICS`).

    key: median of log2 luminance (the photo's exposure); spread: its 5th-95th percentile range
    (contrast); cast: grey-world log gains (log of each channel's mean linear value, less their mean);
    chroma: mean distance of the colours from their luminance after the cast is removed (log).
    """
    pixels = thumbnails.flatten(2).clamp(0.0, 1.0)
    linear = srgb_to_linear(pixels)
    logs = torch.log2(luminance(linear)[:, 0] + EPS)
    # Percentiles by sorting (torch.quantile has no ONNX export).
    ordered = logs.sort(dim=1).values
    last = ordered.shape[1] - 1
    low, middle, high = (ordered[:, int(round(q * last))] for q in (0.05, 0.5, 0.95))
    key, spread = middle, (high - low).clamp(min=0.25)
    means = torch.log(linear.mean(dim=2) + 1e-4)
    cast = means - means.mean(dim=1, keepdim=True)
    balanced = linear * torch.exp(-cast).unsqueeze(-1)
    chroma = (balanced - luminance(balanced)).abs().mean(dim=(1, 2))
    return torch.cat([key[:, None], spread[:, None], cast, torch.log(chroma + 1e-3)[:, None]], dim=1)


def _interpolate(knots: torch.Tensor, values: torch.Tensor, start: float, step: float, count: int) -> torch.Tensor:
    """Piecewise-linear function with ``count`` ``knots`` at ``start + i*step``, evaluated at ``values``;
    constant beyond the ends. (``count`` is a plain int: a traced ``knots.shape`` is a tensor, which
    the ONNX exporter cannot take as a clamp bound.)"""
    position = ((values - start) / step).clamp(0.0, float(count - 1))
    low = position.detach().floor().clamp(max=float(count - 2)).long()
    fraction = position - low.to(position.dtype)
    return knots[low] + (knots[low + 1] - knots[low]) * fraction


def engagement(before: torch.Tensor, after: torch.Tensor, full: tuple[float, ...]) -> torch.Tensor:
    """How far each relative part is on (``4``, 0..1) for an example whose ``B x 6`` statistics went
    from ``before`` to ``after``: the change of the key, the cast, the spread and the chroma, each over
    the change ``full`` at which the part is fully on. An editor who left the exposure alone gives no
    evidence that the look adapts exposure to the photo, so the look then leaves it alone too."""
    change = (after - before).abs().mean(dim=0)
    measured = torch.stack([change[0], change[2:5].max(), change[1] / before[:, 1].mean().clamp(min=0.25), change[5]])
    return (measured / torch.tensor(full, dtype=measured.dtype)).clamp(0.0, 1.0)


# ----------------------------------------------------------------------------------------------- model


class OneShotLook(nn.Module):
    """A look learned from one example pair, applied relative to each photo (see the module docstring).

    The untrained model is exactly the identity. ``predict_lut`` turns a photo's thumbnail into the
    33-point LUT that applies the look to that photo.
    """

    config_class = OneShotConfig
    lut_size = 33

    def __init__(self, config: OneShotConfig | None = None):
        super().__init__()
        self.config = config or OneShotConfig()
        config = self.config
        if config.thumbnail_size < 8 or config.residual_size < 2 or config.curve_step <= 0:
            raise ValueError("thumbnail_size must be >= 8, residual_size >= 2 and curve_step > 0")
        if config.curve_max <= config.curve_min:
            raise ValueError("curve_max must be above curve_min")
        self.thumbnail_size = config.thumbnail_size
        knots = self.knot_count = int(round((config.curve_max - config.curve_min) / config.curve_step)) + 1
        #: The example's statistics (the "before" photo's), the reference of every relative part.
        self.reference = nn.Parameter(torch.zeros(len(STATISTICS)), requires_grad=False)
        #: How far each relative part (exposure, cast, contrast, chroma) is on, 0..1: as far as the
        #: example's edit changed that statistic (see :func:`engagement`).
        self.engagement = nn.Parameter(torch.zeros(4), requires_grad=False)
        self.cast_gains = nn.Parameter(torch.zeros(3))  # natural log, linear light
        self.curve = nn.Parameter(torch.zeros(knots))  # log2 luminance offsets at the knots
        self.channel_mix = nn.Parameter(torch.zeros(1))  # share of the per-channel curve (0..1)
        self.saturation = nn.Parameter(torch.zeros(1))  # natural log of the chroma factor
        size = config.residual_size
        self.residual = nn.Parameter(torch.zeros(3, size, size, size), requires_grad=False)

    # -------------------------------------------------------------------------------- the transform

    def _adjustments(self, statistics: torch.Tensor) -> dict[str, torch.Tensor]:
        """The photo-dependent parts for ``B x 6`` statistics: ``B x 3`` log gains, ``B`` exposure shift
        (stops), ``B`` contrast factor around the key, ``B`` log chroma factor."""
        config = self.config
        reference = self.reference.to(statistics.dtype)
        engaged = self.engagement.to(statistics.dtype)
        difference = reference - statistics
        cast = (config.cast_follow * difference[:, 2:5]).clamp(-config.max_cast, config.max_cast)
        shift = (config.exposure_follow * difference[:, 0]).clamp(-config.max_shift_ev, config.max_shift_ev)
        contrast = torch.exp(config.contrast_follow * torch.log(reference[1] / statistics[:, 1]).clamp(-0.7, 0.7))
        chroma = (config.saturation_follow * difference[:, 5]).clamp(-0.7, 0.7)
        return {
            "gains": self.cast_gains + engaged[1] * cast,
            "shift": engaged[0] * shift,
            "contrast": 1.0 + engaged[2] * (contrast - 1.0),
            "key": statistics[:, 0],
            "chroma": self.saturation + engaged[3] * chroma,
        }

    def _tone(self, linear: torch.Tensor, parts: dict[str, torch.Tensor]) -> torch.Tensor:
        """Exposure, contrast and the tone curve on ``B x 3 x N`` linear RGB."""
        config = self.config
        shift = parts["shift"].view(-1, 1, 1)
        key = parts["key"].view(-1, 1, 1)
        contrast = parts["contrast"].view(-1, 1, 1)

        def normalised(logs: torch.Tensor) -> torch.Tensor:
            # Where this photo's value sits in the example's terms: shifted by part of the difference
            # in key, and stretched around its key by part of the difference in contrast.
            return key + shift + (logs - key) * contrast

        def curved(logs: torch.Tensor) -> torch.Tensor:
            moved = normalised(logs)
            return moved + _interpolate(self.curve, moved, config.curve_min, config.curve_step, self.knot_count)

        brightness = luminance(linear) + EPS
        logs = torch.log2(brightness)
        by_luminance = linear * torch.exp2(curved(logs) - logs)
        channel_logs = torch.log2(linear + EPS)
        by_channel = torch.exp2(curved(channel_logs)) - EPS
        mix = self.channel_mix.clamp(0.0, 1.0)
        return by_luminance * (1.0 - mix) + by_channel.clamp(min=0.0) * mix

    def parametric(self, colours: torch.Tensor, statistics: torch.Tensor) -> torch.Tensor:
        """Steps 1-4 on ``B x 3 x N`` sRGB colours of photos with ``B x 6`` statistics (sRGB out)."""
        parts = self._adjustments(statistics)
        linear = srgb_to_linear(colours) * torch.exp(parts["gains"]).unsqueeze(-1)
        linear = fit_into_gamut(self._tone(linear, parts))
        # Saturation around the grey of the same luminance, in sRGB values: in linear light a few per
        # cent more chroma would halve a dark channel (10 levels in sRGB) of a colour far from grey.
        grey = linear_to_srgb(luminance(linear))
        factor = torch.exp(parts["chroma"]).view(-1, 1, 1)
        return (grey + (linear_to_srgb(linear) - grey) * factor).clamp(0.0, 1.0)

    def apply_residual(self, colours: torch.Tensor) -> torch.Tensor:
        """Step 5: add the colour residual to ``B x 3 x N`` sRGB colours."""
        batch = colours.shape[0]
        residual = self.residual.to(colours.dtype).unsqueeze(0).expand(batch, -1, -1, -1, -1)
        offsets = lookup_batched(colours.unsqueeze(-1), residual).squeeze(-1)
        return (colours + offsets).clamp(0.0, 1.0)

    def transform(self, colours: torch.Tensor, statistics: torch.Tensor) -> torch.Tensor:
        """The whole look on ``B x 3 x N`` sRGB colours of photos with ``B x 6`` statistics."""
        return self.apply_residual(self.parametric(colours, statistics))

    def predict_lut(self, thumbnails: torch.Tensor) -> torch.Tensor:
        """One LUT per thumbnail (``B x 3 x 33 x 33 x 33``, values in [0, 1]), indexed ``[c, b, g, r]``."""
        statistics = photo_statistics(thumbnails.float())
        size = self.lut_size
        grid = identity_lut(size).to(thumbnails.device).flatten(1).unsqueeze(0).expand(thumbnails.shape[0], -1, -1)
        return self.transform(grid, statistics).view(-1, 3, size, size, size).to(thumbnails.dtype)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Enhance ``B x 3 x H x W`` images in [0, 1] (LUT per photo, trilinear lookup at full size)."""
        from .lut import apply_lut

        return apply_lut(images, self.predict_lut(make_thumbnail(images, self.thumbnail_size)))


# ------------------------------------------------------------------------------------------------ fit


def _splat(colours: torch.Tensor, values: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Trilinear splatting of ``N x C`` values at ``N x 3`` sRGB colours onto a ``size``³ grid:
    (weighted sums ``C x S³``, weights ``S³``), grids indexed ``[b, g, r]``."""
    sums = torch.zeros(values.shape[1], size**3, dtype=values.dtype)
    weights = torch.zeros(size**3, dtype=values.dtype)
    for node, weight, _step in trilinear_corners(colours, size):
        sums.index_add_(1, node, (weight[:, None] * values).t())
        weights.index_add_(0, node, weight)
    return sums, weights


def _blur(grid: torch.Tensor) -> torch.Tensor:
    """Smooth ``C x S x S x S`` grids with a [1, 2, 1] kernel along each axis (edges replicated)."""
    kernel = torch.tensor([0.25, 0.5, 0.25], dtype=grid.dtype)
    out = grid.unsqueeze(0)
    for axis in range(3):
        shape = [1, 1, 1, 1, 1]
        shape[2 + axis] = 3
        padding = [0, 0, 0, 0, 0, 0]
        padding[2 * (2 - axis)] = padding[2 * (2 - axis) + 1] = 1
        padded = F.pad(out, padding, mode="replicate")
        weights = kernel.view(shape).expand(1, 1, *shape[2:])
        out = torch.cat(
            [F.conv3d(padded[:, c : c + 1], weights) for c in range(padded.shape[1])], dim=1
        )
    return out[0]


def fit_residual(model: OneShotLook, colours: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The colour residual for ``N x 3`` colours as the parametric part left them and their ``N x 3``
    targets: the density-weighted mean of what is left near each node, shrunk towards zero where the
    example has few pixels, and bounded."""
    config = model.config
    size = config.residual_size
    sums, weights = _splat(colours.double(), (targets - colours).double(), size)
    sums = _blur(sums.view(3, size, size, size))
    weights = _blur(weights.view(1, size, size, size))
    prior = config.residual_prior * colours.shape[0] / size**3
    residual = sums / (weights + prior)
    return residual.clamp(-config.residual_limit, config.residual_limit).float()


def fit_oneshot(
    sources: list[torch.Tensor], targets: list[torch.Tensor], config: OneShotConfig | None = None, seed: int = 0
) -> OneShotLook:
    """Learn a one-shot look from before/after pairs (``3 x H x W`` sRGB in [0, 1], any size; usually one).

    Each pair is reduced to ``fit_size`` pixels on the long side; the statistics come from the same
    thumbnail the pipeline makes. Several pairs are fitted together, each relative to the mean of
    their statistics. Takes about a second on a CPU core.
    """
    model = OneShotLook(config)
    config = model.config
    generator = torch.Generator().manual_seed(seed)
    statistics, thumbnails, colour_list, target_list = [], [], [], []
    for source, target in zip(sources, targets):
        if source.shape != target.shape:
            raise ValueError(f"before and after differ in size: {tuple(source.shape)} and {tuple(target.shape)}")
        thumbnails.append(make_thumbnail(source[None].float(), config.thumbnail_size))
        statistics.append(photo_statistics(thumbnails[-1]))
        small_source = resize_long_side(source.float(), config.fit_size).reshape(3, -1)
        small_target = resize_long_side(target.float(), config.fit_size).reshape(3, -1)
        picks = torch.randperm(small_source.shape[1], generator=generator)[: config.fit_pixels]
        colour_list.append(small_source[:, picks])
        target_list.append(small_target[:, picks])
    statistics = torch.cat(statistics)
    with torch.no_grad():
        model.reference.copy_(statistics.mean(dim=0))
    _fit_parametric(model, colour_list, target_list, statistics)
    with torch.no_grad():
        # The relative parts are on as far as the global part of the edit changed the statistics: a
        # change to a few colours (left to the residual) is no evidence of, say, an exposure change.
        made_statistics = [
            photo_statistics(model.parametric(thumbnail.flatten(2), s[None]).view_as(thumbnail))
            for thumbnail, s in zip(thumbnails, statistics)
        ]
        model.engagement.copy_(engagement(statistics, torch.cat(made_statistics), config.engaged_at))
        made = torch.cat([model.parametric(c[None], s[None])[0] for c, s in zip(colour_list, statistics)], dim=1)
        wanted = torch.cat(target_list, dim=1)
        size = config.residual_size
        model.residual.copy_(fit_residual(model, made.t(), wanted.t()).view(3, size, size, size))
    return model.eval()


def _fit_parametric(
    model: OneShotLook, colours: list[torch.Tensor], targets: list[torch.Tensor], statistics: torch.Tensor
) -> None:
    """Adam on the gains, curve, channel mix and saturation: a robust error in sRGB, plus a smoothness
    prior on the curve (first and second differences) that carries its offsets flat beyond the
    example's range of brightness."""
    config = model.config
    trainable = [model.cast_gains, model.curve, model.channel_mix, model.saturation]
    optimizer = torch.optim.Adam(trainable, lr=0.05)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, config.fit_steps)
    for _ in range(config.fit_steps):
        optimizer.zero_grad()
        # Charbonnier (about L1): the global parts follow what most of the photo did; a change to a
        # few colours only is left to the colour residual instead of tinting every other colour.
        loss = sum(
            ((model.parametric(c[None], s[None])[0] - t).pow(2) + 1e-4).sqrt().mean()
            for c, t, s in zip(colours, targets, statistics)
        ) / len(colours)
        first = model.curve[1:] - model.curve[:-1]
        second = first[1:] - first[:-1]
        slope = 1.0 + first / config.curve_step
        loss = loss + config.curve_smoothness * (first.pow(2).mean() + 4.0 * second.pow(2).mean())
        loss = loss + 1e-2 * torch.relu(0.2 - slope).pow(2).sum()
        loss.backward()
        optimizer.step()
        schedule.step()
        with torch.no_grad():
            model.channel_mix.clamp_(0.0, 1.0)
