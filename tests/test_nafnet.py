"""NAFNet: the model contract, the block's parts, padding, whole-image statistics, training and export."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from autohdr_cli.checkpoint import load_checkpoint, save_checkpoint
from autohdr_cli.models import MODELS, build
from autohdr_cli.models.nafnet import PRESETS, ChannelLayerNorm, NAFBlock, NAFNet, NAFNetConfig, preset

pytestmark = pytest.mark.usefixtures("one_thread")


TINY = NAFNetConfig(width=4, enc_blocks=(1, 1), middle_blocks=1, dec_blocks=(1, 1))


def tiny_model(seed: int = 0, config: NAFNetConfig = TINY) -> NAFNet:
    """A tiny NAFNet whose blocks all do something: residual scales and the ending drawn at random."""
    torch.manual_seed(seed)
    model = NAFNet(config).eval()
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith(("beta", "gamma")):
                parameter.normal_(0.0, 0.5)
        model.ending.weight.normal_(0.0, 0.1)
    return model


def photo(height: int, width: int, seed: int = 0) -> torch.Tensor:
    """A ``1 x 3 x H x W`` test picture: smooth colour regions plus noise."""
    generator = torch.Generator().manual_seed(seed)
    smooth = F.interpolate(torch.rand(1, 3, 4, 5, generator=generator), size=(height, width), mode="bilinear")
    return (0.8 * smooth + 0.2 * torch.rand(1, 3, height, width, generator=generator)).clamp(0, 1)


def test_registered_with_the_model_contract():
    assert MODELS["nafnet"] is NAFNet
    assert NAFNet.config_class is NAFNetConfig
    assert NAFNet.tileable is True
    assert not hasattr(NAFNet, "predict_lut")  # not a global model: the pipeline must not treat it as a LUT
    model = build("nafnet", {"width": 4, "enc_blocks": [1, 1], "dec_blocks": [1, 1], "middle_blocks": 0})
    assert model.config.enc_blocks == (1, 1) and model.multiple == 4
    assert isinstance(NAFNet().config, NAFNetConfig)


def test_any_size_in_same_size_out_in_range():
    model = tiny_model()
    for height, width in ((1, 1), (37, 53), (64, 48)):
        images = photo(height, width) if height > 1 else torch.rand(2, 3, 1, 1)
        with torch.no_grad():
            out = model(images)
        assert out.shape == images.shape
        assert out.min() >= 0 and out.max() <= 1
        assert (out - images).abs().mean() > 1e-3  # the random blocks really change the picture


def test_untrained_model_is_the_identity():
    model = NAFNet(TINY).eval()
    images = photo(21, 30)
    with torch.no_grad():
        assert torch.equal(model(images), images)
    block = NAFBlock(6)
    features = torch.randn(2, 6, 8, 8)
    assert torch.equal(block(features)[0], features)  # zero beta and gamma


def test_padding_repeats_edge_pixels_and_crops_back():
    model = tiny_model()
    images = photo(30, 21)
    padded = F.pad(images, (0, 3, 0, 2), mode="replicate")  # to 32 x 24, multiples of 4
    with torch.no_grad():
        assert torch.allclose(model(images), model(padded)[..., :30, :21], atol=1e-6)


def test_channel_layer_norm_both_memory_layouts_match_layer_norm():
    norm = ChannelLayerNorm(5)
    with torch.no_grad():
        norm.weight.normal_()
        norm.bias.normal_()
    x = torch.randn(2, 5, 7, 9) * 3 + 1
    expected = F.layer_norm(x.permute(0, 2, 3, 1), (5,), norm.weight, norm.bias, 1e-6).permute(0, 3, 1, 2)
    assert torch.allclose(norm(x), expected, atol=1e-5)
    channels_last = x.contiguous(memory_format=torch.channels_last)
    assert torch.allclose(norm(channels_last), expected, atol=1e-5)
    out = norm(channels_last)
    assert out.mean().abs() < 10  # sanity: a finite result


def test_image_context_reproduces_the_global_statistics_and_is_used():
    model = tiny_model()
    images = torch.cat([photo(40, 36, seed=1), photo(40, 36, seed=2)])
    with torch.no_grad():
        context = model.image_context(images)
        assert len(context) == model.num_blocks == 5
        assert all(c.shape[0] == 2 and c.shape[-2:] == (1, 1) for c in context)
        # Given statistics take the folded inference path (scales folded into the 1x1 convolutions).
        assert torch.allclose(model(images, context), model(images), atol=1e-5)
        assert torch.allclose(model(images[1:], [c[1:] for c in context]), model(images[1:]), atol=1e-5)
        swapped = [c.flip(0) for c in context]  # each image gets the other's statistics
        assert (model(images, swapped) - model(images)).abs().mean() > 1e-4
    with pytest.raises(ValueError):
        model(images, context[:-1])


def test_training_loss_learns_a_simple_edit():
    torch.manual_seed(0)
    model = NAFNet(TINY).train()
    source = photo(32, 32, seed=3).repeat(2, 1, 1, 1)
    target = (source * 1.25 + 0.05).clamp(0, 1)  # brighter
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    first = None
    for _ in range(40):
        loss, parts = model.training_loss(source, target)
        assert loss.dim() == 0 and set(parts) == {"charbonnier", "ssim", "delta_e"}
        assert all(isinstance(value, float) for value in parts.values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        first = first if first is not None else float(loss.detach())
    assert float(loss.detach()) < 0.5 * first


def test_checkpoint_round_trip_rebuilds_the_same_model(tmp_path):
    model = tiny_model(seed=4)
    path = tmp_path / "naf.safetensors"
    save_checkpoint(path, model, training={"steps": 1})
    loaded = load_checkpoint(path)
    assert loaded.name == "nafnet" and loaded.model.config == model.config
    images = photo(24, 20)
    with torch.no_grad():
        assert torch.equal(loaded.model.eval()(images), model(images))


def test_presets():
    assert PRESETS["small"].width == 16 and PRESETS["small"].enc_blocks == (1, 1, 1, 1)
    small_parameters = sum(p.numel() for p in NAFNet(preset("small")).parameters())
    assert 500_000 < small_parameters < 2_000_000  # about 1.1 M: trainable on a CPU in under an hour
    assert PRESETS["base"].width == 32 and sum(PRESETS["base"].enc_blocks) > 4
    assert preset("small", width=8).width == 8 and PRESETS["small"].width == 16  # a copy, not the preset
    with pytest.raises(KeyError):
        preset("huge")
    with pytest.raises(ValueError):
        NAFNetConfig(enc_blocks=(1, 1), dec_blocks=(1,))
    assert dataclasses.asdict(PRESETS["small"])["enc_blocks"] == (1, 1, 1, 1)


def test_exports_with_torch_export():
    model = tiny_model()
    images = photo(32, 32)
    exported = torch.export.export(model, (images,))
    with torch.no_grad():
        assert torch.allclose(exported.module()(images), model(images), atol=1e-6)


def test_whole_context_takes_the_statistics_of_the_squashed_photo():
    model = tiny_model(seed=3, config=dataclasses.replace(TINY, whole_context=16))
    images = photo(40, 52, seed=4)
    with torch.no_grad():
        squashed = F.interpolate(images, size=(16, 16), mode="bilinear", antialias=True, align_corners=False)
        context = model.image_context(images)
        assert all(torch.allclose(a, b) for a, b in zip(context, model.image_context(squashed)))
        # Without a context the photo's own squashed statistics are used: the same result.
        assert torch.allclose(model(images), model(images, context), atol=1e-5)
        # A crop of the photo given the photo's context is that part of the whole result.
        crop = images[..., 8:32, 12:44]
        plain = NAFNet(dataclasses.replace(TINY, whole_context=0)).eval()
        plain.load_state_dict(model.state_dict())
        assert not torch.allclose(model(crop), model(crop, context), atol=1e-4)
        assert torch.allclose(model(crop, context), plain(crop, context), atol=1e-5)


def test_whole_context_training_reads_the_whole_photos_given():
    torch.manual_seed(0)
    model = NAFNet(dataclasses.replace(TINY, whole_context=16)).train()
    assert model.prior_size == 16
    source = photo(32, 32, seed=3).repeat(2, 1, 1, 1)
    target = (source * 1.25 + 0.05).clamp(0, 1)
    whole = torch.cat([photo(16, 16, seed=5), photo(16, 16, seed=6)]).repeat(1, 2, 1, 1)  # 2 x 6 x 16 x 16
    loss, _parts = model.training_loss(source, target, None, whole)
    loss.backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    with pytest.raises(ValueError):
        NAFNetConfig(width=4, enc_blocks=(1, 1), dec_blocks=(1, 1), whole_context=2)
