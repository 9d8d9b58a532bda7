"""The brightness maps NAFNet, DiffIR and the localtone read: a mirrored Gaussian blur at any map size,
measured on a copy of the same long side for any photo, the same for a photo turned a quarter."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from autohdr_cli.edits import gaussian_blur, measuring_size, whole_photo_maps


def _blur_by_numpy(values: np.ndarray, sigma: float) -> np.ndarray:
    """A separable Gaussian blur with the border mirrored as often as the kernel needs (numpy's "reflect")."""
    radius = max(1, int(np.ceil(3.0 * sigma)))
    kernel = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    kernel /= kernel.sum()
    padded = np.pad(values, radius, mode="reflect")
    rows = np.stack([np.convolve(row, kernel, mode="valid") for row in padded])
    return np.stack([np.convolve(column, kernel, mode="valid") for column in rows.T]).T


def test_blur_mirrors_the_border_even_where_the_map_is_narrower_than_the_kernel():
    generator = torch.Generator().manual_seed(0)
    for height, width, sigma in [(40, 50, 3.0), (7, 60, 5.0), (3, 2, 4.0), (1, 9, 2.0)]:
        values = torch.rand(height, width, generator=generator, dtype=torch.float64)
        ours = gaussian_blur(values[None, None], sigma)[0, 0].numpy()
        assert np.abs(ours - _blur_by_numpy(values.numpy(), sigma)).max() < 1e-9, (height, width)


def test_the_copy_is_the_long_side_for_every_shape():
    assert measuring_size(1536, 1024, 512) == (512, 341)
    assert measuring_size(1024, 1536, 512) == (341, 512)
    assert measuring_size(300, 200, 512) == (512, 341)  # smaller photos are enlarged
    assert measuring_size(10, 5000, 512) == (1, 512)


def test_maps_turn_with_the_photo_and_hold_across_sizes():
    generator = torch.Generator().manual_seed(1)
    photo = F.interpolate(torch.rand(1, 3, 24, 36, generator=generator), size=(600, 900), mode="bilinear")
    radii = (0.01, 0.05, 0.1)
    maps = whole_photo_maps(photo, radii, 256)
    turned = whole_photo_maps(photo.transpose(-1, -2), radii, 256)
    assert torch.allclose(turned, maps.transpose(-1, -2), atol=1e-5)
    larger = whole_photo_maps(F.interpolate(photo, size=(1200, 1800), mode="bilinear"), radii, 256)
    assert larger.shape == maps.shape and (larger - maps).abs().max() < 0.01
