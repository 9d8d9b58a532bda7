"""The learned global looks: image-adaptive 3D LUT (``lut``) and NILUT (``nilut``), and their losses."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from autohdr_cli import losses
from autohdr_cli.checkpoint import default_weights_path, load_checkpoint, save_checkpoint
from autohdr_cli.models import MODELS, build
from autohdr_cli.models.lut import (
    AdaptiveLUT,
    AdaptiveLUTConfig,
    apply_curves,
    apply_lut,
    identity_lut,
    make_thumbnail,
    soft_histogram,
)
from autohdr_cli.models.nilut import NILUT, NILUTConfig
from autohdr_cli.inference import enhance_tensor

TINY_LUT = {"lut_size": 7, "num_basis": 2, "thumbnail_size": 16, "widths": (4, 8), "hidden": 8, "histogram_bins": 4}
TINY_NILUT = {"width": 8, "depth": 2, "grid_size": 9}
DEFAULT_WEIGHTS = default_weights_path("lut")
SAMPLES = Path(__file__).resolve().parents[1] / "samples" / "photos"


pytestmark = pytest.mark.usefixtures("one_thread")


def scramble(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Push every parameter away from its (identity) start, as training would."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn(parameter.shape, generator=generator) * 0.05)
    return model.eval()


def images(batch: int = 2, height: int = 24, width: int = 32, seed: int = 1) -> torch.Tensor:
    return torch.rand(batch, 3, height, width, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize(
    "name, config",
    [("lut", TINY_LUT), ("lut", {**TINY_LUT, "curves": "after"}), ("lut", {**TINY_LUT, "curves": "none"}),
     ("nilut", TINY_NILUT), ("nilut", {**TINY_NILUT, "num_styles": 3})],
)
def test_untrained_models_are_the_identity(name, config):
    model = build(name, config).eval()
    x = images()
    assert torch.allclose(model(x), x, atol=1e-5)


@pytest.mark.parametrize(
    "name, config",
    [("lut", TINY_LUT), ("lut", {**TINY_LUT, "curves": "after"}), ("lut", {**TINY_LUT, "curves": "none"}),
     ("nilut", TINY_NILUT)],
)
def test_forward_is_the_predicted_lut_applied_as_the_pipeline_does(name, config):
    model = scramble(build(name, config))
    x = images()
    size = model.thumbnail_size
    luts = model.predict_lut(make_thumbnail(x, size) if size else x[:, :, :1, :1])
    expected_size = config.get("lut_size", config.get("grid_size"))
    assert luts.shape == (2, 3, expected_size, expected_size, expected_size)
    assert luts.min() >= 0 and luts.max() <= 1
    with torch.no_grad():
        direct = model(x)
    assert torch.allclose(direct, apply_lut(x, luts), atol=1e-6)
    assert torch.allclose(direct, enhance_tensor(model, x), atol=1e-5)
    assert not torch.allclose(direct, x, atol=1e-3)  # the scrambled model does change the photo


def test_adaptive_lut_gives_each_photo_its_own_lut():
    model = scramble(build("lut", TINY_LUT))
    dark, bright = torch.full((1, 3, 16, 16), 0.1), torch.full((1, 3, 16, 16), 0.8)
    luts = model.predict_lut(torch.cat([dark, bright]))
    assert not torch.allclose(luts[0], luts[1])


def test_models_follow_the_contract():
    for name, config_class in (("lut", AdaptiveLUTConfig), ("nilut", NILUTConfig)):
        cls = MODELS[name]
        assert cls.config_class is config_class
        model = cls()  # plain constructor, default config
        assert isinstance(model.config, config_class)
        assert isinstance(model.thumbnail_size, int)
    assert AdaptiveLUT().thumbnail_size == 256 and NILUT().thumbnail_size == 0
    with pytest.raises(ValueError):
        AdaptiveLUT(AdaptiveLUTConfig(curves="sideways"))


def test_default_size_lut_checkpoint_is_under_2_mb(tmp_path):
    path = tmp_path / "lut.safetensors"
    save_checkpoint(path, AdaptiveLUT(), training={})
    assert path.stat().st_size < 2_000_000


@pytest.mark.parametrize(
    "name, config", [("lut", {**TINY_LUT, "curves": "after"}), ("nilut", {**TINY_NILUT, "num_styles": 2})]
)
def test_checkpoint_round_trip_keeps_the_look(tmp_path, name, config):
    model = scramble(build(name, config))
    path = tmp_path / "model.safetensors"
    save_checkpoint(path, model, training={"steps": 1})
    loaded = load_checkpoint(path)
    assert loaded.name == name
    x = images()
    with torch.no_grad():
        assert torch.equal(model(x), loaded.model(x))


def test_nilut_blends_its_looks_through_the_style_vector():
    model = scramble(build("nilut", {**TINY_NILUT, "num_styles": 2, "style_names": ("warm", "cool")}))
    x = images()
    with torch.no_grad():
        model.set_style([1, 0])
        first = model(x)
        model.set_style([0, 1])
        second = model(x)
        model.set_style([0.3, 0.7])
        blended = model(x)
        model.set_style([3, 7])  # weights are scaled to sum to 1
        scaled = model(x)
    assert not torch.allclose(first, second, atol=1e-3)
    assert torch.equal(blended, scaled)
    assert not torch.allclose(blended, first, atol=1e-4) and not torch.allclose(blended, second, atol=1e-4)
    assert model.style_index("cool") == 1
    for bad in ([1.0], [1, 2, 3], [-1, 2], [0, 0]):
        with pytest.raises(ValueError):
            model.set_style(bad)


def test_single_look_nilut_takes_only_its_one_style():
    model = build("nilut", TINY_NILUT)
    model.set_style([1.0])
    with pytest.raises(ValueError):
        model.set_style([0.3, 0.7])


@pytest.mark.parametrize(
    "name, config", [("lut", TINY_LUT), ("lut", {**TINY_LUT, "curves": "none"}), ("nilut", TINY_NILUT)]
)
def test_training_loss_reaches_every_parameter_and_learns(name, config):
    torch.manual_seed(0)
    model = build(name, config).train()
    source = images(4, 16, 16)
    target = source.pow(0.6)  # a global brightening any LUT can learn
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    loss, parts = model.training_loss(source, target)
    assert {"charbonnier", "smoothness", "monotonicity"} <= set(parts)
    assert all(isinstance(v, float) for v in parts.values())
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    first = loss.item()
    for _ in range(15):
        optimizer.zero_grad()
        loss, _ = model.training_loss(source, target)
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.8 * first


def test_nilut_training_loss_uses_each_samples_look():
    model = build("nilut", {**TINY_NILUT, "num_styles": 2}).train()
    source = images(2, 8, 8)
    loss, _ = model.training_loss(source, source.pow(0.5), torch.tensor([0, 1]))
    loss.backward()
    assert torch.isfinite(loss)
    with pytest.raises(ValueError):
        model.training_loss(source, source, torch.tensor([0, 2]))


def test_lut_regularisers():
    identity = identity_lut(9)
    step = 1 / 8
    # Each channel steps by 1/8 along its own axis only; edge steps count double (Zeng et al.).
    expected = sum((torch.tensor([2.0] + [1.0] * 6 + [2.0]) * step**2).mean() / 3 for _ in range(3))
    assert torch.isclose(losses.lut_smoothness(identity), expected, rtol=1e-5)
    assert losses.lut_monotonicity(identity) == 0
    inverted = 1 - identity
    assert losses.lut_monotonicity(inverted) > 0
    assert losses.lut_smoothness(torch.full((3, 5, 5, 5), 0.5)) == 0
    # A saturation boost is allowed: raising red may lower green's output.
    grey = identity.mean(dim=0, keepdim=True)
    assert losses.lut_monotonicity(grey + (identity - grey) * 1.5) == 0
    assert losses.curve_monotonicity(torch.tensor([[0.0, 0.5, 0.4, 1.0]])) > 0


def test_image_losses():
    x = images(2, 32, 32)
    assert losses.charbonnier_loss(x, x) < 2e-3
    assert losses.charbonnier_loss(x, x + 0.1) == pytest.approx(0.1, abs=1e-3)
    assert losses.ssim_loss(x, x) < 1e-4
    assert losses.delta_e_loss(x, x) < 1e-3
    full = losses.delta_e_loss(x, x.flip(-1))
    sampled = losses.delta_e_loss(x, x.flip(-1), max_pixels=256)
    assert sampled == pytest.approx(float(full), rel=0.2)
    total, parts = losses.ReconstructionLoss()(x, x.flip(-1))
    assert set(parts) == {"charbonnier", "ssim", "delta_e"}
    assert float(total) == pytest.approx(
        float(parts["charbonnier"] + 0.1 * parts["ssim"] + 0.01 * parts["delta_e"]), rel=1e-5
    )
    assert set(losses.ReconstructionLoss(ssim=0, delta_e=0, lab_l1=1)(x, x)[1]) == {"charbonnier", "lab_l1"}


def test_curve_and_histogram_helpers():
    values = torch.rand(2, 3, 50)
    ramp = torch.linspace(0, 1, 9).expand(2, 3, 9)
    assert torch.allclose(apply_curves(values, ramp), values, atol=1e-6)
    assert torch.allclose(apply_curves(values, 1 - ramp), 1 - values, atol=1e-6)
    histogram = soft_histogram(images(2, 8, 8), 5)
    assert histogram.shape == (2, 3, 5)
    assert torch.allclose(histogram.sum(-1), torch.ones(2, 3))
    assert soft_histogram(torch.zeros(1, 3, 4, 4), 5)[0, 0, 0] == 1


@pytest.mark.parametrize("photo", ["aitzgorri_by_Aitzol_Berasategi", "picosdeeuropa_by_Aitzol_Berasategi"])
def test_shipped_default_weights_fix_badly_exposed_cast_flat_photos(photo):
    from autohdr_cli import metrics
    from autohdr_cli.imageio import load_image
    from autohdr_cli.train_data import degrade, resize_long_side

    path = SAMPLES / f"{photo}.jpg"
    checkpoint = load_checkpoint(DEFAULT_WEIGHTS)
    assert checkpoint.name == "lut" and DEFAULT_WEIGHTS.stat().st_size < 2_000_000
    # These two photos are in the held-out set the default weights never trained on.
    assert photo.split("_by_")[0] in " ".join(checkpoint.training["val_photos"])
    clean = resize_long_side(torch.from_numpy(load_image(path)), 256)[None]
    # Exposure (stops), red and blue gains (stops), contrast, saturation: dark + warm + flat, and bright + washed out.
    for parameters in ([-1.0, 0.0, 0.3, 0.7, 1.0], [0.8, 0.3, -0.2, 1.0, 0.6]):
        bad = degrade(clean, torch.tensor([parameters]))
        fixed = enhance_tensor(checkpoint.model, bad)
        assert metrics.psnr(fixed, clean) > metrics.psnr(bad, clean) + 2.0
        assert metrics.delta_e2000(fixed, clean) < 0.8 * metrics.delta_e2000(bad, clean)


def test_photo_thumbnail_training_reads_the_whole_photo_given():
    # With photo_thumbnail the LUT for a crop is predicted from the crop's whole photo, as at inference.
    model = scramble(build("lut", {**TINY_LUT, "photo_thumbnail": True, "dropout": 0.0})).train()
    plain = scramble(build("lut", {**TINY_LUT, "dropout": 0.0, "photo_thumbnail": False})).train()
    assert model.prior_size == 16 and plain.prior_size == 0
    photo = images(2, 48, 64, seed=3)
    crop = photo[:, :, 8:24, 16:40]
    target = crop.pow(0.7)
    full = torch.cat([photo, photo.pow(0.7)], dim=1)
    squashed = make_thumbnail(full, 16)  # what the training data brings
    from_photo = model.training_loss(crop, target, None, squashed)[0]
    assert torch.allclose(from_photo, model.training_loss(crop, target, None, full)[0])
    assert not torch.allclose(from_photo, model.training_loss(crop, target)[0])
    # Without the option the whole photo is not read.
    assert torch.allclose(plain.training_loss(crop, target, None, squashed)[0], plain.training_loss(crop, target)[0])
