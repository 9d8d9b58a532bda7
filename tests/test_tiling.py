"""Tiled inference: the tile plan, agreement with untiled runs (no seams), batching, and the pipeline."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from autohdr_cli.checkpoint import save_checkpoint
from autohdr_cli.models.nafnet import NAFNet, NAFNetConfig
from autohdr_cli.tiling import enhance_tiled, plan_axis
from conftest import save_rgb

from test_nafnet import photo, tiny_model


pytestmark = pytest.mark.usefixtures("one_thread")


class WithoutContext(nn.Module):
    """The same network tiled naively: every tile uses its own channel-attention averages."""

    def __init__(self, model: NAFNet):
        super().__init__()
        self.model = model
        self.multiple = model.multiple

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images)


def untiled(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return model(images)


@pytest.mark.parametrize("size", [1, 15, 16, 17, 100, 511, 512, 513, 1000, 4000])
@pytest.mark.parametrize("tile,overlap,multiple", [(512, 32, 16), (64, 16, 4), (128, 0, 1), (48, 40, 8)])
def test_tile_plan_covers_the_axis_with_weights_summing_to_one(size, tile, overlap, multiple):
    plan = plan_axis(size, tile, overlap, multiple)
    assert plan.padded % multiple == 0 and plan.padded >= size
    assert plan.length % multiple == 0 and plan.length <= max(tile, multiple)
    assert plan.starts[0] == 0 and plan.starts[-1] + plan.length == plan.padded
    assert all(start % multiple == 0 for start in plan.starts)
    assert all(later - earlier <= plan.length - overlap for earlier, later in zip(plan.starts, plan.starts[1:]))
    total = torch.zeros(plan.padded)
    for start, weight in zip(plan.starts, plan.weights):
        assert weight.shape == (plan.length,) and weight.min() >= 0
        total[start : start + plan.length] += weight
    assert torch.allclose(total, torch.ones_like(total), atol=1e-5)
    if len(plan.starts) > 1 and overlap:  # tile edges facing a neighbour get no weight: they see zero padding
        assert plan.weights[0][-1] == 0 and plan.weights[1][0] == 0


def test_tile_plan_refuses_nonsense():
    with pytest.raises(ValueError):
        plan_axis(100, 64, 64)
    with pytest.raises(ValueError):
        plan_axis(100, 0, 0)


def test_tiled_matches_untiled_when_overlap_covers_the_receptive_field():
    model = tiny_model()  # 2 levels: the receptive field is small enough for 32 px of overlap
    images = photo(96, 160, seed=5)
    images[..., :80] *= 0.3  # a dark half: tiles on either side have very different averages
    reference = untiled(model, images)
    tiled = enhance_tiled(model, images, tile=64, overlap=32, batch=3)
    naive = enhance_tiled(WithoutContext(model), images, tile=64, overlap=32, batch=3)
    assert (reference - images).abs().mean() > 20 / 255  # the model does change the picture
    assert (tiled - reference).abs().mean() < 0.01 / 255
    # Without whole-image statistics the tiles disagree with the untiled run: the fix is what helps.
    assert (naive - reference).abs().mean() > 10 * (tiled - reference).abs().mean() + 0.02 / 255


def test_four_level_network_tiled_under_half_a_level_and_without_seams():
    model = tiny_model(config=NAFNetConfig(width=4, enc_blocks=(1, 1, 1, 1), middle_blocks=1, dec_blocks=(1, 1, 1, 1)))
    images = photo(160, 224, seed=6)
    reference = untiled(model, images)
    tiled = enhance_tiled(model, images, tile=96, overlap=32, batch=4)
    difference = (tiled - reference).abs()
    assert difference.mean() < 0.5 / 255
    # A seam is a line: its column (or row) stands out in the mean difference. None may reach half a level.
    assert difference.mean(dim=(0, 1, 2)).max() < 0.5 / 255
    assert difference.mean(dim=(0, 1, 3)).max() < 0.5 / 255


def test_tiles_of_several_photos_batched_together_keep_their_own_statistics():
    model = tiny_model(seed=1)
    first, second = photo(80, 112, seed=7), photo(80, 112, seed=8) * 0.4
    together = enhance_tiled(model, torch.cat([first, second]), tile=48, overlap=16, batch=5)
    alone = torch.cat([enhance_tiled(model, image, tile=48, overlap=16, batch=2) for image in (first, second)])
    assert torch.allclose(together, alone, atol=1e-5)


def test_a_photo_smaller_than_one_tile_is_the_untiled_result():
    model = tiny_model(seed=2)
    images = photo(37, 50)
    assert torch.allclose(enhance_tiled(model, images, tile=512, overlap=32), untiled(model, images), atol=1e-6)


def test_any_convolution_tiles_exactly_beyond_its_receptive_field():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 3, 3, padding=1)).eval()
    images = torch.rand(1, 3, 70, 90)
    tiled = enhance_tiled(model, images, tile=32, overlap=12, batch=2, channels_last=False)
    assert torch.allclose(tiled, untiled(model, images), atol=1e-5)


def test_enhance_cli_tiles_nafnet(tmp_path, run):
    model = tiny_model(seed=3)
    weights = tmp_path / "naf.safetensors"
    save_checkpoint(weights, model)
    pixels = (photo(70, 100, seed=9)[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    save_rgb(tmp_path / "in" / "a.png", pixels)
    result = run("enhance", tmp_path / "in", tmp_path / "out", "--weights", weights, "--tile", "48",
                 "--tile-overlap", "16", "--quiet")
    assert result.exit_code == 0, result.output
    written = np.asarray(Image.open(tmp_path / "out" / "a.png").convert("RGB"), dtype=np.float32)
    source = torch.from_numpy(pixels.astype(np.float32) / 255).permute(2, 0, 1)[None]
    expected = untiled(model, source)[0].permute(1, 2, 0).numpy() * 255
    assert np.abs(written - expected).mean() < 0.6  # tiled, then rounded to 8 bits
    assert np.abs(written - pixels).mean() > 5  # and the model did run
    refused = run("enhance", tmp_path / "in", tmp_path / "out2", "--weights", weights, "--tile", "48",
                  "--tile-overlap", "48")
    assert refused.exit_code == 2


def test_whole_context_model_tiles_like_its_untiled_run():
    config = NAFNetConfig(width=4, enc_blocks=(1, 1, 1, 1), middle_blocks=1, dec_blocks=(1, 1, 1, 1), whole_context=32)
    model = tiny_model(seed=3, config=config)
    images = photo(160, 224, seed=9)
    difference = (enhance_tiled(model, images, tile=96, overlap=32, batch=4) - untiled(model, images)).abs()
    assert difference.mean() < 0.5 / 255
    assert difference.mean(dim=(0, 1, 2)).max() < 0.5 / 255
    assert difference.mean(dim=(0, 1, 3)).max() < 0.5 / 255
