"""Starting from what is already known: the shipped pretrained start, ``--init none``, native crops,
and the random local edits the start is trained on."""

from __future__ import annotations

import json

import pytest
import torch

from autohdr_cli.checkpoint import load_checkpoint
from autohdr_cli.edits import LocalEditRanges, local_contrast, local_edits, random_local_edits, shadows_highlights, tone_curve
from autohdr_cli.train import pretrained_start_path
from autohdr_cli.train_data import DegradedPhotos, native_windows

from test_train import run_cli, write_pairs

pytestmark = pytest.mark.usefixtures("one_thread")

PRETRAINED = pretrained_start_path("nafnet")


def _train_nafnet(tmp_path, name, *extra):
    pairs = tmp_path / "pairs"
    if not pairs.exists():
        write_pairs(pairs, count=3)
    out = tmp_path / f"{name}.safetensors"
    result = run_cli("train", str(pairs), "-o", str(out), "--model", "nafnet", "--steps", "1", "--batch", "1",
                     "--crop", "16", "--train-size", "32", "--lr", "1e-12", "--quiet", *extra)
    return out, result


def _same_weights(first, second) -> bool:
    """Whether ``first`` holds ``second``'s weights; input channels ``first`` has beyond ``second``'s (a
    NAFNet's neighbourhood maps, which the start lacks) must have zero weights."""
    a, b = first.state_dict(), second.state_dict()
    if a.keys() != b.keys():
        return False
    for key in a:
        mine, theirs = a[key], b[key]
        if mine.dim() == 4 and theirs.dim() == 4 and mine.shape[1] > theirs.shape[1]:
            if mine[:, theirs.shape[1]:].abs().max() > 1e-6:
                return False
            mine = mine[:, : theirs.shape[1]]
        if mine.shape != theirs.shape or not torch.allclose(mine, theirs, atol=1e-6):
            return False
    return True


@pytest.mark.skipif(not PRETRAINED.is_file(), reason="the pretrained start is not shipped in this checkout")
def test_nafnet_starts_from_the_shipped_pretrained_start_by_default_and_cold_with_init_none(tmp_path):
    start = load_checkpoint(PRETRAINED)
    default, result = _train_nafnet(tmp_path, "default")
    assert result.exit_code == 0, result.output
    assert "starting from the pretrained start nafnet-pretrained.safetensors" in result.output
    tuned = load_checkpoint(default)
    assert tuned.training["init"] == PRETRAINED.name
    assert _same_weights(tuned.model, start.model)  # lr ~0: the start

    cold, result = _train_nafnet(tmp_path, "cold", "--init", "none")
    assert result.exit_code == 0, result.output
    assert "pretrained start" not in result.output
    cold_model = load_checkpoint(cold)
    assert "init" not in cold_model.training and not _same_weights(cold_model.model, start.model)


@pytest.mark.skipif(not PRETRAINED.is_file(), reason="the pretrained start is not shipped in this checkout")
def test_a_config_that_changes_shapes_starts_cold_with_a_note(tmp_path):
    out, result = _train_nafnet(tmp_path, "narrow", "--config", json.dumps({"width": 4}))
    assert result.exit_code == 0, result.output
    assert "note: this --config changes" in result.output and "starting from random weights" in result.output
    assert "init" not in load_checkpoint(out).training


def test_the_pretrained_start_records_the_photos_it_saw():
    if not PRETRAINED.is_file():
        pytest.skip("the pretrained start is not shipped in this checkout")
    training = load_checkpoint(PRETRAINED).training
    assert training["photos"] and all(isinstance(name, str) for name in training["photos"])
    assert not set(training["photos"]) & {f"{stem}.jpg" for stem in training["excluded"]}


def test_native_crops_train_and_a_bad_kind_is_a_usage_error(tmp_path):
    out, result = _train_nafnet(tmp_path, "native", "--crops", "native", "--init", "none")
    assert result.exit_code == 0, result.output
    assert load_checkpoint(out).training["steps"] == 1
    _, result = _train_nafnet(tmp_path, "bad", "--crops", "sideways")
    assert result.exit_code == 2 and "--crops must be one of resized, native" in result.output


def test_native_windows_are_unscaled_pieces_of_the_image():
    image = torch.arange(3 * 20 * 30, dtype=torch.float32).view(3, 20, 30)
    torch.manual_seed(0)
    window = native_windows([image], 8)[0]
    top, left = divmod(int(window[0, 0, 0]), 30)
    assert torch.equal(window, image[:, top : top + 8, left : left + 8])


def _photo(seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    smooth = torch.nn.functional.interpolate(torch.rand(1, 3, 6, 8, generator=generator), size=(48, 64),
                                             mode="bilinear", align_corners=False)
    return (0.8 * smooth + 0.2 * torch.rand(1, 3, 48, 64, generator=generator)).clamp(0, 1)


def test_every_local_edit_is_the_identity_at_zero():
    photo = _photo()
    zero = torch.zeros(1)
    assert torch.allclose(tone_curve(photo, zero, zero), photo, atol=1e-5)
    assert torch.allclose(shadows_highlights(photo, zero, zero, sigma=4.0), photo, atol=1e-5)
    assert torch.allclose(local_contrast(photo, zero, sigma=4.0), photo, atol=1e-6)
    parameters = torch.tensor([[0.0, 0.0, 0.0, 0.0, 0.0, 0.1]])
    assert torch.allclose(local_edits(photo, parameters), photo, atol=1e-5)


def test_local_edits_go_both_ways():
    photo = _photo(1)
    dark = photo.mean(dim=1, keepdim=True) < photo.mean()
    one = torch.ones(1)
    lifted = shadows_highlights(photo, one, torch.zeros(1), sigma=6.0)
    crushed = shadows_highlights(photo, -one, torch.zeros(1), sigma=6.0)
    assert lifted[dark.expand_as(photo)].mean() > photo[dark.expand_as(photo)].mean() > crushed[dark.expand_as(photo)].mean()
    detail = lambda x: (x - torch.nn.functional.avg_pool2d(x, 5, 1, 2, count_include_pad=False)).abs().mean()  # noqa: E731
    assert detail(local_contrast(photo, 0.8 * one, 6.0)) > detail(photo) > detail(local_contrast(photo, -0.8 * one, 6.0))
    ramp = torch.linspace(0, 1, 101).view(1, 1, 1, -1).expand(1, 3, 1, 101)
    for c in (-0.9, 0.9):
        curved = tone_curve(ramp, torch.tensor([c]), torch.zeros(1))
        assert (curved.diff(dim=-1) >= 0).all()  # monotone: a curve never swaps two tones


def test_random_edits_stay_in_range_and_pretraining_batches_have_the_contract():
    parameters = random_local_edits(64, LocalEditRanges(), torch.Generator().manual_seed(0))
    assert parameters.shape == (64, 6)
    assert (parameters[:, 2].abs() <= 1.0).all() and (parameters[:, 5] >= 0.03).all() and (parameters[:, 5] <= 0.15).all()
    data = DegradedPhotos([_photo(2)[0], _photo(3)[0]], local=LocalEditRanges(), native=True, whole_size=16)
    edited, clean, looks, wholes = data.sample(4, 24)
    assert edited.shape == clean.shape == (4, 3, 24, 24) and wholes.shape == (4, 6, 16, 16)
    assert 0 <= float(edited.min()) and float(edited.max()) <= 1 and not torch.equal(edited, clean)
