"""Local tone: a per-pixel colour network that also reads how bright each pixel's neighbourhood is.

Editors' local steps (shadows/highlights, local contrast, clarity, dodge and burn) change a pixel by
how it compares with its surroundings at a few radii. This model gives that comparison to a small
per-pixel MLP directly: for each pixel, its colour and the difference between its luminance and the
Gaussian-blurred luminance around it at ``scales`` radii (fractions of the photo's long side, so a look
means the same on a 2 MP and a 24 MP photo), plus the photo's mean luminance. The MLP predicts a colour
change; the network never sees a pixel's position or any texture, so it cannot memorise photos, which is
what makes a look learned from 20 photos hold on photos from other sources (autohdr_cli/weights/README.md).

The blurred luminance is computed on a copy of the photo ``context_size`` pixels long (cheap, and the
same copy at any photo size); the MLP then runs at full resolution on the bilinearly enlarged maps, in
bands of rows so memory stays a few bands whatever the photo's size. With ``lut_size`` set it runs on
that copy only, and its edit reaches the full photo through a 3D LUT fitted to the copy's before and
after (:mod:`autohdr_cli.carry`): the model is then a global one, like the lut, one LUT per photo.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ..edits import luma, neighbourhood_luminance, whole_photo_maps, window_of
from ..resize import resize_long_side
from .lut import apply_lut

#: Pixels per band of the full-resolution pass: bounds the enlarged context maps and the features.
BAND_PIXELS = 1 << 16

#: Pixels per matrix product when enhancing: the activations of a few thousand pixels stay in the CPU's
#: cache (measured, one thread, 12 MP: 4.0 s in pieces of 4096 pixels, 6.1 s of 65536, 14.6 s of 262144).
PIECE_PIXELS = 4096


@dataclass
class LocalToneConfig:
    """Per-pixel MLP of ``depth`` hidden layers of ``hidden`` units over colour and local contrast.

    ``scales`` are the Gaussian radii (sigma) of the neighbourhoods, as fractions of the photo's long
    side; ``context_size`` the long side of the copy they are measured on, which is also the size
    training decodes the pairs at (crops of those photos). ``photo_mean`` adds the photo's mean luminance
    as one more input (the neighbourhood at infinite radius). ``training_pixels``: the loss is taken on
    this many random pixels of each training crop (0: all of them, with SSIM), so a step is cheap and a
    time budget buys many steps, each seeing all its crops' photos. ``lut_size``: 0 runs the MLP on every
    pixel of the photo; N carries its edit of the ``context_size`` copy to the photo with an N³ LUT
    fitted per photo (faster on large photos, a per-photo ``.cube``; what is local at full size is lost).
    It can be changed when loading (``autohdr enhance --lut-size``).
    """

    scales: tuple[float, ...] = (0.005, 0.013, 0.026, 0.052, 0.1)
    context_size: int = 512
    photo_mean: bool = True
    hidden: int = 64
    depth: int = 2
    training_pixels: int = 2048
    lut_size: int = 0

    LIMITS: ClassVar[dict[str, tuple[float, float]]] = {
        "scales": (1e-4, 1.0), "context_size": (16, 4096), "hidden": (1, 1024), "depth": (1, 16),
        "lut_size": (0, 65),
    }


class LocalTone(nn.Module):
    """Colour and neighbourhood brightness in, a colour change out, pixel by pixel (see the module notes).

    Starts as the identity (the last layer is zero). Not tiled: ``forward`` takes the whole photo and
    works through it in bands of rows.
    """

    config_class = LocalToneConfig
    #: It edits a whole photo in one pass, so it can be another model's ``train --base``.
    whole_photo_edit = True
    #: Training decodes the pairs at this config field's size (``autohdr train`` reads it).
    train_size_field = "context_size"

    @staticmethod
    def config_export_refusal(config: dict) -> str | None:
        """Why a checkpoint of this ``config`` (its metadata's JSON) cannot be one onnx/pt2 graph, or None:
        a per-photo LUT is fitted by an iterative solver that stops when it converges."""
        if config.get("lut_size"):
            return (
                "it carries its edit by a LUT fitted to each photo, by a solver a traced graph cannot hold "
                "(export --format cube --image PHOTO gives one photo's LUT)"
            )
        return None

    #: Config fields ``load_checkpoint(settings=...)`` may change: how the edit reaches the full photo.
    runtime_settings = ("lut_size",)

    def __init__(self, config: LocalToneConfig | None = None):
        super().__init__()
        self.config = config or LocalToneConfig()
        config = self.config
        if config.hidden < 1 or config.depth < 1 or config.context_size < 16:
            raise ValueError("hidden and depth must be >= 1 and context_size >= 16")
        if config.lut_size == 1 or not 0 <= config.lut_size <= 65:
            raise ValueError(f"lut_size {config.lut_size}: 0 (every pixel) or 2..65 LUT points per axis")
        self.inputs = 3 + len(config.scales) + (1 if config.photo_mean else 0)
        layers: list[nn.Module] = [nn.Conv2d(self.inputs, config.hidden, 1)]
        for _ in range(config.depth - 1):
            layers += [nn.GELU(), nn.Conv2d(config.hidden, config.hidden, 1)]
        layers += [nn.GELU(), nn.Conv2d(config.hidden, 3, 1)]
        self.mlp = nn.Sequential(*layers)
        nn.init.zeros_(self.mlp[-1].weight)
        nn.init.zeros_(self.mlp[-1].bias)

    @property
    def prior_size(self) -> int:
        """Side of the squashed whole photos training brings along (for the photo's mean), or 0."""
        return 32 if self.config.photo_mean else 0

    def context(self, images: torch.Tensor) -> torch.Tensor:
        """Neighbourhood luma maps ``B x K x h x w`` of whole photos, on a copy ``context_size`` long."""
        return whole_photo_maps(images, self.config.scales, self.config.context_size, self.config.photo_mean)

    def enhance_with(self, images: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """Run the MLP on ``images`` (any size) with their context maps enlarged to it (same batch).
        (Not ``apply``: that name is ``nn.Module``'s, for running a function on every submodule.)"""
        if context.shape[-2:] != images.shape[-2:]:
            context = F.interpolate(context, size=images.shape[-2:], mode="bilinear", align_corners=False)
        features = torch.cat([images, context - luma(images)], dim=1)
        return images + self.mlp(features)

    @property
    def carries_lut(self) -> bool:
        """True when the edit reaches the photo through a per-photo LUT (``lut_size``): a global model."""
        return self.config.lut_size > 0

    @property
    def thumbnail_size(self) -> int:
        """Long side of the copy a per-photo LUT is fitted on (0 when every pixel goes through the MLP)."""
        return self.config.context_size if self.carries_lut else 0

    def make_thumbnail(self, images: torch.Tensor) -> torch.Tensor:
        """The copy neighbourhoods are measured on, and the one the MLP edits when carrying by LUT:
        ``context_size`` long at most, aspect kept, float."""
        return resize_long_side(images.float(), self.config.context_size)

    def predict_lut(self, thumbnails: torch.Tensor) -> torch.Tensor:
        """Edit each copy pixel by pixel and fit the LUT that carries the edit: ``B x 3 x S x S x S``
        (``lut_size`` points, 33 when it is 0)."""
        from ..carry import fit_luts

        thumbnails = thumbnails.float()
        size = self.config.lut_size or 33
        return fit_luts(thumbnails, self.edit_pixels(thumbnails).clamp(0.0, 1.0), size)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Enhance whole photos ``B x 3 x H x W`` in [0, 1]: :meth:`edit_pixels` (clipped to [0, 1] in eval
        mode), or with ``lut_size`` set the LUT fitted on a small copy's edit, applied to the photo."""
        if self.carries_lut:
            return apply_lut(images, self.predict_lut(self.make_thumbnail(images)))
        edited = self.edit_pixels(images)
        # Clipped when enhancing, as NAFNet and DiffIR clip: what reaches a file, a base's network or an
        # exported graph is a photo.
        return edited if self.training else edited.clamp(0.0, 1.0)

    def edit_whole(self, images: torch.Tensor) -> torch.Tensor:
        """The MLP on every pixel of whole photos ``B x 3 x H x W`` at once, the maps enlarged to the photo
        by :func:`window_of` (whose size is the photo's by construction, so a traced graph keeps a free
        size: what ``autohdr export`` traces). :meth:`edit_pixels` gives the same in bands."""
        height, width = images.shape[-2:]
        return self.enhance_with(images, window_of(self.context(images), height, width, 0, 0, height, width))

    def edit_pixels(self, images: torch.Tensor) -> torch.Tensor:
        """The MLP on every pixel of whole photos ``B x 3 x H x W``: :meth:`edit_whole` with gradients;
        without them in bands of rows, the MLP on a few thousand pixels at a time as plain matrix products."""
        if torch.is_grad_enabled():
            return self.edit_whole(images)
        context = self.context(images)
        height, width = images.shape[-2:]
        band = max(1, BAND_PIXELS // width)
        output = torch.empty_like(images)
        for top in range(0, height, band):
            bottom = min(height, top + band)
            rows = images[:, :, top:bottom]
            local = window_of(context, height, width, top, 0, bottom - top, width)
            features = torch.cat([rows, local - luma(rows)], dim=1)
            output[:, :, top:bottom] = rows + self._mlp_by_pieces(features)
        return output

    def _mlp_by_pieces(self, features: torch.Tensor) -> torch.Tensor:
        """The MLP on ``B x C x h x w`` features as matrix products over pieces of pixels (1x1 convolutions
        are matrix products; pieces keep the activations in cache)."""
        batch, channels, height, width = features.shape
        pixels = features.permute(0, 2, 3, 1).reshape(-1, channels)
        out = torch.empty(pixels.shape[0], 3, dtype=features.dtype, device=features.device)
        layers = [(layer.weight.flatten(1), layer.bias) if isinstance(layer, nn.Conv2d) else layer for layer in self.mlp]
        piece = PIECE_PIXELS if features.device.type == "cpu" else pixels.shape[0]
        for start in range(0, pixels.shape[0], piece):
            values = pixels[start : start + piece]
            for layer in layers:
                values = F.linear(values, *layer) if isinstance(layer, tuple) else layer(values)
            out[start : start + piece] = values
        return out.view(batch, height, width, 3).permute(0, 3, 1, 2)

    def training_loss(
        self,
        source: torch.Tensor,
        target: torch.Tensor,
        looks: torch.Tensor | None = None,
        whole: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Reconstruction loss on crops of photos decoded ``context_size`` long (as ``autohdr train`` does).

        The neighbourhoods are measured on the crop itself (mirrored at its edges) at the radii they have
        in its whole photo, so crops must be windows at the decoded scale (``--crops native``). The
        photo's mean comes from ``whole`` (each crop's whole photo, squashed) when it is given, else from
        the crop. ``looks`` is not used.
        """
        from ..losses import ReconstructionLoss

        context = neighbourhood_luminance(source, self.config.scales, self.config.context_size, self.config.photo_mean)
        if self.config.photo_mean and whole is not None:
            mean = luma(whole[:, :3]).mean(dim=(2, 3), keepdim=True)
            context = torch.cat([context[:, :-1], mean.expand_as(context[:, -1:])], dim=1)
        loss = ReconstructionLoss()
        count = self.config.training_pixels
        if count and count < source.shape[-2] * source.shape[-1]:
            # The model is per pixel: a random sample of each crop's pixels is an unbiased estimate of
            # its pixel losses (SSIM, which needs neighbours, is left out).
            picks = torch.randint(source.shape[-2] * source.shape[-1], (source.shape[0], 1, count), device=source.device)
            source, target, context = (
                values.flatten(2).gather(2, picks.expand(-1, values.shape[1], -1)).unsqueeze(2)
                for values in (source, target, context)
            )
            loss = ReconstructionLoss(ssim=0.0)
        prediction = self.enhance_with(source, context)
        total, parts = loss(prediction, target)
        return total, {name: float(value.detach()) for name, value in parts.items()}
