"""DiffIR (Xia et al., "DiffIR: Efficient Diffusion Model for Image Restoration", ICCV 2023) as a photo look.

Instead of diffusing the image, DiffIR diffuses a compact *prior*: one vector per photo that says what
enhancement the photo needs. A Restormer-style transformer (the DIRformer) applies it: every block's
two parts (channel attention, gated depthwise feed-forward) see their input scaled and shifted per
channel by amounts computed from the prior.

Training has two stages (:attr:`DiffIRConfig.stage`):

1. **Stage 1.** CPEN-S1 reads the source *and the target* (pixel-unshuffled, concatenated) and pools
   them into the prior; the DIRformer learns to produce the target from the source and that prior.
   Pixel loss only. A stage-1 model cannot enhance on its own (it needs the target).
2. **Stage 2.** CPEN-S2 reads the source only; a small MLP denoiser runs ``timesteps`` reverse
   diffusion steps on the prior vector, conditioned on CPEN-S2's output, starting from Gaussian noise
   (linear beta schedule 0.1 to 0.99 over 4 steps, as in the paper; the denoiser predicts the clean
   prior and each step moves to the posterior mean, so sampling is deterministic for given starting
   noise). Trained with the pixel loss of the result plus a distillation loss to the (frozen) stage-1
   prior; the DIRformer is initialised from stage 1 and fine-tuned. During training the reverse steps
   start from the stage-1 prior diffused to the last step, as the paper does.

Inference: one CPEN-S2 pass on a small square copy of the whole photo, ``timesteps`` denoiser calls, one DIRformer
pass. The starting noise comes from :attr:`DiffIR.sampling_seed` (``autohdr enhance --seed``), drawn
once per photo on the CPU, so a photo's result does not depend on the device, the batch or the order.

Full resolution: the DIRformer is convolutional apart from two whole-image quantities, the prior and
each block's channel-attention matrix (a ``C x C`` matrix of cosine similarities between whole channel
maps). :meth:`DiffIR.image_context` computes both once per photo from a downscaled copy and the tiler
hands them to every tile, so tiles agree by construction (:mod:`autohdr_cli.tiling`).

``timesteps = 0`` is the ablation "CPEN-S2's output used directly": the denoiser network is called
once, as a plain regressor from CPEN-S2's features to the prior, with the same losses.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from .nafnet import MAX_NEIGHBOURHOODS, NEIGHBOURHOODS, ChannelLayerNorm, ReadsNeighbourhoods, with_maps, with_widened_intro


@dataclass
class DiffIRConfig:
    """Sizes of the DIRformer, the prior networks and the diffusion, the training stage, and loss weights.

    ``width`` is the DIRformer's channel count at full resolution (doubled at each level down);
    ``enc_blocks``/``dec_blocks`` give the transformer blocks per level, ``middle_blocks`` those at the
    lowest resolution, ``heads`` the attention heads per level plus one entry for the middle (each must
    divide that level's channels). ``prior_dim`` is the length of the prior vector; the CPENs have
    ``cpen_width`` channels and ``cpen_blocks`` residual blocks at 1/4 resolution and read a copy of the
    photo resized to ``prior_size`` x ``prior_size``. ``stage`` is the training stage this model is in (1 or 2).
    Loss: Charbonnier + ``ssim_weight`` (1 - SSIM) + ``delta_e_weight`` ΔE2000 + ``perceptual_weight``
    LPIPS, plus (stage 2)
    ``prior_weight`` x the L1 distance between the diffused prior and the stage-1 prior.

    ``neighbourhoods`` (radii as fractions of the photo's long side, empty by default) and
    ``neighbourhood_size``: as NAFNet's (:class:`autohdr_cli.models.nafnet.NAFNetConfig`), the DIRformer's
    intro also reads each pixel's luminance against the whole photo's blurred luminance at each radius,
    so a tile or a training crop knows how bright the photo is around it.

    ``whole_context`` = 0: each block's channel-attention matrix comes from its own input, as in the paper
    (a training crop's own, at inference the photo's: the tiler measures it on a copy of the photo).
    ``whole_context`` = N: the matrices always come from the whole photo squashed to N x N, in training
    (each crop's own photo, which the training data brings along) as at inference, so a small crop of a
    large photo learns with the statistics it will be run with.
    """

    width: int = 10
    enc_blocks: tuple[int, ...] = (1, 1, 1)
    middle_blocks: int = 1
    dec_blocks: tuple[int, ...] = (1, 1, 1)
    refinement_blocks: int = 0
    heads: tuple[int, ...] = (1, 2, 2, 4)
    ffn_expand: float = 2.0
    prior_dim: int = 128
    cpen_width: int = 32
    cpen_blocks: int = 2
    prior_size: int = 256
    denoiser_blocks: int = 2
    timesteps: int = 4
    beta_start: float = 0.1
    beta_end: float = 0.99
    stage: int = 2
    identity_init: bool = True
    layer_norm_eps: float = 1e-6
    ssim_weight: float = 0.1
    delta_e_weight: float = 0.01
    perceptual_weight: float = 0.0
    prior_weight: float = 1.0
    neighbourhoods: tuple[float, ...] = ()
    neighbourhood_size: int = 512
    whole_context: int = 0

    #: Run-time sizes: the prior's copy of every photo and the diffusion steps; the rest cost parameters.
    LIMITS: ClassVar[dict[str, tuple[float, float]]] = {
        "prior_size": (16, 1024), "timesteps": (0, 1000), "beta_start": (0, 1), "beta_end": (0, 1),
        "ffn_expand": (0.25, 16), "neighbourhoods": (1e-4, 1.0), "neighbourhood_size": (16, 4096),
        "whole_context": (0, 1024),
    }

    def __post_init__(self):
        self.enc_blocks = tuple(int(n) for n in self.enc_blocks)
        self.dec_blocks = tuple(int(n) for n in self.dec_blocks)
        self.heads = tuple(int(n) for n in self.heads)
        self.neighbourhoods = tuple(float(radius) for radius in self.neighbourhoods)
        if len(self.neighbourhoods) > MAX_NEIGHBOURHOODS:
            raise ValueError(f"at most {MAX_NEIGHBOURHOODS} neighbourhoods (each is a blur of every photo)")
        levels = len(self.enc_blocks)
        if len(self.dec_blocks) != levels:
            raise ValueError(f"enc_blocks {self.enc_blocks} and dec_blocks {self.dec_blocks} need one entry per level each")
        if len(self.heads) != levels + 1:
            raise ValueError(f"heads {self.heads} needs {levels + 1} entries: one per level and one for the middle")
        for level, heads in enumerate(self.heads):
            channels = self.width * 2**level
            if heads < 1 or channels % heads:
                raise ValueError(f"heads[{level}] = {heads} does not divide that level's {channels} channels")
        if self.width < 2 or self.width % 2:
            raise ValueError("width must be an even number >= 2 (each level down halves then unshuffles it)")
        if self.stage not in (1, 2):
            raise ValueError(f"stage must be 1 or 2 (got {self.stage})")
        if self.timesteps < 0:
            raise ValueError("timesteps must be >= 0 (0 = no diffusion, CPEN-S2's output used directly)")
        if not 0 < self.beta_start <= self.beta_end < 1:
            raise ValueError("need 0 < beta_start <= beta_end < 1")
        if min(self.enc_blocks + self.dec_blocks + (self.middle_blocks, self.refinement_blocks), default=0) < 0:
            raise ValueError("block counts must be >= 0")
        if self.whole_context and self.whole_context < 2 ** levels:
            raise ValueError(f"whole_context must be 0 or at least {2 ** levels} (one pixel at the bottom level)")
        if self.prior_dim < 1 or self.cpen_width < 1 or self.prior_size < 16:
            raise ValueError("prior_dim and cpen_width must be >= 1, prior_size >= 16")


#: Whole-photo attention for the presets (see ``whole_context``): by source (small sources held out, 20
#: CPU-minutes, with the neighbourhood maps) +0.38 dB on the development look, +0.66 on the airy look,
#: and a cheaper context.
WHOLE_CONTEXT = 128

#: Named configurations. ``small`` is the shipped CPU default (about NAFNet-small's cost per megapixel);
#: ``base`` follows the paper's DIRformer widths (Restormer's 48 channels, 4 levels) for a GPU. Every
#: preset reads NAFNet's neighbourhood maps and whole-photo attention; the config's own defaults (neither)
#: are the paper's network and what checkpoints written without those fields mean.
PRESETS: dict[str, DiffIRConfig] = {
    "small": DiffIRConfig(neighbourhoods=NEIGHBOURHOODS, whole_context=WHOLE_CONTEXT),
    "medium": DiffIRConfig(width=16, enc_blocks=(1, 2, 2), middle_blocks=2, dec_blocks=(1, 2, 2), heads=(1, 2, 4, 4),
                           prior_dim=192, cpen_width=48, cpen_blocks=3, neighbourhoods=NEIGHBOURHOODS,
                           whole_context=WHOLE_CONTEXT),
    "base": DiffIRConfig(width=48, enc_blocks=(2, 3, 3), middle_blocks=4, dec_blocks=(2, 3, 3), refinement_blocks=2,
                         heads=(1, 2, 4, 8), ffn_expand=2.66, prior_dim=256, cpen_width=64, cpen_blocks=6,
                         denoiser_blocks=5, neighbourhoods=NEIGHBOURHOODS, whole_context=WHOLE_CONTEXT),
}


def preset(name: str, **overrides) -> DiffIRConfig:
    """A copy of preset ``name`` (see :data:`PRESETS`) with some fields replaced."""
    if name not in PRESETS:
        raise KeyError(f"unknown DiffIR preset {name!r} (known: {', '.join(PRESETS)})")
    return replace(PRESETS[name], **overrides)


def linear_beta_schedule(timesteps: int, start: float, end: float) -> torch.Tensor:
    """Latent-diffusion's "linear" schedule: betas evenly spaced in square root from ``start`` to ``end``."""
    return torch.linspace(math.sqrt(start), math.sqrt(end), timesteps, dtype=torch.float64) ** 2


def prior_thumbnail(images: torch.Tensor, size: int) -> torch.Tensor:
    """Whole ``B x C x H x W`` images resized (antialiased bilinear) to ``size x size``, the aspect ratio
    not kept: the prior pools over the whole picture, so squashing costs nothing, and square copies of
    photos of any shape batch together in training."""
    return F.interpolate(images.float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False)


# ------------------------------------------------------------------------------------- prior networks


class ResidualBlock(nn.Module):
    """Two 3x3 convolutions with a leaky ReLU between them, added back to the input."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` plus the block's correction."""
        return x + self.conv2(F.leaky_relu(self.conv1(x), 0.1))


class PriorEncoder(nn.Module):
    """CPEN: pixel-unshuffle by 4, a few convolutions, global average pooling, an MLP; one vector per image.

    Inputs of any size (at least 4 pixels a side) give a ``B x out_dim`` vector: sides are padded to a
    multiple of 4 with repeated edge pixels.
    """

    def __init__(self, in_channels: int, width: int, blocks: int, out_dim: int):
        super().__init__()
        self.head = nn.Conv2d(in_channels * 16, width, 3, padding=1)
        self.body = nn.Sequential(*(ResidualBlock(width) for _ in range(blocks)))
        self.tail = nn.Sequential(
            nn.Conv2d(width, width * 2, 3, padding=1), nn.LeakyReLU(0.1),
            nn.Conv2d(width * 2, width * 4, 3, padding=1), nn.LeakyReLU(0.1),
        )
        self.mlp = nn.Sequential(
            nn.Linear(width * 4, out_dim), nn.LeakyReLU(0.1), nn.Linear(out_dim, out_dim), nn.LeakyReLU(0.1)
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """The pooled description of ``images`` (``B x C x H x W``), ``B x out_dim``."""
        height, width = images.shape[-2:]
        pad_bottom, pad_right = (-height) % 4, (-width) % 4
        if pad_bottom or pad_right:
            images = F.pad(images, (0, pad_right, 0, pad_bottom), mode="replicate")
        features = F.leaky_relu(self.head(F.pixel_unshuffle(images, 4)), 0.1)
        features = self.tail(self.body(features))
        return self.mlp(features.mean(dim=(2, 3)))


class PriorDenoiser(nn.Module):
    """The diffusion network: an MLP from (noisy prior, step, condition) to the clean prior it predicts."""

    def __init__(self, prior_dim: int, blocks: int, timesteps: int):
        super().__init__()
        self.timesteps = max(1, timesteps)
        layers: list[nn.Module] = [nn.Linear(prior_dim * 2 + 1, prior_dim), nn.LeakyReLU(0.1)]
        for _ in range(blocks):
            layers += [nn.Linear(prior_dim, prior_dim), nn.LeakyReLU(0.1)]
        self.mlp = nn.Sequential(*layers)

    def forward(self, noisy: torch.Tensor, step: int, condition: torch.Tensor) -> torch.Tensor:
        """Predict the clean prior from ``noisy`` (``B x D``) at reverse step ``step``, given ``condition``."""
        time = torch.full((noisy.shape[0], 1), step / self.timesteps, dtype=noisy.dtype, device=noisy.device)
        return self.mlp(torch.cat([condition, time, noisy], dim=1))


# ------------------------------------------------------------------------------------------ DIRformer


class PriorModulation(nn.Module):
    """Per-channel scale and shift computed from the prior: ``x * (1 + scale) + shift``.

    Starts at zero (scale 0, shift 0), so a fresh block behaves as an unmodulated one.
    """

    def __init__(self, prior_dim: int, channels: int):
        super().__init__()
        self.linear = nn.Linear(prior_dim, channels * 2)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, x: torch.Tensor, prior: torch.Tensor) -> torch.Tensor:
        """Modulate ``x`` (``B x C x H x W``) by ``prior`` (``B x D``)."""
        scale, shift = self.linear(prior)[:, :, None, None].chunk(2, dim=1)
        return torch.addcmul(shift, x, scale + 1.0)


class ChannelAttention(nn.Module):
    """Restormer's multi-Dconv head transposed attention: attention between channels, not pixels.

    Queries, keys and values are 1x1 then 3x3 depthwise convolutions of the input. Per head, the
    attention matrix holds the cosine similarities of every query channel map with every key channel
    map (over all pixels) times a learned temperature, softmaxed; the output mixes the value channels by
    it. That matrix is a whole-image quantity: given from outside (``attention``), the block needs only
    the values, so a tile with the photo's matrix computes exactly the photo's result (and a third of
    the convolutions).
    """

    def __init__(self, channels: int, heads: int):
        super().__init__()
        self.heads = heads
        self.temperature = nn.Parameter(torch.ones(heads, 1, 1))
        self.qk = nn.Conv2d(channels, channels * 2, 1)
        self.qk_dw = nn.Conv2d(channels * 2, channels * 2, 3, padding=1, groups=channels * 2)
        self.v = nn.Conv2d(channels, channels, 1)
        self.v_dw = nn.Conv2d(channels, channels, 3, padding=1, groups=channels)
        self.project = nn.Conv2d(channels, channels, 1)

    def attention_matrix(self, x: torch.Tensor) -> torch.Tensor:
        """The channel-attention matrices of ``x`` as one block-diagonal ``B x C x C`` matrix per image
        (one ``C/heads`` square block per head, zeros elsewhere)."""
        batch, channels = x.shape[:2]
        qk = _pixels_by_channels(self.qk_dw(self.qk(x)))  # B x HW x 2C
        # One Gram matrix gives the dot products and the norms: the big tensors are never normalised.
        gram = qk.transpose(1, 2) @ qk
        norms = gram.diagonal(dim1=1, dim2=2).clamp_min(1e-24).sqrt()
        cosine = gram[:, :channels, channels:] / (norms[:, :channels, None] * norms[:, None, channels:])
        # Softmax per head: logits of channel pairs from different heads are -inf, so their weights are 0.
        head = torch.arange(channels, device=x.device) // (channels // self.heads)
        logits = cosine * self.temperature.view(-1).repeat_interleave(channels // self.heads)[:, None]
        logits = logits.masked_fill(head[:, None] != head[None, :], float("-inf"))
        return logits.softmax(dim=-1)

    def forward(self, x: torch.Tensor, attention: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The attention output and the matrices used (``attention`` when given, else ``x``'s own)."""
        if attention is None:
            attention = self.attention_matrix(x)
        if attention.dim() == 2:
            attention = attention[None]
        batch, channels, height, width = x.shape
        values = _pixels_by_channels(self.v_dw(self.v(x)))  # B x HW x C
        mixed = values @ attention.to(values.dtype).transpose(1, 2)
        mixed = mixed.view(batch, height, width, channels).permute(0, 3, 1, 2)  # channels-last, no copy
        return self.project(mixed), attention


def _pixels_by_channels(x: torch.Tensor) -> torch.Tensor:
    """``B x C x H x W`` as ``B x HW x C`` (a free view of a channels-last tensor)."""
    batch, channels = x.shape[:2]
    return x.permute(0, 2, 3, 1).reshape(batch, -1, channels)


class GatedFeedForward(nn.Module):
    """Restormer's gated depthwise feed-forward: 1x1 up, 3x3 depthwise, act(one half) x other half, 1x1 down.

    The gate's activation is SiLU where Restormer has GELU: on the CPU, GELU's exact form took 37 ms
    for 6 M values against SiLU's 10 ms, over a tenth of the whole network's time.
    """

    def __init__(self, channels: int, expand: float):
        super().__init__()
        hidden = max(1, int(channels * expand))
        self.project_in = nn.Conv2d(channels, hidden * 2, 1)
        self.depthwise = nn.Conv2d(hidden * 2, hidden * 2, 3, padding=1, groups=hidden * 2)
        self.project_out = nn.Conv2d(hidden, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The feed-forward output (same shape as ``x``)."""
        gate, value = self.depthwise(self.project_in(x)).chunk(2, dim=1)
        return self.project_out(F.silu(gate) * value)


class TransformerBlock(nn.Module):
    """One DIRformer block: prior-modulated channel attention, then prior-modulated gated feed-forward."""

    def __init__(self, channels: int, heads: int, ffn_expand: float, prior_dim: int, eps: float):
        super().__init__()
        self.norm1 = ChannelLayerNorm(channels, eps)
        self.modulate1 = PriorModulation(prior_dim, channels)
        self.attention = ChannelAttention(channels, heads)
        self.norm2 = ChannelLayerNorm(channels, eps)
        self.modulate2 = PriorModulation(prior_dim, channels)
        self.ffn = GatedFeedForward(channels, ffn_expand)

    def forward(
        self, x: torch.Tensor, prior: torch.Tensor, attention: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The block's output and the attention matrices it used."""
        y, attention = self.attention(self.modulate1(self.norm1(x), prior), attention)
        x = x + y
        x = x + self.ffn(self.modulate2(self.norm2(x), prior))
        return x, attention


class DIRformer(nn.Module):
    """A Restormer-style U-Net of :class:`TransformerBlock`, every block modulated by the prior.

    Down: 3x3 convolution to half the channels, pixel-unshuffle (so twice the channels at half the
    size); up: 3x3 convolution to twice the channels, pixel-shuffle; the encoder's features are
    concatenated and a 1x1 convolution brings the channels back. A global residual: the network
    predicts the edit, and with ``identity_init`` starts as the identity.
    """

    def __init__(self, config: DiffIRConfig):
        super().__init__()
        c = config

        def blocks(channels: int, heads: int, count: int) -> nn.ModuleList:
            return nn.ModuleList(
                TransformerBlock(channels, heads, c.ffn_expand, c.prior_dim, c.layer_norm_eps) for _ in range(count)
            )

        self.intro = nn.Conv2d(3 + len(c.neighbourhoods), c.width, 3, padding=1)
        self.encoders, self.downs = nn.ModuleList(), nn.ModuleList()
        channels = c.width
        for level, count in enumerate(c.enc_blocks):
            self.encoders.append(blocks(channels, c.heads[level], count))
            self.downs.append(nn.Sequential(nn.Conv2d(channels, channels // 2, 3, padding=1, bias=False), nn.PixelUnshuffle(2)))
            channels *= 2
        self.middle = blocks(channels, c.heads[-1], c.middle_blocks)
        self.ups, self.reduces, self.decoders = nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
        for level in reversed(range(len(c.dec_blocks))):
            self.ups.append(nn.Sequential(nn.Conv2d(channels, channels * 2, 3, padding=1, bias=False), nn.PixelShuffle(2)))
            channels //= 2
            self.reduces.append(nn.Conv2d(channels * 2, channels, 1))
            self.decoders.append(blocks(channels, c.heads[level], c.dec_blocks[level]))
        self.refinement = blocks(channels, c.heads[0], c.refinement_blocks)
        self.ending = nn.Conv2d(c.width, 3, 3, padding=1)
        if c.identity_init:
            nn.init.zeros_(self.ending.weight)
            nn.init.zeros_(self.ending.bias)

    def forward(
        self,
        images: torch.Tensor,
        prior: torch.Tensor,
        attention: Sequence[torch.Tensor] | None = None,
        recorded: list[torch.Tensor] | None = None,
        maps: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Edit ``images`` (sides a multiple of ``2 ** levels``) as ``prior`` says; unclamped.

        ``attention`` (one matrix batch per block, in order) replaces each block's own; ``recorded``
        collects the matrices used. ``maps`` (``B x K x H x W``, with ``neighbourhoods``): the blurred
        luminance around each pixel, read by the intro beside the colour.
        """
        given: Iterator[torch.Tensor] | None = iter(attention) if attention is not None else None

        def run(x: torch.Tensor, group: nn.ModuleList) -> torch.Tensor:
            for block in group:
                x, used = block(x, prior, next(given) if given is not None else None)
                if recorded is not None:
                    recorded.append(used)
            return x

        x = self.intro(images if maps is None else with_maps(images, maps))
        skips = []
        for group, down in zip(self.encoders, self.downs):
            x = run(x, group)
            skips.append(x)
            x = down(x)
        x = run(x, self.middle)
        for up, reduce, group, skip in zip(self.ups, self.reduces, self.decoders, reversed(skips)):
            x = run(reduce(torch.cat([up(x), skip], dim=1)), group)
        x = run(x, self.refinement)
        return self.ending(x) + images


# ---------------------------------------------------------------------------------------------- model


class DiffIR(ReadsNeighbourhoods, nn.Module):
    """DiffIR image-to-image model: ``B x 3 x H x W`` in [0, 1] to the edited photo, same shape.

    Any size goes in (padded with repeated edge pixels to a multiple of ``2 ** levels``, cropped back).
    In eval mode the result is clipped to [0, 1]. Only a stage-2 model can enhance (see the module notes).
    """

    config_class = DiffIRConfig
    #: Gradients are clipped to this norm in training (``autohdr train --clip-grad`` overrides): deep
    #: residual networks meet the odd crop whose gradient would throw the weights far off.
    clip_grad_norm = 1.0
    #: Convolutional apart from whole-image quantities that :meth:`image_context` supplies: tile it.
    tileable = True
    #: Trains channels-last: a CPU step 1.49x faster than NCHW (benchmarks/bench_train_step.py).
    channels_last_training = True
    #: AdamW's peak rate when ``--lr`` is not given. By source at 20 CPU-minutes (~200 steps a stage),
    #: 2e-3 scored +0.34 dB (development look, two seeds) and +1.27 dB (airy) over the project's 1e-3,
    #: LPIPS lower each time; 3e-3 and 5e-3 scored less. The DIRformer was undertrained at 1e-3.
    default_lr = 2e-3

    def __init__(self, config: DiffIRConfig | None = None):
        super().__init__()
        self.config = config or DiffIRConfig()
        c = self.config
        self.cpen_s1 = PriorEncoder(6, c.cpen_width, c.cpen_blocks, c.prior_dim)
        self.cpen_s2 = PriorEncoder(3, c.cpen_width, c.cpen_blocks, c.prior_dim)
        self.denoiser = PriorDenoiser(c.prior_dim, c.denoiser_blocks, c.timesteps)
        self.dirformer = DIRformer(c)
        self._register_schedule()
        self.sampling_seed = 0
        self._freeze_for_stage()

    @property
    def sampling_seed(self) -> int:
        """Seed of the reverse diffusion's starting noise (``autohdr enhance --seed``)."""
        return self._sampling_seed

    @sampling_seed.setter
    def sampling_seed(self, seed: int) -> None:
        # Drawn once here, not at every call: a constant, so exported graphs carry it too.
        self._sampling_seed = int(seed)
        generator = torch.Generator().manual_seed(self._sampling_seed)
        self._start_noise = torch.randn(1, self.config.prior_dim, generator=generator)

    def _freeze_for_stage(self) -> None:
        """Only this stage's networks train: stage 1 leaves CPEN-S2 and the denoiser alone; stage 2
        keeps CPEN-S1 frozen, as the teacher whose prior it distils."""
        stage1 = self.config.stage == 1
        self.cpen_s1.requires_grad_(stage1)
        self.cpen_s2.requires_grad_(not stage1)
        self.denoiser.requires_grad_(not stage1)

    def _register_schedule(self) -> None:
        c = self.config
        steps = max(1, c.timesteps)
        betas = linear_beta_schedule(steps, c.beta_start, c.beta_end)
        alphas = 1.0 - betas
        cumulative = torch.cumprod(alphas, dim=0)
        previous = torch.cat([torch.ones(1, dtype=torch.float64), cumulative[:-1]])
        # Constants, not weights: kept out of the checkpoint (persistent=False) and rebuilt from the config.
        for name, value in {
            "sqrt_cumulative": cumulative.sqrt(),
            "sqrt_one_minus_cumulative": (1.0 - cumulative).sqrt(),
            "posterior_clean": betas * previous.sqrt() / (1.0 - cumulative),
            "posterior_noisy": (1.0 - previous) * alphas.sqrt() / (1.0 - cumulative),
        }.items():
            self.register_buffer(name, value.float(), persistent=False)

    # -------------------------------------------------------------------------------------- contract

    @property
    def multiple(self) -> int:
        """Input sides are padded to a multiple of this (one halving per level)."""
        return 2 ** len(self.config.enc_blocks)

    @property
    def num_blocks(self) -> int:
        """How many transformer blocks (so how many attention matrices) the DIRformer has."""
        c = self.config
        return sum(c.enc_blocks) + c.middle_blocks + sum(c.dec_blocks) + c.refinement_blocks

    @property
    def inference_error(self) -> str | None:
        """Why this model cannot enhance photos (a stage-1 model), or None."""
        if self.config.stage == 1:
            return ("a stage-1 DiffIR checkpoint (its prior needs the target photo): finish it with "
                    "`autohdr train PAIRS --model diffir --stage 2 --resume FILE`")
        return None

    @property
    def validation_label(self) -> str:
        """How training's validation table names this model's row."""
        return "diffir" if self.config.stage == 2 else "diffir stage 1 (prior read from the target)"

    def adapt_start(self, weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """A start's ``weights`` fitted to this network: a DiffIR start without neighbourhood maps gets zero
        weights for them in the DIRformer's intro, so the network starts as exactly that start."""
        return with_widened_intro(weights, "dirformer.intro.weight", self.dirformer.intro.weight)

    def begin_stage2(self) -> None:
        """Turn a trained stage-1 model into the start of stage 2 (keeps the DIRformer and CPEN-S1)."""
        self.config = replace(self.config, stage=2)
        self._freeze_for_stage()

    # ------------------------------------------------------------------------------------ the prior

    @property
    def prior_size(self) -> int:
        """Side of the square copy of a whole photo that the prior is read from."""
        return self.config.prior_size

    def _thumbnail(self, images: torch.Tensor) -> torch.Tensor:
        return prior_thumbnail(images, self.config.prior_size)

    def starting_noise(self, batch: int, device: torch.device) -> torch.Tensor:
        """The reverse diffusion's start, ``batch x D``: one draw from :attr:`sampling_seed`, the same for
        every photo (so a photo's result never depends on its batch or its place in it)."""
        return self._start_noise.to(device).expand(batch, -1)

    def reverse_diffusion(self, condition: torch.Tensor, start: torch.Tensor) -> torch.Tensor:
        """Run the reverse steps from ``start`` (``B x D``), each to the posterior mean given the
        denoiser's clean-prior prediction; with ``timesteps = 0``, one direct prediction."""
        if self.config.timesteps == 0:
            return self.denoiser(torch.zeros_like(condition), 0, condition)
        prior = start
        for step in reversed(range(self.config.timesteps)):
            clean = self.denoiser(prior, step, condition)
            prior = self.posterior_clean[step] * clean + self.posterior_noisy[step] * prior
        return prior

    def estimate_prior(self, images: torch.Tensor) -> torch.Tensor:
        """The stage-2 prior of whole photos (``B x 3 x H x W``): CPEN-S2 on a small copy, then the
        reverse diffusion from :meth:`starting_noise`. ``B x D``."""
        condition = self.cpen_s2(self._thumbnail(images))
        return self.reverse_diffusion(condition, self.starting_noise(images.shape[0], images.device))

    def target_prior(self, source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The stage-1 prior, read from the source and the target together. ``B x D``."""
        return self.cpen_s1(torch.cat([self._thumbnail(source), self._thumbnail(target)], dim=1))

    # ---------------------------------------------------------------------------------------- images

    def _padded(self, images: torch.Tensor | None) -> torch.Tensor | None:
        if images is None:
            return None
        height, width = images.shape[-2:]
        pad_bottom, pad_right = (-height) % self.multiple, (-width) % self.multiple
        if pad_bottom or pad_right:
            # Repeated edge pixels rather than zeros: a black border would be a strong false edge.
            images = F.pad(images, (0, pad_right, 0, pad_bottom), mode="replicate")
        return images

    def apply_prior(
        self,
        images: torch.Tensor,
        prior: torch.Tensor,
        attention: Sequence[torch.Tensor] | None = None,
        recorded: list[torch.Tensor] | None = None,
        maps: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The DIRformer's edit of ``images`` as ``prior`` says (clipped to [0, 1] in eval mode).

        With ``neighbourhoods``, ``maps`` is each pixel's window of its whole photo's maps (a tile's or a
        crop's); without it ``images`` are taken as whole photos and measured here.
        """
        height, width = images.shape[-2:]
        maps = self.maps_at(images, maps)
        if maps is not None:
            maps = maps.to(images.dtype)
        out = self.dirformer(self._padded(images), prior.to(images.dtype), attention, recorded, self._padded(maps))
        return out[..., :height, :width] if self.training else out[..., :height, :width].clamp(0.0, 1.0)

    def forward(
        self, images: torch.Tensor, context: Sequence[torch.Tensor] | None = None, maps: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Enhance ``B x 3 x H x W`` images in [0, 1].

        ``context`` (from :meth:`image_context`: the prior, then one attention-matrix batch per block)
        replaces what would otherwise be computed from ``images`` themselves; a context of the prior
        alone replaces only the prior. ``maps``: see :meth:`apply_prior` (a tile's window of
        :meth:`neighbourhood_maps`).
        """
        if self.inference_error is not None and not self.training:
            raise RuntimeError(f"cannot enhance with {self.inference_error}")
        if context is None and self.config.whole_context:
            context = self.image_context(images)
        if context is None:
            return self.apply_prior(images, self.estimate_prior(images), maps=maps)
        if len(context) == 1:  # the prior alone: attention from the images themselves
            return self.apply_prior(images, context[0], maps=maps)
        if len(context) != 1 + self.num_blocks:
            raise ValueError(
                f"context has {len(context)} entries; this DiffIR takes the prior alone or the prior and "
                f"{self.num_blocks} attention matrices"
            )
        return self.apply_prior(images, context[0], context[1:], maps=maps)

    def image_context(self, images: torch.Tensor) -> list[torch.Tensor]:
        """The whole-photo quantities the tiler hands to every tile: ``[prior, attention per block]``."""
        prior = self.estimate_prior(images)
        return [prior, *self.whole_attention(images, prior)]

    def whole_attention(self, images: torch.Tensor, prior: torch.Tensor) -> list[torch.Tensor]:
        """Each block's channel-attention matrices for whole photos ``images`` edited by ``prior``: run on
        the photos themselves, or with ``whole_context`` on their copy squashed to that size (the copy
        measures its own neighbourhood maps)."""
        size = self.config.whole_context
        if size:
            images = prior_thumbnail(images, size)
        recorded: list[torch.Tensor] = []
        self.apply_prior(images, prior, None, recorded)
        return recorded

    def validation_forward(self, source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """What training validates: stage 1 with the prior read from the target (the best the prior can
        do), stage 2 as at inference."""
        if self.config.stage == 1:
            prior = self.target_prior(source, target)
            attention = self.whole_attention(source, prior) if self.config.whole_context else None
            return self.apply_prior(source, prior, attention)
        return self(source)

    # -------------------------------------------------------------------------------------- training

    def training_loss(
        self,
        source: torch.Tensor,
        target: torch.Tensor,
        looks: torch.Tensor | None = None,
        whole: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """This stage's loss on a batch of crops; ``looks`` is not used (one look).

        ``whole`` (``B x 6 x S x S``: each crop's whole source and target photos, squashed to
        ``prior_size``) is what the priors are read from, as at inference; without it they are read
        from the crops themselves.

        Stage 1: pixel loss of the DIRformer given the stage-1 prior. Stage 2: pixel loss of the
        DIRformer given the diffused prior, plus ``prior_weight`` x L1 to the frozen stage-1 prior. The
        reverse steps start from the stage-1 prior diffused to the last step (fresh noise each batch).
        With ``neighbourhoods``, ``source`` has ``3 + K`` channels: the crop, then its window of the whole
        photo's blurred luminance (what the training data cuts with :attr:`source_maps`).
        """
        from ..losses import ReconstructionLoss

        c = self.config
        source, maps = self.colour_and_maps(source)
        pixel_loss = ReconstructionLoss(
            charbonnier=1.0, ssim=c.ssim_weight, delta_e=c.delta_e_weight, perceptual=c.perceptual_weight
        )
        if whole is None:
            whole = torch.cat([self._thumbnail(source), self._thumbnail(target)], dim=1)
        elif whole.shape[-2:] != (c.prior_size, c.prior_size):
            whole = self._thumbnail(whole)

        def edited(prior: torch.Tensor) -> torch.Tensor:
            attention = self.whole_attention(whole[:, :3], prior) if c.whole_context else None
            return self.apply_prior(source, prior, attention, maps=maps)

        if c.stage == 1:
            total, parts = pixel_loss(edited(self.cpen_s1(whole)), target)
            return total, {name: float(value.detach()) for name, value in parts.items()}
        with torch.no_grad():
            teacher = self.cpen_s1(whole)
        condition = self.cpen_s2(whole[:, :3])
        last = c.timesteps - 1
        start = None
        if c.timesteps:
            noise = torch.randn_like(teacher)
            start = self.sqrt_cumulative[last] * teacher + self.sqrt_one_minus_cumulative[last] * noise
        prior = self.reverse_diffusion(condition, start)
        total, parts = pixel_loss(edited(prior), target)
        distillation = (prior - teacher).abs().mean()
        total = total + c.prior_weight * distillation
        parts = {name: float(value.detach()) for name, value in parts.items()}
        parts["prior_l1"] = float(distillation.detach())
        return total, parts
