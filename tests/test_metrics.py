"""Metrics against known values: CIEDE2000 against its published test data, PSNR/SSIM/ΔE edge cases."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
import torch

from autohdr_cli.metrics import (
    Stopwatch,
    ciede2000,
    delta_e2000,
    delta_e2000_map,
    megapixels_per_second,
    psnr,
    rgb_to_lab,
    ssim,
)

# Sharma, Wu and Dalal (2005), "The CIEDE2000 Color-Difference Formula: Implementation Notes,
# Supplementary Test Data, and Mathematical Observations", Table 1: L1 a1 b1, L2 a2 b2, ΔE00.
SHARMA_PAIRS = [
    (50.0000, 2.6772, -79.7751, 50.0000, 0.0000, -82.7485, 2.0425),
    (50.0000, 3.1571, -77.2803, 50.0000, 0.0000, -82.7485, 2.8615),
    (50.0000, 2.8361, -74.0200, 50.0000, 0.0000, -82.7485, 3.4412),
    (50.0000, -1.3802, -84.2814, 50.0000, 0.0000, -82.7485, 1.0000),
    (50.0000, -1.1848, -84.8006, 50.0000, 0.0000, -82.7485, 1.0000),
    (50.0000, -0.9009, -85.5211, 50.0000, 0.0000, -82.7485, 1.0000),
    (50.0000, 0.0000, 0.0000, 50.0000, -1.0000, 2.0000, 2.3669),
    (50.0000, -1.0000, 2.0000, 50.0000, 0.0000, 0.0000, 2.3669),
    (50.0000, 2.4900, -0.0010, 50.0000, -2.4900, 0.0009, 7.1792),
    (50.0000, 2.4900, -0.0010, 50.0000, -2.4900, 0.0010, 7.1792),
    (50.0000, 2.4900, -0.0010, 50.0000, -2.4900, 0.0011, 7.2195),
    (50.0000, 2.4900, -0.0010, 50.0000, -2.4900, 0.0012, 7.2195),
    (50.0000, -0.0010, 2.4900, 50.0000, 0.0009, -2.4900, 4.8045),
    (50.0000, -0.0010, 2.4900, 50.0000, 0.0010, -2.4900, 4.8045),
    (50.0000, -0.0010, 2.4900, 50.0000, 0.0011, -2.4900, 4.7461),
    (50.0000, 2.5000, 0.0000, 50.0000, 0.0000, -2.5000, 4.3065),
    (50.0000, 2.5000, 0.0000, 73.0000, 25.0000, -18.0000, 27.1492),
    (50.0000, 2.5000, 0.0000, 61.0000, -5.0000, 29.0000, 22.8977),
    (50.0000, 2.5000, 0.0000, 56.0000, -27.0000, -3.0000, 31.9030),
    (50.0000, 2.5000, 0.0000, 58.0000, 24.0000, 15.0000, 19.4535),
    (50.0000, 2.5000, 0.0000, 50.0000, 3.1736, 0.5854, 1.0000),
    (50.0000, 2.5000, 0.0000, 50.0000, 3.2972, 0.0000, 1.0000),
    (50.0000, 2.5000, 0.0000, 50.0000, 1.8634, 0.5757, 1.0000),
    (50.0000, 2.5000, 0.0000, 50.0000, 3.2592, 0.3350, 1.0000),
    (60.2574, -34.0099, 36.2677, 60.4626, -34.1751, 39.4387, 1.2644),
    (63.0109, -31.0961, -5.8663, 62.8187, -29.7946, -4.0864, 1.2630),
    (61.2901, 3.7196, -5.3901, 61.4292, 2.2480, -4.9620, 1.8731),
    (35.0831, -44.1164, 3.7933, 35.0232, -40.0716, 1.5901, 1.8645),
    (22.7233, 20.0904, -46.6940, 23.0331, 14.9730, -42.5619, 2.0373),
    (36.4612, 47.8580, 18.3852, 36.2715, 50.5065, 21.2231, 1.4146),
    (90.8027, -2.0831, 1.4410, 91.1528, -1.6435, 0.0447, 1.4441),
    (90.9257, -0.5406, -0.9208, 88.6381, -0.8985, -0.7239, 1.5381),
    (6.7747, -0.2908, -2.4247, 5.8714, -0.0985, -2.2286, 0.6377),
    (2.0776, 0.0795, -1.1350, 0.9033, -0.0636, -0.5514, 0.9082),
]


def _lab_images(dtype=torch.float64):
    """The 34 pairs as two ``3 x 34 x 1`` Lab images and the published ΔE00 values."""
    table = torch.tensor(SHARMA_PAIRS, dtype=dtype)
    return table[:, 0:3].T[:, :, None], table[:, 3:6].T[:, :, None], table[:, 6]


def test_ciede2000_matches_all_34_published_pairs_to_1e4():
    lab1, lab2, expected = _lab_images()
    assert len(SHARMA_PAIRS) == 34
    computed = ciede2000(lab1, lab2)[:, 0]
    assert computed.shape == (34,)
    error = (computed - expected).abs()
    assert error.max().item() < 1e-4, f"worst pair {error.argmax().item() + 1}: {computed[error.argmax()]}"


def test_ciede2000_is_symmetric_and_batched():
    lab1, lab2, expected = _lab_images()
    assert torch.allclose(ciede2000(lab2, lab1)[:, 0], expected, atol=1e-4)
    batch = torch.stack([lab1, lab2])  # 2 x 3 x 34 x 1: elementwise over any leading dimensions
    swapped = torch.stack([lab2, lab1])
    assert torch.allclose(ciede2000(batch, swapped)[..., 0], expected.expand(2, -1), atol=1e-4)


def test_ciede2000_in_float32_stays_close_to_float64():
    generator = torch.Generator().manual_seed(1)
    lab = torch.rand(2, 3, 64, 64, generator=generator, dtype=torch.float64)
    lab[:, 0] *= 100
    lab[:, 1:] = lab[:, 1:] * 200 - 100
    reference = ciede2000(lab[0], lab[1])
    single = ciede2000(lab[0].float(), lab[1].float())
    assert (single.double() - reference).abs().max().item() < 2e-3


def test_ciede2000_gradient_is_finite_for_grey_black_and_identical_colours():
    images = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    images[:, :, :2] = 0.0  # black
    images[:, :, 2:4] = 0.5  # grey: a* = b* = 0, hue undefined
    pred = images.clone().requires_grad_(True)
    target = images.clone()
    target[1, :, 4:] = target[1, :, 4:].flip(0)  # second image differs in its lower half only
    loss = delta_e2000(pred, target).sum()
    loss.backward()
    assert torch.isfinite(pred.grad).all()
    assert pred.grad[1, :, 4:].abs().sum() > 0
    lab = rgb_to_lab(images).requires_grad_(True)
    ciede2000(lab, lab.detach()).sum().backward()  # sqrt at 0 everywhere
    assert torch.isfinite(lab.grad).all()


def test_identical_images_give_inf_psnr_ssim_one_and_zero_delta_e():
    images = torch.rand(2, 3, 24, 32, generator=torch.Generator().manual_seed(2))
    assert torch.isinf(psnr(images, images)).all()
    assert torch.allclose(ssim(images, images), torch.ones(2), atol=1e-5)
    assert delta_e2000(images, images).abs().max().item() == 0.0


def test_one_level_change_of_an_8bit_image_gives_the_exact_psnr():
    levels = np.random.default_rng(3).integers(0, 255, size=(1, 3, 24, 32))
    pred = torch.from_numpy(levels).float() / 255
    target = torch.from_numpy(levels + 1).float() / 255
    assert psnr(pred, target).item() == pytest.approx(20 * math.log10(255), abs=1e-4)
    assert psnr(pred, target).item() == pytest.approx(48.1308036, abs=1e-4)


def test_psnr_ssim_and_delta_e_are_per_image_and_rank_worse_images_lower():
    generator = torch.Generator().manual_seed(4)
    target = torch.rand(1, 3, 24, 32, generator=generator).expand(2, -1, -1, -1)
    noise = torch.randn(1, 3, 24, 32, generator=generator)
    pred = torch.cat([target[:1] + 0.01 * noise, target[:1] + 0.1 * noise]).clamp(0, 1)
    for values in (psnr(pred, target), ssim(pred, target), delta_e2000(pred, target)):
        assert values.shape == (2,)
    assert psnr(pred, target)[0] > psnr(pred, target)[1] + 10
    assert ssim(pred, target)[0] > ssim(pred, target)[1]
    assert delta_e2000(pred, target)[0] < delta_e2000(pred, target)[1]
    in_levels = psnr(pred, target, data_range=255.0)[0]
    assert in_levels.item() == pytest.approx(psnr(pred, target)[0].item() + 20 * math.log10(255), abs=1e-3)


def test_rgb_to_lab_and_delta_e_on_known_colours():
    colours = torch.tensor([[1.0, 0.0, 0.0], [1.0, 1.0, 1.0], [0.0, 0.0, 0.0]]).T[:, :, None]
    lab = rgb_to_lab(colours)[:, :, 0].T
    assert lab[0].tolist() == pytest.approx([53.24, 80.09, 67.20], abs=0.05)  # sRGB red, D65
    assert lab[1].tolist() == pytest.approx([100.0, 0.0, 0.0], abs=0.05)
    white = torch.ones(1, 3, 4, 4)
    black = torch.zeros(1, 3, 4, 4)
    # L 100 against 0 on the neutral axis: S_L is 1 at the mean L of 50, so ΔE00 is ΔL = 100.
    assert delta_e2000(white, black).item() == pytest.approx(100.0, abs=0.05)
    assert delta_e2000_map(white, black).shape == (1, 4, 4)


def test_stopwatch_adds_up_and_throughput():
    stopwatch = Stopwatch("cpu")
    for _ in range(2):
        with stopwatch:
            time.sleep(0.01)
    assert stopwatch.count == 2
    assert stopwatch.seconds >= 0.02
    assert 0.01 <= stopwatch.last < stopwatch.seconds
    assert megapixels_per_second(10.0, 2.0) == 5.0
    assert megapixels_per_second(1.0, 0.0) == math.inf
