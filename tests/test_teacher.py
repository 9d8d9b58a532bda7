"""``train --model lut --teacher``: the lut learns from a teacher's labels of varied training photos too."""

from __future__ import annotations

import pytest
import torch
from conftest import warm_table
from test_base import FakeClock
from test_train import TINY, TINY_LUT_ARGS, run_cli, write_pairs

from autohdr_cli.checkpoint import load_checkpoint
from autohdr_cli.cube import CubeLUT
from autohdr_cli.models.lut import StaticLUT
from autohdr_cli.train_data import SourceEdit, teacher_variations

pytestmark = pytest.mark.usefixtures("one_thread")


def warm_teacher() -> SourceEdit:
    """A teacher that edits each pixel alone (a warm static LUT): its edit of a crop is the crop of its edit."""
    model = StaticLUT.from_cube(CubeLUT(warm_table(), "warm")).eval()
    return SourceEdit(model, "warm", "warm")


def test_variations_are_new_photos_labelled_with_their_own_target_moved_as_the_teacher_moves_and_drawn_again_from_the_seed():
    torch.manual_seed(0)
    photos = [torch.rand(3, 24, 32) ** 1.5 * 0.8 for _ in range(3)]
    teacher = warm_teacher()

    def edit(image: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return teacher.model(image[None]).clamp(0, 1)[0]

    # The look is the teacher's edit lifted by 0.05: the teacher is wrong about every photo by -0.05.
    looks = [(edit(photo) + 0.05).clamp(0, 1) for photo in photos]
    bank = teacher_variations(photos, looks, teacher, 7, seed=0)
    assert len(bank) == 7
    for index in range(7):
        source, label = bank.pair(index)
        assert source.shape == label.shape == (3, 24, 32)
        # The teacher's error cancels: each variation is labelled with the look's own edit of it.
        assert torch.allclose(label, (edit(source) + 0.05).clamp(0, 1), atol=1e-4)
        # A varied photo: exposure, white balance, contrast or saturation moved, by a visible amount.
        assert min(float((source - photo).abs().mean()) for photo in photos) > 0.005
    # Every photo takes its turn, and the same seed draws the same set (a resumed run trains on it).
    assert [bank.names[i].endswith(f"photo {i % 3 + 1}") for i in range(7)] == [True] * 7
    again = teacher_variations(photos, looks, teacher, 7, seed=0)
    assert all(torch.equal(a, b) for a, b in zip(bank.sources, again.sources))
    other = teacher_variations(photos, looks, teacher, 7, seed=1)
    assert not torch.equal(bank.sources[0], other.sources[0])


def lut_options(pairs, output, **changes):
    from autohdr_cli.train import TrainOptions

    settings = dict(pairs=[pairs], output=output, model="lut", config=dict(TINY), crop=16, train_size=32, batch=2,
                    progress=False)
    settings.update(changes)
    return TrainOptions(**settings)


def test_teacher_auto_trains_a_localtone_first_on_its_share_and_the_lut_on_what_is_left(tmp_path):
    from autohdr_cli.cascade import TEACHER_MODEL, TEACHER_SHARE
    from autohdr_cli.train import train

    pairs = write_pairs(tmp_path / "pairs", count=6)
    output = tmp_path / "taught.safetensors"
    result = train(lut_options(pairs, output, time_limit=40.0, clock=FakeClock(), teacher="auto"),
                   report=lambda line: None)
    teacher = load_checkpoint(tmp_path / "taught.teacher.safetensors")
    assert teacher.name == TEACHER_MODEL and teacher.training["steps"] >= 2
    # Its share of 40 s, give or take the clock's ticks; the lut had what the teacher left.
    assert 40.0 * TEACHER_SHARE - 1.0 <= teacher.training["seconds"] <= 40.0 * TEACHER_SHARE + 3.0
    assert result.seconds <= 40.0 - teacher.training["seconds"] + 3.0
    taught = load_checkpoint(output)
    assert taught.name == "lut" and taught.training["teacher"] == "taught.teacher.safetensors"
    assert len(result.train_names) == 5  # the real pairs, beside the variations

    # A lut is taught by default; --teacher none trains it on the real pairs alone.
    plain = run_cli("train", str(pairs), "-o", str(tmp_path / "plain.safetensors"), *TINY_LUT_ARGS, "--steps", "3")
    assert plain.exit_code == 0, plain.output
    assert load_checkpoint(tmp_path / "plain.safetensors").training["teacher"] == "plain.teacher.safetensors"
    assert load_checkpoint(tmp_path / "plain.teacher.safetensors").name == TEACHER_MODEL
    alone = run_cli("train", str(pairs), "-o", str(tmp_path / "alone.safetensors"), *TINY_LUT_ARGS, "--steps", "3",
                    "--teacher", "none")
    assert alone.exit_code == 0, alone.output
    assert "teacher" not in load_checkpoint(tmp_path / "alone.safetensors").training
    assert not (tmp_path / "alone.teacher.safetensors").exists()
    # A rerun of the same command names its output, as a run without a teacher does, and writes nothing.
    again = run_cli("train", str(pairs), "-o", str(tmp_path / "plain.safetensors"), *TINY_LUT_ARGS, "--steps", "3")
    assert again.exit_code == 2 and "plain.safetensors: already exists" in again.output
    assert "--resume" in again.output


def test_a_teacher_file_is_used_and_kept_when_resuming(tmp_path):
    pairs = write_pairs(tmp_path / "pairs", count=5)
    teacher = tmp_path / "teacher.safetensors"
    assert run_cli("train", str(pairs), "-o", str(teacher), *TINY_LUT_ARGS, "--steps", "3", "--teacher", "none").exit_code == 0
    output = tmp_path / "lut.safetensors"
    first = run_cli("train", str(pairs), "-o", str(output), *TINY_LUT_ARGS, "--steps", "2", "--teacher", str(teacher))
    assert first.exit_code == 0, first.output
    assert load_checkpoint(output).training["teacher"] == "teacher.safetensors"
    assert not (tmp_path / "lut.teacher.safetensors").exists()  # a given teacher is not trained again

    resumed = run_cli("train", str(pairs), "-o", str(output), *TINY_LUT_ARGS, "--steps", "4", "--resume", str(output))
    assert resumed.exit_code == 0, resumed.output
    again = load_checkpoint(output).training
    assert again["steps"] == 4 and again["teacher"] == "teacher.safetensors"

    other = tmp_path / "other.safetensors"
    assert run_cli("train", str(pairs), "-o", str(other), *TINY_LUT_ARGS, "--steps", "2", "--teacher", "none",
                   "--seed", "3").exit_code == 0
    refused = run_cli("train", str(pairs), "-o", str(output), *TINY_LUT_ARGS, "--steps", "6", "--resume", str(output),
                      "--teacher", str(other))
    assert refused.exit_code == 2 and "another teacher than the resumed run's" in refused.output

    # A teacher that moved is named, and found again where the user says it is now.
    moved = teacher.rename(tmp_path / "moved.safetensors")
    lost = run_cli("train", str(pairs), "-o", str(output), *TINY_LUT_ARGS, "--steps", "6", "--resume", str(output))
    assert lost.exit_code == 2 and "teacher.safetensors" in lost.output and "--teacher FILE if it moved" in lost.output
    found = run_cli("train", str(pairs), "-o", str(output), *TINY_LUT_ARGS, "--steps", "6", "--resume", str(output),
                    "--teacher", str(moved))
    assert found.exit_code == 0, found.output
    assert load_checkpoint(output).training["steps"] == 6


@pytest.mark.parametrize(
    "args, message",
    [
        (["--model", "nilut", "--teacher", "TEACHER"], "--teacher is for --model lut"),
        (["--teacher", "missing.safetensors"], "missing.safetensors"),
    ],
)
def test_teacher_usage_errors_name_the_problem(tmp_path, args, message):
    pairs = write_pairs(tmp_path / "pairs", count=4)
    teacher = tmp_path / "teacher.safetensors"
    assert run_cli("train", str(pairs), "-o", str(teacher), *TINY_LUT_ARGS, "--steps", "1", "--teacher", "none").exit_code == 0
    args = [str(teacher) if a == "TEACHER" else a for a in args]
    config = ["--config", "{}"] if "nilut" in args else []
    output = tmp_path / "out.safetensors"
    result = run_cli("train", str(pairs), "-o", str(output), *TINY_LUT_ARGS, *config, "--steps", "1", *args)
    assert result.exit_code == 2 and message in result.output, result.output
    assert not output.exists()


def test_teacher_auto_refuses_before_training_when_a_file_is_in_the_way(tmp_path):
    pairs = write_pairs(tmp_path / "pairs", count=4)
    (tmp_path / "run.teacher.safetensors").write_bytes(b"someone's look")
    refused = run_cli("train", str(pairs), "-o", str(tmp_path / "run.safetensors"), *TINY_LUT_ARGS, "--steps", "2",
                      "--teacher", "auto")
    assert refused.exit_code == 2 and "run.teacher.safetensors: already exists" in refused.output
    assert (tmp_path / "run.teacher.safetensors").read_bytes() == b"someone's look"
    assert not (tmp_path / "run.safetensors").exists()
