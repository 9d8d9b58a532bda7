"""NAFNet (Chen, Chu, Zhang and Sun, "Simple Baselines for Image Restoration", ECCV 2022) as a photo look.

A U-Net of "nonlinear activation free" blocks. Each block is channel LayerNorm, a 1x1 convolution to twice
the width, a 3x3 depthwise convolution, SimpleGate (the two halves of the channels multiplied), simplified
channel attention (global average pool, 1x1 convolution, rescale), a 1x1 convolution; then a gated
feed-forward part (LayerNorm, 1x1 to twice the width, SimpleGate, 1x1). Both parts are added back through
per-channel scales that start at zero, so every block starts as the identity. The shell: an intro 3x3
convolution, per level some blocks then a stride-2 2x2 convolution that doubles the channels, middle blocks,
then per level a 1x1 convolution + PixelShuffle(2) up, the encoder's features added, some blocks; an ending
3x3 convolution and a global residual (the network predicts the edit, not the photo).

Unlike the LUT family it can copy local parts of an edit (shadows lifted in one corner, local contrast,
sharpening). It is convolutional, so :mod:`autohdr_cli.tiling` runs it on overlapping tiles; the only
whole-image quantity, the channel attention's average, can be supplied from outside (``context``) so that
every tile uses the statistics of the whole photo (see :meth:`NAFNet.image_context`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ..edits import luma, neighbourhood_luminance, whole_photo_maps, window_of


#: Each neighbourhood is one blur of every photo's copy and one input channel: a few say what they need to.
MAX_NEIGHBOURHOODS = 16


@dataclass
class NAFNetConfig:
    """Widths and depths of a NAFNet, plus the weights of its training loss.

    ``width`` is the channel count of the first level (doubled at each level down). ``enc_blocks`` and
    ``dec_blocks`` give the blocks per level (same length: the number of levels); the input is padded to a
    multiple of ``2 ** levels``. ``identity_init`` zeroes the ending convolution, so an untrained model
    returns its input (the reference initialises it at random; starting from "no edit" trains faster on
    mild photo edits). The loss is Charbonnier plus ``ssim_weight`` x (1 - SSIM) plus
    ``delta_e_weight`` x CIEDE2000 plus ``perceptual_weight`` x LPIPS (see
    :class:`autohdr_cli.losses.ReconstructionLoss`).

    ``whole_context`` = 0: each block's channel attention averages its own input, as in the paper; the
    model then learns from crops with crop averages and runs on photos with whole-photo averages.
    ``whole_context`` = N: the averages always come from the whole photo squashed to N x N, in training
    (each crop's own photo, which the training data then brings along) as at inference, so both see
    the same statistics, and the model sees each photo's overall exposure and colour.

    ``neighbourhoods`` (radii as fractions of the photo's long side, empty by default): the network also
    reads, for every pixel, how its luminance compares with the Gaussian-blurred luminance around it at
    each radius, measured on the whole photo (on a copy ``neighbourhood_size`` long), as
    :class:`autohdr_cli.models.localtone.LocalTone` does. A tile or a training crop then knows how bright
    the photo is around it beyond its own edges, which the look's local tone steps depend on.
    """

    width: int = 16
    enc_blocks: tuple[int, ...] = (1, 1, 1, 1)
    middle_blocks: int = 1
    dec_blocks: tuple[int, ...] = (1, 1, 1, 1)
    dw_expand: int = 2
    ffn_expand: int = 2
    dropout: float = 0.0
    layer_norm_eps: float = 1e-6
    identity_init: bool = True
    ssim_weight: float = 0.1
    delta_e_weight: float = 0.01
    perceptual_weight: float = 0.0
    whole_context: int = 0
    neighbourhoods: tuple[float, ...] = ()
    neighbourhood_size: int = 512

    #: ``whole_context`` is a copy of every photo the network runs on; the rest cost parameters only.
    LIMITS: ClassVar[dict[str, tuple[float, float]]] = {
        "whole_context": (0, 1024), "dropout": (0, 1), "neighbourhoods": (1e-4, 1.0), "neighbourhood_size": (16, 4096),
    }

    def __post_init__(self):
        self.enc_blocks = tuple(int(n) for n in self.enc_blocks)
        self.dec_blocks = tuple(int(n) for n in self.dec_blocks)
        self.neighbourhoods = tuple(float(radius) for radius in self.neighbourhoods)
        if len(self.neighbourhoods) > MAX_NEIGHBOURHOODS:
            raise ValueError(f"at most {MAX_NEIGHBOURHOODS} neighbourhoods (each is a blur of every photo)")
        if len(self.enc_blocks) != len(self.dec_blocks):
            raise ValueError(
                f"enc_blocks {self.enc_blocks} and dec_blocks {self.dec_blocks} must have one entry per level each"
            )
        if self.width < 1 or self.dw_expand < 2 or self.ffn_expand < 2 or self.dw_expand % 2 or self.ffn_expand % 2:
            raise ValueError("width must be >= 1 and dw_expand, ffn_expand even numbers >= 2 (SimpleGate halves them)")
        if min(self.enc_blocks + self.dec_blocks + (self.middle_blocks,), default=0) < 0:
            raise ValueError("block counts must be >= 0")
        if self.whole_context and self.whole_context < 2 ** len(self.enc_blocks):
            raise ValueError(f"whole_context must be 0 or at least {2 ** len(self.enc_blocks)} (one pixel at the bottom level)")


def with_widened_intro(weights: dict[str, torch.Tensor], key: str, own: torch.Tensor) -> dict[str, torch.Tensor]:
    """``weights`` with the colour-only intro convolution ``key`` widened by zero weights to ``own``'s
    input channels (a start made without neighbourhood maps, for a network that reads them): the
    network then starts as exactly that start. Unchanged when the start is not such a convolution."""
    start = weights.get(key)
    if start is None or start.dim() != 4 or start.shape[1] != 3 or start.shape[1] >= own.shape[1]:
        return weights
    if (start.shape[0], *start.shape[2:]) != (own.shape[0], *own.shape[2:]):
        return weights
    missing = start.new_zeros(own.shape[0], own.shape[1] - start.shape[1], *own.shape[2:])
    return {**weights, key: torch.cat([start, missing], dim=1)}


def with_maps(images: torch.Tensor, maps: torch.Tensor) -> torch.Tensor:
    """What an intro convolution that reads neighbourhood maps sees: the colour, then each pixel's
    luminance against each blurred map (``B x (3 + K) x H x W``), in the images' memory layout."""
    features = torch.cat([images, maps - luma(images)], dim=1)
    if images.dim() == 4 and images.is_contiguous(memory_format=torch.channels_last):
        # The maps come NCHW: without this the whole network would run in the slower layout.
        features = features.contiguous(memory_format=torch.channels_last)
    return features


class ReadsNeighbourhoods:
    """What a network whose intro reads neighbourhood maps (NAFNet, DiffIR) offers the tiler, the training
    data and export: its config's ``neighbourhoods`` and ``neighbourhood_size`` measured on whole photos,
    each input's maps checked or measured, and a training source split into colour and maps."""

    def neighbourhood_maps(self, images: torch.Tensor) -> torch.Tensor | None:
        """The blurred luminance of whole photos at each of ``neighbourhoods``, ``B x K x h x w`` on a copy
        ``neighbourhood_size`` long (None when the config has no neighbourhoods). The tiler computes it
        once per photo and hands each tile its window."""
        if not self.config.neighbourhoods:
            return None
        return whole_photo_maps(images, self.config.neighbourhoods, self.config.neighbourhood_size)

    @property
    def source_maps(self) -> Callable[[torch.Tensor], torch.Tensor] | None:
        """:meth:`neighbourhood_maps` as a function that pickles without the network (for data loader
        workers): what training data computes once per whole training source to cut each crop's window
        of (None when the config has no neighbourhoods)."""
        if not self.config.neighbourhoods:
            return None
        return functools.partial(whole_photo_maps, scales=self.config.neighbourhoods, size=self.config.neighbourhood_size)

    def maps_at(self, images: torch.Tensor, maps: torch.Tensor | None) -> torch.Tensor | None:
        """The maps the intro reads beside ``images``: ``maps`` (a tile's or a crop's window) checked
        against the images, or, when None, measured on ``images`` taken as whole photos. None for a
        network without neighbourhoods."""
        count = len(self.config.neighbourhoods)
        if not count:
            return None
        if maps is None:
            height, width = images.shape[-2:]
            maps = window_of(self.neighbourhood_maps(images), height, width, 0, 0, height, width)
        if maps.shape[1] != count or maps.shape[-2:] != images.shape[-2:]:
            raise ValueError(f"this {type(self).__name__} reads {count} neighbourhood maps the size of its input")
        return maps

    def colour_and_maps(self, source: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """A training batch's sources split into colour and maps (``3 + K`` channels with neighbourhoods,
        as :attr:`source_maps` lets the data bring them)."""
        count = len(self.config.neighbourhoods)
        if not count:
            return source, None
        if source.shape[1] != 3 + count:
            raise ValueError(f"a {type(self).__name__} with neighbourhoods trains on sources that bring their maps (native crops)")
        return source[:, :3], source[:, 3:]


#: Whole-photo statistics for the presets (see ``whole_context``): measured on the held-out pairs, the
#: small preset gained 1.4 dB over crop statistics at the same 550 steps (27.76 against 26.38).
WHOLE_CONTEXT = 128

#: Neighbourhood radii for the presets (see ``neighbourhoods``): LocalTone's. Measured by source (small sources
#: held out, 20 CPU-minutes, cold starts): +2.36 dB on the development look, +1.91 dB on a second look.
NEIGHBOURHOODS = (0.005, 0.013, 0.026, 0.052, 0.1)

#: Named configurations. ``small`` is the shipped CPU default (trains on a 2-core CPU in under an hour);
#: ``base`` is NAFNet-width32 of the paper's SIDD model, for a GPU; ``large`` is the paper's width-64 model.
#: ``autohdr train --model nafnet`` means ``nafnet-small``. The config's own default (no whole-photo
#: statistics, no neighbourhood maps) is the paper's network, and what checkpoints written without the
#: fields mean.
PRESETS: dict[str, NAFNetConfig] = {
    "small": NAFNetConfig(width=16, enc_blocks=(1, 1, 1, 1), middle_blocks=1, dec_blocks=(1, 1, 1, 1),
                          whole_context=WHOLE_CONTEXT, neighbourhoods=NEIGHBOURHOODS),
    "medium": NAFNetConfig(width=24, enc_blocks=(1, 1, 2, 2), middle_blocks=2, dec_blocks=(1, 1, 1, 1),
                          whole_context=WHOLE_CONTEXT, neighbourhoods=NEIGHBOURHOODS),
    "base": NAFNetConfig(width=32, enc_blocks=(2, 2, 4, 8), middle_blocks=12, dec_blocks=(2, 2, 2, 2),
                          whole_context=WHOLE_CONTEXT, neighbourhoods=NEIGHBOURHOODS),
    "large": NAFNetConfig(width=64, enc_blocks=(2, 2, 4, 8), middle_blocks=12, dec_blocks=(2, 2, 2, 2),
                          whole_context=WHOLE_CONTEXT, neighbourhoods=NEIGHBOURHOODS),
}


def preset(name: str, **overrides) -> NAFNetConfig:
    """A copy of preset ``name`` (see :data:`PRESETS`) with some fields replaced."""
    if name not in PRESETS:
        raise KeyError(f"unknown NAFNet preset {name!r} (known: {', '.join(PRESETS)})")
    return replace(PRESETS[name], **overrides)


class ChannelLayerNorm(nn.Module):
    """LayerNorm over the channels of each pixel of a ``B x C x H x W`` tensor (NAFNet's LayerNorm2d).

    Written with ordinary operations (no custom autograd function), so it exports to ONNX and compiles.
    On a channels-last tensor the channels of a pixel are contiguous, so the fused ``layer_norm`` kernel
    runs on a free permuted view; on NCHW it would need a transposed copy, and the plain mean/variance
    formula is as fast.
    """

    def __init__(self, channels: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise every pixel's channel vector to zero mean and unit variance, then scale and shift."""
        if x.dim() == 4 and x.shape[1] > 1 and x.is_contiguous(memory_format=torch.channels_last):
            normed = F.layer_norm(x.permute(0, 2, 3, 1), (x.shape[1],), self.weight, self.bias, self.eps)
            return normed.permute(0, 3, 1, 2)
        mean = x.mean(dim=1, keepdim=True)
        centred = x - mean
        variance = centred.square().mean(dim=1, keepdim=True)
        return centred * torch.rsqrt(variance + self.eps) * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)


def simple_gate(x: torch.Tensor) -> torch.Tensor:
    """SimpleGate: split the channels in two halves and multiply them (NAFNet's replacement for GELU)."""
    first, second = x.chunk(2, dim=1)
    return first * second


class NAFBlock(nn.Module):
    """One NAFNet block of ``channels`` channels: the attention-like part and the gated feed-forward part."""

    def __init__(self, channels: int, dw_expand: int = 2, ffn_expand: int = 2, dropout: float = 0.0, eps: float = 1e-6):
        super().__init__()
        inner = channels * dw_expand
        self.norm1 = ChannelLayerNorm(channels, eps)
        self.conv1 = nn.Conv2d(channels, inner, 1)
        self.conv2 = nn.Conv2d(inner, inner, 3, padding=1, groups=inner)
        self.sca = nn.Conv2d(inner // 2, inner // 2, 1)  # simplified channel attention: on the pooled vector
        self.conv3 = nn.Conv2d(inner // 2, channels, 1)
        ffn = channels * ffn_expand
        self.norm2 = ChannelLayerNorm(channels, eps)
        self.conv4 = nn.Conv2d(channels, ffn, 1)
        self.conv5 = nn.Conv2d(ffn // 2, channels, 1)
        self.dropout1 = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.dropout2 = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        # Zero residual scales: a fresh block is the identity, so a deep network starts as a shallow one.
        self.beta = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.gamma = nn.Parameter(torch.zeros(1, channels, 1, 1))

    def forward(self, x: torch.Tensor, pooled: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The block's output and the channel-attention statistic it used (``B x C x 1 x 1``).

        ``pooled`` replaces the global average of this block's own input when given: that is how tiles
        use the statistics of the whole photo.
        """
        y = simple_gate(self.conv2(self.conv1(self.norm1(x))))
        if pooled is not None and not self.training and not torch.is_grad_enabled():
            return self._folded(x, y, self.sca(pooled)), pooled
        if pooled is None:
            pooled = y.mean(dim=(2, 3), keepdim=True)
        y = self.conv3(y * self.sca(pooled))
        x = x + self.dropout1(y) * self.beta
        y = self.conv5(simple_gate(self.conv4(self.norm2(x))))
        return x + self.dropout2(y) * self.gamma, pooled

    def _folded(self, x: torch.Tensor, y: torch.Tensor, attention: torch.Tensor) -> torch.Tensor:
        """The rest of the block for inference with given statistics, in fewer passes over memory.

        The residual scales (and, for a single image, the channel attention) are per-channel factors
        around a 1x1 convolution, so they are folded into its weights: three full-size multiplications
        fewer per block, which is most of the time on a CPU, where these layers are bandwidth-bound.
        """
        beta, gamma = self.beta.view(-1, 1, 1, 1), self.gamma.view(-1, 1, 1, 1)
        weight3, bias3 = self.conv3.weight * beta, self.conv3.bias * beta.view(-1)
        if y.shape[0] == 1:
            y = F.conv2d(y, weight3 * attention.view(1, -1, 1, 1), bias3)
        else:
            y = F.conv2d(y * attention, weight3, bias3)
        x = y.add_(x)  # y is a fresh tensor: the residual sum needs no new buffer
        y = simple_gate(self.conv4(self.norm2(x)))
        return F.conv2d(y, self.conv5.weight * gamma, self.conv5.bias * gamma.view(-1)).add_(x)


class NAFNet(ReadsNeighbourhoods, nn.Module):
    """NAFNet image-to-image model: ``B x 3 x H x W`` in [0, 1] to the same shape (the edited photo).

    Any size goes in: the input is padded (edge pixels repeated) to a multiple of ``2 ** levels`` and the
    result cropped back. In eval mode the output is clipped to [0, 1]; in training it is not, so the loss
    keeps its gradient at the ends of the range.
    """

    config_class = NAFNetConfig
    #: Gradients are clipped to this norm in training (``autohdr train --clip-grad`` overrides): deep
    #: residual networks meet the odd crop whose gradient would throw the weights far off.
    clip_grad_norm = 1.0
    #: Convolutional: the pipeline runs it on overlapping tiles (:func:`autohdr_cli.tiling.enhance_tiled`).
    tileable = True
    #: Trains channels-last (the fused channel LayerNorm and the depthwise convolutions): a CPU step
    #: 1.70x faster than all-NCHW (benchmarks/bench_train_step.py).
    channels_last_training = True

    def __init__(self, config: NAFNetConfig | None = None):
        super().__init__()
        self.config = config or NAFNetConfig()
        c = self.config

        def blocks(channels: int, count: int) -> nn.ModuleList:
            return nn.ModuleList(NAFBlock(channels, c.dw_expand, c.ffn_expand, c.dropout, c.layer_norm_eps) for _ in range(count))

        self.intro = nn.Conv2d(3 + len(c.neighbourhoods), c.width, 3, padding=1)
        self.encoders = nn.ModuleList()
        self.downs = nn.ModuleList()
        channels = c.width
        for count in c.enc_blocks:
            self.encoders.append(blocks(channels, count))
            self.downs.append(nn.Conv2d(channels, channels * 2, 2, stride=2))
            channels *= 2
        self.middle = blocks(channels, c.middle_blocks)
        self.ups = nn.ModuleList()
        self.decoders = nn.ModuleList()
        for count in c.dec_blocks:
            self.ups.append(nn.Sequential(nn.Conv2d(channels, channels * 2, 1, bias=False), nn.PixelShuffle(2)))
            channels //= 2
            self.decoders.append(blocks(channels, count))
        self.ending = nn.Conv2d(c.width, 3, 3, padding=1)
        if c.identity_init:
            nn.init.zeros_(self.ending.weight)
            nn.init.zeros_(self.ending.bias)

    @property
    def multiple(self) -> int:
        """Input sides are padded to a multiple of this (one halving per level)."""
        return 2 ** len(self.config.enc_blocks)

    @property
    def num_blocks(self) -> int:
        """How many NAFBlocks (so how many channel-attention statistics) the network has."""
        return sum(self.config.enc_blocks) + self.config.middle_blocks + sum(self.config.dec_blocks)

    @property
    def prior_size(self) -> int:
        """Side of the squashed whole photos training must bring along (0: none; see ``whole_context``)."""
        return self.config.whole_context

    def forward(
        self, images: torch.Tensor, context: Sequence[torch.Tensor] | None = None, maps: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Enhance ``B x 3 x H x W`` images in [0, 1].

        ``context`` (from :meth:`image_context`, one ``B x C x 1 x 1`` tensor per block) replaces each
        block's global average with given statistics; without it every image uses its own (with
        ``whole_context``, those of the image squashed to that size). ``maps`` (``B x K x H x W``, the
        whole photo's blurred luminance at the images' pixels: :meth:`neighbourhood_maps` then
        :func:`autohdr_cli.edits.window_of`) is what a tile or a crop reads of its surroundings; without
        it the images are taken as whole photos and measured here.
        """
        if context is None and self.config.whole_context:
            context = self.image_context(images)
        return self._run(images, context, None, self.maps_at(images, maps))

    def adapt_start(self, weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """A start's ``weights`` fitted to this network: a start without neighbourhood maps (the shipped
        pretrained start) gets zero weights for them in the intro convolution, so the network starts as
        exactly that start and learns what the maps add."""
        return with_widened_intro(weights, "intro.weight", self.intro.weight)

    def image_context(self, images: torch.Tensor) -> list[torch.Tensor]:
        """The channel-attention statistics of whole images: one ``B x C x 1 x 1`` tensor per block.

        The tiler computes them once per photo (on a copy of at most a few megapixels) and hands them to
        every tile, so that tiles agree with each other and with an untiled run.
        """
        size = self.config.whole_context
        if size and images.shape[-2:] != (size, size):
            images = F.interpolate(images, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        maps = None
        if self.config.neighbourhoods:  # measured on the squashed copy itself, at its own scale
            maps = neighbourhood_luminance(images, self.config.neighbourhoods, max(images.shape[-2:]), False)
        recorded: list[torch.Tensor] = []
        self._run(images, None, recorded, maps)
        return recorded

    def _run(
        self, images: torch.Tensor, context: Sequence[torch.Tensor] | None, recorded: list[torch.Tensor] | None,
        maps: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if context is not None and len(context) != self.num_blocks:
            raise ValueError(f"context has {len(context)} statistics; this NAFNet has {self.num_blocks} blocks")
        given: Iterator[torch.Tensor] | None = iter(context) if context is not None else None

        def run_blocks(x: torch.Tensor, group: nn.ModuleList) -> torch.Tensor:
            for block in group:
                x, pooled = block(x, next(given) if given is not None else None)
                if recorded is not None:
                    recorded.append(pooled)
            return x

        height, width = images.shape[-2:]
        multiple = self.multiple
        pad_bottom, pad_right = (-height) % multiple, (-width) % multiple
        padded = images
        if pad_bottom or pad_right:
            # Repeated edge pixels rather than zeros: a black border would be a strong false edge to the convs.
            padded = F.pad(images, (0, pad_right, 0, pad_bottom), mode="replicate")
        if maps is not None:  # checked by maps_at, or measured on the copy by image_context
            if pad_bottom or pad_right:
                maps = F.pad(maps, (0, pad_right, 0, pad_bottom), mode="replicate")
            x = self.intro(with_maps(padded, maps))
        else:
            x = self.intro(padded)
        skips = []
        for group, down in zip(self.encoders, self.downs):
            x = run_blocks(x, group)
            skips.append(x)
            x = down(x)
        x = run_blocks(x, self.middle)
        for group, up, skip in zip(self.decoders, self.ups, reversed(skips)):
            x = run_blocks(up(x) + skip, group)
        out = (self.ending(x) + padded)[..., :height, :width]
        return out if self.training else out.clamp(0.0, 1.0)

    def training_loss(
        self,
        source: torch.Tensor,
        target: torch.Tensor,
        looks: torch.Tensor | None = None,
        whole: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Reconstruction loss of ``forward(source)`` against ``target``; ``looks`` is not used (one look).

        ``whole`` (``B x 6 x S x S``: each crop's whole source and target photos, squashed) gives the
        channel-attention statistics when ``whole_context`` is set, as the photo does at inference. With
        ``neighbourhoods``, ``source`` has ``3 + K`` channels: the crop, then its window of the whole
        photo's blurred luminance (what the training data cuts with :attr:`source_maps`).
        Charbonnier (a smooth L1) carries PSNR; SSIM and CIEDE2000 terms (config weights) keep local
        contrast and colour right, the two other numbers the evaluation reports.
        """
        from ..losses import ReconstructionLoss

        source, maps = self.colour_and_maps(source)
        context = None
        if self.config.whole_context:
            context = self.image_context(whole[:, :3] if whole is not None else source)
        prediction = self(source, context, maps)
        loss = ReconstructionLoss(
            charbonnier=1.0, ssim=self.config.ssim_weight, delta_e=self.config.delta_e_weight,
            perceptual=self.config.perceptual_weight,
        )
        total, parts = loss(prediction, target)
        return total, {name: float(value.detach()) for name, value in parts.items()}
