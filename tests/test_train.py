"""``autohdr train`` and the training loop: data, augmentation, resume, time limit, DDP, the CLI."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from typer.testing import CliRunner

from autohdr_cli.checkpoint import load_checkpoint
from autohdr_cli.cli import app
from autohdr_cli.pairs import find_pairs
from autohdr_cli.train import TrainOptions, parse_duration, state_path, train
from autohdr_cli.train_data import (
    DegradationRanges,
    DegradedPhotos,
    MixedData,
    PairData,
    TrainError,
    degrade,
    load_pairs,
    paired_augmentation,
    random_crops,
    random_degradations,
)

TINY = {"lut_size": 5, "num_basis": 2, "thumbnail_size": 16, "widths": [4, 8], "hidden": 8, "histogram_bins": 4}
TINY_LUT_ARGS = ["--config", json.dumps(TINY), "--crop", "16", "--train-size", "32", "--batch", "2", "--quiet"]
#: A tiny lut alone: the localtone teacher a lut trains first by default keeps its own (full) sizes, which
#: tests of other behaviours do not need (tests/test_teacher.py covers the default).
TINY_ARGS = [*TINY_LUT_ARGS, "--teacher", "none"]


pytestmark = pytest.mark.usefixtures("one_thread")


def write_pairs(folder: Path, count: int = 5, size=(32, 24), seed: int = 0) -> Path:
    """A pairs folder whose targets are a brighter, warmer version of the sources."""
    rng = np.random.default_rng(seed)
    (folder / "source").mkdir(parents=True)
    (folder / "target").mkdir(parents=True)
    for index in range(count):
        source = rng.random((size[1], size[0], 3)) ** 1.5
        target = np.clip(source**0.7 * [1.05, 1.0, 0.9], 0, 1)
        Image.fromarray((source * 255).astype(np.uint8)).save(folder / "source" / f"p{index}.png")
        Image.fromarray((target * 255).astype(np.uint8)).save(folder / "target" / f"p{index}.png")
    return folder


@pytest.fixture
def pairs(tmp_path) -> Path:
    return write_pairs(tmp_path / "pairs")


def run_cli(*args: str):
    return CliRunner().invoke(app, list(args))


def test_parse_duration():
    assert parse_duration("90") == 90
    assert parse_duration("90s") == 90
    assert parse_duration("10m") == 600
    assert parse_duration("1h30m") == 5400
    assert parse_duration("1.5h") == 5400
    for bad in ("", "ten", "5x", "0", "m"):
        with pytest.raises(ValueError):
            parse_duration(bad)


def test_train_cli_writes_checkpoint_log_and_summary(pairs, tmp_path):
    output = tmp_path / "look.safetensors"
    result = run_cli("train", str(pairs), "-o", str(output), "--steps", "4", "--val-every", "2", *TINY_ARGS)
    assert result.exit_code == 0, result.output
    assert "validating on 1: p2" in result.output
    assert "identity" in result.output and "PSNR" in result.output
    checkpoint = load_checkpoint(output)
    assert checkpoint.name == "lut" and checkpoint.config["lut_size"] == 5
    training = checkpoint.training
    assert training["steps"] == 4 and training["val_pairs"] == ["p2"] and training["train_pairs"] == 4
    assert set(training["validation"]) == {"identity", "lut"}
    assert training["clip_grad"] == 0.0  # LUT models train unclipped unless --clip-grad says otherwise
    assert state_path(output).is_file()
    with open(output.with_suffix(".csv"), newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4]
    assert rows[1]["val_psnr"] and not rows[0]["val_psnr"]
    assert float(rows[0]["loss"]) > 0 and "delta_e" in rows[0]
    assert "grad_norm" not in rows[0]
    clipped = tmp_path / "clipped.safetensors"
    result = run_cli("train", str(pairs), "-o", str(clipped), "--steps", "2", "--clip-grad", "0.5", *TINY_ARGS)
    assert result.exit_code == 0, result.output
    assert load_checkpoint(clipped).training["clip_grad"] == 0.5
    with open(clipped.with_suffix(".csv"), newline="") as handle:
        assert all(float(row["grad_norm"]) > 0 for row in csv.DictReader(handle))


def test_split_seed_keeps_the_held_out_pairs_while_the_training_seed_changes(tmp_path):
    pairs = write_pairs(tmp_path / "pairs", count=10)
    runs = {}
    for name, seeds in {"seed0": ["--seed", "0"], "seed1": ["--seed", "1"],
                        "seed1-split0": ["--seed", "1", "--split-seed", "0"]}.items():
        output = tmp_path / f"{name}.safetensors"
        result = run_cli("train", str(pairs), "-o", str(output), "--steps", "1", *seeds, *TINY_ARGS)
        assert result.exit_code == 0, result.output
        runs[name] = load_checkpoint(output)
    assert runs["seed0"].training["val_pairs"] != runs["seed1"].training["val_pairs"]
    assert runs["seed1-split0"].training["val_pairs"] == runs["seed0"].training["val_pairs"]
    assert runs["seed1-split0"].training["seed"] == 1 and runs["seed1-split0"].training["split_seed"] == 0
    first, other = runs["seed0"].model.state_dict(), runs["seed1-split0"].model.state_dict()
    assert any(not torch.equal(first[key], other[key]) for key in first)  # the training seed still counts


def test_train_lists_problems_and_refuses_too_few_pairs(tmp_path):
    folder = write_pairs(tmp_path / "few", count=1)
    Image.new("RGB", (8, 8)).save(folder / "source" / "lonely.png")
    result = run_cli("train", str(folder), "-o", str(tmp_path / "x.safetensors"), *TINY_ARGS)
    assert result.exit_code == 2
    assert "lonely.png: no matching file" in result.output
    assert "1 usable pair(s); training needs at least 2" in result.output
    assert not (tmp_path / "x.safetensors").exists()


@pytest.mark.parametrize(
    "args, message",
    [(["--time-limit", "soon"], "--time-limit"), (["--config", "[1]"], "JSON object"),
     (["--config", "{bad"], "not JSON"), (["--model", "cube"], "untrainable"),
     (["--config", '{"colour": 1}'], "unknown config key"), (["--val-split", "1.5"], "--val-split"),
     (["--model", "nafnet-huge"], "unknown model"), (["--clip-grad", "-1"], "--clip-grad")],
)
def test_train_usage_errors(pairs, tmp_path, args, message):
    result = run_cli("train", str(pairs), "-o", str(tmp_path / "x.safetensors"), "--steps", "1", *TINY_ARGS, *args)
    assert result.exit_code == 2
    assert message in result.output


def test_time_limit_stops_early_with_a_valid_checkpoint(pairs, tmp_path):
    output = tmp_path / "timed.safetensors"
    result = run_cli("train", str(pairs), "-o", str(output), "--steps", "100000", "--time-limit", "1s", *TINY_ARGS)
    assert result.exit_code == 0, result.output
    assert "time limit" in result.output
    steps = load_checkpoint(output).training["steps"]
    assert 0 < steps < 100000


class InterruptAfter:
    """Real training data that raises KeyboardInterrupt (like Ctrl-C) after ``calls`` batches."""

    def __init__(self, data, calls: int):
        self.data, self.calls = data, calls

    def __len__(self):
        return len(self.data)

    def sample(self, count, crop):
        if self.calls == 0:
            raise KeyboardInterrupt
        self.calls -= 1
        return self.data.sample(count, crop)


def options_for(pairs: Path, output: Path, **changes) -> TrainOptions:
    values = dict(pairs=[pairs], output=output, config=TINY, steps=6, batch=2, crop=16, train_size=32,
                  val_every=3, checkpoint_every=2, progress=False)
    values.update(changes)
    return TrainOptions(**values)


def test_resume_continues_exactly(pairs, tmp_path):
    found = find_pairs(pairs).pairs
    data, validation = load_pairs(found[:4], 32), load_pairs(found[4:], 32)
    straight = train(options_for(pairs, tmp_path / "straight.safetensors"), data, validation)
    assert straight.steps == 6

    cut = tmp_path / "cut.safetensors"
    first = train(options_for(pairs, cut), InterruptAfter(data, 3), validation)
    assert first.stopped_by == "interrupted" and first.steps == 3
    resumed = train(options_for(pairs, cut, resume=cut), data, validation)
    assert resumed.steps == 6

    a, b = load_checkpoint(tmp_path / "straight.safetensors").model, load_checkpoint(cut).model
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(x, y), name
    with open(cut.with_suffix(".csv"), newline="") as handle:
        assert [int(r["step"]) for r in csv.DictReader(handle)] == [1, 2, 3, 4, 5, 6]

    with pytest.raises(TrainError, match="--batch 4 differs"):
        train(options_for(pairs, cut, resume=cut, batch=4), data, validation)
    os.remove(state_path(cut))
    with pytest.raises(TrainError, match="no training state"):
        train(options_for(pairs, cut, resume=cut), data, validation)


def test_augmentation_is_paired_and_geometric_only():
    torch.manual_seed(0)
    sources = [torch.rand(3, 20, 30), torch.rand(3, 26, 18)]
    # A linear colour change commutes with any resampling: it survives cropping and turning exactly.
    data = PairData(sources, [s * 0.5 for s in sources], [0, 1], ["a", "b"])
    source, target, looks = data.sample(6, 12)
    assert source.shape == target.shape == (6, 3, 12, 12)
    assert torch.allclose(target, source * 0.5, atol=1e-5)
    assert set(looks.tolist()) <= {0, 1}
    # Colours are never jittered: every crop's colours lie within its photo's range.
    assert source.min() >= 0 and source.max() <= 1


def test_degradations_and_synthetic_data():
    image = torch.rand(1, 3, 16, 16)
    neutral = torch.tensor([[0.0, 0.0, 0.0, 1.0, 1.0]])
    assert torch.allclose(degrade(image, neutral), image, atol=1e-4)
    darker = degrade(image, torch.tensor([[-1.0, 0.0, 0.0, 1.0, 1.0]]))
    assert darker.mean() < image.mean() * 0.8
    grey = degrade(image, torch.tensor([[0.0, 0.0, 0.0, 1.0, 0.0]]))
    assert torch.allclose(grey[:, 0], grey[:, 1], atol=1e-5)
    parameters = random_degradations(100, DegradationRanges(), torch.Generator().manual_seed(0))
    assert parameters[:, 0].abs().max() <= 1.2 and parameters[:, 3].min() >= 0.55
    torch.manual_seed(0)
    photos = DegradedPhotos([torch.rand(3, 20, 20) for _ in range(3)])
    source, target, looks = photos.sample(4, 8)
    assert source.shape == target.shape == (4, 3, 8, 8) and not torch.allclose(source, target)
    mixed = MixedData([photos, PairData([torch.rand(3, 9, 9)], [torch.rand(3, 9, 9)], [1], ["p"])], [0.5, 0.5])
    assert mixed.sample(16, 8)[0].shape == (16, 3, 8, 8)


def test_degraded_photos_bring_their_whole_photos_degraded_alike():
    # For a model that reads whole photos, each crop comes with its whole photo, squashed and degraded
    # by the same parameters; the crop's contrast turns around the whole photo's mean brightness.
    torch.manual_seed(0)
    photo = torch.rand(3, 24, 32)
    photo[:, :, :16] *= 0.3  # a dark half: a crop's own mean differs from the photo's
    photos = DegradedPhotos([photo], whole_size=8)
    torch.manual_seed(1)
    source, target, _looks, whole = photos.sample(3, 8)
    assert whole.shape == (3, 6, 8, 8)
    squashed = F.interpolate(photo[None], size=(8, 8), mode="bilinear", antialias=True, align_corners=False)
    assert torch.allclose(whole[:, 3:], squashed.expand(3, -1, -1, -1))
    # Recover each sample's parameters by sampling again with the same seed, and check both sides.
    torch.manual_seed(1)
    picks = torch.randint(1, (3,)).tolist()
    clean = paired_augmentation()(random_crops([photo for _ in picks], 8)).contiguous()
    parameters = random_degradations(3, photos.ranges)
    assert torch.allclose(target, clean)
    assert torch.allclose(whole[:, :3], degrade(squashed.expand(3, -1, -1, -1), parameters), atol=1e-6)
    assert torch.allclose(source, degrade(clean, parameters, squashed.expand(3, -1, -1, -1)), atol=1e-6)
    mixed = MixedData([photos, PairData([torch.rand(3, 9, 9)], [torch.rand(3, 9, 9)], [1], ["p"])], [0.5, 0.5])
    mixed.whole_size = 8
    assert [tuple(t.shape) for t in mixed.sample(6, 8)] == [(6, 3, 8, 8), (6, 3, 8, 8), (6,), (6, 6, 8, 8)]


def test_nilut_learns_one_look_per_pairs_folder(tmp_path):
    first = write_pairs(tmp_path / "warm", count=3, seed=1)
    second = write_pairs(tmp_path / "cool", count=3, seed=2)
    output = tmp_path / "looks.safetensors"
    result = run_cli(
        "train", str(first), str(second), "-o", str(output), "--model", "nilut", "--steps", "3",
        "--config", '{"width": 8, "depth": 2, "grid_size": 9}', "--crop", "16", "--train-size", "32",
        "--batch", "4", "--quiet",
    )
    assert result.exit_code == 0, result.output
    checkpoint = load_checkpoint(output)
    assert checkpoint.config["num_styles"] == 2 and checkpoint.config["style_names"] == ["warm", "cool"]
    assert len(checkpoint.training["val_pairs"]) == 2


#: torch's gloo now and then aborts one rank as the process exits after a finished run (about 1 run in
#: 15 here, on the code before session 19 too; a barrier before leaving the group, or not leaving it,
#: did not stop it: DESIGN.md). Such a run is tried once more; any other failure fails the test.
GLOO_EXIT_ABORT = "terminate called without an active exception"


def run_torchrun(command: list[str], output: Path) -> subprocess.CompletedProcess:
    """Run a torchrun training ``command`` writing ``output`` (and files named after it)."""
    finished = subprocess.run(command, capture_output=True, text=True, timeout=120)
    if finished.returncode != 0 and GLOO_EXIT_ABORT in finished.stderr:
        for written in output.parent.glob(f"{output.stem}*"):
            written.unlink()
        finished = subprocess.run(command, capture_output=True, text=True, timeout=120)
    return finished


def test_torchrun_two_cpu_processes(pairs, tmp_path):
    output = tmp_path / "ddp.safetensors"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "autohdr_cli",
        "train", str(pairs), "-o", str(output), "--steps", "3", "--device", "cpu", *TINY_ARGS,
    ]
    finished = run_torchrun(command, output)
    assert finished.returncode == 0, finished.stderr[-2000:]
    checkpoint = load_checkpoint(output)
    assert checkpoint.training["world_size"] == 2 and checkpoint.training["steps"] == 3
    assert finished.stderr.count("training on 4 pairs") == 1  # one process speaks for the job


def test_torchrun_holds_one_process_group_through_a_run_of_two_trainings(pairs, tmp_path):
    """``--teacher auto`` (as ``--base auto``) trains two models in one command: joining the process group
    again after leaving it for the second one hung."""
    output = tmp_path / "ddp.safetensors"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "autohdr_cli",
        "train", str(pairs), "-o", str(output), "--steps", "3", "--device", "cpu", *TINY_ARGS, "--teacher", "auto",
    ]
    finished = run_torchrun(command, output)
    assert finished.returncode == 0, finished.stderr[-2000:]
    for path in (output, tmp_path / "ddp.teacher.safetensors"):
        assert load_checkpoint(path).training["world_size"] == 2
    # One process speaks for the job through both runs (the lut's teacher, then the lut).
    assert finished.stderr.count("training on 4 pairs") == 2
    assert finished.stderr.count("--teacher auto: now lut") == 1


def test_native_crops_are_aligned_and_bring_whole_photos_when_asked(tmp_path):
    from autohdr_cli.train_data import NativeCrops

    folder = write_pairs(tmp_path / "pairs", count=3, size=(40, 30))
    data = NativeCrops(load_pairs(find_pairs(folder).pairs, 40))
    torch.manual_seed(0)
    source, target, looks = data.sample(4, 16)
    assert source.shape == target.shape == (4, 3, 16, 16) and looks.tolist() == [0, 0, 0, 0]
    assert source.is_contiguous(memory_format=torch.channels_last)
    # Targets are a fixed per-pixel function of the sources (write_pairs), so aligned crops fit it exactly.
    expected = np.clip(source.numpy() ** 0.7 * np.array([1.05, 1.0, 0.9]).reshape(1, 3, 1, 1), 0, 1)
    assert np.abs(expected - target.numpy()).mean() < 3 / 255
    data.whole_size = 8
    batch = data.sample(2, 50)  # larger than the photos: stretched, still aligned
    assert len(batch) == 4 and batch[0].shape == (2, 3, 50, 50) and batch[3].shape == (2, 6, 8, 8)
    torch.manual_seed(1)
    picks = torch.randint(3, (2,)).tolist()
    torch.manual_seed(1)
    whole = data.sample(2, 16)[3]
    for row, index in zip(whole, picks):
        assert torch.equal(row, data.pairs.whole(index))


def test_nafnet_with_whole_context_trains_from_its_crops_whole_photos(pairs, tmp_path):
    output = tmp_path / "whole.safetensors"
    result = run_cli("train", str(pairs), "-o", str(output), "--model", "nafnet",
                     "--config", '{"width": 4, "enc_blocks": [1, 1], "dec_blocks": [1, 1], "whole_context": 16}',
                     "--steps", "2", "--crop", "16", "--train-size", "32", "--batch", "2", "--quiet")
    assert result.exit_code == 0, result.output
    assert load_checkpoint(output).config["whole_context"] == 16


def test_model_preset_names_train_that_preset_with_config_overrides(pairs, tmp_path):
    output = tmp_path / "preset.safetensors"
    result = run_cli("train", str(pairs), "-o", str(output), "--model", "nafnet-medium", "--config", '{"width": 4}',
                     "--steps", "1", "--crop", "16", "--train-size", "32", "--batch", "2", "--quiet")
    assert result.exit_code == 0, result.output
    checkpoint = load_checkpoint(output)
    assert checkpoint.name == "nafnet"
    assert checkpoint.config["width"] == 4 and checkpoint.config["enc_blocks"] == [1, 1, 2, 2]  # medium's depths


def test_whole_photos_follow_the_size_asked_for_when_it_changes(pairs):
    """One data object can serve models that read whole photos of different sizes (a speed check
    timing several models on the same pairs): each gets the size it asks for, not a cached other one."""
    data = load_pairs(find_pairs(pairs).pairs, 32)
    data.whole_size = 16
    assert data.sample(3, 8)[3].shape[-2:] == (16, 16)
    data.whole_size = 8
    assert all(data.whole(index).shape == (6, 8, 8) for index in range(len(data)))
    photos = DegradedPhotos([data.pair(index)[0] for index in range(len(data))], whole_size=16)
    assert photos.sample(2, 8)[3].shape[-2:] == (16, 16)
    photos.whole_size = 8
    assert photos.sample(len(data) * 3, 8)[3].shape[-2:] == (8, 8)
