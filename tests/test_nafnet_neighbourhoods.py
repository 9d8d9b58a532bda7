"""A NAFNet that reads the brightness around each pixel in its whole photo (``neighbourhoods``): tiles and
training crops get their window of maps measured on the whole photo, a start without the maps widens,
export measures the maps inside the graph, and what cannot carry the maps refuses in one line."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from autohdr_cli.checkpoint import load_checkpoint
from autohdr_cli.models.nafnet import NEIGHBOURHOODS as NEIGHBOURHOOD_RADII, NAFNet, NAFNetConfig, preset
from autohdr_cli.tiling import enhance_tiled

from test_train import run_cli, write_pairs

pytestmark = pytest.mark.usefixtures("one_thread")

NEIGHBOURHOODS = {"neighbourhoods": [0.05, 0.2], "neighbourhood_size": 64}


def _random_network(**overrides) -> NAFNet:
    torch.manual_seed(0)
    config = preset("small", width=8, whole_context=32, identity_init=False, **overrides)
    return NAFNet(config).eval()


def _photo(height: int, width: int, seed: int = 0) -> torch.Tensor:
    torch.manual_seed(seed)
    return F.avg_pool2d(torch.rand(1, 3, height, width), 7, 1, 3)


def test_tiles_read_the_whole_photos_surroundings_and_agree_with_an_untiled_run():
    model = _random_network(neighbourhoods=(0.05, 0.2), neighbourhood_size=96)
    photo = _photo(160, 224)
    with torch.no_grad():
        whole = model(photo)
        tiled = enhance_tiled(model, photo, tile=128, overlap=48)  # overlap past the receptive field
    assert (tiled - whole).abs().max() < 1e-4
    # The same centre in a darker photo: a pixel's edit depends on the photo around it.
    darker = photo.clone()
    darker[..., :, :64] *= 0.2
    with torch.no_grad():
        other = model(darker)
    assert (other[..., 60:100, 150:200] - whole[..., 60:100, 150:200]).abs().max() > 1e-3


def test_the_presets_read_neighbourhoods_and_a_config_without_them_is_the_plain_network():
    assert NAFNet(preset("small")).intro.weight.shape[1] == 3 + len(NEIGHBOURHOOD_RADII)
    assert NAFNet(NAFNetConfig()).intro.weight.shape[1] == 3  # what checkpoints written without the field mean
    assert _random_network(neighbourhoods=()).intro.weight.shape[1] == 3
    with pytest.raises(ValueError, match="at most 16 neighbourhoods"):
        NAFNetConfig(neighbourhoods=(0.1,) * 17)


def test_trains_on_native_crops_with_maps_and_enhances(tmp_path):
    pairs = tmp_path / "pairs"
    write_pairs(pairs, count=3)
    out = tmp_path / "nb.safetensors"
    result = run_cli("train", str(pairs), "-o", str(out), "--model", "nafnet", "--steps", "2", "--batch", "2",
                     "--crop", "16", "--train-size", "32", "--init", "none", "--config", json.dumps(NEIGHBOURHOODS),
                     "--quiet")
    assert result.exit_code == 0, result.output
    model = load_checkpoint(out).model
    assert model.config.neighbourhoods == (0.05, 0.2)
    enhanced = tmp_path / "out"
    result = run_cli("enhance", str(pairs / "source"), str(enhanced), "-w", str(out), "--quiet")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in enhanced.glob("*.png")) == ["p0.png", "p1.png", "p2.png"]


def test_resized_crops_cannot_bring_the_maps_and_are_refused_in_one_line(tmp_path):
    pairs = tmp_path / "pairs"
    write_pairs(pairs, count=3)
    result = run_cli("train", str(pairs), "-o", str(tmp_path / "m.safetensors"), "--model", "nafnet", "--steps", "1",
                     "--crop", "16", "--train-size", "32", "--init", "none", "--crops", "resized",
                     "--config", json.dumps(NEIGHBOURHOODS), "--quiet")
    assert result.exit_code != 0
    assert "--crops native" in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "m.safetensors").exists()


def test_a_start_without_maps_is_widened_and_kept(tmp_path):
    pairs = tmp_path / "pairs"
    write_pairs(pairs, count=3)
    common = ["--model", "nafnet", "--steps", "1", "--batch", "1", "--crop", "16", "--train-size", "32", "--quiet"]
    start = tmp_path / "start.safetensors"
    result = run_cli("train", str(pairs), "-o", str(start), "--init", "none", "--lr", "0.05",
                     "--config", json.dumps({"neighbourhoods": []}), *common)
    assert result.exit_code == 0, result.output
    widened = tmp_path / "widened.safetensors"
    result = run_cli("train", str(pairs), "-o", str(widened), "--init", str(start), "--lr", "1e-12",
                     "--config", json.dumps(NEIGHBOURHOODS), *common)
    assert result.exit_code == 0, result.output
    assert "random weights" not in result.output
    before, after = load_checkpoint(start).model.eval(), load_checkpoint(widened).model.eval()
    assert before.intro.weight.shape[1] == 3
    assert after.intro.weight.shape[1] == 5 and after.intro.weight[:, 3:].abs().max() < 1e-6
    photo = _photo(40, 56, seed=3)
    with torch.no_grad():
        assert (after(photo) - before(photo)).abs().max() < 1e-5  # the maps start with no say


@pytest.mark.parametrize("fmt", ["onnx", "pt2"])
def test_exported_graph_measures_the_maps_itself_at_any_shape(fmt, tmp_path):
    # The graph measures each photo's maps on its own copy, so landscape, portrait, square, a photo
    # smaller than the copy and one padded to the network's multiple all match the network.
    if fmt == "onnx":
        pytest.importorskip("onnxruntime")
    from autohdr_cli.checkpoint import save_checkpoint

    save_checkpoint(tmp_path / "nb.safetensors", _random_network(**NEIGHBOURHOODS))
    result = run_cli("export", str(tmp_path / "nb.safetensors"), "--format", fmt, "-o", str(tmp_path / f"nb.{fmt}"))
    assert result.exit_code == 0, result.output
    model = load_checkpoint(tmp_path / "nb.safetensors").model
    if fmt == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(str(tmp_path / "nb.onnx"), providers=["CPUExecutionProvider"])
        exported = lambda images: torch.from_numpy(session.run(None, {session.get_inputs()[0].name: images.numpy()})[0])
    else:
        exported = torch.export.load(tmp_path / "nb.pt2").module()
    for height, width in [(70, 99), (99, 70), (80, 80), (40, 28), (130, 45)]:
        photo = _photo(height, width, seed=height)
        with torch.inference_mode():
            expected = model(photo)
            assert (exported(photo) - expected).abs().max() <= 1e-4, (height, width)
            maps = model.maps_at(photo, None)
            assert (model(photo, maps=torch.zeros_like(maps)) - expected).abs().max() > 1e-3  # the maps matter


def test_a_training_crop_brings_the_maps_an_untiled_photo_reads():
    from autohdr_cli.edits import window_of
    from autohdr_cli.train_data import NativeCrops, PairData

    model = _random_network(neighbourhoods=(0.05, 0.2), neighbourhood_size=32)
    photo = _photo(64, 64, seed=5)[0]
    data = NativeCrops(PairData([photo], [photo.clone()], [0], ["p"]), source_maps=model.source_maps)
    torch.manual_seed(1)
    source, target, _looks = data.sample(4, 64)  # the whole photo, flipped and turned at random
    assert source.shape[1] == 5 and torch.equal(source[:, :3], target)
    for crop in source:
        colour = crop[None, :3]
        expected = window_of(model.neighbourhood_maps(colour), 64, 64, 0, 0, 64, 64)
        assert (crop[None, 3:] - expected).abs().max() < 2e-3  # half-precision storage
