"""3D LUTs as models: the trilinear lookup, and the static ``.cube`` look.

A LUT tensor is ``3 x S x S x S`` indexed ``[channel, b, g, r]`` (the ``.cube`` order, red fastest,
moved channel-first), with a leading batch dimension where there is one LUT per image.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

#: Pixels looked up per grid_sample call: bounds the temporary grid (12 bytes a pixel) on huge photos.
CHUNK_PIXELS = 1 << 21


def identity_lut(size: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The ``3 x S x S x S`` LUT that maps every colour to itself."""
    ramp = torch.linspace(0.0, 1.0, size, dtype=dtype)
    b, g, r = torch.meshgrid(ramp, ramp, ramp, indexing="ij")
    return torch.stack([r, g, b], dim=0)


def table_to_lut(table: np.ndarray) -> torch.Tensor:
    """Turn a ``.cube`` table ``[b, g, r, c]`` into a LUT tensor ``[c, b, g, r]``."""
    return torch.from_numpy(np.ascontiguousarray(np.moveaxis(np.asarray(table, np.float32), -1, 0)))


def lut_to_table(lut: torch.Tensor) -> np.ndarray:
    """Turn a LUT tensor ``[c, b, g, r]`` back into a ``.cube`` table ``[b, g, r, c]``."""
    return np.ascontiguousarray(lut.detach().float().cpu().numpy().transpose(1, 2, 3, 0))


def _lookup(pixels: torch.Tensor, lut: torch.Tensor, pieces: int) -> torch.Tensor:
    """Trilinear lookup of ``pixels`` (``3 x N``) in one LUT, as ``pieces`` batch items for threads."""
    count = pixels.shape[1]
    per_piece = -(-count // pieces)
    padded = per_piece * pieces
    if padded != count:
        pixels = F.pad(pixels, (0, padded - count))
    # grid_sample wants (x, y, z) = (r, g, b) in [-1, 1], indexing the LUT's (W, H, D) = (r, g, b).
    grid = (pixels * 2.0 - 1.0).reshape(3, pieces, 1, 1, per_piece).permute(1, 2, 3, 4, 0)
    volume = lut.unsqueeze(0).expand(pieces, -1, -1, -1, -1)
    out = F.grid_sample(volume, grid, mode="bilinear", padding_mode="border", align_corners=True)
    return out.permute(1, 0, 2, 3, 4).reshape(3, padded)[:, :count]


def apply_lut(images: torch.Tensor, luts: torch.Tensor, chunk_pixels: int = CHUNK_PIXELS) -> torch.Tensor:
    """Map every pixel of ``images`` (``B x 3 x H x W`` in [0, 1]) through its LUT by trilinear lookup.

    ``luts`` is ``3 x S x S x S`` (shared) or ``B x 3 x S x S x S`` (one per image). Differentiable in
    both arguments. Large images are looked up in chunks, each split into a small batch because
    grid_sample runs one thread per batch item on the CPU.
    """
    if luts.dim() == 4:
        luts = luts.unsqueeze(0).expand(images.shape[0], -1, -1, -1, -1)
    batch, _, height, width = images.shape
    luts = luts.to(images.dtype)
    pieces = max(1, min(torch.get_num_threads(), 8)) if images.device.type == "cpu" else 1
    outputs = []
    for index in range(batch):
        pixels = images[index].reshape(3, -1).clamp(0.0, 1.0)
        if pixels.shape[1] <= chunk_pixels:
            looked_up = _lookup(pixels, luts[index], pieces if pixels.shape[1] >= 65536 else 1)
        else:
            looked_up = torch.cat(
                [_lookup(chunk, luts[index], pieces) for chunk in pixels.split(chunk_pixels, dim=1)], dim=1
            )
        outputs.append(looked_up.reshape(3, height, width))
    return torch.stack(outputs)


def lookup_batched(images: torch.Tensor, luts: torch.Tensor) -> torch.Tensor:
    """Trilinear lookup of ``B x 3 x H x W`` images in ``B x 3 x S x S x S`` LUTs, one grid_sample call.

    The same lookup as :func:`apply_lut` without its per-image loop and size-dependent chunking: for
    small inputs (LUT compositions) and for traced graphs (ONNX, torch.export), where those branches
    would pin the batch size or the image size.
    """
    # grid_sample wants (x, y, z) = (r, g, b) in [-1, 1]; one output "depth" slice per image.
    grid = (images.clamp(0.0, 1.0) * 2.0 - 1.0).permute(0, 2, 3, 1).unsqueeze(1)
    looked_up = F.grid_sample(luts.to(images.dtype), grid, mode="bilinear", padding_mode="border", align_corners=True)
    return looked_up.squeeze(2)


def trilinear_corners(pixels: torch.Tensor, size: int) -> list[tuple[torch.Tensor, torch.Tensor, tuple[int, int, int]]]:
    """For ``N x 3`` (r, g, b) pixels in [0, 1]: the 8 corners of each one's cell in a ``size``-point
    LUT, as (flat node index into ``[b, g, r]``, trilinear weight, (b, g, r) step)."""
    position = pixels.clamp(0, 1) * (size - 1)
    low = position.floor().clamp(max=size - 2)
    fraction = position - low
    low = low.long()
    corners = []
    for db in (0, 1):
        for dg in (0, 1):
            for dr in (0, 1):
                weight = (
                    (fraction[:, 0] if dr else 1 - fraction[:, 0])
                    * (fraction[:, 1] if dg else 1 - fraction[:, 1])
                    * (fraction[:, 2] if db else 1 - fraction[:, 2])
                )
                node = ((low[:, 2] + db) * size + (low[:, 1] + dg)) * size + (low[:, 0] + dr)
                corners.append((node, weight, (db, dg, dr)))
    return corners


def make_thumbnail(images: torch.Tensor, size: int) -> torch.Tensor:
    """Resize ``B x 3 x H x W`` images to ``size x size`` (aspect ignored) for a LUT predictor.

    Training and inference both go through this function, so the predictor always sees the same kind
    of input. Antialiased bilinear, so a 20 MP photo and its crop give comparable thumbnails.
    """
    if images.shape[-2:] == (size, size):
        return images
    return F.interpolate(images, size=(size, size), mode="bilinear", antialias=True, align_corners=False)


def blend_lut(luts: torch.Tensor, strength: float) -> torch.Tensor:
    """Mix LUTs with the identity: trilinear lookup is linear in the table, so this equals blending
    the output image with the input, at the cost of one small table."""
    if strength == 1.0:
        return luts
    return identity_lut(luts.shape[-1], luts.dtype).to(luts.device) * (1.0 - strength) + luts * strength


@dataclass
class StaticLUTConfig:
    """A fixed 3D LUT of ``size`` points per axis, e.g. loaded from a ``.cube`` file."""

    size: int = 33
    title: str = ""
    domain_min: tuple[float, float, float] = (0.0, 0.0, 0.0)
    domain_max: tuple[float, float, float] = (1.0, 1.0, 1.0)

    #: Bounds checked when a config is read (``models.make_config``); see ``MAX_WHOLE`` for the rest.
    LIMITS: ClassVar[dict[str, tuple[float, float]]] = {
        "size": (2, 256), "domain_min": (-1e6, 1e6), "domain_max": (-1e6, 1e6),
    }


class StaticLUT(nn.Module):
    """One look for every photo: a single 3D LUT applied by trilinear lookup."""

    config_class = StaticLUTConfig
    #: The pipeline applies global models' LUTs itself; this one needs no thumbnail to choose it.
    thumbnail_size = 0

    def __init__(self, config: StaticLUTConfig | None = None):
        super().__init__()
        self.config = config or StaticLUTConfig()
        self.lut = nn.Parameter(identity_lut(self.config.size))

    @classmethod
    def from_cube(cls, cube) -> "StaticLUT":
        """Build the model from a :class:`autohdr_cli.cube.CubeLUT`."""
        config = StaticLUTConfig(
            size=cube.size,
            title=cube.title,
            domain_min=tuple(float(v) for v in cube.domain_min),
            domain_max=tuple(float(v) for v in cube.domain_max),
        )
        model = cls(config)
        with torch.no_grad():
            model.lut.copy_(table_to_lut(cube.table))
        return model

    def normalize_input(self, images: torch.Tensor) -> torch.Tensor:
        """Map the LUT's input domain onto [0, 1] (a no-op for the usual 0..1 domain)."""
        low = torch.tensor(self.config.domain_min, dtype=images.dtype, device=images.device)
        high = torch.tensor(self.config.domain_max, dtype=images.dtype, device=images.device)
        if bool((low == 0).all() and (high == 1).all()):
            return images
        return (images - low.view(1, 3, 1, 1)) / (high - low).view(1, 3, 1, 1)

    def predict_lut(self, thumbnails: torch.Tensor) -> torch.Tensor:
        """The LUT for each image of the batch: the same one for all."""
        return self.lut.unsqueeze(0).expand(thumbnails.shape[0], -1, -1, -1, -1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Apply the LUT to ``B x 3 x H x W`` images in [0, 1]."""
        return apply_lut(self.normalize_input(images), self.lut)


# ------------------------------------------------------------------------------ image-adaptive 3D LUT


@dataclass
class AdaptiveLUTConfig:
    """The image-adaptive 3D LUT (Zeng et al., TPAMI 2020), with optional per-image 1D curves.

    ``num_basis`` LUTs of ``lut_size`` points per axis are mixed with weights that a small CNN predicts
    from a ``thumbnail_size`` thumbnail. ``widths`` are the CNN's stride-2 conv layers (empty: no CNN,
    the mean colour only); their pooled features are joined by a ``histogram_bins``-bin soft histogram
    of each channel (0 = none), which measures exposure and colour cast directly. ``curves`` adds
    per-channel curves of ``curve_points`` points predicted for each image, composed "before" the 3D
    LUT (SepLUT style), "after" it, or "none". Curves are on by default because they measurably help
    (autohdr_cli/weights/README.md): +1.7 dB on held-back real-estate pairs, +0.4 dB on degraded photos.
    The two regulariser weights are those of Zeng et al. ``photo_thumbnail`` (training only): the
    thumbnail of a training crop is made from the crop's whole photo, as at inference (the data then
    brings the photos along), instead of from the crop: +0.54 dB on the held-out real-estate pairs
    (27.05 against 26.51, autohdr_cli/weights/README.md).
    """

    lut_size: int = 33
    num_basis: int = 3
    thumbnail_size: int = 256
    widths: tuple[int, ...] = (16, 32, 64, 64, 64)
    histogram_bins: int = 16
    hidden: int = 64
    dropout: float = 0.5
    curves: str = "before"
    curve_points: int = 17
    smoothness_weight: float = 1e-4
    monotonicity_weight: float = 10.0
    photo_thumbnail: bool = True

    #: Run-time sizes (a thumbnail and its histograms are made for every photo) and the LUT grid.
    LIMITS: ClassVar[dict[str, tuple[float, float]]] = {
        "lut_size": (2, 256), "num_basis": (1, 4096), "thumbnail_size": (1, 1024), "histogram_bins": (0, 256),
        "curve_points": (2, 1024), "dropout": (0, 1),
    }


def soft_histogram(images: torch.Tensor, bins: int) -> torch.Tensor:
    """Per-channel histograms ``B x 3 x bins`` of images in [0, 1], with triangular (linear) binning.

    Each value is shared between its two nearest bin centres, so the result moves smoothly with the
    image; every histogram sums to 1.
    """
    centres = torch.linspace(0.0, 1.0, bins, dtype=images.dtype, device=images.device)
    values = images.clamp(0.0, 1.0).flatten(2).unsqueeze(-1)
    shares = torch.relu(1.0 - (values - centres).abs() * (bins - 1))
    return shares.mean(dim=2)


def apply_curves(values: torch.Tensor, curves: torch.Tensor) -> torch.Tensor:
    """Map ``B x 3 x N`` values in [0, 1] through per-channel curves ``B x 3 x P`` (linear interpolation).

    A curve holds its outputs at ``P`` evenly spaced inputs from 0 to 1.
    """
    points = curves.shape[-1]
    position = values.clamp(0.0, 1.0) * (points - 1)
    index = position.detach().floor().clamp(max=points - 2).long()
    fraction = position - index.to(position.dtype)
    low = curves.gather(-1, index)
    high = curves.gather(-1, index + 1)
    return low + (high - low) * fraction


class _ThumbnailEncoder(nn.Module):
    """Thumbnail -> feature vector: stride-2 convs, global average pooling, and channel histograms."""

    def __init__(self, config: AdaptiveLUTConfig):
        super().__init__()
        layers: list[nn.Module] = []
        channels = 3
        for width in config.widths:
            layers += [nn.Conv2d(channels, width, 3, stride=2, padding=1), nn.LeakyReLU(0.2)]
            channels = width
        self.convs = nn.Sequential(*layers)
        self.histogram_bins = config.histogram_bins
        self.features = channels + 3 * config.histogram_bins
        self.head = nn.Sequential(
            nn.Linear(self.features, config.hidden), nn.LeakyReLU(0.2), nn.Dropout(config.dropout)
        )

    def forward(self, thumbnails: torch.Tensor) -> torch.Tensor:
        """``B x 3 x T x T`` -> ``B x hidden``."""
        pooled = self.convs(thumbnails).mean(dim=(2, 3))
        if self.histogram_bins:
            # The histogram of a half-size copy is the same up to sampling noise, at a quarter of the memory.
            half = F.avg_pool2d(thumbnails, 2) if min(thumbnails.shape[-2:]) >= 64 else thumbnails
            pooled = torch.cat([pooled, soft_histogram(half, self.histogram_bins).flatten(1)], dim=1)
        return self.head(pooled)


class AdaptiveLUT(nn.Module):
    """Image-adaptive 3D LUT: a CNN looks at a thumbnail and mixes learned basis LUTs for each photo.

    The cost at full resolution is one trilinear lookup per pixel, whatever the photo's size; the CNN
    only ever sees the thumbnail. Starts as the identity: the first basis LUT is the identity, the others
    are zero, and the weights head gives the identity a weight of exactly 1.
    """

    config_class = AdaptiveLUTConfig

    def __init__(self, config: AdaptiveLUTConfig | None = None):
        super().__init__()
        self.config = config or AdaptiveLUTConfig()
        config = self.config
        if config.curves not in ("none", "before", "after"):
            raise ValueError(f"curves must be 'none', 'before' or 'after', not {config.curves!r}")
        if config.lut_size < 2 or config.num_basis < 1 or config.thumbnail_size < 1:
            raise ValueError("lut_size must be >= 2, num_basis >= 1 and thumbnail_size >= 1")
        self.thumbnail_size = config.thumbnail_size
        self.encoder = _ThumbnailEncoder(config)
        self.basis_weights = nn.Linear(config.hidden, config.num_basis)
        basis = torch.zeros(config.num_basis, 3, config.lut_size, config.lut_size, config.lut_size)
        basis[0] = identity_lut(config.lut_size)
        self.basis = nn.Parameter(basis)
        with torch.no_grad():
            # Small but non-zero weights for the zero basis LUTs, else neither would get a gradient; the
            # identity's weight is exactly 1, so the untrained model is exactly the identity.
            self.basis_weights.weight.normal_(0.0, 1e-2)
            self.basis_weights.weight[0].zero_()
            self.basis_weights.bias.zero_()
            self.basis_weights.bias[0] = 1.0
        self.curve_offsets = None
        if config.curves != "none":
            self.curve_offsets = nn.Linear(config.hidden, 3 * config.curve_points)
            nn.init.zeros_(self.curve_offsets.weight)
            nn.init.zeros_(self.curve_offsets.bias)

    def _predict(self, thumbnails: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Unclamped LUTs ``B x 3 x S x S x S`` and the curves ``B x 3 x P`` (or None) for a batch."""
        return self.luts_from_features(self.encoder(thumbnails))

    def luts_from_features(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """What the two heads make of the encoder's ``B x hidden`` features: unclamped LUTs and the curves
        (or None). Apart from :meth:`_predict` so a benchmark can search this space for one photo's best."""
        weights = self.basis_weights(features)
        luts = torch.einsum("bk,kcxyz->bcxyz", weights, self.basis)
        if self.curve_offsets is None:
            return luts, None
        batch, size = luts.shape[0], luts.shape[-1]
        ramp = torch.linspace(0.0, 1.0, self.config.curve_points, dtype=luts.dtype, device=luts.device)
        curves = ramp + self.curve_offsets(features).view(batch, 3, -1)
        if self.config.curves == "after":
            return apply_curves(luts.flatten(2), curves).view_as(luts), curves
        # "before": the LUT is read at curved grid coordinates, then stored on the regular grid again.
        grid = identity_lut(size, luts.dtype).to(luts.device).flatten(1).expand(batch, -1, -1)
        coordinates = apply_curves(grid, curves).view(batch, 3, size * size, size)
        composed = lookup_batched(coordinates, luts.clamp(0.0, 1.0))
        return composed.view_as(luts), curves

    def predict_lut(self, thumbnails: torch.Tensor) -> torch.Tensor:
        """One LUT per thumbnail (``B x 3 x S x S x S``, values in [0, 1]), indexed ``[c, b, g, r]``."""
        return self._predict(thumbnails)[0].clamp(0.0, 1.0)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Enhance ``B x 3 x H x W`` images in [0, 1]: predict from the thumbnail, look up at full size."""
        return apply_lut(images, self.predict_lut(make_thumbnail(images, self.thumbnail_size)))

    @property
    def prior_size(self) -> int:
        """Side of the squashed whole photos training must bring along (``photo_thumbnail``), or 0."""
        return self.thumbnail_size if self.config.photo_thumbnail else 0

    def training_loss(
        self,
        source: torch.Tensor,
        target: torch.Tensor,
        looks: torch.Tensor | None = None,
        whole: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Reconstruction loss of ``forward(source)`` against ``target`` plus the LUT regularisers.

        Smoothness and monotonicity are taken on each image's mixed LUT (what is actually applied),
        and monotonicity on the curves too. ``looks`` (the pairs folder of each sample) is not used:
        one model learns one adaptive look. ``whole`` (``B x 6 x S x S``, each crop's whole source and
        target squashed) gives the thumbnails when ``photo_thumbnail`` is set.
        """
        from ..losses import curve_monotonicity, regularised_lut_loss

        pictures = whole[:, :3] if (whole is not None and self.config.photo_thumbnail) else source
        luts, curves = self._predict(make_thumbnail(pictures, self.thumbnail_size))
        prediction = apply_lut(source, luts.clamp(0.0, 1.0))
        return regularised_lut_loss(
            prediction,
            target,
            luts,
            self.config.smoothness_weight,
            self.config.monotonicity_weight,
            curve_monotonicity(curves) if curves is not None else None,
        )
