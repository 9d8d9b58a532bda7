"""The trilinear LUT lookup agrees with Pillow's Color3DLUT and ffmpeg's lut3d."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest
import torch
from PIL import Image, ImageFilter

from autohdr_cli.cube import CubeLUT, write_cube
from autohdr_cli.fastlut import apply_table, expand_lut
from autohdr_cli.imageio import read_photo
from autohdr_cli.models.lut import StaticLUT, apply_lut, identity_lut, table_to_lut

from conftest import gradient, save_rgb, warm_table


def _torch_lookup_uint8(pixels: np.ndarray, table: np.ndarray) -> np.ndarray:
    image = torch.from_numpy(pixels.astype(np.float32) / 255).permute(2, 0, 1).unsqueeze(0)
    out = apply_lut(image, table_to_lut(table))[0].permute(1, 2, 0).numpy()
    return np.round(np.clip(out, 0, 1) * 255).astype(np.uint8)


def _random_table(size: int, seed: int = 1) -> np.ndarray:
    # A rough, non-monotonic table: trilinear differences show up far more than on a smooth one.
    return np.random.default_rng(seed).random((size, size, size, 3)).astype(np.float32)


@pytest.mark.parametrize("size", [2, 9, 33])
def test_torch_lookup_agrees_with_pillow_within_one_level(size):
    pixels = np.random.default_rng(0).integers(0, 256, (64, 48, 3), dtype=np.uint8)
    table = _random_table(size)
    ours = _torch_lookup_uint8(pixels, table)
    pillow = np.asarray(Image.fromarray(pixels).filter(ImageFilter.Color3DLUT(size, table.reshape(-1))))
    assert np.abs(ours.astype(int) - pillow.astype(int)).max() <= 1


def test_identity_lut_changes_nothing():
    image = torch.rand(2, 3, 17, 23)
    assert torch.allclose(apply_lut(image, identity_lut(7)), image, atol=1e-6)


def test_chunked_lookup_equals_whole_lookup():
    image = torch.rand(1, 3, 40, 50)
    lut = table_to_lut(_random_table(5))
    assert torch.allclose(apply_lut(image, lut, chunk_pixels=333), apply_lut(image, lut), atol=1e-6)


def test_lookup_is_differentiable_in_the_lut():
    lut = identity_lut(5).requires_grad_(True)
    apply_lut(torch.rand(1, 3, 8, 8), lut).sum().backward()
    assert lut.grad is not None and lut.grad.abs().sum() > 0


def test_domain_is_honoured():
    cube = CubeLUT(np.clip(warm_table(9), 0, 1), "", (0.0, 0.0, 0.0), (2.0, 2.0, 2.0))
    model = StaticLUT.from_cube(cube)
    image = torch.full((1, 3, 2, 2), 0.5)
    expected = apply_lut(torch.full((1, 3, 2, 2), 0.25), table_to_lut(cube.table))
    assert torch.allclose(model(image), expected, atol=1e-6)


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg is not installed (.ci/run installs it)")
def test_enhance_agrees_with_ffmpeg_lut3d(tmp_path, run):
    pixels = np.random.default_rng(3).integers(0, 256, (32, 48, 3), dtype=np.uint8)
    save_rgb(tmp_path / "in" / "p.png", pixels)
    table = _random_table(9, seed=5)
    cube = tmp_path / "rough.cube"
    write_cube(cube, CubeLUT(table, "rough"))
    assert run("enhance", tmp_path / "in", tmp_path / "out", "--lut", cube, "-q").exit_code == 0
    ffmpeg_out = tmp_path / "ffmpeg.png"
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-i", tmp_path / "in" / "p.png", "-vf",
         f"lut3d=file={cube}:interp=trilinear", "-pix_fmt", "rgb24", ffmpeg_out],
        check=True,
    )
    ours = read_photo(tmp_path / "out" / "p.png").pixels.astype(int)
    theirs = read_photo(ffmpeg_out).pixels.astype(int)
    assert np.abs(ours - theirs).max() <= 1


@pytest.mark.parametrize("size", [2, 17, 33, 65])
def test_expanded_table_agrees_with_pillow_and_torch_within_one_level(size):
    rng = np.random.default_rng(size)
    pixels = rng.integers(0, 256, (40, 56, 3), dtype=np.uint8)
    pixels[0, :8] = [[0, 0, 0], [255, 255, 255], [255, 0, 0], [0, 255, 0], [0, 0, 255], [1, 2, 3], [254, 128, 0], [7, 7, 7]]
    table = _random_table(size, seed=size)
    fast = apply_table(pixels, expand_lut(table_to_lut(table))).astype(int)
    pillow = np.asarray(Image.fromarray(pixels).filter(ImageFilter.Color3DLUT(size, table.reshape(-1)))).astype(int)
    assert np.abs(fast - pillow).max() <= 1
    assert np.abs(fast - _torch_lookup_uint8(pixels, table).astype(int)).max() <= 1


def test_expanded_identity_is_exact():
    pixels = np.random.default_rng(0).integers(0, 256, (30, 30, 3), dtype=np.uint8)
    assert (apply_table(pixels, expand_lut(identity_lut(9))) == pixels).all()


def test_table_lookup_reads_rgbx_buffers_whatever_their_fourth_byte():
    rng = np.random.default_rng(11)
    rgbx = rng.integers(0, 256, (19, 27, 4), dtype=np.uint8)  # fourth byte random, not 255
    table = expand_lut(table_to_lut(_random_table(9, seed=2)))
    out = np.empty((19, 27, 4), dtype=np.uint8)
    from_buffer = apply_table(rgbx[:, :, :3], table, out)
    from_plain = apply_table(np.ascontiguousarray(rgbx[:, :, :3]), table)
    assert np.array_equal(from_buffer, from_plain)
    assert np.shares_memory(from_buffer, out)  # written where it was asked to be
    with pytest.raises(ValueError):
        apply_table(rgbx[:, :, :3], table, np.empty((19, 28, 4), dtype=np.uint8))


def test_expansion_takes_numpy_or_torch_and_matches_the_gradient_photo():
    lut = table_to_lut(warm_table(17))
    pixels = gradient(32, 40)
    from_torch = apply_table(pixels, expand_lut(lut))
    from_numpy = apply_table(pixels, expand_lut(lut.numpy()))
    assert np.array_equal(from_torch, from_numpy)
    assert np.abs(from_torch.astype(int) - _torch_lookup_uint8(pixels, warm_table(17)).astype(int)).max() <= 1
