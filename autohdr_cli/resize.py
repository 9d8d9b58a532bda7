"""One long-side downscale for images and batches, below every module that shrinks a photo (thumbnails,
training decodes, tiling, LPIPS's scoring copy), so none of them keeps a copy of its own."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def resize_long_side(image: torch.Tensor, long_side: int) -> torch.Tensor:
    """Downscale a ``3 x H x W`` image, or a ``B x C x H x W`` batch, so its long side is at most
    ``long_side`` (antialiased bilinear; never enlarged)."""
    height, width = image.shape[-2:]
    scale = long_side / max(height, width)
    if scale >= 1:
        return image
    size = (max(1, round(height * scale)), max(1, round(width * scale)))
    batch = image if image.dim() == 4 else image[None]
    resized = F.interpolate(batch, size=size, mode="bilinear", antialias=True, align_corners=False)
    return resized if image.dim() == 4 else resized[0]
