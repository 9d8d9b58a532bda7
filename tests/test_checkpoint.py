"""Checkpoints: the round trip, and clear errors for files that are not ours or are damaged."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from autohdr_cli.checkpoint import CheckpointError, load_checkpoint, read_metadata, save_checkpoint
from autohdr_cli.cube import read_cube
from autohdr_cli.models.lut import StaticLUT

from conftest import save_rgb


def test_cube_model_round_trip_keeps_tensors_and_metadata(tmp_path, look):
    model = StaticLUT.from_cube(read_cube(look))
    path = tmp_path / "look.safetensors"
    save_checkpoint(path, model, training={"steps": 0, "data": "hand-made"})
    metadata, _tensors = read_metadata(path)
    assert metadata["autohdr.model"] == "cube"
    assert json.loads(metadata["autohdr.config"])["size"] == 9
    assert metadata["autohdr.version"]
    loaded = load_checkpoint(path)
    assert loaded.name == "cube" and loaded.training == {"steps": 0, "data": "hand-made"}
    assert isinstance(loaded.model, StaticLUT) and loaded.model.config.title == "warm"
    assert torch.equal(loaded.model.lut, model.lut)
    assert not loaded.model.training  # ready for inference


def _damaged_files(tmp_path, look):
    good = tmp_path / "good.safetensors"
    save_checkpoint(good, StaticLUT.from_cube(read_cube(look)))
    data = good.read_bytes()
    files = {}
    files["truncated"] = data[: len(data) // 2]
    files["random"] = b"\x00\x01garbage" * 10
    files["short"] = b"abc"
    foreign = tmp_path / "foreign.safetensors"
    save_file({"weight": torch.zeros(3)}, foreign)
    files["foreign"] = foreign.read_bytes()
    header_length = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + header_length])
    header["__metadata__"]["autohdr.model"] = "no-such-model"
    new_header = json.dumps(header).encode()
    files["unknown model"] = len(new_header).to_bytes(8, "little") + new_header + data[8 + header_length :]
    return files


@pytest.mark.parametrize(
    "kind, message",
    [
        ("truncated", "truncated|damaged"),
        ("random", "not a safetensors file"),
        ("short", "not a safetensors file"),
        ("foreign", "not an autohdr checkpoint"),
        ("unknown model", "model 'no-such-model' is unknown"),
    ],
)
def test_bad_weights_files_get_a_clear_error(tmp_path, look, kind, message, run):
    path = tmp_path / f"{kind.replace(' ', '_')}.safetensors"
    path.write_bytes(_damaged_files(tmp_path, look)[kind])
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(path)
    save_rgb(tmp_path / "in" / "p.png")
    result = run("enhance", tmp_path / "in", tmp_path / "out", "--weights", path)
    assert result.exit_code == 2
    assert str(path) in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_missing_weights_file(tmp_path):
    with pytest.raises(CheckpointError, match="no such file"):
        load_checkpoint(tmp_path / "nope.safetensors")
