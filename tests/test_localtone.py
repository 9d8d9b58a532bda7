"""The local-tone model: per-pixel colour plus neighbourhood brightness, trained and run through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from autohdr_cli.checkpoint import load_checkpoint, save_checkpoint
from autohdr_cli.models import MODELS, build, make_config
from autohdr_cli.edits import gaussian_blur, smooth
from autohdr_cli.inference import is_global
from autohdr_cli.models.localtone import BAND_PIXELS, LocalTone, neighbourhood_luminance

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = {"hidden": 8, "depth": 1, "context_size": 32, "training_pixels": 64}


def photo(height: int, width: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    smooth_part = F.interpolate(torch.rand(1, 3, 4, 5, generator=generator), size=(height, width), mode="bilinear")
    return (0.8 * smooth_part + 0.2 * torch.rand(1, 3, height, width, generator=generator)).clamp(0, 1)


def trained_looking(model: LocalTone, seed: int = 1) -> LocalTone:
    """The model with random non-zero weights everywhere (an untrained one is the identity)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.3)
    return model.eval()


def test_registered_and_not_global_or_tiled():
    assert MODELS["localtone"] is LocalTone
    model = build("localtone", {"scales": [0.01, 0.1], "photo_mean": False})
    assert model.inputs == 5
    assert not is_global(model) and not getattr(model, "tileable", False)
    assert is_global(build("localtone", {"lut_size": 17}))
    for size in (1, -1, 66):
        with pytest.raises(ValueError):
            build("localtone", {"lut_size": size})


def test_untrained_model_is_the_identity():
    images = photo(20, 30)
    with torch.no_grad():
        assert torch.equal(LocalTone(make_config("localtone", TINY)).eval()(images), images)


def test_bands_give_the_same_result_as_one_pass():
    """A photo over BAND_PIXELS goes through in bands; the result is that of one pass over it."""
    model = trained_looking(LocalTone(make_config("localtone", TINY)))
    height = BAND_PIXELS // 300 + 50
    images = photo(height, 300, seed=2)
    with torch.no_grad():
        banded = model.edit_pixels(images)
        whole = model.enhance_with(images, model.context(images))
        assert torch.allclose(banded, whole, atol=1e-5)
        assert torch.equal(model.eval()(images), banded.clamp(0.0, 1.0))  # enhancing clips, as NAFNet does


def test_reads_the_neighbourhood_not_only_the_pixel():
    """The same colour in a dark and in a bright surround comes out differently, as local tools do."""
    model = trained_looking(LocalTone(make_config("localtone", TINY)))
    images = torch.full((1, 3, 32, 64), 0.1)
    images[..., 32:] = 0.9
    images[..., 12:20, 12:20] = 0.5  # a grey patch in the dark half
    images[..., 12:20, 44:52] = 0.5  # the same grey in the bright half
    with torch.no_grad():
        result = model(images)
    assert (result[..., 16, 16] - result[..., 16, 48]).abs().max() > 1e-3


def test_the_look_means_the_same_at_any_photo_size():
    """Radii are fractions of the photo's long side: a photo and a 2x copy get the same edit."""
    model = trained_looking(LocalTone(make_config("localtone", TINY)))
    small = photo(48, 64, seed=3)
    large = F.interpolate(small, scale_factor=2, mode="bilinear", align_corners=False)
    with torch.no_grad():
        from_small = F.interpolate(model(small), scale_factor=2, mode="bilinear", align_corners=False)
        from_large = model(large)
    assert (from_small - from_large).abs().mean() < 0.02


def test_shrunk_blur_is_close_to_the_direct_one():
    maps = photo(96, 128, seed=4).mean(dim=1, keepdim=True)
    for sigma in (2.0, 9.0, 20.0):
        assert (smooth(maps, sigma) - gaussian_blur(maps, sigma)).abs().mean() < 2e-3
    blurred = neighbourhood_luminance(photo(16, 16), (0.5,), 16, True)  # kernel wider than the photo
    assert blurred.shape == (1, 2, 16, 16) and torch.isfinite(blurred).all()


def test_training_loss_learns_a_local_edit():
    """Pull each pixel towards its surroundings' brightness: an edit no colour transform can copy."""
    torch.manual_seed(0)
    model = LocalTone(make_config("localtone", TINY)).train()
    source = photo(32, 32, seed=5).repeat(2, 1, 1, 1)
    local = neighbourhood_luminance(source, (0.1,), 32, False)
    target = (source + 0.8 * (local - source.mean(dim=1, keepdim=True))).clamp(0, 1)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    first = None
    for _ in range(80):
        loss, parts = model.training_loss(source, target)
        assert set(parts) == {"charbonnier", "delta_e"}  # a pixel sample: no SSIM
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        first = first if first is not None else float(loss.detach())
    assert float(loss.detach()) < 0.6 * first


def test_checkpoint_round_trip(tmp_path):
    model = trained_looking(LocalTone(make_config("localtone", TINY)))
    path = tmp_path / "tone.safetensors"
    save_checkpoint(path, model, training={"steps": 1})
    loaded = load_checkpoint(path)
    assert loaded.name == "localtone" and loaded.model.config == model.config
    images = photo(24, 20)
    with torch.no_grad():
        assert torch.equal(loaded.model.eval()(images), model(images))


def _pairs(folder: Path, count: int = 4) -> Path:
    """Pairs whose edit is local: each pixel moves towards the mean of its 9 x 9 neighbourhood."""
    rng = np.random.default_rng(0)
    for side in ("source", "target"):
        (folder / side).mkdir(parents=True)
    for index in range(count):
        source = rng.random((40, 48, 3)) ** 1.5
        blurred = F.avg_pool2d(torch.from_numpy(source).permute(2, 0, 1)[None], 9, 1, 4, count_include_pad=False)
        target = np.clip(source + 0.5 * (blurred[0].permute(1, 2, 0).numpy() - source) + 0.05, 0, 1)
        Image.fromarray((source * 255).astype(np.uint8)).save(folder / "source" / f"p{index}.png")
        Image.fromarray((target * 255).astype(np.uint8)).save(folder / "target" / f"p{index}.png")
    return folder


def test_train_enhance_evaluate_through_the_cli(tmp_path, run):
    pairs = _pairs(tmp_path / "pairs")
    weights = tmp_path / "tone.safetensors"
    result = run("train", pairs, "--model", "localtone", "--config", json.dumps(TINY), "--steps", "3",
                 "--crop", "16", "--batch", "2", "--quiet", "-o", weights)
    assert result.exit_code == 0, result.output
    assert load_checkpoint(weights).name == "localtone"
    out = tmp_path / "out"
    result = run("enhance", pairs / "source", out, "--weights", weights, "--quiet")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.glob("*.png")) == sorted(p.name for p in (pairs / "source").iterdir())
    result = run("evaluate", out, pairs / "target")
    assert result.exit_code == 0, result.output


def test_train_size_follows_the_context_size(tmp_path, run):
    pairs = _pairs(tmp_path / "pairs")
    result = run("train", pairs, "--model", "localtone", "--config", json.dumps(TINY), "--steps", "1",
                 "--crop", "16", "--train-size", "64", "--quiet", "-o", tmp_path / "t.safetensors")
    assert result.exit_code != 0
    assert "--train-size 64" in result.output and "32" in result.output


def test_export_gives_a_graph_not_a_cube_and_refuses_a_graph_when_carried_by_lut(tmp_path, run):
    pytest.importorskip("onnxruntime")
    weights = tmp_path / "tone.safetensors"
    save_checkpoint(weights, trained_looking(LocalTone(make_config("localtone", TINY))), training={"steps": 1})
    result = run("export", weights, "--format", "cube", "-o", tmp_path / "tone.cube")
    assert result.exit_code == 2, result.output
    assert "cannot be a LUT" in result.output and "onnx or pt2" in result.output
    assert not (tmp_path / "tone.cube").exists()
    for fmt in ("onnx", "pt2"):  # each checked against PyTorch by export itself
        result = run("export", weights, "--format", fmt, "-o", tmp_path / f"tone.{fmt}")
        assert result.exit_code == 0, result.output
    carried = tmp_path / "carried.safetensors"
    save_checkpoint(carried, trained_looking(LocalTone(make_config("localtone", {**TINY, "lut_size": 9}))), training={"steps": 1})
    result = run("export", carried, "--format", "onnx", "-o", tmp_path / "carried.onnx")
    assert result.exit_code == 2, result.output
    assert "fitted to each photo" in result.output and "--image" in result.output
    assert not (tmp_path / "carried.onnx").exists()


def test_a_local_network_can_learn_what_is_left_after_it(tmp_path, run):
    """``train --base TONE``: NAFNet on top of a localtone model; the file holds both, and enhancing runs
    the localtone pass on the whole photo before the network."""
    from autohdr_cli.imageio import load_image
    from autohdr_cli.inference import enhance_tensor

    pairs = _pairs(tmp_path / "pairs")
    tone = tmp_path / "tone.safetensors"
    save_checkpoint(tone, trained_looking(LocalTone(make_config("localtone", TINY)), seed=2), training={"steps": 1})
    cascade = tmp_path / "cascade.safetensors"
    nafnet = json.dumps({"width": 4, "enc_blocks": [1], "dec_blocks": [1], "middle_blocks": 1})
    result = run("train", pairs, "-o", cascade, "--model", "nafnet", "--config", nafnet, "--init", "none",
                 "--perceptual", "0", "--crop", "16", "--train-size", "48", "--batch", "2", "--steps", "2",
                 "--quiet", "--base", tone)
    assert result.exit_code == 0, result.output
    loaded = load_checkpoint(cascade).model
    assert isinstance(loaded.base, LocalTone)
    photo_tensor = torch.from_numpy(load_image(sorted((pairs / "source").iterdir())[0]))
    with torch.no_grad():
        edited = load_checkpoint(tone).model.eval()(photo_tensor[None]).clamp(0, 1)
        assert (edited[0] - photo_tensor).abs().mean() > 0.01  # the base is far from the identity
        network = load_checkpoint(cascade).model.eval()
        del network.base
        expected = network(edited).clamp(0, 1)[0]
    assert torch.allclose(enhance_tensor(loaded.eval(), photo_tensor), expected, atol=1e-5)


def test_a_lut_carries_the_edit_of_a_small_copy_to_the_photo():
    """With ``lut_size`` the MLP edits the context copy only; a LUT fitted to that edit gives the photo
    most of what every pixel through the MLP would (the rest is what is local at full size)."""
    every_pixel = trained_looking(LocalTone(make_config("localtone", TINY)))
    carried = LocalTone(make_config("localtone", {**TINY, "lut_size": 17})).eval()
    carried.load_state_dict(every_pixel.state_dict())
    images = photo(96, 128, seed=4)
    with torch.no_grad():
        exact, approximate = every_pixel(images), carried(images)
    edit = (exact - images).abs().mean()
    assert edit > 0.02
    assert (approximate - exact).abs().mean() < 0.25 * edit
    assert not torch.equal(approximate, exact)


def test_enhance_lut_size_is_a_setting_of_localtone_only(tmp_path, run):
    pairs = _pairs(tmp_path / "pairs")
    tone = tmp_path / "tone.safetensors"
    save_checkpoint(tone, trained_looking(LocalTone(make_config("localtone", TINY))), training={"steps": 1})
    every, carried = tmp_path / "every", tmp_path / "carried"
    assert run("enhance", pairs / "source", every, "-w", tone, "--quiet").exit_code == 0
    result = run("enhance", pairs / "source", carried, "-w", tone, "--lut-size", "9", "--quiet")
    assert result.exit_code == 0, result.output
    a = np.asarray(Image.open(every / "p0.png"), dtype=float)
    b = np.asarray(Image.open(carried / "p0.png"), dtype=float)
    source = np.asarray(Image.open(pairs / "source" / "p0.png"), dtype=float)
    assert 0 < np.abs(a - b).mean() < 0.5 * np.abs(a - source).mean()
    # Outputs made with another --lut-size are not taken for this run's, nor silently replaced.
    again = run("enhance", pairs / "source", carried, "-w", tone, "--lut-size", "17", "--quiet")
    assert again.exit_code == 2 and "--overwrite" in again.output
    assert np.array_equal(np.asarray(Image.open(carried / "p0.png"), dtype=float), b)
    for other in (["--model", "lut"], ["--model", "nafnet"]):
        refused = run("enhance", pairs / "source", tmp_path / "x", *other, "--lut-size", "9")
        assert refused.exit_code == 2 and "--lut-size: for localtone checkpoints only" in refused.output
        assert not (tmp_path / "x").exists()


def test_evaluate_lut_size_scores_the_carried_edit_as_enhance_makes_it(tmp_path, run):
    pairs = _pairs(tmp_path / "pairs")
    tone = tmp_path / "tone.safetensors"
    save_checkpoint(tone, trained_looking(LocalTone(make_config("localtone", TINY))), training={"steps": 1})
    carried = tmp_path / "carried"
    assert run("enhance", pairs / "source", carried, "-w", tone, "--lut-size", "9", "--quiet").exit_code == 0
    by_folders = run("evaluate", carried, pairs / "target", "-q", "--json", tmp_path / "folders.json")
    lut = tmp_path / "lut.safetensors"
    save_checkpoint(lut, build("lut", {"lut_size": 9}), training={"steps": 1})
    result = run("evaluate", pairs, "-w", tone, "-w", lut, "--lut-size", "9", "-q", "--json", tmp_path / "r.json")
    assert by_folders.exit_code == 0 and result.exit_code == 0, result.output
    report = json.loads((tmp_path / "r.json").read_text())
    expected = json.loads((tmp_path / "folders.json").read_text())
    assert "tone:lut_size=9" in report["models"] and "lut" in report["models"]  # the lut runs as it is
    assert report["summary"]["tone:lut_size=9"]["psnr"]["mean"] == pytest.approx(
        expected["summary"]["result"]["psnr"]["mean"], abs=1e-3
    )
    every = run("evaluate", pairs, "-w", tone, "-q", "--json", tmp_path / "every.json")
    every_psnr = json.loads((tmp_path / "every.json").read_text())["summary"]["tone"]["psnr"]["mean"]
    assert every.exit_code == 0 and every_psnr != report["summary"]["tone:lut_size=9"]["psnr"]["mean"]
    for refused in (
        run("evaluate", pairs, "-w", lut, "--lut-size", "9"),
        run("evaluate", carried, pairs / "target", "--lut-size", "9"),
    ):
        assert refused.exit_code == 2 and "--lut-size" in refused.output


def test_a_localtone_that_carries_by_lut_exports_one_cube_per_photo(tmp_path, run):
    from autohdr_cli.cube import read_cube

    tone = tmp_path / "tone.safetensors"
    model = trained_looking(LocalTone(make_config("localtone", {**TINY, "lut_size": 9})))
    save_checkpoint(tone, model, training={"steps": 1})
    photo_file = tmp_path / "photo.png"
    Image.fromarray((photo(40, 56, seed=5)[0].permute(1, 2, 0).numpy() * 255).astype(np.uint8)).save(photo_file)
    result = run("export", tone, "--format", "cube", "--image", photo_file, "--size", "9", "-o", tmp_path / "p.cube")
    assert result.exit_code == 0, result.output
    assert read_cube(tmp_path / "p.cube").size == 9
    no_photo = run("export", tone, "--format", "cube", "-o", tmp_path / "q.cube")
    assert no_photo.exit_code == 2 and "--image" in no_photo.output
    assert not is_global(load_checkpoint(tone, settings={"lut_size": 0}).model)  # enhance --lut-size 0
