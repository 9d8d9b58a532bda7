"""Crash-consistent training: kill -9 at any instant, then --resume continues exactly or refuses in one
line; time-limited runs save before the end; -o never replaces a file without --overwrite."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from autohdr_cli.checkpoint import load_checkpoint
from autohdr_cli.cli import app
from autohdr_cli.train import state_path

from test_train import TINY_ARGS, write_pairs

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("one_thread")


def cli(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def train_process(pairs: Path, output: Path, *extra: str) -> subprocess.Popen:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    command = [sys.executable, "-m", "autohdr_cli", "train", str(pairs), "-o", str(output), *TINY_ARGS, *extra]
    return subprocess.Popen(command, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def weights(path: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path).model.state_dict()


def same_weights(a: Path, b: Path) -> bool:
    x, y = weights(a), weights(b)
    return x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)


@pytest.fixture
def pairs(tmp_path) -> Path:
    return write_pairs(tmp_path / "pairs")


def test_a_state_saved_with_another_checkpoint_is_refused_naming_both_steps(pairs, tmp_path):
    out = tmp_path / "run.safetensors"
    assert cli("train", pairs, "-o", out, "--steps", "2", *TINY_ARGS).exit_code == 0
    old_state = state_path(out).read_bytes()
    assert cli("train", pairs, "-o", out, "--resume", out, "--steps", "4", *TINY_ARGS).exit_code == 0
    # What a kill between the checkpoint's rename and the state's leaves: checkpoint at 4, state at 2.
    state_path(out).write_bytes(old_state)
    before = out.read_bytes()
    result = cli("train", pairs, "-o", out, "--resume", out, "--steps", "6", *TINY_ARGS)
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        f"autohdr: error: {out} holds step 4 but run.safetensors.state holds step 2: they were not saved together "
        "(a crash between the two writes, or a replaced file), so the run cannot continue exactly; start it again "
        "with --overwrite"
    )
    assert out.read_bytes() == before


def test_kill_9_at_any_instant_then_resume_continues_exactly_or_refuses(pairs, tmp_path):
    steps = ["--steps", "60", "--checkpoint-every", "1", "--val-every", "1000"]
    straight = tmp_path / "straight.safetensors"
    process = train_process(pairs, straight, *steps)
    assert process.wait(timeout=300) == 0, process.stderr.read()
    continued = 0
    for delay in (0.0, 0.05, 0.2):
        out = tmp_path / f"killed-{delay}.safetensors"
        process = train_process(pairs, out, *steps)
        deadline = time.monotonic() + 300
        while not state_path(out).exists() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.002)
        time.sleep(delay)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=60)
        resumed = train_process(pairs, out, *steps, "--resume", str(out))
        _, stderr = resumed.communicate(timeout=300)
        if resumed.returncode == 0:
            continued += 1
            assert same_weights(out, straight), delay
        else:
            assert resumed.returncode == 2, stderr
            line = stderr.strip().splitlines()
            assert len(line) == 1 and "they were not saved together" in line[0], stderr
    assert continued >= 1


def test_a_time_limited_run_saves_before_its_end(pairs, tmp_path):
    out = tmp_path / "timed.safetensors"
    # No step-based checkpoint before the end: only the time-based one (a quarter of the limit) can save.
    process = train_process(pairs, out, "--steps", "100000000", "--checkpoint-every", "100000000",
                            "--time-limit", "8s", "--val-every", "100000000")
    deadline = time.monotonic() + 300
    while not state_path(out).exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert process.poll() is None, "the run ended before saving anything on the way"
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)
    saved = load_checkpoint(out).training["steps"]
    assert saved > 0
    resumed = train_process(pairs, out, "--steps", str(saved + 3), "--resume", str(out))
    _, stderr = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, stderr
    assert load_checkpoint(out).training["steps"] == saved + 3


def test_train_refuses_to_replace_a_run_unless_overwrite_or_resume(pairs, tmp_path):
    out = tmp_path / "look.safetensors"
    assert cli("train", pairs, "-o", out, "--steps", "2", *TINY_ARGS).exit_code == 0
    kept = {p: p.read_bytes() for p in (out, state_path(out), out.with_suffix(".csv"))}
    result = cli("train", pairs, "-o", out, "--steps", "2", *TINY_ARGS)
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        f"autohdr: error: {out}: already exists; give --overwrite to replace it (and the run's other files), "
        f"--resume {out} to continue it, or another -o"
    )
    assert {p: p.read_bytes() for p in kept} == kept
    # A companion alone is enough to refuse: its .state, its log.
    for companion in (state_path(out), out.with_suffix(".csv")):
        other = tmp_path / "other.safetensors"
        target = companion.with_name(companion.name.replace("look", "other"))
        shutil.copy(companion, target)
        result = cli("train", pairs, "-o", other, "--steps", "1", *TINY_ARGS)
        assert result.exit_code == 2 and result.stderr.startswith(f"autohdr: error: {target}: already exists")
        assert not other.exists()
        target.unlink()
    # DiffIR's stage-1 file too, before any training.
    stage1 = tmp_path / "d.stage1.safetensors"
    stage1.write_bytes(b"mine")
    result = cli("train", pairs, "-o", tmp_path / "d.safetensors", "--model", "diffir", "--steps", "2", "--quiet")
    assert result.exit_code == 2 and result.stderr.startswith(f"autohdr: error: {stage1}: already exists")
    assert stage1.read_bytes() == b"mine"
    # -o is the --resume file: continued; --overwrite: replaced.
    assert cli("train", pairs, "-o", out, "--resume", out, "--steps", "3", *TINY_ARGS).exit_code == 0
    assert load_checkpoint(out).training["steps"] == 3
    assert cli("train", pairs, "-o", out, "--steps", "1", "--overwrite", *TINY_ARGS).exit_code == 0
    assert load_checkpoint(out).training["steps"] == 1
