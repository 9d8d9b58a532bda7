"""A DiffIR that reads the brightness around each pixel in its whole photo (``neighbourhoods``), as NAFNet
does: tiles agree with an untiled run, both stages train on native crops that bring their maps, a start
without the maps widens, and it exports to ONNX with the maps measured in the graph."""

from __future__ import annotations

import json

import pytest
import torch

from autohdr_cli.checkpoint import load_checkpoint
from autohdr_cli.tiling import enhance_tiled
from autohdr_cli.train import stage1_path

from test_diffir import TINY, tiny_model
from test_nafnet_neighbourhoods import _photo
from test_train import run_cli, write_pairs

pytestmark = pytest.mark.usefixtures("one_thread")

RADII = (0.05, 0.2)
MAPS_ONLY = json.dumps({**TINY, "neighbourhoods": list(RADII), "neighbourhood_size": 64, "whole_context": 0})
PLAIN = json.dumps({**TINY, "neighbourhoods": [], "whole_context": 0})  # the paper's network
WITH_MAPS = json.dumps({**TINY, "neighbourhoods": list(RADII), "neighbourhood_size": 64, "whole_context": 16})


def _random_network(whole_context: int = 0) -> torch.nn.Module:
    model = tiny_model(neighbourhoods=RADII, neighbourhood_size=96, whole_context=whole_context)
    with torch.no_grad():
        model.dirformer.intro.weight.normal_(0.0, 0.5)  # the maps have a say from the start
        model.dirformer.ending.weight.mul_(0.02)  # a mild edit: no pixel clipped, so every change shows
    return model


@pytest.mark.parametrize("whole_context", [0, 32])
def test_tiles_read_the_whole_photos_surroundings_and_agree_with_an_untiled_run(whole_context):
    model = _random_network(whole_context)
    assert model.dirformer.intro.weight.shape[1] == 3 + len(RADII)
    photo = _photo(160, 224)
    with torch.no_grad():
        whole = model(photo)
        tiled = enhance_tiled(model, photo, tile=96, overlap=48)
    assert (tiled - whole).abs().max() < 2e-3
    # Same centre, darker surroundings: the prior is held fixed, so what changes comes from the maps.
    darker = photo.clone()
    darker[..., :, :64] *= 0.2
    prior = model.estimate_prior(photo)
    with torch.no_grad():
        here = model(photo, [prior])
        there = model(darker, [prior])
    assert (there[..., 60:100, 150:200] - here[..., 60:100, 150:200]).abs().max() > 1e-3


def test_both_stages_train_on_native_crops_with_maps_then_enhance_and_export(tmp_path):
    pairs = write_pairs(tmp_path / "pairs", size=(48, 40))
    out = tmp_path / "d.safetensors"
    result = run_cli("train", str(pairs), "-o", str(out), "--model", "diffir", "--config", WITH_MAPS, "--steps", "4",
                     "--batch", "2", "--crop", "16", "--train-size", "48", "--crops", "native", "--quiet")
    assert result.exit_code == 0, result.output
    assert load_checkpoint(stage1_path(out)).model.config.neighbourhoods == RADII
    assert load_checkpoint(out).model.config.neighbourhoods == RADII
    assert load_checkpoint(out).model.config.whole_context == 16
    enhanced = tmp_path / "out"
    result = run_cli("enhance", str(pairs / "source"), str(enhanced), "-w", str(out), "--quiet")
    assert result.exit_code == 0, result.output
    assert len(list(enhanced.glob("*.png"))) == len(list((pairs / "source").iterdir()))
    pytest.importorskip("onnxruntime")
    result = run_cli("export", str(out), "--format", "onnx", "-o", str(tmp_path / "d.onnx"))
    assert result.exit_code == 0, result.output  # checked against PyTorch by export itself
    import onnxruntime

    session = onnxruntime.InferenceSession(str(tmp_path / "d.onnx"), providers=["CPUExecutionProvider"])
    photo = _photo(70, 45, seed=4)
    output = session.run(None, {session.get_inputs()[0].name: photo.numpy()})[0]
    with torch.inference_mode():
        assert abs(output - load_checkpoint(out).model(photo).numpy()).max() <= 1e-4


def test_resized_crops_are_refused_in_one_line(tmp_path):
    pairs = write_pairs(tmp_path / "pairs", size=(48, 40))
    result = run_cli("train", str(pairs), "-o", str(tmp_path / "d.safetensors"), "--model", "diffir", "--config",
                     WITH_MAPS, "--steps", "2", "--crop", "16", "--train-size", "48", "--crops", "resized", "--quiet")
    assert result.exit_code != 0
    assert "--crops native" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "d.safetensors").exists()


def test_a_start_without_maps_is_widened_and_kept(tmp_path):
    pairs = write_pairs(tmp_path / "pairs", size=(48, 40))
    common = ["--model", "diffir", "--batch", "1", "--crop", "16", "--train-size", "48", "--quiet"]
    start = tmp_path / "start.safetensors"
    result = run_cli("train", str(pairs), "-o", str(start), "--steps", "2", "--lr", "0.05", "--config", PLAIN,
                     *common)
    assert result.exit_code == 0, result.output
    widened = tmp_path / "widened.safetensors"
    result = run_cli("train", str(pairs), "-o", str(widened), "--init", str(start), "--steps", "2",
                     "--lr", "1e-12", "--config", MAPS_ONLY, "--crops", "native", *common)
    assert result.exit_code == 0, result.output
    assert "random weights" not in result.output
    before, after = load_checkpoint(start).model.eval(), load_checkpoint(widened).model.eval()
    assert before.dirformer.intro.weight.shape[1] == 3
    assert after.dirformer.intro.weight.shape[1] == 5 and after.dirformer.intro.weight[:, 3:].abs().max() < 1e-6
    photo = _photo(40, 56, seed=3)
    with torch.no_grad():
        assert (after(photo) - before(photo)).abs().max() < 1e-4  # the maps start with no say
