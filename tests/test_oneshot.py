"""One-shot looks: learned from one before/after pair (two files or a one-pair folder), applied to other
photos relative to each photo, exported as the .cube of one reference photo."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from autohdr_cli.checkpoint import load_checkpoint
from autohdr_cli.cube import read_cube
from autohdr_cli.inference import enhance_tensor
from autohdr_cli.models.oneshot import fit_oneshot, linear_to_srgb, srgb_to_linear

from conftest import save_rgb


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    yield


def scene(seed: int = 0, height: int = 48, width: int = 64, gain: float = 1.0) -> np.ndarray:
    """A small photo-like uint8 picture: soft coloured blobs over a grey ramp, exposure ``gain``."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width] / max(height, width)
    image = np.stack([0.15 + 0.6 * x, 0.15 + 0.5 * y, 0.2 + 0.3 * (x + y) / 2], axis=-1)
    for _ in range(5):
        cy, cx, radius = rng.uniform(0, 0.75), rng.uniform(0, 1), rng.uniform(0.08, 0.2)
        colour = rng.uniform(0.05, 0.95, size=3)
        weight = np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / radius**2)[..., None]
        image = image * (1 - weight) + colour * weight
    image = image + rng.normal(0, 0.01, image.shape)
    linear = srgb_to_linear(torch.from_numpy(image.clip(0, 1)).float()) * gain
    return (linear_to_srgb(linear).numpy() * 255).round().astype(np.uint8)


def edited(pixels: np.ndarray) -> np.ndarray:
    """The "editor's" look on a uint8 photo: brighter by 0.4 stop, warmer, lifted shadows."""
    linear = srgb_to_linear(torch.from_numpy(pixels).float() / 255) * 2**0.4
    linear = linear * torch.tensor([1.08, 1.0, 0.88])
    encoded = linear_to_srgb(linear) ** 0.9
    return (encoded.clamp(0, 1).numpy() * 255).round().astype(np.uint8)


def as_tensor(pixels: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(pixels).permute(2, 0, 1).float() / 255


def levels(a: np.ndarray, b: np.ndarray) -> int:
    """Largest difference between two uint8 pictures, in levels."""
    return int(np.abs(a.astype(int) - b.astype(int)).max())


def read(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def test_two_files_train_a_look_that_enhances_another_photo(run, tmp_path):
    before, after = scene(0), edited(scene(0))
    save_rgb(tmp_path / "before.png", before)
    save_rgb(tmp_path / "after.png", after)
    result = run("train", tmp_path / "before.png", tmp_path / "after.png", "-o", tmp_path / "look.safetensors")
    assert result.exit_code == 0, result.stderr
    assert "no validation" in result.stderr
    checkpoint = load_checkpoint(tmp_path / "look.safetensors")
    assert checkpoint.name == "oneshot"
    assert checkpoint.training["pairs_fitted"] == ["before"]

    other = np.ascontiguousarray(scene(0)[::-1, ::-1])  # another view of the same scene
    save_rgb(tmp_path / "in" / "other.png", other)
    result = run("enhance", tmp_path / "in", tmp_path / "out", "--weights", tmp_path / "look.safetensors", "--quiet")
    assert result.exit_code == 0, result.stderr
    got, wanted = read(tmp_path / "out" / "other.png").astype(float), edited(other).astype(float)
    assert np.abs(got - wanted).mean() < 0.2 * np.abs(other - wanted).mean()


def test_a_one_pair_folder_trains_a_look_and_says_there_is_no_validation(run, tmp_path):
    save_rgb(tmp_path / "pairs" / "source" / "a.png", scene(1))
    save_rgb(tmp_path / "pairs" / "target" / "a.png", edited(scene(1)))
    result = run("train", tmp_path / "pairs", "--model", "oneshot", "-o", tmp_path / "look.safetensors")
    assert result.exit_code == 0, result.stderr
    assert "no validation" in result.stderr
    assert load_checkpoint(tmp_path / "look.safetensors").name == "oneshot"


def test_bad_one_shot_arguments_are_usage_errors(run, tmp_path):
    save_rgb(tmp_path / "before.png", scene(0))
    save_rgb(tmp_path / "small.png", scene(0, height=40))
    (tmp_path / "notes.png").write_text("not a photo")
    cases = [
        (("before.png", "small.png"), "same photo"),
        (("before.png", "notes.png"), "notes.png"),
        (("before.png", "before.png", "--model", "nafnet"), "one-shot"),
    ]
    for args, reason in cases:
        files = [tmp_path / a if a.endswith(".png") else a for a in args]
        result = run("train", *files, "-o", tmp_path / "look.safetensors")
        assert result.exit_code == 2, (args, result.stderr)
        assert reason in result.stderr and len(result.stderr.strip().splitlines()) == 1
        assert not (tmp_path / "look.safetensors").exists()


def test_cube_of_a_reference_photo_matches_the_checkpoint_within_one_level(run, tmp_path):
    save_rgb(tmp_path / "before.png", scene(0))
    save_rgb(tmp_path / "after.png", edited(scene(0)))
    save_rgb(tmp_path / "in" / "reference.png", scene(5, gain=0.6))
    assert run("train", tmp_path / "before.png", tmp_path / "after.png", "-o", tmp_path / "look.safetensors").exit_code == 0
    weights = tmp_path / "look.safetensors"
    result = run("export", weights, "-o", tmp_path / "look.cube", "--image", tmp_path / "in" / "reference.png")
    assert result.exit_code == 0, result.stderr
    assert read_cube(tmp_path / "look.cube").size == 33
    assert run("enhance", tmp_path / "in", tmp_path / "by-model", "--weights", weights, "--quiet").exit_code == 0
    assert run("enhance", tmp_path / "in", tmp_path / "by-cube", "--lut", tmp_path / "look.cube", "--quiet").exit_code == 0
    assert levels(read(tmp_path / "by-model" / "reference.png"), read(tmp_path / "by-cube" / "reference.png")) <= 1
    # The checkpoint stays adaptive: without --image there is no single LUT to write.
    assert run("export", weights, "-o", tmp_path / "x.cube").exit_code == 2


def test_strength_zero_is_the_identity(run, tmp_path):
    save_rgb(tmp_path / "before.png", scene(0))
    save_rgb(tmp_path / "after.png", edited(scene(0)))
    assert run("train", tmp_path / "before.png", tmp_path / "after.png", "-o", tmp_path / "look.safetensors").exit_code == 0
    photo = scene(2)
    save_rgb(tmp_path / "in" / "p.png", photo)
    result = run("enhance", tmp_path / "in", tmp_path / "out", "--weights", tmp_path / "look.safetensors",
                 "--strength", "0", "--quiet")
    assert result.exit_code == 0, result.stderr
    assert levels(read(tmp_path / "out" / "p.png"), photo) == 0


def test_a_look_learned_from_an_untouched_pair_changes_nothing():
    before = as_tensor(scene(0))
    model = fit_oneshot([before], [before.clone()])
    for photo in (scene(0), scene(4, gain=0.4), scene(6, gain=2.0)):
        result = (enhance_tensor(model, as_tensor(photo)) * 255).round().byte().permute(1, 2, 0).numpy()
        assert levels(result, photo) <= 1


def test_colours_the_example_does_not_show_stay_near_the_identity():
    # The example: greys, a blue and a green patch left alone, and a red patch the editor made more orange.
    rng = np.random.default_rng(0)
    greys = np.repeat(rng.uniform(0.1, 0.9, size=(48, 64, 1)), 3, axis=2)
    before = greys.copy()
    before[2:12, 40:60] = [0.1, 0.2, 0.8]
    before[36:46, 40:60] = [0.15, 0.7, 0.2]
    before[10:30, 10:40] = [0.75, 0.12, 0.1]
    after = before.copy()
    after[10:30, 10:40] = [0.82, 0.3, 0.08]
    model = fit_oneshot([torch.from_numpy(before).permute(2, 0, 1).float()],
                        [torch.from_numpy(after).permute(2, 0, 1).float()])
    # A new photo of the same greys with cyan, yellow and magenta, which the example never showed.
    photo = greys.copy()
    photo[5:20, 5:30] = [0.1, 0.6, 0.7]
    photo[25:40, 30:60] = [0.8, 0.75, 0.15]
    photo[40:46, 0:20] = [0.7, 0.2, 0.6]
    image = torch.from_numpy(photo).permute(2, 0, 1).float()
    result = enhance_tensor(model, image)
    assert float((result - image).abs().max()) * 255 <= 4
    # ... while its red, where there is one, follows the example.
    photo[40:46, 0:20] = [0.75, 0.12, 0.1]
    image = torch.from_numpy(photo).permute(2, 0, 1).float()
    red = enhance_tensor(model, image)[:, 43, 10]
    assert float(red[1]) > 0.12 + 0.05
