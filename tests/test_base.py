"""``train --base``: a local model learns what is left after a global one, and its file holds both."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from test_train import TINY, run_cli, write_pairs

from autohdr_cli.checkpoint import load_checkpoint
from autohdr_cli.imageio import load_image
from autohdr_cli.inference import enhance_tensor, global_edit

pytestmark = pytest.mark.usefixtures("one_thread")

NAFNET = json.dumps({"width": 4, "enc_blocks": [1], "dec_blocks": [1], "middle_blocks": 1, "whole_context": 16})
NAFNET_ARGS = ["--model", "nafnet", "--config", NAFNET, "--init", "none", "--perceptual", "0", "--crop", "32",
               "--train-size", "64", "--batch", "2", "--quiet"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Pairs, a lut trained on them (far from the identity), and a NAFNet trained on top of it."""
    folder = tmp_path_factory.mktemp("base")
    pairs = write_pairs(folder / "pairs", count=6, size=(64, 48))
    lut = folder / "lut.safetensors"
    result = run_cli("train", str(pairs), "-o", str(lut), "--model", "lut", "--config", json.dumps(TINY),
                     "--steps", "30", "--lr", "0.02", "--crop", "16", "--train-size", "64", "--batch", "2", "--quiet")
    assert result.exit_code == 0, result.output
    cascade = folder / "cascade.safetensors"
    result = run_cli("train", str(pairs), "-o", str(cascade), *NAFNET_ARGS, "--steps", "4", "--base", str(lut))
    assert result.exit_code == 0, result.output
    return folder, pairs, lut, cascade


def test_the_file_holds_both_and_the_base_edits_the_whole_photo_before_the_network(trained):
    folder, pairs, lut, cascade = trained
    checkpoint = load_checkpoint(cascade)
    assert checkpoint.name == "nafnet" and checkpoint.training["base"] == "lut.safetensors"
    base = load_checkpoint(lut).model
    for key, value in base.state_dict().items():
        assert torch.equal(checkpoint.model.base.state_dict()[key], value), key
    with safe_open(str(cascade), "pt") as handle:
        assert json.loads(handle.metadata()["autohdr.base"])["model"] == "lut"

    photo = torch.from_numpy(load_image(sorted((pairs / "source").iterdir())[0]))
    edited = global_edit(base, photo[None]).clamp(0, 1)
    assert (edited - photo).abs().mean() > 0.01  # the base is far from the identity: the test can tell
    network = checkpoint.model
    del network.base
    expected = network(edited).clamp(0, 1)[0]
    cascade_model = load_checkpoint(cascade).model
    assert torch.allclose(enhance_tensor(cascade_model, photo), expected, atol=1e-5)

    # The folder pipeline, in tiles smaller than the photo: the base still sees the whole photo.
    out = folder / "out"
    result = run_cli("enhance", str(pairs / "source"), str(out), "-w", str(cascade), "--tile", "32",
                     "--tile-overlap", "8", "--format", "png", "--quiet")
    assert result.exit_code == 0, result.output
    written = torch.from_numpy(load_image(out / f"{sorted((pairs / 'source').iterdir())[0].stem}.png"))
    assert (written - expected).abs().max() <= 3 / 255


def test_validation_scores_the_base_alone_first(trained):
    folder, _pairs, lut, cascade = trained
    base_scores = load_checkpoint(lut).training["validation"]["lut"]
    record = load_checkpoint(cascade).training["validation"]
    assert record["base (lut)"]["psnr"] == pytest.approx(base_scores["psnr"], abs=0.05)


def test_resume_and_init_keep_the_base_and_another_base_is_refused(trained, tmp_path):
    folder, pairs, lut, cascade = trained
    run = tmp_path / "run.safetensors"
    assert run_cli("train", str(pairs), "-o", str(run), *NAFNET_ARGS, "--steps", "2", "--base", str(lut)).exit_code == 0
    resumed = run_cli("train", str(pairs), "-o", str(run), *NAFNET_ARGS, "--steps", "4", "--resume", str(run))
    assert resumed.exit_code == 0, resumed.output
    assert load_checkpoint(run).training["steps"] == 4 and load_checkpoint(run).training["base"] == "the base of run.safetensors"
    assert hasattr(load_checkpoint(run).model, "base")

    other = tmp_path / "other-lut.safetensors"
    assert run_cli("train", str(pairs), "-o", str(other), "--model", "lut", "--config", json.dumps(TINY), "--steps", "3",
                   "--crop", "16", "--train-size", "64", "--batch", "2", "--seed", "5", "--quiet").exit_code == 0
    refused = run_cli("train", str(pairs), "-o", str(run), *NAFNET_ARGS, "--steps", "6", "--resume", str(run),
                      "--base", str(other))
    assert refused.exit_code == 2 and "another model than the base the resumed run was trained on" in refused.output

    tuned = tmp_path / "tuned.safetensors"
    result = run_cli("train", str(pairs), "-o", str(tuned), *[a for a in NAFNET_ARGS if a not in ("--init", "none")],
                     "--init", str(cascade), "--steps", "2")
    assert result.exit_code == 0, result.output
    base_a, base_b = load_checkpoint(cascade).model.base, load_checkpoint(tuned).model.base
    assert all(torch.equal(base_a.state_dict()[k], v) for k, v in base_b.state_dict().items())


def test_streamed_pairs_are_edited_by_the_base_too(trained, tmp_path):
    _folder, pairs, lut, cascade = trained
    streamed = tmp_path / "streamed.safetensors"
    result = run_cli("train", str(pairs), "-o", str(streamed), *NAFNET_ARGS, "--steps", "4", "--base", str(lut),
                     "--stream", "--cache", str(tmp_path / "cache"), "--workers", "0")
    assert result.exit_code == 0, result.output
    in_memory = load_checkpoint(cascade).training["validation"]
    on_disk = load_checkpoint(streamed).training["validation"]
    assert on_disk["base (lut)"]["psnr"] == pytest.approx(in_memory["base (lut)"]["psnr"], abs=0.01)
    assert on_disk["nafnet"]["psnr"] == pytest.approx(in_memory["nafnet"]["psnr"], abs=0.05)


def test_a_base_must_be_global_and_the_model_local(trained, tmp_path):
    folder, pairs, lut, cascade = trained
    out = str(tmp_path / "x.safetensors")
    not_global = run_cli("train", str(pairs), "-o", out, *NAFNET_ARGS, "--steps", "1", "--base", str(cascade))
    assert not_global.exit_code == 2 and "holds a nafnet model; the base is one that edits the whole photo" in not_global.output
    lut_on_lut = run_cli("train", str(pairs), "-o", out, "--model", "lut", "--steps", "1", "--base", str(lut))
    assert lut_on_lut.exit_code == 2 and "--base is for the local models" in lut_on_lut.output
    assert not Path(out).exists()
    onnx = run_cli("export", str(cascade), "-o", str(tmp_path / "c.onnx"))
    assert onnx.exit_code == 2 and "holds a base model" in onnx.output
    assert np.all([not p.name.startswith("c.onnx") for p in tmp_path.iterdir()])


class FakeClock:
    """A clock that moves a second each time it is read: a time-limited run without waiting for it."""

    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


def test_base_auto_trains_a_base_first_on_a_quarter_of_the_budget_and_the_file_holds_it(tmp_path):
    from autohdr_cli.cascade import BASE_MODEL
    from autohdr_cli.train import TrainOptions, train

    pairs = write_pairs(tmp_path / "pairs", count=6, size=(64, 48))
    output = tmp_path / "auto.safetensors"
    options = TrainOptions(
        pairs=[pairs], output=output, model="nafnet", config=json.loads(NAFNET), pretrained_start=False,
        perceptual=0.0, crop=32, train_size=64, batch=2, progress=False, base="auto", time_limit=40.0,
        clock=FakeClock(),
    )
    result = train(options, report=lambda line: None)
    base_file = tmp_path / "auto.base.safetensors"
    base = load_checkpoint(base_file)
    assert base.name == BASE_MODEL and base.training["steps"] >= 2
    assert 10.0 <= base.training["seconds"] <= 13.0  # a quarter of 40 s, give or take the clock's ticks
    assert result.seconds <= 40.0 - base.training["seconds"] + 3.0  # the network had what the base left
    assert result.seconds >= 40.0 - base.training["seconds"] - 3.0

    cascade = load_checkpoint(output)
    assert cascade.name == "nafnet" and cascade.training["base"] == "auto.base.safetensors"
    for key, value in base.model.state_dict().items():
        assert torch.equal(cascade.model.base.state_dict()[key], value), key
    # Both validate on the same held-out pairs: the cascade's first row is the base it trained.
    first_row = cascade.training["validation"][f"base ({BASE_MODEL})"]
    assert first_row["psnr"] == pytest.approx(base.training["validation"][BASE_MODEL]["psnr"], abs=0.05)


def test_base_auto_refuses_before_training_when_a_file_is_in_the_way_or_it_would_resume(tmp_path):
    pairs = write_pairs(tmp_path / "pairs", count=4, size=(48, 32))
    output = tmp_path / "run.safetensors"
    (tmp_path / "run.base.safetensors").write_bytes(b"someone's look")
    refused = run_cli("train", str(pairs), "-o", str(output), *NAFNET_ARGS, "--steps", "2", "--base", "auto")
    assert refused.exit_code == 2 and "run.base.safetensors: already exists" in refused.output
    assert (tmp_path / "run.base.safetensors").read_bytes() == b"someone's look" and not output.exists()

    resumed = run_cli("train", str(pairs), "-o", str(output), *NAFNET_ARGS, "--steps", "2", "--base", "auto",
                      "--resume", str(output))
    assert resumed.exit_code == 2 and "drop --base to resume" in resumed.output


def test_keywords_auto_and_none_are_files_when_written_as_paths(tmp_path, monkeypatch):
    pairs = write_pairs(tmp_path / "pairs", count=4, size=(48, 32))
    monkeypatch.chdir(tmp_path)
    args = [a for a in NAFNET_ARGS if a not in ("--init", "none")]
    as_file = run_cli("train", str(pairs), "-o", "x.safetensors", *args, "--steps", "1", "--base", "./auto")
    assert as_file.exit_code == 2 and "auto" in as_file.output and not (tmp_path / "x.base.safetensors").exists()
    init_file = run_cli("train", str(pairs), "-o", "y.safetensors", *args, "--steps", "1", "--init", "./none")
    assert init_file.exit_code == 2 and "none" in init_file.output and not (tmp_path / "y.safetensors").exists()
    no_base = run_cli("train", str(pairs), "-o", "z.safetensors", *NAFNET_ARGS, "--steps", "1", "--base", "none")
    assert no_base.exit_code == 0, no_base.output
    assert "base" not in load_checkpoint(tmp_path / "z.safetensors").training
