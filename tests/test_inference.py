"""Moving photos to the model's device and back loses nothing, whatever their sample type."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from autohdr_cli.imageio import BufferPool, quantize, to_float
from autohdr_cli.inference import pixels_from_device, pixels_to_device

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _samples(kind: str) -> np.ndarray:
    rng = np.random.default_rng(5)
    if kind == "rgbx":  # how 8-bit photos are decoded: the first three bytes of an RGBX buffer
        buffer = BufferPool().take(13, 17)
        buffer[:] = rng.integers(0, 256, buffer.shape, dtype=np.uint8)
        return buffer[:, :, :3]
    if kind == "uint8":
        return rng.integers(0, 256, (13, 17, 3), dtype=np.uint8)
    if kind == "uint16":
        return rng.integers(0, 65536, (13, 17, 3), dtype=np.uint16)
    return rng.random((13, 17, 3), dtype=np.float32)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kind", ["rgbx", "uint8", "uint16", "float32"])
def test_pixels_survive_the_trip_to_the_device_and_back(device, kind):
    pixels = _samples(kind)
    images = pixels_to_device(pixels, torch.device(device))
    assert images.shape == (1, 3, 13, 17) and images.dtype == torch.float32
    expected = torch.from_numpy(np.ascontiguousarray(to_float(pixels).transpose(2, 0, 1)))[None]
    assert torch.allclose(images.cpu(), expected, atol=1e-6)
    back = quantize(pixels_from_device(images, pixels.dtype), pixels.dtype)
    assert back.dtype == pixels.dtype
    assert np.abs(back.astype(np.float64) - pixels.astype(np.float64)).max() <= 1e-6
